//! One agent at a time: an exclusive `flock` on `<state_dir>/lock`, held
//! for the life of the process (the kernel drops it when the process dies,
//! so a crashed agent never leaves a stale lock). The holder writes its pid
//! and command into the file so a second agent can say who it waits for.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

/// The held lock; released on drop.
#[derive(Debug)]
pub struct AgentLock {
    _file: std::fs::File,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another agent kept it for the whole wait.
    #[error("another noreboot holds {path} ({holder}); gave up after waiting {waited}")]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// What the holder wrote: pid and command.
        holder: String,
        /// How long this one waited.
        waited: String,
    },
    /// The lock file could not be used.
    #[error("lock file {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl AgentLock {
    /// Takes the lock at `path`, waiting up to `wait`; `on_wait` is called
    /// once with the holder's description when the lock is busy.
    pub fn acquire(
        path: &Path,
        wait: Duration,
        what: &str,
        on_wait: impl FnOnce(&str),
    ) -> Result<AgentLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let start = Instant::now();
        let mut on_wait = Some(on_wait);
        loop {
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let holder = std::fs::read_to_string(path)
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default();
                    if let Some(f) = on_wait.take() {
                        f(&holder);
                    }
                    if start.elapsed() >= wait {
                        return Err(LockError::Busy {
                            path: path.to_path_buf(),
                            holder,
                            waited: humantime::format_duration(Duration::from_secs(
                                start.elapsed().as_secs(),
                            ))
                            .to_string(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(io(e.into())),
            }
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "pid {} {}", std::process::id(), what).map_err(io)?;
        Ok(AgentLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_taker_waits_then_names_the_holder() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("lock");
        let first = AgentLock::acquire(&p, Duration::ZERO, "apply x", |_| {}).unwrap();
        let mut seen = String::new();
        let err = AgentLock::acquire(&p, Duration::from_millis(120), "status", |h| {
            seen = h.to_string()
        })
        .unwrap_err();
        assert!(seen.contains("apply x"), "{seen}");
        assert!(err.to_string().contains("apply x"), "{err}");
        drop(first);
        AgentLock::acquire(&p, Duration::ZERO, "status", |_| {}).unwrap();
    }
}
