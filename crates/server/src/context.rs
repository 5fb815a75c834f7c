//! What every operation needs, built once: the database, the bundle store,
//! the clock and the keys bundles must be signed with. The admin CLI and
//! the HTTP server build the same [`Context`] from the same options, so
//! an action means the same thing whichever way it arrives.
//!
//! On PostgreSQL, where several `serve` processes may share the database,
//! bundles live in the database too ([`DbStore`]), and the trusted keys —
//! read from each process's own directory — are compared through it: each
//! `serve` records its key set at start, and a `serve` whose set differs
//! from the last recorded one refuses to publish rather than judge
//! bundles differently from its peers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bundle::TrustedKeys;

use sqlx::Row;

use crate::blobs::{BlobStore, DbStore, DiskStore};
use crate::clock::Clock;
use crate::db::{Backend, Db};
use crate::error::{conflict, invalid, DbContext, Error};

/// The `shared_settings` row of the trusted keys' ids.
const TRUSTED_KEYS: &str = "trusted_keys";

/// Where the server keeps its state.
#[derive(Debug, Clone)]
pub struct Options {
    /// Database URL; `None`: SQLite `noreboot.db` in `data_dir`.
    pub db_url: Option<String>,
    /// Data directory (bundles, the default database).
    pub data_dir: PathBuf,
    /// Directory of minisign `*.pub` keys bundles must be signed by;
    /// `None`: `trusted.d` in `data_dir`.
    pub trusted_keys: Option<PathBuf>,
}

/// The server's state and services.
#[derive(Debug, Clone)]
pub struct Context {
    /// The database.
    pub db: Db,
    /// Bundle files.
    pub blobs: Arc<dyn BlobStore>,
    /// Now.
    pub clock: Arc<dyn Clock>,
    /// Keys a published bundle must be signed by.
    pub trusted: Arc<TrustedKeys>,
    /// Where they came from, for messages.
    pub trusted_dir: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Publications check the trusted keys against the database's record:
    /// set by [`Context::record_trusted_keys`], so in `serve` only (the
    /// admin CLI reads its `--trusted-keys` afresh at every run, for what
    /// its operator runs by hand).
    check_trust: bool,
    /// The fleet's last counts and when to count again.
    pub counts: Arc<crate::counts::FleetCounts>,
    /// Woken after webhook deliveries are queued, so that `serve`'s
    /// delivery task (`webhooks`) sends them at once.
    pub webhook_wake: Arc<tokio::sync::Notify>,
}

impl Context {
    /// Opens (creating as needed) the data directory, the database and the
    /// bundle store, and loads the trusted keys.
    pub async fn open(opts: &Options, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        let data = &opts.data_dir;
        let fresh = !data.exists();
        std::fs::create_dir_all(data)
            .map_err(|e| invalid(format!("data directory {}: {e}", data.display())))?;
        // Tokens, registration keys and the fleet live here: a directory
        // the server makes is the service user's alone, whatever the
        // umask (one that exists keeps the mode its owner gave it).
        if fresh {
            private(data, 0o700)?;
        }
        let trusted_dir = match &opts.trusted_keys {
            Some(d) => d.clone(),
            None => {
                let d = data.join("trusted.d");
                std::fs::create_dir_all(&d)
                    .map_err(|e| invalid(format!("{}: {e}", d.display())))?;
                d
            }
        };
        let trusted = load_keys(&trusted_dir)?;
        let url = match &opts.db_url {
            Some(u) => u.clone(),
            None => {
                // SQLite makes its journal files with the database's mode.
                let file = data.join("noreboot.db");
                if !file.exists() {
                    std::fs::File::create(&file)
                        .map_err(|e| invalid(format!("{}: {e}", file.display())))?;
                    private(&file, 0o600)?;
                }
                format!("sqlite://{}", absolute(&file).display())
            }
        };
        let db = Db::open(&url).await?;
        let bundles = data.join("bundles");
        // SQLite: one server process, files beside the database. PostgreSQL:
        // every process must serve every bundle, so they are rows; files a
        // deployment stored before the move are read (and copied in) from
        // the old directory while it exists.
        let blobs: Arc<dyn BlobStore> = match db.backend() {
            Backend::Sqlite => Arc::new(DiskStore::open(&bundles)?),
            Backend::Postgres => Arc::new(DbStore::new(
                db.pool().clone(),
                DiskStore::existing(&bundles),
            )),
        };
        Ok(Self {
            db,
            blobs,
            clock,
            trusted: Arc::new(trusted),
            trusted_dir,
            data_dir: data.clone(),
            check_trust: false,
            counts: Arc::new(crate::counts::FleetCounts::always_fresh()),
            webhook_wake: Arc::new(tokio::sync::Notify::new()),
        })
    }
}

impl Context {
    /// The bundle directory of the disk store (SQLite), or of the disk
    /// store a PostgreSQL deployment used before.
    pub fn bundle_dir(&self) -> PathBuf {
        self.data_dir.join("bundles")
    }

