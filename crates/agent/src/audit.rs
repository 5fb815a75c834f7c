//! The audit log: one JSON object per line, appended with `O_APPEND` and
//! fsync'ed before the agent reports success, so an acknowledged entry
//! survives a crash. A line torn by a crash mid-write is skipped (and
//! counted) when reading; it never hides the entries around it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// One entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// RFC 3339 UTC.
    pub time: String,
    /// apply, revert, unload, boot, update, crash-guard, ...
    pub action: String,
    /// The level acted on (0: none).
    #[serde(default)]
    pub level: u32,
    /// The patch name, when one is involved.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// ok, failed, refused, rolled-back, skipped, no-op.
    pub result: String,
    /// Milliseconds the action took.
    pub duration_ms: u64,
    /// Who: user (uid and login name if known) and the parent process.
    pub invoker: String,
    /// Free text: why it failed, what was signalled, etc.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Why the log could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The log file.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

/// Entries read back, and how many lines were unreadable.
#[derive(Debug, Default)]
pub struct Read {
    /// In order.
    pub entries: Vec<Entry>,
    /// Torn or foreign lines skipped.
    pub skipped: usize,
}

impl AuditLog {
    /// The log at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditLog { path: path.into() }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry and fsyncs it. A torn last line left by a crash
    /// is first closed with a newline so the new entry stays readable.
    pub fn append(&self, e: &Entry) -> Result<(), AuditError> {
        let err = |source| AuditError {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_string(e).map_err(|e| err(std::io::Error::other(e)))?;
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(err)?;
        let len = f.metadata().map_err(err)?.len();
        if len > 0 && !ends_with_newline(&self.path, len) {
            line.insert(0, '\n');
        }
        f.write_all(line.as_bytes()).map_err(err)?;
        f.sync_data().map_err(err)
    }

    /// Every readable entry.
    pub fn read(&self) -> Result<Read, AuditError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Read::default()),
            Err(source) => {
                return Err(AuditError {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let mut out = Read::default();
        for line in text.split(|b| *b == b'\n') {
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            match serde_json::from_slice::<Entry>(line) {
                Ok(e) => out.entries.push(e),
                Err(_) => out.skipped += 1,
            }
        }
        Ok(out)
    }
}

fn ends_with_newline(path: &Path, len: u64) -> bool {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return true;
    };
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1)).is_ok()
        && std::io::Read::read_exact(&mut f, &mut b).is_ok()
        && b[0] == b'\n'
}

/// Now as RFC 3339 UTC, seconds.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Who runs this agent: uid, the login name behind sudo if any, and the
/// parent process's command (systemd for the timer, a shell for a person).
pub fn invoker() -> String {
    let uid = rustix::process::getuid().as_raw();
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_default();
    let ppid = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
    let parent = ppid
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut s = format!("uid={uid}");
    if !user.is_empty() {
        s.push_str(&format!(" user={user}"));
    }
    if let Some(p) = ppid {
        s.push_str(&format!(" parent={p}"));
        if !parent.is_empty() {
            s.push_str(&format!("({parent})"));
        }
    }
    s
}

/// Milliseconds of a duration, saturating.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str, level: u32) -> Entry {
        Entry {
            time: now(),
            action: action.into(),
            level,
            name: "p".into(),
            result: "ok".into(),
            duration_ms: 5,
            invoker: invoker(),
            detail: String::new(),
        }
    }

    #[test]
    fn appends_and_reads_back() {
        let t = tempfile::tempdir().unwrap();
        let log = AuditLog::new(t.path().join("audit.log"));
        log.append(&entry("apply", 1)).unwrap();
        log.append(&entry("apply", 2)).unwrap();
        let r = log.read().unwrap();
        assert_eq!(r.entries.len(), 2);
        assert_eq!(r.entries[1].level, 2);
        assert_eq!(r.skipped, 0);
    }

    #[test]
    fn a_torn_line_is_skipped_and_does_not_swallow_the_next_entry() {
        let t = tempfile::tempdir().unwrap();
        let log = AuditLog::new(t.path().join("audit.log"));
        log.append(&entry("apply", 1)).unwrap();
        // A crash in the middle of a write.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap();
        f.write_all(b"{\"time\":\"2026-").unwrap();
        log.append(&entry("revert", 1)).unwrap();
        let r = log.read().unwrap();
        assert_eq!(r.skipped, 1);
        let actions: Vec<_> = r.entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["apply", "revert"]);
    }
}
