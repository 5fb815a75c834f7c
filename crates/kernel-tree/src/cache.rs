//! Where kernel workspaces live on disk: `$NOREBOOT_CACHE`, else
//! `$XDG_CACHE_HOME/noreboot`, else `~/.cache/noreboot`. One directory per
//! release under `kernels/`, created atomically and guarded by a lock file so
//! parallel tests and builds share one download.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The root of noreboot's cache.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache named by the environment (see the module docs).
    pub fn from_env() -> Result<Cache> {
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

    /// A cache rooted at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
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
        let dir = self.root.join("locks");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let path = dir.join(format!("{name}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        file.lock().map_err(|e| Error::io("lock", &path, e))?;
        Ok(file)
    }
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