    /// The trusted keys as the database records them: their ids, sorted,
    /// comma-separated.
    pub fn trusted_key_ids(&self) -> String {
        let mut ids: Vec<String> = self
            .trusted
            .iter()
            .map(|k| k.key_id().to_string())
            .collect();
        ids.sort();
        ids.join(",")
    }

    /// Records this process's trusted keys as the ones every process on the
    /// database must have (`serve` at start, on PostgreSQL), and makes
    /// this context's publications check them against the record from
    /// now on ([`Context::check_trusted_keys`]); a change from the
    /// previous record is logged, naming both.
    pub async fn record_trusted_keys(&mut self) -> Result<(), Error> {
        if self.db.backend() != Backend::Postgres {
            return Ok(());
        }
        self.check_trust = true;
        let ids = self.trusted_key_ids();
        let by = format!(
            "{}:{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            std::process::id()
        );
        let previous = self.recorded_trusted_keys().await?;
        sqlx::query(
            "INSERT INTO shared_settings (name, value, set_at, set_by) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET value = $2, set_at = $3, set_by = $4",
        )
        .bind(TRUSTED_KEYS)
        .bind(&ids)
        .bind(self.clock.now())
        .bind(&by)
        .execute(self.db.pool())
        .await
        .ctx("record the trusted keys")?;
        if let Some((old, old_by)) = previous.filter(|(old, _)| *old != ids) {
            tracing::warn!(
                "the trusted keys changed: this process trusts [{ids}], the previous one to start ({old_by}) trusted [{old}]; processes still running with other keys refuse to publish until restarted with these"
            );
        }
        Ok(())
    }

    /// The trusted keys' ids the database records, and which process
    /// recorded them.
    async fn recorded_trusted_keys(&self) -> Result<Option<(String, String)>, Error> {
        sqlx::query("SELECT value, set_by FROM shared_settings WHERE name = $1")
            .bind(TRUSTED_KEYS)
            .fetch_optional(self.db.pool())
            .await
            .ctx("read the recorded trusted keys")?
            .map(|r| Ok::<_, sqlx::Error>((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
            .transpose()
            .ctx("read the recorded trusted keys")
    }

    /// Refuses when this process's trusted keys are not the ones the
    /// database records (another `serve` started since with other keys):
    /// a publication must not be accepted or refused depending on which
    /// process the load balancer picked. Nothing recorded, or a context
    /// that never recorded its keys (the admin CLI): no constraint.
    pub async fn check_trusted_keys(&self) -> Result<(), Error> {
        if !self.check_trust {
            return Ok(());
        }
        let ids = self.trusted_key_ids();
        match self.recorded_trusted_keys().await? {
            Some((recorded, by)) if recorded != ids => Err(conflict(format!(
                "this server's trusted keys ({}: [{ids}]) are not the ones the last server process to start on this database has ({by}: [{recorded}]): every process must have the same --trusted-keys; restart this one with them",
                self.trusted_dir.display()
            ))),
            _ => Ok(()),
        }
    }

    /// Copies into the database the bundle files of published levels that
    /// this process's data directory still has and the database lacks
    /// (`serve` at start, on PostgreSQL: a deployment that moved from one
    /// process's disk store). Logs what it copied and what is in neither.
    pub async fn import_disk_bundles(&self) -> Result<(), Error> {
        if self.db.backend() != Backend::Postgres {
            return Ok(());
        }
        let wanted: Vec<String> = sqlx::query(
            "SELECT DISTINCT l.sha256 FROM levels l \
             WHERE NOT EXISTS (SELECT 1 FROM bundle_blobs b WHERE b.sha256 = l.sha256) \
             ORDER BY l.sha256",
        )
        .fetch_all(self.db.pool())
        .await
        .ctx("list bundles missing from the database")?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .ctx("list bundles missing from the database")?;
        if wanted.is_empty() {
            return Ok(());
        }
        let dir = self.bundle_dir();
        let store = DbStore::new(self.db.pool().clone(), DiskStore::existing(&dir));
        let (copied, missing) = store.import_from_disk(&wanted).await?;
        if copied > 0 {
            tracing::info!(
                "copied {copied} bundle files from {} into the database",
                dir.display()
            );
        }
        if !missing.is_empty() {
            tracing::warn!(
                "{} published bundles are neither in the database nor in {}: start a server on the data directory that has them (it copies them in), or they cannot be downloaded: {}",
                missing.len(),
                dir.display(),
                missing.join(", ")
            );
        }
        Ok(())
    }
}

/// Sets `path`'s mode to exactly `mode`.
fn private(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| invalid(format!("{}: setting mode {mode:o}: {e}", path.display())))
}

fn load_keys(dir: &Path) -> Result<TrustedKeys, Error> {
    TrustedKeys::load_dir(dir)
        .map_err(|e| invalid(format!("trusted keys in {}: {e}", dir.display())))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
