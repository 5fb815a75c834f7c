//! A private PostgreSQL server for tests: `initdb` into a temporary
//! directory and `postgres` listening on a unix socket there only, started
//! once per test process and stopped when the process exits, however it
//! exits. [`database`] answers the URL of a fresh database, cloned from a
//! template the migrations ran on once (a tenth of a second less per test
//! than migrating each); [`empty_database`] one with no schema at all.
//!
//! `postgres` refuses to run as root; as root, the server runs as the
//! `postgres` user (which Debian's package creates). The binaries are
//! found in `$NOREBOOT_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`,
//! else `$PATH`; missing binaries fail the test (`scripts/setup` installs
//! them), they never skip it.
//!
//! Tests run it without fsync; `NOREBOOT_PG_DURABLE=1` keeps PostgreSQL's
//! defaults and `NOREBOOT_PG_CPUS=LIST` pins it (the check-in benchmark).
//!
//! Used by the server's integration tests (`tests/server`), its check-in
//! benchmark and `db.rs`'s unit tests (feature `pg` of this crate).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The running server.
struct Cluster {
    /// Holds the socket, the data directory and the log.
    dir: PathBuf,
    /// The `sh` that stops the server: its stdin (never written) is closed
    /// by the kernel when this process exits, however it exits, and that
    /// is the signal. Never waited for: it outlives this process.
    _watcher: Child,
    /// Databases made so far.
    made: AtomicU32,
}

/// The server's migrations, the same the server embeds.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../server/migrations");

/// The migrated database every [`database`] is a copy of.
const TEMPLATE: &str = "migrated";

/// Runs in `sh` as the server's user: starts the server as its child
/// (so that it reaps it: no zombie is left to the system's init), says
/// `ready` once the server is, then waits for stdin to close (the test
/// process exited), stops the server at once (SIGQUIT: immediate
/// shutdown), waits for it and removes its directory. It ignores the
/// signals a terminal sends the whole process group, so that it still
/// gets to clean up.
const WATCHER: &str = r#"
trap '' HUP INT TERM
bin=$1 dir=$2 durable=$3 cpus=$4
fast="-c fsync=off -c full_page_writes=off"
[ "$durable" = durable ] && fast=
pin=
[ -n "$cpus" ] && pin="taskset -c $cpus"
{
    $pin "$bin/postgres" -D "$dir/data" -k "$dir" -c listen_addresses= $fast \
        -c max_connections=300 </dev/null >"$dir/log" 2>&1
    touch "$dir/exited"
} &
# The server's status is postmaster.pid's 8th line (where pg_ctl reads it).
n=0
until sed -n 8p "$dir/data/postmaster.pid" 2>/dev/null | grep -q '^ready'; do
    if [ -e "$dir/exited" ] || [ $n -ge 3000 ]; then
        cat "$dir/log" >&2
        [ -e "$dir/exited" ] || kill -QUIT "$(head -n 1 "$dir/data/postmaster.pid")"
        wait
        rm -rf "$dir"
        exit 1
    fi
    n=$((n + 1))
    sleep 0.02
done
echo ready
cat >/dev/null
[ -e "$dir/exited" ] || kill -QUIT "$(head -n 1 "$dir/data/postmaster.pid")"
wait
rm -rf "$dir"
"#;

/// The URL of a new database (`t_<n>`) with the server's schema, on the
/// test server, which the first call starts.
pub fn database() -> String {
    create(&format!("TEMPLATE {TEMPLATE}"))
}

/// The URL of a new database (`t_<n>`) without a schema.
#[allow(dead_code)] // in tests/server, which has no use for it
pub fn empty_database() -> String {
    create("")
}

fn create(options: &str) -> String {
    let c = cluster();
    let name = format!("t_{}", c.made.fetch_add(1, Ordering::Relaxed));
    let admin = c.url("postgres");
    let created = block_on(|| async {
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        conn.execute(format!("CREATE DATABASE {name} {options}").as_str())
            .await?;
        conn.close().await
    });
    if let Err(e) = created {
        panic!(
            "create test database {name} on {admin}: {e}\nserver log:\n{}",
            c.log()
        );
    }
    c.url(&name)
}

