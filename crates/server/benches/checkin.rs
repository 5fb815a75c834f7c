//! Check-ins per second (BENCHMARKS.md): `noreboot-server serve` pinned
//! to one core with 10,000 registered hosts in its database, loaded over
//! loopback by wrk (Debian's `wrk`) pinned to the other core, every
//! request a real check-in with its own host token (round robin over all
//! 10,000), so each one authenticates, is recorded durably and answers
//! the host's target level.
//!
//! `cargo bench -p server --bench checkin [-- RUNS] [--db URL]
//!  [--connections N] [--seconds S] [--hosts N] [--fleet N]
//! [--fsync] [--postgres]` (default 5 runs of 10 s, 64 connections, SQLite
//! in a temporary data directory; `--postgres`: a private PostgreSQL
//! server started like the tests' but with fsync on, pinned to the
//! server's core; `--db postgres://...` any other, whose database must
//! be empty; `--fsync`: the server flushes every batch to
//! disk, `serve --checkin-fsync`; `--fleet N`: N more hosts registered
//! beside the ones checking in, written by `scripts/gen-fleet`, so the
//! check-ins run against a table and indexes of a large fleet's size).

#[allow(dead_code)]
#[path = "../tests/server/common.rs"]
mod common;
use test_support::pg;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use server::clock::SystemClock;
use server::{Context, Options};

const BUILD_ID: &str = common::KERNEL_A;

struct Args {
    runs: usize,
    db: Option<String>,
    connections: u32,
    seconds: u32,
    hosts: usize,
    fleet: usize,
    fsync: bool,
}

fn args() -> Args {
    let mut a = Args {
        runs: 5,
        db: None,
        connections: 64,
        seconds: 10,
        hosts: 10_000,
        fleet: 0,
        fsync: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--db" => a.db = Some(value("--db")),
            // A private PostgreSQL server (the tests'), with its defaults
            // (fsync on) and on the server's core.
            "--postgres" => {
                std::env::set_var("NOREBOOT_PG_DURABLE", "1");
                std::env::set_var("NOREBOOT_PG_CPUS", "0");
                a.db = Some(pg::empty_database());
            }
            "--connections" => a.connections = value("--connections").parse().unwrap(),
            "--seconds" => a.seconds = value("--seconds").parse().unwrap(),
            "--hosts" => a.hosts = value("--hosts").parse().unwrap(),
            "--fleet" => a.fleet = value("--fleet").parse().unwrap(),
            "--fsync" => a.fsync = true,
            "--bench" => {}
            n => {
                if let Ok(n) = n.parse() {
                    a.runs = n;
                }
            }
        }
    }
    a
}

