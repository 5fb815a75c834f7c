//! What the agent keeps on disk under the state directory: per kernel
//! build-id the bundles it applied (so `boot` and `revert` need no network),
//! the level to re-apply at boot, levels the crash guard skipped, what the
//! last update source offered, and the apply journal (`journal`); beside them the
//! files scanners read. Every write is atomic (temp file, fsync, rename,
//! fsync of the directory): a crash leaves the old or the new file whole.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::journal::JournalFile;

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// File system trouble.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Too little room to go on without risking a half-recorded change.
    #[error("{path}: not enough free space: {needed} bytes needed, {free} free{}", inodes.map(|n| format!(", {n} inodes free")).unwrap_or_default())]
    NoSpace {
        /// The file system's directory.
        path: PathBuf,
        /// What the action needs.
        needed: u64,
        /// What is free.
        free: u64,
        /// Free inodes, when the file system counts them.
        inodes: Option<u64>,
    },
    /// A state file that is not ours or is damaged.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` to `path` atomically and durably. The temporary file is
/// removed on every failure (a full disk must not be filled further by
/// half-written copies).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), StateError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(data).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io("rename into place", path))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// Removes a file durably (the directory synced); a missing file is fine.
pub fn remove_durably(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", path)(e)),
    }
}

/// Fails unless the file system holding `dir` has `bytes` and a few
/// inodes free for an unprivileged writer (the root reserve is not
/// counted on: it is the system's, not ours).
pub fn check_free_space(dir: &Path, bytes: u64) -> Result<(), StateError> {
    let probe = existing_ancestor(dir);
    let st = rustix::fs::statvfs(probe).map_err(|e| StateError::Io {
        op: "measure free space of",
        path: probe.to_path_buf(),
        source: e.into(),
    })?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    // File systems without inode accounting (tmpfs with nr_inodes=0,
    // btrfs) report zero files in all.
    let inodes_ok = st.f_files == 0 || st.f_favail >= 16;
    if free < bytes || !inodes_ok {
        return Err(StateError::NoSpace {
            path: probe.to_path_buf(),
            needed: bytes,
            free,
            inodes: (st.f_files != 0).then_some(st.f_favail),
        });
    }
    Ok(())
}

fn existing_ancestor(dir: &Path) -> &Path {
    let mut p = dir;
    while !p.exists() {
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => break,
        }
    }
    p
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

/// A level that was applied once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Applied {
    /// The level.
    pub level: u32,
    /// Its patch name.
    pub name: String,
    /// When it was applied (RFC 3339).
    pub at: String,
}

/// A level the crash guard (or a failed health check) took out of play.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    /// The level.
    pub level: u32,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
}

/// What an update source last said about this kernel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Offer {
    /// The newest level on offer (0: none).
    pub level: u32,
    /// False when the source has no patches at all for this build-id.
    pub supported: bool,
    /// Where from.
    pub source: String,
    /// When (RFC 3339).
    pub checked_at: String,
}

/// A cached level.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LevelRecord {
    /// Its patch (and module) name.
    pub name: String,
    /// When it was last applied (RFC 3339).
    #[serde(default)]
    pub applied_at: Option<String>,
}

impl KernelState {
    /// Whether the crash guard or a failed health check took a level out.
    pub fn is_skipped(&self, level: u32) -> bool {
        self.skipped.iter().any(|s| s.level == level)
    }
}

