//! What every operation needs, built once: the database, the bundle store,
//! the clock and the keys bundles must be signed with. The admin CLI and
//! the HTTP server build the same [`Context`] from the same options, so
//! an action means the same thing whichever way it arrives.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bundle::TrustedKeys;

use crate::blobs::{BlobStore, DiskStore};
use crate::clock::Clock;
use crate::db::Db;
use crate::error::{invalid, Error};

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
        let blobs = DiskStore::open(&data.join("bundles"))?;
        Ok(Self {
            db,
            blobs: Arc::new(blobs),
            clock,
            trusted: Arc::new(trusted),
            trusted_dir,
        })
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
