//! Making the recorded state and the kernel agree before a command acts
//! or reports: an apply an agent left unfinished (the journal) is finished
//! when the kernel runs the level, undone when it only half has it, and
//! dropped when the kernel never saw it; after another boot, a level whose
//! apply may have brought the machine down is skipped (the crash guard).
//! Then `boot` re-applies the level to keep.

use std::time::Instant;

use kernel::livepatch;
use serde::Serialize;

use super::{unload_when_free, Agent, AgentError, ApplyReport, Foreign};
use crate::audit;
use crate::journal::{Journal, Step};
use crate::state::{self, Applied, StateError};

/// What reconciling found and did.
#[derive(Debug, Default, Serialize)]
pub struct Reconciled {
    /// A level the crash guard took out of play.
    pub skipped: Option<u32>,
    /// What was found and done, one line each.
    pub notes: Vec<String>,
}

/// What `boot` did.
#[derive(Debug, Default, Serialize)]
pub struct BootReport {
    /// The level the crash guard skipped.
    pub skipped: Option<u32>,
    /// The level re-applied.
    pub applied: Option<ApplyReport>,
    /// Notes.
    pub notes: Vec<String>,
}

impl Agent {
    /// Brings the state in line with the kernel; run by every command that
    /// changes or reports the patch state, holding the agent lock (so an
    /// apply journal found here belongs to an agent that is gone).
    pub fn reconcile(&self, foreign: Foreign) -> Result<Reconciled, AgentError> {
        let started = Instant::now();
        let mut out = Reconciled::default();
        // Holding the lock, no write is under way: a temporary file is
        // what a killed agent left.
        self.store
            .remove_stale_temporaries(&self.build_id)
            .map_err(AgentError::failed)?;
        // The journal is written whole (rename into place), so one that
        // cannot be read was not left by an apply that stopped: it names
        // no level to finish or hold back, and must not hold back every
        // level.
        let journal = match self.journal().read() {
            Ok(j) => j,
            Err(StateError::Corrupt { path, message }) => {
                self.journal().clear().map_err(AgentError::failed)?;
                let note = format!(
                    "the apply journal {} could not be read ({message}) and was removed; it names no level to finish or skip",
                    path.display()
                );
                self.log("reconcile", 0, "", "no-op", started, note.clone())?;
                out.notes.push(note);
                None
            }
            Err(e) => return Err(AgentError::failed(e)),
        };
        if let Some(j) = journal {
            self.resolve(j, foreign, &mut out, started)?;
        }
        self.adopt_running(&mut out, started)?;
        Ok(out)
    }

    /// Ends the apply a journal describes.
    fn resolve(
        &self,
        j: Journal,
        foreign: Foreign,
        out: &mut Reconciled,
        started: Instant,
    ) -> Result<(), AgentError> {
        let what = format!(
            "level {} ({}), {} by pid {} at {}, stopped after step {}",
            j.level,
            j.name,
            j.action,
            j.pid,
            j.at,
            j.step.as_str()
        );
        let now_boot = state::boot_id(&self.cfg.kernel.proc);
        let same_boot = !now_boot.is_empty() && j.boot_id == now_boot;
        if !j.step.touched_kernel() {
            let note =
                format!("an apply of {what}, before the kernel was touched: nothing to undo");
            return self.abandoned(&j, note, out, started);
        }
        if same_boot {
            self.resolve_same_boot(j, &what, foreign, out, started)
        } else {
            self.resolve_other_boot(j, &what, out, started)
        }
    }

