//! The kernel's livepatch interface as a host agent drives it: loading and
//! unloading patch modules (`finit_module`, `delete_module`), and the sysfs
//! files under `/sys/kernel/livepatch/<patch>/` that say whether a patch is
//! enabled and still in transition, plus the per-task `patch_state` that
//! tells which tasks hold a transition up. All paths hang off a root so
//! tests can point them at a fake tree; the kernel itself is only touched
//! through these functions.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

/// Where the kernel lists live patches.
pub const SYS_LIVEPATCH: &str = "/sys/kernel/livepatch";

/// Why a livepatch operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LivepatchError {
    /// A sysfs or procfs file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A sysfs file held something unexpected.
    #[error("{path}: unexpected content {content:?}")]
    Unexpected {
        /// The file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
    /// The kernel refused to load the module.
    #[error("loading module {module}: {reason}")]
    Load {
        /// The module's name.
        module: String,
        /// The kernel's answer, explained.
        reason: String,
    },
    /// The kernel refused to unload the module.
    #[error("unloading module {module}: {source}")]
    Unload {
        /// The module's name.
        module: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A name that cannot be a module name.
    #[error("invalid module name {0:?}")]
    BadName(String),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LivepatchError + 'a {
    move |source| LivepatchError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One live patch as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PatchState {
    /// The patch (and module) name.
    pub name: String,
    /// `enabled`.
    pub enabled: bool,
    /// `transition`: a switch to or from this patch is under way.
    pub transition: bool,
}

/// The livepatch sysfs tree (normally `/sys/kernel/livepatch`).
#[derive(Debug, Clone)]
pub struct Livepatch {
    root: PathBuf,
}

impl Default for Livepatch {
    fn default() -> Self {
        Livepatch::new(SYS_LIVEPATCH)
    }
}

impl Livepatch {
    /// The tree at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Livepatch { root: root.into() }
    }

    /// The directory of one patch.
    pub fn dir(&self, patch: &str) -> PathBuf {
        self.root.join(patch)
    }

    /// Every live patch the kernel knows, sorted by name. A kernel without
    /// livepatch support (no directory) has none.
    pub fn patches(&self) -> Result<Vec<PatchState>, LivepatchError> {
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read directory", &self.root)(e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(io_err("read directory", &self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // A patch can vanish between listing and reading (a replaced
            // patch is freed once its successor's transition ends).
            match self.state(&name) {
                Ok(Some(s)) => out.push(s),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The state of one patch, `None` when the kernel does not know it.
    pub fn state(&self, patch: &str) -> Result<Option<PatchState>, LivepatchError> {
        let dir = self.dir(patch);
        let Some(enabled) = read_flag(&dir.join("enabled"))? else {
            return Ok(None);
        };
        let Some(transition) = read_flag(&dir.join("transition"))? else {
            return Ok(None);
        };
        Ok(Some(PatchState {
            name: patch.to_string(),
            enabled,
            transition,
        }))
    }

    /// Writes `0` to `enabled`: starts the switch back to the code before
    /// this patch (or reverses a transition under way).
    pub fn disable(&self, patch: &str) -> Result<(), LivepatchError> {
        let path = self.dir(patch).join("enabled");
        std::fs::write(&path, "0").map_err(io_err("write", &path))
    }

    /// Writes `1` to `signal` where the kernel has that file (4.20 to
    /// 5.x): it sends a fake signal to user tasks and wakes kernel threads
    /// that still hold up the transition. Later kernels dropped the file
    /// and do this themselves every 15 s of a transition; then this
    /// returns `Ok(false)` (see [`kmsg_count`] to see that they did).
    pub fn signal(&self, patch: &str) -> Result<bool, LivepatchError> {
        let path = self.dir(patch).join("signal");
        if !path.exists() {
            return Ok(false);
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        std::io::Write::write_all(&mut f, b"1").map_err(io_err("write", &path))?;
        Ok(true)
    }
}

/// What the kernel logs when it signals the tasks that hold up a
/// transition (6.1: after 15 s, then every 15 s).
pub const SIGNAL_MESSAGE: &str = "livepatch: signaling remaining tasks";

/// How many records of the kernel log (`/dev/kmsg`, still in the ring
/// buffer) contain `needle`; 0 if the log cannot be read.
pub fn kmsg_count(kmsg: &Path, needle: &str) -> usize {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(kmsg)
    else {
        return 0;
    };
    let mut n = 0;
    // One record per read; EAGAIN at the end, EPIPE when records were
    // overwritten while reading (skip on).
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(len) => {
                if buf[..len]
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes())
                {
                    n += 1;
                }
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PIPE.raw_os_error()) => continue,
            Err(_) => break,
        }
    }
    n
}

/// Reads a sysfs boolean; `None` when the file does not exist.
fn read_flag(path: &Path) -> Result<Option<bool>, LivepatchError> {
    let s = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    match s.trim() {
        "0" => Ok(Some(false)),
        "1" => Ok(Some(true)),
        other => Err(LivepatchError::Unexpected {
            path: path.to_path_buf(),
            content: other.to_string(),
        }),
    }
}

/// A task that has not yet switched to the transition's target state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlockingTask {
    /// Thread group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// `comm`.
    pub comm: String,
    /// `/proc/<pid>/task/<tid>/stack`, one frame per line (empty if the
    /// kernel would not tell).
    pub stack: Vec<String>,
}

