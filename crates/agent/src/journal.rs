//! The apply journal: one small file per kernel (`loading.json`, the name
//! the crash-guard marker had) that says which level is being applied, from
//! which level, in which boot, and how far the apply got. It is written
//! before the kernel is touched and moved forward after each step, and
//! removed only once the level is recorded as active (or the apply was
//! undone), so an agent killed at any instant, or a machine that went down,
//! leaves enough on disk for the next command to finish or undo the apply.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::{self, StateError};

/// How far an apply got. The order is the order of the steps: a step
/// recorded means every earlier one happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Decided and checked (space, audit log): nothing changed yet.
    Intent,
    /// The bundle is in the cache and the state knows its level.
    Staged,
    /// The module is being given to the kernel: from here on the kernel
    /// may run the level (the crash guard's window opens).
    Loading,
    /// The kernel took the module; its transition is under way.
    Loaded,
    /// The transition finished: every task runs the level.
    Transitioned,
    /// The level passed its health check (the crash guard's window
    /// closes); only recording it as active is left.
    Checked,
}

impl Step {
    /// Whether the kernel may have been touched: a module given to it.
    pub fn touched_kernel(self) -> bool {
        self >= Step::Loading
    }

    /// The word the journal and messages use.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Intent => "intent",
            Step::Staged => "staged",
            Step::Loading => "loading",
            Step::Loaded => "loaded",
            Step::Transitioned => "transitioned",
            Step::Checked => "checked",
        }
    }
}

/// The level that was active when the apply began.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Previous {
    /// Its level.
    pub level: u32,
    /// Its patch (and module) name.
    pub name: String,
}

/// One apply in progress. A crash-guard marker an older agent wrote (level,
/// name, boot id, time) reads as a journal at [`Step::Loading`]: it was
/// written just before the module was loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    /// The level being applied.
    pub level: u32,
    /// Its patch name.
    pub name: String,
    /// `/proc/sys/kernel/random/boot_id` when the apply began: another
    /// boot id later means the machine went down in between.
    pub boot_id: String,
    /// When the apply began (RFC 3339).
    pub at: String,
    /// The last step known to have happened.
    #[serde(default = "loading")]
    pub step: Step,
    /// The action that applies it (`apply`, `update`, `boot`, `revert`):
    /// what the audit entry of a finished or undone apply is filed under.
    #[serde(default = "apply")]
    pub action: String,
    /// The level active before, if any.
    #[serde(default)]
    pub previous: Option<Previous>,
    /// The kernel's taint flags before the load, for the health check of
    /// an apply that is finished by another agent.
    #[serde(default)]
    pub taint_before: Option<u64>,
    /// The agent's process id.
    #[serde(default)]
    pub pid: u32,
    /// Whether the level is checked for health (false when a previous
    /// level is put back after a failed check).
    #[serde(default = "yes")]
    pub check_health: bool,
    /// Fields a newer agent wrote, kept.
    #[serde(flatten)]
    pub extra: std::collections::BTreeMap<String, serde_json::Value>,
}

fn loading() -> Step {
    Step::Loading
}

fn apply() -> String {
    "apply".into()
}

fn yes() -> bool {
    true
}

/// Where the journal of a kernel lives and how it is read and written.
#[derive(Debug, Clone)]
pub struct JournalFile {
    path: PathBuf,
}

impl JournalFile {
    /// The journal of the kernel whose state directory is `kernel_dir`.
    pub fn new(kernel_dir: &Path) -> Self {
        JournalFile {
            path: kernel_dir.join("loading.json"),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal, if an apply is unfinished. A file that cannot be
    /// parsed is [`StateError::Corrupt`]: it is written whole (rename into
    /// place), so it was not left by an apply that stopped.
    pub fn read(&self) -> Result<Option<Journal>, StateError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StateError::Corrupt {
                    path: self.path.clone(),
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::Io {
                op: "read",
                path: self.path.clone(),
                source: e,
            }),
        }
    }

    /// Records the journal durably (on disk before the step it announces).
    pub fn write(&self, j: &Journal) -> Result<(), StateError> {
        let data = serde_json::to_vec(j).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        state::write_atomic(&self.path, &data, 0o644)
    }

    /// Removes the journal: the apply is committed or undone.
    pub fn clear(&self) -> Result<(), StateError> {
        state::remove_durably(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(step: Step) -> Journal {
        Journal {
            level: 2,
            name: "nr_l2".into(),
            boot_id: "b".into(),
            at: "2026-12-05T00:00:00Z".into(),
            step,
            action: "apply".into(),
            previous: Some(Previous {
                level: 1,
                name: "nr_l1".into(),
            }),
            taint_before: Some(0x8000),
            pid: 42,
            check_health: true,
            extra: Default::default(),
        }
    }

    #[test]
    fn written_read_moved_forward_and_cleared() {
        let d = tempfile::tempdir().unwrap();
        let f = JournalFile::new(d.path());
        assert_eq!(f.read().unwrap(), None);
        let mut j = journal(Step::Intent);
        f.write(&j).unwrap();
        assert_eq!(f.read().unwrap(), Some(j.clone()));
        j.step = Step::Transitioned;
        f.write(&j).unwrap();
        assert_eq!(f.read().unwrap().unwrap().step, Step::Transitioned);
        f.clear().unwrap();
        assert_eq!(f.read().unwrap(), None);
        f.clear().unwrap();
        // Nothing but the journal's own file is left in the directory.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_older_agents_marker_is_a_journal_at_loading() {
        let d = tempfile::tempdir().unwrap();
        let f = JournalFile::new(d.path());
        std::fs::write(
            f.path(),
            r#"{"level":3,"name":"nr_l3","boot_id":"x","at":"2026-11-30T00:00:00Z"}"#,
        )
        .unwrap();
        let j = f.read().unwrap().unwrap();
        assert_eq!((j.level, j.step, j.previous), (3, Step::Loading, None));
        assert!(j.step.touched_kernel() && j.check_health);
    }

    #[test]
    fn a_garbled_journal_names_its_file() {
        let d = tempfile::tempdir().unwrap();
        let f = JournalFile::new(d.path());
        std::fs::write(f.path(), "garbled{").unwrap();
        let e = f.read().unwrap_err().to_string();
        assert!(e.contains("loading.json"), "{e}");
    }

    #[test]
    fn steps_are_ordered_and_the_kernel_is_touched_from_loading_on() {
        assert!(Step::Intent < Step::Staged && Step::Staged < Step::Loading);
        assert!(Step::Loaded < Step::Transitioned && Step::Transitioned < Step::Checked);
        assert!(!Step::Staged.touched_kernel() && Step::Loading.touched_kernel());
        let j = journal(Step::Checked);
        let back: Journal = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
        assert_eq!(back, j);
    }
}