    /// The machine went down during the apply: before its health check
    /// passed, the level may be why (the crash guard skips it); after, it
    /// is the level to keep.
    fn resolve_other_boot(
        &self,
        j: Journal,
        what: &str,
        out: &mut Reconciled,
        started: Instant,
    ) -> Result<(), AgentError> {
        let mut st = self.state()?;
        if j.step >= Step::Checked {
            // It passed its checks; the machine went down before it
            // was recorded: it is the level to keep.
            let now = audit::now();
            if let Some(r) = st.levels.get_mut(&j.level) {
                r.applied_at = Some(now.clone());
            }
            st.wanted = Some(Applied {
                level: j.level,
                name: j.name.clone(),
                at: now,
            });
            self.save_state(&st)?;
            self.journal().clear().map_err(AgentError::failed)?;
            let note = format!(
                "the machine went down after an apply of {what}: the level had passed its checks, so it is the level to keep"
            );
            self.log("reconcile", j.level, &j.name, "ok", started, note.clone())?;
            out.notes.push(note);
        } else {
            let reason = format!(
                "crash guard: the machine went down while level {} ({}) was being applied at {} (step {})",
                j.level,
                j.name,
                j.at,
                j.step.as_str()
            );
            self.skip(&mut st, j.level, reason.clone());
            self.save_state(&st)?;
            self.journal().clear().map_err(AgentError::failed)?;
            self.log(
                "crash-guard",
                j.level,
                &j.name,
                "skipped",
                started,
                reason.clone(),
            )?;
            out.skipped = Some(j.level);
            out.notes.push(reason);
        }
        Ok(())
    }

    /// The agent died (or was killed) mid-apply in this boot: what the
    /// kernel has decides — the level runs: finish; only its module is
    /// loaded: remove it; nothing: drop the journal.
    fn resolve_same_boot(
        &self,
        mut j: Journal,
        what: &str,
        foreign: Foreign,
        out: &mut Reconciled,
        started: Instant,
    ) -> Result<(), AgentError> {
        let mut st = self.state()?;
        let patch = self.lp.state(&j.name).map_err(AgentError::failed)?;
        let ours = self.identify(&j.name, &st).ok() == Some(j.level);
        if patch.is_some() && ours {
            let keys = self.keys()?;
            let m = self.cached_manifest(j.level, &keys)?;
            match self.finish(&mut j, &mut st, &m, foreign) {
                Ok(done) => {
                    let mut note = format!(
                        "an agent stopped during an apply of {what}; the kernel runs the level: its apply was finished"
                    );
                    for n in &done.notes {
                        note.push_str("; ");
                        note.push_str(n);
                    }
                    self.log(&j.action, j.level, &j.name, "ok", started, note.clone())?;
                    out.notes.push(note);
                }
                Err(e @ AgentError::RolledBack(_)) => {
                    let note =
                        format!("an agent stopped during an apply of {what}; finishing it: {e}");
                    self.log(
                        &j.action,
                        j.level,
                        &j.name,
                        "rolled-back",
                        started,
                        note.clone(),
                    )?;
                    out.notes.push(note);
                }
                Err(e) => {
                    self.log(
                        &j.action,
                        j.level,
                        &j.name,
                        "failed",
                        started,
                        e.to_string(),
                    )?;
                    return Err(e);
                }
            }
            return Ok(());
        }
        let mut done = "the kernel did not take it".to_string();
        if patch.is_none() && livepatch::module_loaded(&self.cfg.kernel.sys, &j.name) && ours {
            done = match unload_when_free(&j.name) {
                Ok(()) => "its module, loaded but no live patch, was removed".into(),
                Err(e) => {
                    format!("its module is loaded but no live patch and could not be removed: {e}")
                }
            };
        } else if patch.is_some() {
            done =
                "a live patch of that name runs that is not the level's module: left alone".into();
        }
        let note =
            format!("an agent stopped during an apply of {what}; {done}; nothing else to undo");
        self.abandoned(&j, note, out, started)
    }

    /// An apply that left nothing to finish: its journal goes, the note is
    /// audited (as `abandoned`, under the apply's action) and reported.
    fn abandoned(
        &self,
        j: &Journal,
        note: String,
        out: &mut Reconciled,
        started: Instant,
    ) -> Result<(), AgentError> {
        self.journal().clear().map_err(AgentError::failed)?;
        self.log(
            &j.action,
            j.level,
            &j.name,
            "abandoned",
            started,
            note.clone(),
        )?;
        out.notes.push(note);
        Ok(())
    }