/// The server, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// 10,000 hosts registered through the library (the HTTP path adds only
/// the rate limit), a level published to their feed; answers the tokens.
async fn populate(opts: &Options, hosts: usize) -> Vec<String> {
    let key = bundle::SecretKey::generate().unwrap();
    let trusted = opts.trusted_keys.clone().unwrap();
    std::fs::create_dir_all(&trusted).unwrap();
    key.public_key().write(&trusted.join("bench.pub")).unwrap();
    let ctx = Context::open(opts, Arc::new(SystemClock)).await.unwrap();
    ctx.publish(
        "bench",
        common::make_bundle(&key, BUILD_ID, 1, &["CVE-2099-0001"]),
        &["stable".to_string()],
    )
    .await
    .unwrap();
    let reg = ctx
        .create_key("bench", "stable", "bench")
        .await
        .unwrap()
        .secret;
    let started = std::time::Instant::now();
    let mut tokens = Vec::with_capacity(hosts);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..hosts {
        let ctx = ctx.clone();
        let req = common::register_request(&reg, &format!("host-{i:05}"), BUILD_ID);
        set.spawn(async move { ctx.register(&req).await.unwrap().token });
        if set.len() >= 32 {
            tokens.push(set.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(t) = set.join_next().await {
        tokens.push(t.unwrap());
    }
    eprintln!(
        "registered {hosts} hosts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ctx.db.close().await;
    tokens
}

fn serve(exe: &Path, opts: &Options, fsync: bool) -> (Server, u16) {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"])
        .arg(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&opts.data_dir)
        .arg("--trusted-keys")
        .arg(opts.trusted_keys.as_ref().unwrap());
    if let Some(db) = &opts.db_url {
        cmd.args(["--db", db]);
    }
    if fsync {
        cmd.arg("--checkin-fsync");
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (Server(child), port)
}

const SCRIPT: &str = r#"
local tokens = {}
for line in io.lines(os.getenv("NOREBOOT_BENCH_TOKENS")) do
  tokens[#tokens + 1] = "Bearer " .. line
end
local body = os.getenv("NOREBOOT_BENCH_BODY")
local i = math.random(#tokens)
request = function()
  i = i % #tokens + 1
  return wrk.format("POST", "/api/v1/checkin",
    { ["Authorization"] = tokens[i], ["Content-Type"] = "application/json" }, body)
end
"#;

struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Server CPU time (user + system) per check-in: what bounds the rate
    /// on one core whatever else the machine runs.
    cpu_us: f64,
}

/// CPU seconds (user + system) `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are
    // the 14th and 15th fields, in clock ticks.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / clock_ticks()
}

/// USER_HZ, the unit of /proc's CPU times.
fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn millis(s: &str) -> f64 {
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let v: f64 = num.parse().unwrap_or_else(|_| panic!("latency {s:?}"));
    match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        u => panic!("latency unit {u:?} in {s:?}"),
    }
}

fn wrk(server: u32, port: u16, dir: &Path, a: &Args, seconds: u32) -> Run {
    let cpu_before = cpu_seconds(server);
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1", "--latency"])
        .arg(format!("-c{}", a.connections))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(dir.join("checkin.lua"))
        .arg(format!("http://127.0.0.1:{port}"))
        .env("NOREBOOT_BENCH_TOKENS", dir.join("tokens"))
        .env(
            "NOREBOOT_BENCH_BODY",
            serde_json::to_string(&common::checkin_request(BUILD_ID, 1)).unwrap(),
        )
        .output()
        .expect("run wrk (apt-get install wrk; scripts/setup does)");
    let cpu = cpu_seconds(server) - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    // Every answer must have been a 200 check-in: errors answered fast
    // would make a fine-looking figure.
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk saw failures:\n{text}"
    );
    let field = |prefix: &str| -> &str {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk output:\n{text}"))
            .trim()
    };
    // "123456 requests in 10.00s, 45.67MB read"
    let requests: f64 = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk output:\n{text}"));
    Run {
        cpu_us: cpu * 1e6 / requests,
        rps: field("Requests/sec:").parse().unwrap(),
        p50_ms: millis(field("50%")),
        p99_ms: millis(field("99%")),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        db_url: a.db.clone(),
        data_dir: dir.path().join("data"),
        trusted_keys: Some(dir.path().join("trusted.d")),
    };
    // Built by cargo with this benchmark, in the bench (release) profile.
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_noreboot-server"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tokens = rt.block_on(populate(&opts, a.hosts));
    drop(rt);
    if a.fleet > 0 {
        let url = opts
            .db_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", opts.data_dir.join("noreboot.db").display()));
        let started = std::time::Instant::now();
        let status = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/gen-fleet"
        ))
        .args(["--db", &url, "--hosts", &a.fleet.to_string()])
        .status()
        .expect("run scripts/gen-fleet");
        assert!(status.success(), "scripts/gen-fleet failed");
        eprintln!(
            "generated {} more hosts in {:.0} s",
            a.fleet,
            started.elapsed().as_secs_f64()
        );
    }
    let mut f = std::fs::File::create(dir.path().join("tokens")).unwrap();
    for t in &tokens {
        writeln!(f, "{t}").unwrap();
    }
    std::fs::write(dir.path().join("checkin.lua"), SCRIPT).unwrap();

    let (server, port) = serve(&exe, &opts, a.fsync);
    // Warm up: connections, caches, the database's pages.
    let pid = server.0.id();
    let warm = wrk(pid, port, dir.path(), &a, 3);
    eprintln!("warm-up: {:.0} check-ins/s", warm.rps);
    let mut runs = Vec::new();
    for i in 0..a.runs {
        let r = wrk(pid, port, dir.path(), &a, a.seconds);
        eprintln!(
            "run {}: {:.0} check-ins/s, p50 {:.2} ms, p99 {:.2} ms, server CPU {:.1} µs/check-in",
            i + 1,
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.cpu_us
        );
        runs.push(r);
    }
    // How the writer batched them, from the server's own metrics.
    let metrics = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    eprintln!(
        "check-ins per batch: {:.1} on average",
        counter("noreboot_checkins_total ") / counter("noreboot_checkin_batches_total ")
    );
    drop(server);
    let backend = if a.db.as_deref().is_some_and(|u| u.starts_with("postgres")) {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let durability = if a.fsync {
        "fsync per batch"
    } else {
        "crash-safe, no fsync"
    };
    println!(
        "check-ins, {backend} ({durability}), {} hosts (+{} registered), {} connections, server on 1 core: \
         {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, server CPU {:.1} µs/check-in \
         (median of {} runs of {} s)",
        a.hosts,
        a.fleet,
        a.connections,
        median(runs.iter().map(|r| r.rps).collect()),
        median(runs.iter().map(|r| r.p50_ms).collect()),
        median(runs.iter().map(|r| r.p99_ms).collect()),
        median(runs.iter().map(|r| r.cpu_us).collect()),
        runs.len(),
        a.seconds
    );
}
