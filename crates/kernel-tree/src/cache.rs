//! Where kernel workspaces live on disk: `$NOREBOOT_CACHE`, else
//! `$XDG_CACHE_HOME/noreboot`, else `~/.cache/noreboot`. One directory per
//! release under `kernels/`, created atomically and guarded by a lock file so
//! parallel tests and builds share one download. The cache also carries the
//! cap on what `kernels/` may use (`NOREBOOT_CACHE_CAP`, or a binary's
//! `--cache-cap`), which [`crate::evict`] keeps it under.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::size::parse_size;
use crate::{Error, Result};

/// The variable that caps the disk use of `kernels/`: a size such as `40G`,
/// `500M`, `1.5T` or bytes; `0` or unset means no cap.
pub const CAP_ENV: &str = "NOREBOOT_CACHE_CAP";

/// The root of noreboot's cache.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    /// Bytes `kernels/` should stay under; `None` is no cap.
    cap: Option<u64>,
}

impl Cache {
    /// The cache named by the environment (see the module docs), with the
    /// cap of `NOREBOOT_CACHE_CAP`.
    pub fn from_env() -> Result<Cache> {
        Self::from_env_with_cap(None)
    }

    /// The cache named by the environment, with the cap a command line
    /// gave (`--cache-cap`; `Some(0)` is no cap) or else the cap of
    /// `NOREBOOT_CACHE_CAP`, which is then not even read: a flag overrides
    /// a bad variable.
    pub fn from_env_with_cap(flag: Option<u64>) -> Result<Cache> {
        let cap = match flag {
            Some(bytes) => bytes,
            None => cap_from_env()?,
        };
        Ok(Self::from_env_root()?.with_cap(Some(cap)))
    }

    fn from_env_root() -> Result<Cache> {
        let root = if let Some(dir) = std::env::var_os("NOREBOOT_CACHE").filter(|v| !v.is_empty()) {
            PathBuf::from(dir)
        } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            PathBuf::from(dir).join("noreboot")
        } else if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            PathBuf::from(home).join(".cache").join("noreboot")
        } else {
            return Err(Error::NoCacheDir);
        };
        Ok(Cache::at(root))
    }

    /// A cache rooted at `root`, without a cap.
    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache {
            root: root.into(),
            cap: None,
        }
    }

    /// The same cache with the cap `cap` (`None` or `Some(0)`: no cap).
    pub fn with_cap(self, cap: Option<u64>) -> Cache {
        Cache {
            cap: cap.filter(|&c| c > 0),
            ..self
        }
    }

    /// Bytes `kernels/` should stay under, if capped.
    pub fn cap(&self) -> Option<u64> {
        self.cap
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory that holds one directory per kernel release.
    pub fn kernels_dir(&self) -> PathBuf {
        self.root.join("kernels")
    }

    /// Takes the exclusive lock for `name` (blocking), creating the lock
    /// file under the cache. The lock is released when the file is dropped.
    pub fn lock(&self, name: &str) -> Result<File> {
        let (file, path) = self.lock_file(name)?;
        file.lock().map_err(|e| Error::io("lock", &path, e))?;
        Ok(file)
    }

    /// Takes the shared lock for `name` (blocking): any number of holders
    /// at once, none while someone holds it exclusively.
    pub fn lock_shared(&self, name: &str) -> Result<File> {
        let (file, path) = self.lock_file(name)?;
        file.lock_shared()
            .map_err(|e| Error::io("lock", &path, e))?;
        Ok(file)
    }

    /// Takes the exclusive lock for `name` if nobody holds it in any mode;
    /// `None` when somebody does.
    pub fn try_lock(&self, name: &str) -> Result<Option<File>> {
        let (file, path) = self.lock_file(name)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
        }
    }

    /// The lock file of `name` under `locks/`, opened (and created).
    fn lock_file(&self, name: &str) -> Result<(File, PathBuf)> {
        let dir = self.root.join("locks");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let path = dir.join(format!("{name}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        Ok((file, path))
    }
}

/// The cap `NOREBOOT_CACHE_CAP` sets (0 when unset or empty).
fn cap_from_env() -> Result<u64> {
    parse_cap_env(std::env::var_os(CAP_ENV).as_deref())
}

fn parse_cap_env(value: Option<&std::ffi::OsStr>) -> Result<u64> {
    let bad = |value: String, reason: String| Error::BadSize {
        what: CAP_ENV.into(),
        value,
        reason,
    };
    let Some(value) = value else {
        return Ok(0);
    };
    let Some(text) = value.to_str() else {
        return Err(bad(
            value.to_string_lossy().into_owned(),
            "not UTF-8".into(),
        ));
    };
    if text.trim().is_empty() {
        return Ok(0);
    }
    parse_size(text).map_err(|reason| bad(text.to_string(), reason))
}

/// Bytes available to unprivileged writers on the file system holding
/// `path` (or its nearest existing ancestor).
pub fn free_space(path: &Path) -> Result<u64> {
    let mut probe = path;
    loop {
        if probe.exists() {
            break;
        }
        probe = match probe.parent() {
            Some(p) => p,
            None => break,
        };
    }
    let st = rustix::fs::statvfs(probe).map_err(|e| Error::io("statvfs", probe, e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Fails with [`Error::DiskFull`] unless `needed` bytes are free at `path`.
pub fn ensure_space(path: &Path, needed: u64) -> Result<()> {
    let available = free_space(path)?;
    if available < needed {
        return Err(Error::DiskFull {
            path: path.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_check_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        ensure_space(dir.path(), 1).unwrap();
        let err = ensure_space(&dir.path().join("not/yet/there"), u64::MAX).unwrap_err();
        assert!(matches!(err, Error::DiskFull { .. }), "{err}");
        assert!(err.to_string().contains("not/yet/there"), "{err}");
    }

    #[test]
    fn the_cap_variable_is_read_and_a_bad_one_is_named() {
        use std::ffi::OsStr;
        assert_eq!(parse_cap_env(None).unwrap(), 0);
        assert_eq!(parse_cap_env(Some(OsStr::new(""))).unwrap(), 0);
        assert_eq!(parse_cap_env(Some(OsStr::new("0"))).unwrap(), 0);
        assert_eq!(parse_cap_env(Some(OsStr::new("40G"))).unwrap(), 40 << 30);
        let err = parse_cap_env(Some(OsStr::new("40 gigs"))).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::BadSize { .. }), "{msg}");
        assert!(
            msg.starts_with("invalid NOREBOOT_CACHE_CAP \"40 gigs\": unknown unit"),
            "{msg}"
        );
        // 0 is no cap, as unset is.
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Cache::at(dir.path()).with_cap(Some(0)).cap(), None);
        assert_eq!(Cache::at(dir.path()).with_cap(Some(5)).cap(), Some(5));
    }

    #[test]
    fn shared_locks_exclude_only_the_exclusive_one() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let a = cache.lock_shared("w").unwrap();
        let b = cache.lock_shared("w").unwrap();
        assert!(cache.try_lock("w").unwrap().is_none());
        drop(a);
        assert!(cache.try_lock("w").unwrap().is_none());
        drop(b);
        let alone = cache.try_lock("w").unwrap();
        assert!(alone.is_some());
    }

    #[test]
    fn lock_is_exclusive_between_handles() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let held = cache.lock("k").unwrap();
        let path = dir.path().join("locks/k.lock");
        let other = File::options().write(true).open(&path).unwrap();
        assert!(other.try_lock().is_err());
        drop(held);
        other.try_lock().unwrap();
    }
}