/// Tasks under `proc_root` (normally `/proc`) whose `patch_state` is not
/// `target` (1 while patching, 0 while unpatching). Tasks that exit while
/// being read are skipped.
pub fn blocking_tasks(proc_root: &Path, target: i32) -> Vec<BlockingTask> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir(proc_root) else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let dir = t.path();
            let Ok(state) = std::fs::read_to_string(dir.join("patch_state")) else {
                continue;
            };
            let Ok(state) = state.trim().parse::<i32>() else {
                continue;
            };
            // -1: no transition for this task (none under way).
            if state == -1 || state == target {
                continue;
            }
            let comm = std::fs::read_to_string(dir.join("comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            let stack = std::fs::read_to_string(dir.join("stack"))
                .map(|s| s.lines().map(|l| l.trim().to_string()).collect())
                .unwrap_or_default();
            out.push(BlockingTask {
                pid,
                tid,
                comm,
                stack,
            });
        }
    }
    out.sort_by_key(|t| (t.pid, t.tid));
    out
}

/// Loads a kernel module from an open file (a memfd works too) with no
/// parameters. Errors name the module and explain the usual errno values.
pub fn load_module(name: &str, file: &std::fs::File) -> Result<(), LivepatchError> {
    let params = CString::default();
    rustix::system::finit_module(file, &params, 0).map_err(|e| {
        let why = match e {
            rustix::io::Errno::EXIST => "a module of this name is already loaded".to_string(),
            rustix::io::Errno::PERM => {
                "operation not permitted (not root, modules disabled, or lockdown refuses unsigned modules)"
                    .to_string()
            }
            rustix::io::Errno::KEYREJECTED | rustix::io::Errno::NOKEY => {
                "the module's signature was rejected (Secure Boot needs a module signed with an enrolled key)".to_string()
            }
            rustix::io::Errno::NOEXEC => "not a valid module for this kernel".to_string(),
            rustix::io::Errno::NOENT => {
                "an unknown symbol or a missing livepatch target (see dmesg)".to_string()
            }
            rustix::io::Errno::INVAL => {
                "the kernel refused the module (wrong kernel, bad relocation or livepatch conflict; see dmesg)".to_string()
            }
            rustix::io::Errno::BUSY => {
                "another live patch is still in transition".to_string()
            }
            other => format!("{}", io::Error::from(other)),
        };
        LivepatchError::Load {
            module: name.to_string(),
            reason: format!("{why} ({})", io::Error::from(e)),
        }
    })
}

/// Unloads a module without waiting for users (`O_NONBLOCK`): a module in
/// use is an error rather than a hang.
pub fn unload_module(name: &str) -> Result<(), LivepatchError> {
    let c = CString::new(name).map_err(|_| LivepatchError::BadName(name.to_string()))?;
    rustix::system::delete_module(&c, libc_o_nonblock()).map_err(|e| LivepatchError::Unload {
        module: name.to_string(),
        source: e.into(),
    })
}

fn libc_o_nonblock() -> i32 {
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}

/// Whether a module of this name is loaded (`/sys/module/<name>` exists).
pub fn module_loaded(sys_root: &Path, name: &str) -> bool {
    sys_root.join("module").join(name).exists()
}

/// The kernel's taint flags (`/proc/sys/kernel/tainted`).
pub fn tainted(proc_root: &Path) -> Result<u64, LivepatchError> {
    let path = proc_root.join("sys/kernel/tainted");
    let s = std::fs::read_to_string(&path).map_err(io_err("read", &path))?;
    s.trim().parse().map_err(|_| LivepatchError::Unexpected {
        path,
        content: s.trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_patch(root: &Path, name: &str, enabled: &str, transition: &str) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("enabled"), enabled).unwrap();
        std::fs::write(d.join("transition"), transition).unwrap();
    }

    #[test]
    fn lists_patches_and_reads_flags() {
        let t = tempfile::tempdir().unwrap();
        fake_patch(t.path(), "b", "1\n", "0\n");
        fake_patch(t.path(), "a", "0\n", "1\n");
        let lp = Livepatch::new(t.path());
        let p = lp.patches().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "a");
        assert!(!p[0].enabled && p[0].transition);
        assert!(p[1].enabled && !p[1].transition);
        assert_eq!(lp.state("missing").unwrap(), None);
    }

    #[test]
    fn garbage_in_a_flag_names_the_file() {
        let t = tempfile::tempdir().unwrap();
        fake_patch(t.path(), "x", "maybe", "0");
        let err = Livepatch::new(t.path()).state("x").unwrap_err();
        assert!(err.to_string().contains("x/enabled"), "{err}");
    }

    #[test]
    fn missing_livepatch_dir_means_no_patches() {
        let lp = Livepatch::new("/nonexistent/livepatch");
        assert!(lp.patches().unwrap().is_empty());
    }

    #[test]
    fn blocking_tasks_are_those_not_in_the_target_state() {
        let t = tempfile::tempdir().unwrap();
        for (pid, tid, state, comm) in [
            (1, 1, "-1", "init"),
            (7, 7, "0", "stuck"),
            (7, 8, "1", "fine"),
        ] {
            let d = t.path().join(format!("{pid}/task/{tid}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("patch_state"), format!("{state}\n")).unwrap();
            std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(d.join("stack"), "[<0>] foo+0x1/0x2\n[<0>] bar+0x3/0x4\n").unwrap();
        }
        let b = blocking_tasks(t.path(), 1);
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].pid, b[0].tid, b[0].comm.as_str()), (7, 7, "stuck"));
        assert_eq!(b[0].stack.len(), 2);
        assert!(blocking_tasks(t.path(), 0).iter().any(|t| t.comm == "fine"));
    }
}