/// Runs the future `f` makes to completion on a runtime of its own.
/// Callers may be inside an async runtime, which cannot block on another
/// one: it runs on a thread of its own (and so the future need not be
/// `Send`).
fn block_on<T: Send, F: std::future::Future<Output = T>>(f: impl FnOnce() -> F + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the test database")
                .block_on(f())
        })
        .join()
        .expect("the thread talking to the test database panicked")
    })
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let c = start();
        let migrated = block_on(|| async {
            use sqlx::{Connection, Executor};
            let mut conn = sqlx::PgConnection::connect(&c.url("postgres")).await?;
            conn.execute(format!("CREATE DATABASE {TEMPLATE}").as_str())
                .await?;
            conn.close().await?;
            // A template must have no connections when it is copied.
            let mut conn = sqlx::PgConnection::connect(&c.url(TEMPLATE)).await?;
            MIGRATOR.run(&mut conn).await?;
            conn.close().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
        if let Err(e) = migrated {
            panic!(
                "migrate the template database: {e}\nserver log:\n{}",
                c.log()
            );
        }
        c
    })
}

impl Cluster {
    fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost/{database}?host={}",
            self.dir.display()
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

fn start() -> Cluster {
    let bin = bin_dir();
    let dir = tempfile::Builder::new()
        .prefix("noreboot-pg-")
        .tempdir()
        .expect("a temporary directory for PostgreSQL")
        .keep();
    let path = dir.to_str().expect("a UTF-8 temporary directory");
    assert!(
        !path.contains([' ', '?', '&', '#', '%']),
        "PostgreSQL's directory {path:?} has characters a URL would have to escape"
    );
    let as_user = server_user();
    if let Some(u) = &as_user {
        std::os::unix::fs::chown(&dir, Some(u.uid), Some(u.gid))
            .unwrap_or_else(|e| panic!("chown {path} to {}: {e}", u.name));
    }
    let run = |program: &Path| -> Command {
        match &as_user {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={}", u.uid))
                    .arg(format!("--regid={}", u.gid))
                    .arg("--clear-groups")
                    .arg(program);
                c
            }
            None => Command::new(program),
        }
    };

    let out = run(&bin.join("initdb"))
        .args(["-D", &format!("{path}/data")])
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
        .args(["--no-sync", "--no-instructions"])
        .output()
        .unwrap_or_else(|e| panic!("run {}/initdb: {e}", bin.display()));
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        panic!(
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut watcher = run(Path::new("sh"))
        .args(["-c", WATCHER, "watcher"])
        .arg(&bin)
        .arg(&dir)
        // Tests need no durability; the check-in benchmark measures a
        // server that flushes its WAL, on the server's core.
        .arg(match std::env::var_os("NOREBOOT_PG_DURABLE") {
            Some(_) => "durable",
            None => "fast",
        })
        .arg(std::env::var_os("NOREBOOT_PG_CPUS").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sh to run PostgreSQL");
    let mut line = String::new();
    let _ =
        BufReader::new(watcher.stdout.take().expect("the watcher's stdout")).read_line(&mut line);
    assert_eq!(
        line.trim(),
        "ready",
        "PostgreSQL did not start (its log is above)"
    );
    Cluster {
        dir,
        _watcher: watcher,
        made: AtomicU32::new(0),
    }
}

/// The directory of `initdb` and `postgres`.
fn bin_dir() -> PathBuf {
    let has_server = |d: &Path| ["initdb", "postgres"].iter().all(|b| d.join(b).is_file());
    if let Some(d) = std::env::var_os("NOREBOOT_PG_BIN") {
        let d = PathBuf::from(d);
        assert!(
            has_server(&d),
            "NOREBOOT_PG_BIN={}: no initdb and postgres there",
            d.display()
        );
        return d;
    }
    // Debian keeps each major version apart; take the newest.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_server(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return d;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| has_server(d))
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL's server binaries (initdb, postgres) are not installed: \
                 run scripts/setup (apt-get install postgresql), or set NOREBOOT_PG_BIN to \
                 their directory"
            )
        })
}

/// Who the server runs as, when not as this process's user.
struct User {
    name: String,
    uid: u32,
    gid: u32,
}

/// `None` unless this process runs as root: then the `postgres` user.
fn server_user() -> Option<User> {
    let me = std::fs::metadata("/proc/self").expect("/proc/self").uid();
    if me != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let user = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || f[0] != "postgres" {
            return None;
        }
        Some(User {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
        })
    });
    Some(user.unwrap_or_else(|| {
        panic!(
            "running as root, and PostgreSQL refuses to: there is no `postgres` user to run it \
             as (the Debian package creates one; or run the tests as another user)"
        )
    }))
}