/// Per-kernel state (`kernels/<build-id>/state.json`). Fields a newer
/// agent wrote are kept as they are (`extra`), never a reason to stop.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KernelState {
    /// The kernel release, for people reading the file.
    #[serde(default)]
    pub release: String,
    /// The level to keep active (re-applied at boot); `None`: none.
    #[serde(default)]
    pub wanted: Option<Applied>,
    /// Every level cached for this kernel: its patch name and when it was
    /// last applied.
    #[serde(default)]
    pub levels: BTreeMap<u32, LevelRecord>,
    /// Levels not to apply again automatically.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// The last answer of an update source.
    #[serde(default)]
    pub offer: Option<Offer>,
    /// Fields this agent does not know (a newer one wrote them): kept
    /// and written back unchanged.
    #[serde(flatten)]
    pub extra: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Store { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes sure the root exists (for the lock file).
    pub fn ensure(&self) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.root).map_err(io("create directory", &self.root))
    }

    fn kernel_dir(&self, build_id: &str) -> PathBuf {
        self.root.join("kernels").join(build_id)
    }

    /// Where a level's bundle is cached.
    pub fn bundle_path(&self, build_id: &str, level: u32) -> PathBuf {
        self.kernel_dir(build_id)
            .join("levels")
            .join(format!("{level}.nrb"))
    }

    /// Caches a verified bundle.
    pub fn save_bundle(&self, build_id: &str, level: u32, bytes: &[u8]) -> Result<(), StateError> {
        write_atomic(&self.bundle_path(build_id, level), bytes, 0o644)
    }

    /// Levels cached for a kernel, ascending.
    pub fn cached_levels(&self, build_id: &str) -> Result<Vec<u32>, StateError> {
        let dir = self.kernel_dir(build_id).join("levels");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read directory", &dir)(e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(io("read directory", &dir))?;
            let name = e.file_name();
            let Some(level) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".nrb"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            out.push(level);
        }
        out.sort_unstable();
        Ok(out)
    }

    fn state_path(&self, build_id: &str) -> PathBuf {
        self.kernel_dir(build_id).join("state.json")
    }

    /// Moves a state file that cannot be read aside (`state.json.corrupt`,
    /// replacing an older one), so it can be looked at while a rebuilt
    /// state takes its place; returns where it went.
    pub fn set_aside_state(&self, build_id: &str) -> Result<PathBuf, StateError> {
        let from = self.state_path(build_id);
        let to = from.with_extension("json.corrupt");
        std::fs::rename(&from, &to).map_err(io("rename", &from))?;
        Ok(to)
    }

    /// The per-kernel state (default when there is none yet).
    pub fn load(&self, build_id: &str) -> Result<KernelState, StateError> {
        let path = self.state_path(build_id);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StateError::Corrupt {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KernelState::default()),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Writes the per-kernel state.
    pub fn save(&self, build_id: &str, s: &KernelState) -> Result<(), StateError> {
        let data = serde_json::to_vec_pretty(s).map_err(|e| StateError::Corrupt {
            path: self.state_path(build_id),
            message: e.to_string(),
        })?;
        write_atomic(&self.state_path(build_id), &data, 0o644)
    }

    /// Removes the temporary files of writes that never finished (an
    /// agent killed between creating and renaming one) from the state
    /// directory, this kernel's directory and its cache. Only to be called
    /// holding the agent lock: then no write is under way. Returns how
    /// many were removed.
    pub fn remove_stale_temporaries(&self, build_id: &str) -> Result<usize, StateError> {
        let kdir = self.kernel_dir(build_id);
        let mut removed = 0;
        for dir in [self.root.clone(), kdir.join("levels"), kdir] {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read directory", &dir)(e)),
            };
            for e in rd {
                let e = e.map_err(io("read directory", &dir))?;
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.contains(".tmp-") {
                    let path = e.path();
                    std::fs::remove_file(&path).map_err(io("remove", &path))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// The apply journal of a kernel.
    pub fn journal(&self, build_id: &str) -> JournalFile {
        JournalFile::new(&self.kernel_dir(build_id))
    }

    /// The audit log's path.
    pub fn audit_path(&self) -> PathBuf {
        self.root.join("audit.log")
    }

    /// The lock file's path.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Writes the files scanners read: `effective-version` (one line, the
    /// `uname -v` the kernel now stands for), `effective-release`, `cves`
    /// (one CVE id per line, fixed by the active level).
    pub fn write_scanner_files(
        &self,
        effective_version: &str,
        effective_release: &str,
        cves: &[String],
    ) -> Result<(), StateError> {
        write_atomic(
            &self.root.join("effective-version"),
            format!("{effective_version}\n").as_bytes(),
            0o644,
        )?;
        write_atomic(
            &self.root.join("effective-release"),
            format!("{effective_release}\n").as_bytes(),
            0o644,
        )?;
        let mut list = String::new();
        for c in cves {
            list.push_str(c);
            list.push('\n');
        }
        write_atomic(&self.root.join("cves"), list.as_bytes(), 0o644)
    }

    /// The host's OpenVEX document, for scanners (`trivy --vex`).
    pub fn vex_path(&self) -> PathBuf {
        self.root.join("vex.json")
    }

    /// Writes the host's OpenVEX document, or removes it (`None`: no
    /// level active, nothing to state).
    pub fn write_vex(&self, doc: Option<&protocol::vex::Document>) -> Result<(), StateError> {
        let path = self.vex_path();
        match doc {
            Some(d) => {
                // Plain data: serialising it cannot fail.
                let mut text = serde_json::to_vec_pretty(d).unwrap_or_default();
                text.push(b'\n');
                write_atomic(&path, &text, 0o644)
            }
            None => remove_durably(&path),
        }
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id(proc_root: &Path) -> String {
    std::fs::read_to_string(proc_root.join("sys/kernel/random/boot_id"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_levels_are_listed() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        assert_eq!(s.load("ab").unwrap(), KernelState::default());
        let mut k = KernelState {
            release: "r".into(),
            ..Default::default()
        };
        k.wanted = Some(Applied {
            level: 2,
            name: "p2".into(),
            at: "t".into(),
        });
        s.save("ab", &k).unwrap();
        assert_eq!(s.load("ab").unwrap(), k);
        s.save_bundle("ab", 10, b"x").unwrap();
        s.save_bundle("ab", 2, b"y").unwrap();
        std::fs::write(t.path().join("kernels/ab/levels/junk"), "").unwrap();
        assert_eq!(s.cached_levels("ab").unwrap(), [2, 10]);
    }

    #[test]
    fn the_vex_document_is_written_whole_and_removed_with_its_level() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let product = protocol::vex::kernel_product("6.1.0-47-cloud-amd64", "6.1.170-3");
        let mut b = protocol::vex::Builder::new("a", "t");
        b.fixed("CVE-2099-1001", &product, 1, "2025-01-01T00:00:00Z", "");
        let doc = b.build("2025-01-01T00:00:00Z", "").unwrap();
        s.write_vex(Some(&doc)).unwrap();
        let path = t.path().join("vex.json");
        let back: protocol::vex::Document =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, doc);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "scanners run as other users");
        s.write_vex(None).unwrap();
        assert!(!path.exists());
        s.write_vex(None).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let t = tempfile::tempdir().unwrap();
        // A directory with something in it where the file should go: the
        // rename fails after the temporary copy was written whole.
        let target = t.path().join("state.json");
        std::fs::create_dir_all(target.join("in-the-way")).unwrap();
        let e = write_atomic(&target, b"{}", 0o644).unwrap_err();
        assert!(e.to_string().contains("rename into place"), "{e}");
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"], "only what was there before");
    }

    #[test]
    fn temporaries_of_unfinished_writes_are_removed_and_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        s.save_bundle("ab", 1, b"x").unwrap();
        let levels = t.path().join("kernels/ab/levels");
        for (dir, name) in [
            (t.path().to_path_buf(), ".cves.tmp-17"),
            (t.path().join("kernels/ab"), ".loading.json.tmp-4242"),
            (levels.clone(), ".2.nrb.tmp-99"),
        ] {
            std::fs::write(dir.join(name), "half").unwrap();
        }
        std::fs::write(t.path().join(".hidden"), "keep").unwrap();
        assert_eq!(s.remove_stale_temporaries("ab").unwrap(), 3);
        assert_eq!(s.cached_levels("ab").unwrap(), [1]);
        assert!(t.path().join(".hidden").exists());
        assert_eq!(std::fs::read_dir(&levels).unwrap().count(), 1);
        assert_eq!(s.remove_stale_temporaries("cd").unwrap(), 0);
    }

    #[test]
    fn free_space_is_checked_on_the_nearest_existing_directory() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("not/yet/made");
        check_free_space(&dir, 1).unwrap();
        let e = check_free_space(&dir, u64::MAX).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, StateError::NoSpace { .. }), "{msg}");
        assert!(
            msg.contains(&format!("{}: not enough free space", t.path().display())),
            "{msg}"
        );
    }

    #[test]
    fn damaged_state_names_the_file() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        std::fs::create_dir_all(t.path().join("kernels/ab")).unwrap();
        std::fs::write(t.path().join("kernels/ab/state.json"), "{nope").unwrap();
        let e = s.load("ab").unwrap_err();
        assert!(e.to_string().contains("state.json"), "{e}");
    }
}
