//! Applying a level as a journaled sequence of steps: intent (space and
//! audit log checked, the journal written), staged (bundle cached, level
//! known to the state), loaded, transitioned, checked (health), committed
//! (the state says the level is active, the journal removed). Each step is
//! recorded before the agent goes on, so `reconcile` can finish or undo an
//! apply that stopped anywhere; [`Agent::finish`] is the part both share.

use std::time::{Duration, Instant};

use bundle::Manifest;
use kernel::livepatch;
use kernel::module_id::{Comparison, ModuleNotes};

use super::{
    describe_foreign, describe_tasks, load, ms, peak_rss_kib, run_health_command, unload_when_free,
    waited_long, Agent, AgentError, ApplyReport, Foreign, EXPECTED_TAINT,
};
use crate::audit;
use crate::journal::{Journal, Previous, Step};
use crate::state::{self, Applied, KernelState, LevelRecord, Skipped};

/// Room an apply needs in the state directory beyond the bundle: the
/// journal, the state, the scanner files and the audit entries, each
/// written whole beside its old copy.
const SPACE_BEYOND_BUNDLE: u64 = 256 << 10;
/// And per CVE the level lists: its statement in `vex.json` (some 600
/// bytes) beside the old file's.
const SPACE_PER_CVE: u64 = 2 << 10;

/// What is known before anything changes.
struct Plan {
    /// The level active before.
    before: Option<(u32, String)>,
    /// Foreign live patches the level will replace (allowed).
    replaced_foreign: Vec<String>,
    /// A module of the level's name, left by a replaced level, to remove.
    stale_module: bool,
    notes: Vec<String>,
}

/// What the steps after the load did.
pub(super) struct Finished {
    pub signalled: bool,
    pub transition_ms: f64,
    pub unload_ms: f64,
    pub notes: Vec<String>,
}

