//! The audit log: one JSON object per line, appended with `O_APPEND` and
//! fsync'ed before the agent reports success, so an acknowledged entry
//! survives a crash. A line torn by a crash mid-write is skipped (and
//! counted) when reading; it never hides the entries around it. The log
//! is tamper-evident: each entry carries its sequence number and the
//! SHA-256 of the line before it, and a head file beside the log
//! (`audit.head`) holds the last entry's number and hash, so an edited,
//! removed, truncated or emptied log fails `noreboot log --verify`.

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
    /// Its number in the log, from 1 (0: written by an agent before the
    /// chain; set by [`AuditLog::append`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// SHA-256 (hex) of the log's previous line, empty for the first
    /// (set by [`AuditLog::append`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prev: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The head file's contents: the last entry's number and line hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Head {
    seq: u64,
    hash: String,
}

fn line_hash(line: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(line))
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

/// What [`AuditLog::verify`] found.
#[derive(Debug, Default, Serialize)]
pub struct Verified {
    /// Chained entries checked.
    pub checked: usize,
    /// Entries from before the chain (an older agent's), not checkable.
    pub unchained: usize,
    /// Every break, in log order; empty: intact.
    pub problems: Vec<String>,
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

    /// Fails unless the log can be opened for appending (created if
    /// missing): checked before an action touches the kernel, so a log
    /// that cannot take the action's entry stops it while nothing changed.
    pub fn check_writable(&self) -> Result<(), AuditError> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map(drop)
            .map_err(|source| AuditError {
                path: self.path.clone(),
                source,
            })
    }

    fn head_path(&self) -> PathBuf {
        self.path.with_extension("head")
    }

    /// Appends one entry, chained to the line before it, fsyncs it and
    /// moves the head forward. A torn last line left by a crash is first
    /// closed with a newline so the new entry stays readable (it is
    /// chained to the torn line, which verification then reports).
    pub fn append(&self, e: &Entry) -> Result<(), AuditError> {
        let err = |source| AuditError {
            path: self.path.clone(),
            source,
        };
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(e)),
        };
        let last = text
            .split(|b| *b == b'\n')
            .rfind(|l| !l.iter().all(|b| b.is_ascii_whitespace()));
        let last_seq = last
            .and_then(|l| serde_json::from_slice::<Entry>(l).ok())
            .map_or(0, |e| e.seq);
        // The head knows the number even when the last line is torn.
        let head_seq = std::fs::read(self.head_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Head>(&b).ok())
            .map_or(0, |h| h.seq);
        let mut e = e.clone();
        e.seq = last_seq.max(head_seq) + 1;
        e.prev = last.map(line_hash).unwrap_or_default();
        let body = serde_json::to_string(&e).map_err(|e| err(std::io::Error::other(e)))?;
        let mut line = format!("{body}\n");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(err)?;
        if !text.is_empty() && text.last() != Some(&b'\n') {
            line.insert(0, '\n');
        }
        f.write_all(line.as_bytes()).map_err(err)?;
        f.sync_data().map_err(err)?;
        let head = Head {
            seq: e.seq,
            hash: line_hash(body.as_bytes()),
        };
        let data = serde_json::to_vec(&head).map_err(|e| err(std::io::Error::other(e)))?;
        crate::state::write_atomic(&self.head_path(), &data, 0o644)
            .map_err(|e| err(std::io::Error::other(e.to_string())))
    }

    /// Checks the chain: every line's hash in the next entry, numbers one
    /// after another, the last entry the one the head names. Returns what
    /// holds (entries checked; those from before the chain) or every break
    /// found.
    pub fn verify(&self) -> Result<Verified, AuditError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(AuditError {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let head = match std::fs::read(self.head_path()) {
            Ok(b) => Some(serde_json::from_slice::<Head>(&b).ok()),
            Err(_) => None,
        };
        let mut v = Verified::default();
        let mut prev: Option<(&[u8], u64)> = None;
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            let n = i + 1;
            let Ok(e) = serde_json::from_slice::<Entry>(line) else {
                v.problems
                    .push(format!("line {n}: not an entry (torn or altered)"));
                prev = Some((line, prev.map_or(0, |p| p.1)));
                continue;
            };
            if e.seq == 0 {
                v.unchained += 1;
                prev = Some((line, 0));
                continue;
            }
            let want_prev = prev.map(|p| line_hash(p.0)).unwrap_or_default();
            if e.prev != want_prev {
                v.problems.push(format!(
                    "line {n} (entry {}): the line before it is not the one it was written after (removed, inserted or changed)",
                    e.seq
                ));
            }
            if let Some((_, s)) = prev.filter(|p| p.1 > 0) {
                if e.seq != s + 1 {
                    v.problems
                        .push(format!("line {n}: entry {} follows entry {s}", e.seq));
                }
            }
            v.checked += 1;
            prev = Some((line, e.seq));
        }
        match (head, prev) {
            (None, None) => {}
            (None, Some(_)) if v.checked == 0 => {}
            (None, Some(_)) => v.problems.push(format!(
                "{} is missing: the log's end cannot be checked",
                self.head_path().display()
            )),
            (Some(None), _) => v
                .problems
                .push(format!("{} is not readable", self.head_path().display())),
            (Some(Some(h)), last) => {
                let last_hash = last.map(|l| line_hash(l.0)).unwrap_or_default();
                let last_seq = last.map_or(0, |l| l.1);
                if h.seq != last_seq || h.hash != last_hash {
                    v.problems.push(format!(
                        "the log ends at entry {last_seq}, but entry {} was written last: entries were removed or the log was emptied or replaced",
                        h.seq
                    ));
                }
            }
        }
        Ok(v)
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
            seq: 0,
            prev: String::new(),
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
        // The chain notices the torn line, and only it.
        let v = log.verify().unwrap();
        assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
        assert!(
            v.problems[0].starts_with("line 2: not an entry"),
            "{:?}",
            v.problems
        );
    }

    /// Each way of tampering is found: an edited entry, a removed one, a
    /// truncated log, an emptied one; an intact log verifies.
    #[test]
    fn the_chain_finds_edits_removals_truncation_and_emptying() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("audit.log");
        let log = AuditLog::new(&path);
        for l in 1..=4 {
            log.append(&entry("apply", l)).unwrap();
        }
        let v = log.verify().unwrap();
        assert_eq!((v.checked, v.problems.len()), (4, 0), "{:?}", v.problems);
        let original = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = original.lines().collect();
        let check = |text: String, what: &str, expect: &str| {
            std::fs::write(&path, text).unwrap();
            let v = log.verify().unwrap();
            assert!(
                v.problems.iter().any(|p| p.contains(expect)),
                "{what}: {:?}",
                v.problems
            );
        };
        check(
            original.replace("\"level\":2", "\"level\":9"),
            "edited",
            "line 3 (entry 3): the line before it is not the one",
        );
        check(
            format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3]),
            "removed",
            "entry 3 follows entry 1",
        );
        check(
            format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2]),
            "truncated",
            "the log ends at entry 3, but entry 4 was written last",
        );
        check(
            String::new(),
            "emptied",
            "the log ends at entry 0, but entry 4",
        );
        // Put back whole: intact again, and appending goes on from 4.
        std::fs::write(&path, &original).unwrap();
        log.append(&entry("revert", 3)).unwrap();
        let v = log.verify().unwrap();
        assert_eq!((v.checked, v.problems.len()), (5, 0), "{:?}", v.problems);
        assert_eq!(log.read().unwrap().entries[4].seq, 5);
    }
}