    /// With no apply unfinished: a level of ours the kernel runs is the
    /// level to keep, whatever the state said (the kernel is the truth of
    /// what runs; the level is recognised by its module's notes against a
    /// verified bundle). A level the state wants but the kernel does not
    /// run is left to `boot` (that is every state right after a reboot).
    fn adopt_running(&self, out: &mut Reconciled, started: Instant) -> Result<(), AgentError> {
        let mut st = self.state()?;
        let Some((level, name)) = self.active(&st)? else {
            return Ok(());
        };
        if st.wanted.as_ref().map(|w| w.level) == Some(level) {
            return Ok(());
        }
        if let Some(s) = st.skipped.iter().find(|s| s.level == level) {
            out.notes.push(format!(
                "the kernel runs level {level}, which was taken out of play: {}",
                s.reason
            ));
            return Ok(());
        }
        let said = st
            .wanted
            .as_ref()
            .map_or("no level".to_string(), |w| format!("level {}", w.level));
        st.wanted = Some(Applied {
            level,
            name: name.clone(),
            at: audit::now(),
        });
        self.save_state(&st)?;
        let m = self
            .keys()
            .and_then(|k| self.cached_manifest(level, &k))
            .ok();
        self.write_scanner_files(m.as_ref())?;
        let note = format!(
            "the kernel runs level {level} ({name}) but the state said {said}: level {level} recorded as the level to keep"
        );
        self.log("reconcile", level, &name, "ok", started, note.clone())?;
        out.notes.push(note);
        Ok(())
    }

    /// `boot`: reconcile (the crash guard), then the level to keep from
    /// the cache.
    pub fn boot(&self, foreign: Foreign) -> Result<BootReport, AgentError> {
        let started = Instant::now();
        let rec = self.reconcile(foreign)?;
        let st = self.state()?;
        let mut report = BootReport {
            skipped: rec.skipped,
            applied: None,
            notes: rec.notes,
        };
        if self
            .active(&st)?
            .is_some_and(|a| st.wanted.as_ref().map(|w| w.level) == Some(a.0))
        {
            // Already running (boot run twice in one boot, or a level
            // finished just now): nothing to re-apply.
            self.log(
                "boot",
                0,
                "",
                "no-op",
                started,
                "the level to keep is active".into(),
            )?;
            return Ok(report);
        }
        match st.wanted.clone() {
            Some(w) => {
                // The cached bundle of the wanted level may be damaged
                // (truncated by a full disk, say): the newest cached level
                // below it that still verifies and was not skipped keeps
                // the host patched meanwhile.
                let keys = self.keys()?;
                let intact = |l: u32| {
                    let p = self.store.bundle_path(&self.build_id, l);
                    p.exists() && self.open_file(&p, &keys).is_ok()
                };
                let level = if intact(w.level) {
                    w.level
                } else {
                    let below = self
                        .store
                        .cached_levels(&self.build_id)
                        .map_err(AgentError::failed)?
                        .into_iter()
                        .filter(|l| *l < w.level && !st.is_skipped(*l) && intact(*l))
                        .max();
                    match below {
                        Some(l) => {
                            let note = format!(
                                "the cached bundle of level {} does not verify; level {l}, the newest intact one below it, is applied instead",
                                w.level
                            );
                            self.log("boot", w.level, &w.name, "failed", started, note.clone())?;
                            report.notes.push(note);
                            l
                        }
                        None => w.level,
                    }
                };
                let rep = self.apply_cached(level, "boot", foreign)?;
                report.applied = Some(rep);
            }
            None => {
                // A level left by a crash guard skip: the last good one
                // below it, if any was applied before.
                let fallback = st
                    .levels
                    .iter()
                    .filter(|(l, r)| r.applied_at.is_some() && !st.is_skipped(**l))
                    .map(|(l, _)| *l)
                    .filter(|l| report.skipped.is_none_or(|s| *l < s))
                    .max();
                if let (Some(level), Some(_)) = (fallback, report.skipped) {
                    report.applied = Some(self.apply_cached(level, "boot", foreign)?);
                }
            }
        }
        if report.applied.is_none() {
            self.log(
                "boot",
                0,
                "",
                "no-op",
                started,
                "no level to re-apply".into(),
            )?;
        }
        Ok(report)
    }
}