/// The fault injection the guest tests use to stop an apply at an exact
/// step: `NOREBOOT_FAULT_KILL_AFTER=STEP` makes the agent SIGKILL itself
/// right after recording that step (as `kill -9` from outside would, but
/// at a known point). Only the environment of a root process can set it,
/// which could as well kill the agent itself.
fn fault_point(step: Step) {
    if std::env::var_os("NOREBOOT_FAULT_KILL_AFTER").is_some_and(|s| s == step.as_str()) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

impl Agent {
    /// Applies a verified bundle and audits the outcome under `action`.
    pub fn apply(
        &self,
        bytes: &[u8],
        vb: &bundle::VerifiedBundle,
        action: &str,
        foreign: Foreign,
    ) -> Result<ApplyReport, AgentError> {
        let started = Instant::now();
        let m = &vb.manifest;
        let r = self.apply_inner(bytes, vb, started, true, foreign, action);
        match &r {
            Ok(rep) => {
                let result = if rep.changed { "ok" } else { "no-op" };
                let mut detail = format!(
                    "from level {}; load {:.1} ms, transition {:.1} ms",
                    rep.previous, rep.load_ms, rep.transition_ms
                );
                if rep.signalled {
                    detail.push_str("; blocking tasks were signalled");
                }
                for n in &rep.notes {
                    detail.push_str("; ");
                    detail.push_str(n);
                }
                self.log(action, m.level, &m.name, result, started, detail)?;
                if !rep.replaced_foreign.is_empty() {
                    self.log(
                        "replace-foreign",
                        m.level,
                        &m.name,
                        "ok",
                        started,
                        format!(
                            "level {} replaced foreign live patches {}, allowed by --replace-foreign",
                            m.level,
                            rep.replaced_foreign.join(", ")
                        ),
                    )?;
                }
            }
            Err(e) => {
                let result = match e {
                    AgentError::Refused(_) => "refused",
                    AgentError::RolledBack(_) => "rolled-back",
                    _ => "failed",
                };
                // The action's own error is the one to report; a log
                // that cannot record it (a full disk) is said beside it.
                if let Err(le) = self.log(action, m.level, &m.name, result, started, e.to_string())
                {
                    return Err(e.with_note(format!("the audit log could not record this: {le}")));
                }
            }
        }
        r
    }

    /// The steps. `check_health: false` when putting a previous level back
    /// after a failed health check: that level passed its own check
    /// before, and checking it again with the same failing command would
    /// bounce between the two levels for ever.
    pub(super) fn apply_inner(
        &self,
        bytes: &[u8],
        vb: &bundle::VerifiedBundle,
        started: Instant,
        check_health: bool,
        foreign: Foreign,
        action: &str,
    ) -> Result<ApplyReport, AgentError> {
        let m = &vb.manifest;
        self.check_kernel(m)?;
        let mut st = self.state()?;
        st.release = self.identity.release.clone();
        let plan = self.plan(vb, &st, foreign)?;
        let previous = plan.before.as_ref().map_or(0, |b| b.0);
        if plan.before.as_ref().is_some_and(|(_, n)| *n == m.name) {
            return Ok(ApplyReport {
                level: m.level,
                name: m.name.clone(),
                previous,
                changed: false,
                signalled: false,
                load_ms: 0.0,
                transition_ms: 0.0,
                total_ms: ms(started.elapsed()),
                unload_ms: 0.0,
                agent_overhead_ms: ms(started.elapsed()),
                peak_rss_kib: peak_rss_kib(),
                replaced_foreign: Vec::new(),
                notes: vec!["already active".into()],
            });
        }
        let mut j = self.intent(m, &plan, action, check_health, bytes.len())?;
        let mut notes = plan.notes;
        if let Err(e) = self.stage(&mut st, m, bytes, plan.stale_module, &mut j, &mut notes) {
            self.drop_journal();
            return Err(e);
        }
        let load_ms = self.load_step(&mut j, m, &vb.module)?;
        let done = self.finish(&mut j, &mut st, m, foreign)?;
        notes.extend(done.notes);
        let total_ms = ms(self.started.elapsed().max(started.elapsed()));
        Ok(ApplyReport {
            level: m.level,
            name: m.name.clone(),
            previous,
            changed: true,
            signalled: done.signalled,
            load_ms,
            transition_ms: done.transition_ms,
            total_ms,
            unload_ms: done.unload_ms,
            agent_overhead_ms: (total_ms - load_ms - done.transition_ms - done.unload_ms).max(0.0),
            peak_rss_kib: peak_rss_kib(),
            replaced_foreign: plan.replaced_foreign,
            notes,
        })
    }

    /// Everything that can refuse the level, decided from what the kernel
    /// and the state show; nothing changes.
    fn plan(
        &self,
        vb: &bundle::VerifiedBundle,
        st: &KernelState,
        foreign: Foreign,
    ) -> Result<Plan, AgentError> {
        let m = &vb.manifest;
        // Our patch names must be known before the kernel shows them.
        if let Some(other) = st.levels.get(&m.level).filter(|r| r.name != m.name) {
            return Err(AgentError::Refused(format!(
                "level {} is already cached as patch {}, this bundle names it {}",
                m.level, other.name, m.name
            )));
        }
        let all = self.lp.patches().map_err(AgentError::failed)?;
        if let Some(busy) = all.iter().find(|p| p.transition) {
            return Err(AgentError::Failed(format!(
                "live patch {} is still in transition; try again when it has finished",
                busy.name
            )));
        }
        let live = self.live_patches(st)?;
        let mut notes = Vec::new();
        // The kernel cannot load a second module of this name, so even
        // --replace-foreign cannot help; nor may the agent unload it.
        if let Some(f) = live.foreign.iter().find(|f| f.name == m.name) {
            return Err(AgentError::Refused(format!(
                "a live patch named {} is loaded that is not level {} ({}); the kernel cannot load a second module of that name: disable it ({}/enabled) and unload it first",
                f.name,
                m.level,
                f.why,
                self.lp.dir(&f.name).display()
            )));
        }
        let replaced_foreign: Vec<String> = live.foreign.iter().map(|f| f.name.clone()).collect();
        if !live.foreign.is_empty() {
            if foreign == Foreign::Refuse {
                return Err(AgentError::Refused(format!(
                    "foreign live patches are loaded: {}. Level {} replaces live patches atomically: loading it would disable every other live patch, these too, and undo whatever they fix. Remove them, or apply with --replace-foreign to replace them",
                    describe_foreign(&live.foreign),
                    m.level
                )));
            }
            notes.push(format!(
                "replacing foreign live patches {} (--replace-foreign); their modules stay loaded",
                replaced_foreign.join(", ")
            ));
        }
        // A module of this name without a live patch is what a replaced
        // level leaves behind; it cannot be enabled again, only reloaded.
        // One that is not a level's module is not ours to remove.
        let stale_module = livepatch::module_loaded(&self.cfg.kernel.sys, &m.name)
            && !all.iter().any(|p| p.name == m.name);
        if stale_module {
            let this = ModuleNotes::from_module(&vb.module).unwrap_or_default();
            let same = ModuleNotes::loaded(&self.cfg.kernel.sys, &m.name)
                .map(|n| n.compare_with_file(&this) == Comparison::Same)
                .unwrap_or(false);
            if !same {
                if let Err(why) = self.identify(&m.name, st) {
                    return Err(AgentError::Refused(format!(
                        "a module named {} is loaded that is not level {} ({why}); the kernel cannot load a second module of that name: unload it first",
                        m.name, m.level
                    )));
                }
            }
        }
        Ok(Plan {
            before: live.active(),
            replaced_foreign,
            stale_module,
            notes,
        })
    }

    /// Step 1: room for everything the apply writes, an audit log that
    /// takes entries, and the journal on disk — all before anything
    /// changes, so a full disk or a broken log refuses the apply whole.
    fn intent(
        &self,
        m: &Manifest,
        plan: &Plan,
        action: &str,
        check_health: bool,
        bundle_len: usize,
    ) -> Result<Journal, AgentError> {
        let root = self.store.root();
        let needed = bundle_len as u64 + SPACE_BEYOND_BUNDLE + SPACE_PER_CVE * m.cves.len() as u64;
        state::check_free_space(root, needed).map_err(|e| {
            AgentError::Failed(format!(
                "level {} not applied, nothing changed: {e}",
                m.level
            ))
        })?;
        self.audit.check_writable().map_err(|e| {
            AgentError::Failed(format!(
                "level {} not applied, nothing changed: the audit log cannot take entries: {e}",
                m.level
            ))
        })?;
        let j = Journal {
            level: m.level,
            name: m.name.clone(),
            boot_id: state::boot_id(&self.cfg.kernel.proc),
            at: audit::now(),
            step: Step::Intent,
            action: action.to_string(),
            previous: plan.before.as_ref().map(|(level, name)| Previous {
                level: *level,
                name: name.clone(),
            }),
            taint_before: None,
            pid: std::process::id(),
            check_health,
            extra: Default::default(),
        };
        self.journal().write(&j).map_err(|e| {
            AgentError::Failed(format!(
                "level {} not applied, nothing changed: the apply journal cannot be written: {e}",
                m.level
            ))
        })?;
        fault_point(Step::Intent);
        Ok(j)
    }

    /// Step 2: the bundle cached, the level known to the state (so the
    /// loaded module can be recognised as ours by any later agent).
    fn stage(
        &self,
        st: &mut KernelState,
        m: &Manifest,
        bytes: &[u8],
        stale_module: bool,
        j: &mut Journal,
        notes: &mut Vec<String>,
    ) -> Result<(), AgentError> {
        if stale_module {
            livepatch::unload_module(&m.name).map_err(AgentError::failed)?;
            notes.push(format!("removed stale module {}", m.name));
        }
        self.forget_notes(m.level);
        self.store
            .save_bundle(&self.build_id, m.level, bytes)
            .map_err(AgentError::failed)?;
        st.levels.entry(m.level).or_insert_with(|| LevelRecord {
            name: m.name.clone(),
            applied_at: None,
        });
        self.save_state(st)?;
        self.advance(j, Step::Staged)
    }

    /// Step 3: the module to the kernel. The journal says `loading` first
    /// (with the taint flags before), so a crash in the load is the crash
    /// guard's; a load the kernel refused leaves nothing to undo.
    fn load_step(&self, j: &mut Journal, m: &Manifest, module: &[u8]) -> Result<f64, AgentError> {
        j.taint_before = Some(livepatch::tainted(&self.cfg.kernel.proc).unwrap_or(0));
        if let Err(e) = self.advance(j, Step::Loading) {
            self.drop_journal();
            return Err(e);
        }
        let load_start = Instant::now();
        let loaded = load(&m.name, module);
        let load_ms = ms(load_start.elapsed());
        if let Err(e) = loaded {
            self.drop_journal();
            return Err(e);
        }
        self.advance_best_effort(j, Step::Loaded);
        Ok(load_ms)
    }

    /// Steps 4 to 6 for a level whose module the kernel has: its
    /// transition watched to the end (or reversed on a stall), the
    /// replaced level's module unloaded, the health check, the commit.
    /// Also how `reconcile` finishes an apply an agent left unfinished.
    pub(super) fn finish(
        &self,
        j: &mut Journal,
        st: &mut KernelState,
        m: &Manifest,
        foreign: Foreign,
    ) -> Result<Finished, AgentError> {
        let mut notes = Vec::new();
        let t_start = Instant::now();
        let signalled = if j.step < Step::Transitioned {
            match self.watch(&j.name) {
                Ok(s) => s,
                Err(e) => {
                    self.drop_journal();
                    return Err(e);
                }
            }
        } else {
            false
        };
        let transition_ms = ms(t_start.elapsed());
        self.advance_best_effort(j, Step::Transitioned);

        // The replaced level's module stays loaded but is no patch any more.
        let mut unload_ms = 0.0;
        if let Some(old) = j.previous.as_ref().filter(|p| p.name != j.name) {
            if livepatch::module_loaded(&self.cfg.kernel.sys, &old.name)
                && self
                    .lp
                    .state(&old.name)
                    .map_err(AgentError::failed)?
                    .is_none()
            {
                let u = Instant::now();
                let r = livepatch::unload_module(&old.name);
                unload_ms = ms(u.elapsed());
                match r {
                    Ok(()) => notes.push(format!("unloaded replaced module {}", old.name)),
                    Err(e) => notes.push(format!("replaced module {} stays loaded: {e}", old.name)),
                }
            }
        }

        if j.check_health && j.step < Step::Checked {
            if let Err(why) = self.health(&j.name, j.taint_before.unwrap_or(0)) {
                let back =
                    match self.put_back(j.previous.as_ref().map(|p| p.level), &j.name, foreign) {
                        Ok(back) => back,
                        Err(back) => {
                            // The failed level may still run: a later
                            // reconcile must not take it for the wanted one.
                            *st = self.state().unwrap_or_else(|_| st.clone());
                            self.skip(
                                st,
                                j.level,
                                format!("failed its health check: {why}; {back}"),
                            );
                            let _ = self.save_state(st);
                            back
                        }
                    };
                self.drop_journal();
                return Err(AgentError::RolledBack(format!(
                    "level {} failed its health check: {why}; {back}",
                    j.level
                )));
            }
        }
        self.advance_best_effort(j, Step::Checked);
        self.commit(j, st, m)?;
        Ok(Finished {
            signalled,
            transition_ms,
            unload_ms,
            notes,
        })
    }

    /// Step 7: the state says the level is active, the scanner files say
    /// what it fixes, the journal goes. A write that fails here leaves the
    /// journal, so the next command (or the next boot) records the level
    /// the kernel runs instead of putting the old one back.
    fn commit(&self, j: &Journal, st: &mut KernelState, m: &Manifest) -> Result<(), AgentError> {
        let unfinished = |e: &dyn std::fmt::Display| {
            AgentError::Failed(format!(
                "level {} is active and passed its checks, but recording it failed: {e}; {} keeps the apply and the next noreboot command finishes it (free space first if the disk is full)",
                j.level,
                self.journal().path().display()
            ))
        };
        // Re-read: a put-back or an older apply may have written since.
        *st = self.state().map_err(|e| unfinished(&e))?;
        let now = audit::now();
        st.levels
            .entry(j.level)
            .or_insert_with(|| LevelRecord {
                name: j.name.clone(),
                applied_at: None,
            })
            .applied_at = Some(now.clone());
        st.wanted = Some(Applied {
            level: j.level,
            name: j.name.clone(),
            at: now,
        });
        st.skipped.retain(|s| s.level != j.level);
        self.save_state(st).map_err(|e| unfinished(&e))?;
        self.write_scanner_files(Some(m))
            .map_err(|e| unfinished(&e))?;
        self.journal().clear().map_err(|e| unfinished(&e))
    }

    /// Records a step; failing, the apply stops (nothing of this step
    /// happened yet).
    fn advance(&self, j: &mut Journal, step: Step) -> Result<(), AgentError> {
        j.step = step;
        self.journal().write(j).map_err(|e| {
            AgentError::Failed(format!(
                "level {}: the apply journal cannot be written ({e}); stopped before step {}",
                j.level,
                step.as_str()
            ))
        })?;
        fault_point(step);
        Ok(())
    }

    /// Records a step that already happened in the kernel. Failing, the
    /// journal stays at an earlier step, which every later reader treats
    /// more cautiously (it looks at the kernel, or skips the level at the
    /// next boot), so the apply goes on.
    fn advance_best_effort(&self, j: &mut Journal, step: Step) {
        if j.step >= step {
            return;
        }
        let prev = j.step;
        j.step = step;
        if self.journal().write(j).is_err() {
            j.step = prev;
        }
        fault_point(step);
    }

    /// The apply ended with nothing of it in the kernel: the journal goes
    /// (the level stays cached and known, which is harmless).
    pub(super) fn drop_journal(&self) {
        // Best effort: a journal that cannot be removed is found by the
        // next command, which looks at the kernel and ends it the same way.
        let _ = self.journal().clear();
    }

    /// Takes a level out of play (crash guard, failed health check that
    /// could not be undone), keeping the reason; the caller saves.
    pub(super) fn skip(&self, st: &mut KernelState, level: u32, reason: String) {
        if !st.is_skipped(level) {
            st.skipped.push(Skipped {
                level,
                reason,
                at: audit::now(),
            });
        }
        if st.wanted.as_ref().is_some_and(|w| w.level == level) {
            st.wanted = None;
        }
    }

    /// Waits for the transition of a freshly loaded patch; on a stall,
    /// signals, then reverses it and unloads the module. Ok(signalled).
    fn watch(&self, name: &str) -> Result<bool, AgentError> {
        let t = &self.cfg.transition;
        let start = Instant::now();
        let kmsg = self.cfg.kernel.dev.join("kmsg");
        let kernel_signals = livepatch::kmsg_count(&kmsg, livepatch::SIGNAL_MESSAGE);
        let mut signalled = false;
        let mut asked = false;
        let mut poll = Duration::from_micros(500);
        loop {
            let s = self
                .lp
                .state(name)
                .map_err(AgentError::failed)?
                .ok_or_else(|| {
                    AgentError::Failed(format!(
                        "module {name} loaded but the kernel shows no live patch of that name (is it a livepatch module?)"
                    ))
                })?;
            if !s.transition {
                if s.enabled {
                    if !signalled && waited_long(start) {
                        signalled = livepatch::kmsg_count(&kmsg, livepatch::SIGNAL_MESSAGE)
                            > kernel_signals;
                    }
                    return Ok(signalled);
                }
                let _ = livepatch::unload_module(name);
                return Err(AgentError::Failed(format!(
                    "live patch {name} was disabled during its transition"
                )));
            }
            let waited = start.elapsed();
            if !asked && waited >= t.signal_after {
                // Kernels without the signal file signal by themselves.
                signalled = self.lp.signal(name).map_err(AgentError::failed)?;
                asked = true;
            }
            if waited >= t.timeout {
                if !signalled {
                    signalled =
                        livepatch::kmsg_count(&kmsg, livepatch::SIGNAL_MESSAGE) > kernel_signals;
                }
                let tasks = livepatch::blocking_tasks(&self.cfg.kernel.proc, 1);
                let undone = self.reverse(name);
                return Err(AgentError::RolledBack(format!(
                    "transition of {name} did not finish within {}{}; {}; blocking tasks: {}",
                    humantime::format_duration(t.timeout),
                    if signalled {
                        " (blocking tasks were signalled)"
                    } else {
                        " (blocking tasks were not signalled: the kernel does so after 15 s)"
                    },
                    undone,
                    describe_tasks(&tasks)
                )));
            }
            std::thread::sleep(poll);
            poll = (poll * 2).min(Duration::from_millis(20));
        }
    }

    /// Reverses a patch in transition (or disables an active one), waits
    /// for that, and unloads its module. Says what happened.
    pub(super) fn reverse(&self, name: &str) -> String {
        if let Err(e) = self.lp.disable(name) {
            return format!("disabling {name} failed: {e}");
        }
        let deadline = Instant::now() + self.cfg.transition.timeout;
        let mut signalled = false;
        loop {
            match self.lp.state(name) {
                Ok(None) => break,
                Ok(Some(s)) if !s.transition && !s.enabled => break,
                Ok(_) => {}
                Err(e) => return format!("watching the reversal of {name} failed: {e}"),
            }
            if Instant::now() >= deadline {
                if !signalled {
                    let _ = self.lp.signal(name);
                    signalled = true;
                    continue;
                }
                return format!(
                    "the reversal of {name} is still in transition; module left loaded"
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match unload_when_free(name) {
            Ok(()) => format!("reversed and unloaded {name}, the previous level is active"),
            Err(e) => format!("reversed {name} but could not unload it: {e}"),
        }
    }

    /// After a failed health check: the previous level back (from the
    /// cache), or no patch if there was none.
    /// `Err` when the failed level may still run.
    fn put_back(
        &self,
        previous: Option<u32>,
        failed: &str,
        foreign: Foreign,
    ) -> Result<String, String> {
        match previous {
            Some(level) => {
                let res = self.keys().and_then(|keys| {
                    let path = self.store.bundle_path(&self.build_id, level);
                    let (bytes, vb) = self.open_file(&path, &keys)?;
                    let action = "put-back";
                    self.apply_inner(&bytes, &vb, Instant::now(), false, foreign, action)
                });
                match res {
                    Ok(_) => {
                        let _ = unload_when_free(failed);
                        Ok(format!("level {level} is active again"))
                    }
                    Err(e) => Err(format!("putting level {level} back failed: {e}")),
                }
            }
            None => {
                let what = self.reverse(failed);
                // Reversed means the level no longer runs, unloaded or not.
                if what.starts_with("reversed ") {
                    Ok(what)
                } else {
                    Err(what)
                }
            }
        }
    }

    /// Checks a level that completed its transition.
    fn health(&self, name: &str, taint_before: u64) -> Result<(), String> {
        match self.lp.state(name) {
            Ok(Some(s)) if s.enabled && !s.transition => {}
            Ok(s) => return Err(format!("patch state after transition: {s:?}")),
            Err(e) => return Err(e.to_string()),
        }
        if let Ok(after) = livepatch::tainted(&self.cfg.kernel.proc) {
            let new = after & !taint_before & !EXPECTED_TAINT;
            if new != 0 {
                return Err(format!(
                    "the kernel became tainted (new flags {new:#x}: a WARN or oops while patching)"
                ));
            }
        }
        let h = &self.cfg.health;
        if !h.command.is_empty() {
            run_health_command(&h.command, h.command_timeout)?;
        }
        Ok(())
    }
}
