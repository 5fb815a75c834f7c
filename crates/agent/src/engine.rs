//! The agent's actions on the running kernel: apply a verified bundle and
//! watch its transition (signal, then reverse on a stall), check health,
//! revert to a cached level, unload everything of ours, and re-apply at
//! boot behind the crash guard. The invariant every path keeps: after any
//! failure the previously active level is still the active one and no
//! module of a failed level stays loaded.
//!
//! A live patch is ours only when its module is a level this agent
//! verified: the identity notes the kernel shows for the loaded module
//! (`kernel::module_id`) equal those of the module in that level's cached
//! bundle, checked again against the trusted keys. Its name only says
//! which level to compare with. Every other live patch is foreign, and
//! since each level replaces all live patches atomically, loading a level
//! while one is loaded is refused unless the caller allows it.

use std::cell::OnceCell;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bundle::{Manifest, TrustedKeys};
use kernel::livepatch::{self, BlockingTask, Livepatch};
use kernel::module_id::{Comparison, ModuleNotes};
use kernel::Identity;
use serde::Serialize;

use crate::audit::{self, AuditLog, Entry};
use crate::config::Config;
use crate::state::{self, Applied, KernelState, LevelRecord, Marker, Skipped, Store};

/// Taint bits a live patch is expected to add: K (livepatch), O (out of
/// tree), E (unsigned module). Any other new bit is a health failure.
const EXPECTED_TAINT: u64 = (1 << 15) | (1 << 12) | (1 << 13);

/// How an action failed; `main` maps these to exit codes.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The bundle is not acceptable for this host; nothing was loaded.
    #[error("refused: {0}")]
    Refused(String),
    /// The level was loaded, then rolled back (stall or failed health
    /// check); the previous level is active.
    #[error("rolled back: {0}")]
    RolledBack(String),
    /// Nothing to do that was asked for (e.g. revert with nothing applied).
    #[error("{0}")]
    Nothing(String),
    /// Anything else (I/O, kernel refused the module, ...).
    #[error("{0}")]
    Failed(String),
}

impl AgentError {
    pub(crate) fn failed(e: impl std::fmt::Display) -> AgentError {
        AgentError::Failed(e.to_string())
    }
}

/// What a successful apply did, with timings.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    /// The level now active.
    pub level: u32,
    /// Its patch name.
    pub name: String,
    /// Level active before (0: none).
    pub previous: u32,
    /// false when the level was already active.
    pub changed: bool,
    /// Whether blocking tasks had to be signalled.
    pub signalled: bool,
    /// Milliseconds in `finit_module` (the kernel loading and relocating).
    pub load_ms: f64,
    /// Milliseconds from load to transition done (the kernel's switch).
    pub transition_ms: f64,
    /// Milliseconds of the whole action.
    pub total_ms: f64,
    /// Milliseconds in `delete_module` of the replaced level's module.
    pub unload_ms: f64,
    /// total - load - transition - unload: what the agent itself cost.
    pub agent_overhead_ms: f64,
    /// The agent's peak resident set so far (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// Foreign live patches the level replaced (allowed by
    /// `--replace-foreign`).
    pub replaced_foreign: Vec<String>,
    /// Notes (stale modules removed, crash guard, ...).
    pub notes: Vec<String>,
}

/// Whether an action that loads a level may replace live patches that
/// are not ours: a level replaces every live patch atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    /// Refuse to load while a foreign live patch is loaded (the default).
    Refuse,
    /// Load anyway, replacing them (`--replace-foreign`), and audit it.
    Replace,
}

/// A live patch the kernel shows that is not a level of ours: another
/// vendor's, one loaded by hand, or a module named like one of our levels
/// that is not that level's module.
#[derive(Debug, Clone, Serialize)]
pub struct ForeignPatch {
    /// Patch (and module) name.
    pub name: String,
    /// `enabled`.
    pub enabled: bool,
    /// `transition`.
    pub transition: bool,
    /// Why it is not one of ours.
    pub why: String,
    /// noreboot-build's marker of the loaded module, when it has one (built
    /// by noreboot-build, but not a level this host verified).
    pub marker: Option<String>,
}

/// Every live patch of the kernel, ours and foreign.
#[derive(Debug, Clone, Default)]
pub struct LivePatches {
    /// Levels of ours.
    pub ours: Vec<LivePatch>,
    /// Everything else.
    pub foreign: Vec<ForeignPatch>,
}

impl LivePatches {
    /// The active level: our enabled patch with the highest level.
    pub fn active(&self) -> Option<(u32, String)> {
        self.ours
            .iter()
            .filter(|p| p.enabled)
            .filter_map(|p| Some((p.level?, p.name.clone())))
            .max()
    }
}

/// One line per foreign patch: name, state, and why it is not ours.
pub fn describe_foreign(foreign: &[ForeignPatch]) -> String {
    foreign
        .iter()
        .map(|f| {
            format!(
                "{} ({}{}: {})",
                f.name,
                if f.enabled { "enabled" } else { "disabled" },
                if f.transition { ", in transition" } else { "" },
                f.why
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A live patch of ours as the kernel shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LivePatch {
    /// Patch name.
    pub name: String,
    /// Its level, if known from the cache.
    pub level: Option<u32>,
    /// `enabled`.
    pub enabled: bool,
    /// `transition`.
    pub transition: bool,
}

/// The agent bound to the running kernel and its configuration.
pub struct Agent {
    /// Configuration.
    pub cfg: Config,
    /// State directory.
    pub store: Store,
    /// Audit log.
    pub audit: AuditLog,
    /// sysfs livepatch tree.
    pub lp: Livepatch,
    /// The running kernel.
    pub identity: Identity,
    /// Its build-id as lowercase hex.
    pub build_id: String,
    /// When this agent started: apply timings count from here, so reading
    /// and verifying the bundle are part of the agent's overhead.
    pub started: Instant,
    /// The trusted keys, loaded once per run (so a key file left out is
    /// reported and audited once).
    keys: OnceCell<TrustedKeys>,
}

impl Agent {
    /// Binds to the running kernel as the configuration describes it.
    pub fn new(cfg: Config) -> Result<Agent, AgentError> {
        let notes = cfg.kernel.sys.join("kernel/notes");
        let identity = Identity::running_with_notes(&notes).map_err(AgentError::failed)?;
        let build_id = identity.build_id.to_string();
        let store = Store::new(&cfg.state_dir);
        let audit = AuditLog::new(store.audit_path());
        let lp = Livepatch::new(cfg.kernel.sys.join("kernel/livepatch"));
        Ok(Agent {
            started: Instant::now(),
            cfg,
            store,
            audit,
            lp,
            identity,
            build_id,
            keys: OnceCell::new(),
        })
    }

    /// The trusted keys. A key file that cannot be used (not a key, or a
    /// second key under an id another file holds) is left out, reported
    /// on stderr and audited, never fatal: one garbage file must not leave
    /// the host unpatched when good keys sit beside it. Only a directory
    /// that cannot be read is an error.
    pub fn keys(&self) -> Result<TrustedKeys, AgentError> {
        if let Some(keys) = self.keys.get() {
            return Ok(keys.clone());
        }
        let started = Instant::now();
        let (keys, skipped) =
            TrustedKeys::load_dir_skipping(&self.cfg.trusted_keys).map_err(AgentError::failed)?;
        for (path, why) in skipped {
            eprintln!(
                "noreboot: warning: trusted key file {} left out: {why}",
                path.display()
            );
            // Best effort: reporting a bad key file must not become the
            // failure it is there to avoid.
            let _ = self.log(
                "trusted-key",
                0,
                "",
                "skipped",
                started,
                format!("{}: {why}", path.display()),
            );
        }
        let _ = self.keys.set(keys.clone());
        Ok(keys)
    }

    /// Per-kernel state. One that cannot be read (damaged, or not JSON)
    /// is set aside and rebuilt from what is known for certain — the
    /// cached bundles that still verify, and which of them the kernel runs
    /// — so a damaged file never leaves the host unpatched or blocks even
    /// `unload`. Without a running level to go by, the newest intact
    /// cached level is the one to keep; the rebuild is audited.
    pub fn state(&self) -> Result<KernelState, AgentError> {
        match self.store.load(&self.build_id) {
            Ok(s) => Ok(s),
            Err(state::StateError::Corrupt { path, message }) => {
                let started = Instant::now();
                let aside = self
                    .store
                    .set_aside_state(&self.build_id)
                    .map_err(AgentError::failed)?;
                let st = self.rebuild_state()?;
                self.save_state(&st)?;
                let detail = format!(
                    "{}: {message}; set aside as {}, rebuilt from the cache: levels {:?}, keeping {}",
                    path.display(),
                    aside.display(),
                    st.levels.keys().collect::<Vec<_>>(),
                    st.wanted
                        .as_ref()
                        .map_or("none".to_string(), |w| format!("level {}", w.level))
                );
                eprintln!("noreboot: warning: state {detail}");
                let _ = self.log("state", 0, "", "rebuilt", started, detail);
                Ok(st)
            }
            Err(e) => Err(AgentError::failed(e)),
        }
    }

    /// A state made from the cached bundles that verify and the live
    /// patches of the kernel.
    fn rebuild_state(&self) -> Result<KernelState, AgentError> {
        let keys = self.keys()?;
        let mut st = KernelState {
            release: self.identity.release.clone(),
            ..KernelState::default()
        };
        for level in self
            .store
            .cached_levels(&self.build_id)
            .map_err(AgentError::failed)?
        {
            if let Ok(m) = self.cached_manifest(level, &keys) {
                st.levels.insert(
                    level,
                    state::LevelRecord {
                        name: m.name,
                        applied_at: None,
                    },
                );
            }
        }
        let running = self.live_patches(&st)?.active().map(|(level, _)| level);
        let keep = running.or_else(|| st.levels.keys().max().copied());
        if let Some(level) = keep {
            let name = st.levels[&level].name.clone();
            st.wanted = Some(state::Applied {
                level,
                name,
                at: audit::now(),
            });
            if let Some(r) = st.levels.get_mut(&level) {
                r.applied_at = Some(audit::now());
            }
        }
        Ok(st)
    }

    fn save_state(&self, s: &KernelState) -> Result<(), AgentError> {
        self.store
            .save(&self.build_id, s)
            .map_err(AgentError::failed)
    }

    /// Every live patch of the kernel, split into levels of ours (see the
    /// module doc for the rule) and foreign ones.
    pub fn live_patches(&self, st: &KernelState) -> Result<LivePatches, AgentError> {
        let mut out = LivePatches::default();
        for p in self.lp.patches().map_err(AgentError::failed)? {
            match self.identify(&p.name, st) {
                Ok(level) => out.ours.push(LivePatch {
                    name: p.name,
                    level: Some(level),
                    enabled: p.enabled,
                    transition: p.transition,
                }),
                Err(why) => {
                    let marker = ModuleNotes::loaded(&self.cfg.kernel.sys, &p.name)
                        .ok()
                        .and_then(|n| n.marker())
                        .and_then(Result::ok)
                        .map(|m| m.to_string());
                    out.foreign.push(ForeignPatch {
                        name: p.name,
                        enabled: p.enabled,
                        transition: p.transition,
                        why,
                        marker,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Our live patches.
    pub fn live(&self, st: &KernelState) -> Result<Vec<LivePatch>, AgentError> {
        Ok(self.live_patches(st)?.ours)
    }

    /// The active level: our enabled patch not in transition.
    pub fn active(&self, st: &KernelState) -> Result<Option<(u32, String)>, AgentError> {
        Ok(self.live_patches(st)?.active())
    }

    /// Which cached level the loaded module `name` is, or why it is none
    /// of ours. The name only picks the levels to compare with; the
    /// loaded module's identity notes must equal those of the level's
    /// module in its cached bundle, which is verified again here (the
    /// state file is not signed, the bundle is).
    fn identify(&self, name: &str, st: &KernelState) -> Result<u32, String> {
        let candidates: Vec<u32> = st
            .levels
            .iter()
            .rev()
            .filter(|(_, r)| r.name == name)
            .map(|(l, _)| *l)
            .collect();
        if candidates.is_empty() {
            return Err("not a level noreboot applied on this host".into());
        }
        let loaded = ModuleNotes::loaded(&self.cfg.kernel.sys, name)
            .map_err(|e| format!("its module's identity cannot be read: {e}"))?;
        let mut why = Vec::new();
        for level in candidates {
            let file = match self.level_notes(level) {
                Ok(n) => n,
                Err(e) => {
                    why.push(format!(
                        "named like level {level}, whose cached bundle cannot be checked: {e}"
                    ));
                    continue;
                }
            };
            match loaded.compare_with_file(&file) {
                Comparison::Same => return Ok(level),
                Comparison::Differs(section) => why.push(format!(
                    "named like level {level}, but its {section} note is not that level's module's: another module"
                )),
                Comparison::Missing(section) => why.push(format!(
                    "named like level {level}, but it lacks that level's {section} note: another module"
                )),
                Comparison::NoIdentity => why.push(format!(
                    "named like level {level}, whose module carries no identity note to recognise it by"
                )),
            }
        }
        Err(why.join("; "))
    }

    /// The identity notes of a cached level's module, from its bundle
    /// verified now.
    fn level_notes(&self, level: u32) -> Result<ModuleNotes, AgentError> {
        let keys = self.keys()?;
        let path = self.store.bundle_path(&self.build_id, level);
        let (_, vb) = self.open_file(&path, &keys)?;
        ModuleNotes::from_module(&vb.module)
            .map_err(|e| AgentError::Failed(format!("{}: {e}", path.display())))
    }

    /// Appends to the audit log; a log that cannot be written is an error
    /// of the action (an unaudited change must not look like a success).
    pub fn log(
        &self,
        action: &str,
        level: u32,
        name: &str,
        result: &str,
        started: Instant,
        detail: String,
    ) -> Result<(), AgentError> {
        self.audit
            .append(&Entry {
                time: audit::now(),
                action: action.to_string(),
                level,
                name: name.to_string(),
                result: result.to_string(),
                duration_ms: audit::ms(started.elapsed()),
                invoker: audit::invoker(),
                detail,
                seq: 0,
                prev: String::new(),
            })
            .map_err(AgentError::failed)
    }

    /// Reads and verifies a bundle file (for any kernel).
    pub fn verify_file(
        &self,
        path: &Path,
        keys: &TrustedKeys,
    ) -> Result<(Vec<u8>, bundle::VerifiedBundle), AgentError> {
        let bytes = read_limited(path)?;
        let vb = bundle::open(&bytes, keys)
            .map_err(|e| AgentError::Refused(format!("{}: {e}", path.display())))?;
        Ok((bytes, vb))
    }

    /// Reads and verifies a bundle file for this kernel.
    pub fn open_file(
        &self,
        path: &Path,
        keys: &TrustedKeys,
    ) -> Result<(Vec<u8>, bundle::VerifiedBundle), AgentError> {
        let (bytes, vb) = self.verify_file(path, keys)?;
        self.check_kernel(&vb.manifest)?;
        Ok((bytes, vb))
    }

    fn check_kernel(&self, m: &Manifest) -> Result<(), AgentError> {
        if m.kernel.build_id != self.build_id {
            return Err(AgentError::Refused(format!(
                "bundle {} level {} is for kernel {} build-id {}, this kernel is {} build-id {}",
                m.name,
                m.level,
                m.kernel.release,
                m.kernel.build_id,
                self.identity.release,
                self.build_id
            )));
        }
        Ok(())
    }

    /// Applies a verified bundle: the heart of the agent.
    pub fn apply(
        &self,
        bytes: &[u8],
        vb: &bundle::VerifiedBundle,
        action: &str,
        foreign: Foreign,
    ) -> Result<ApplyReport, AgentError> {
        let started = Instant::now();
        let m = &vb.manifest;
        let r = self.apply_inner(bytes, vb, started, true, foreign);
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
                self.log(action, m.level, &m.name, result, started, e.to_string())?;
            }
        }
        r
    }

    /// `check_health: false` when putting a previous level back after a
    /// failed health check: that level passed its own check before, and
    /// checking it again with the same failing command would bounce
    /// between the two levels for ever.
    fn apply_inner(
        &self,
        bytes: &[u8],
        vb: &bundle::VerifiedBundle,
        started: Instant,
        check_health: bool,
        foreign: Foreign,
    ) -> Result<ApplyReport, AgentError> {
        let m = &vb.manifest;
        self.check_kernel(m)?;
        let mut st = self.state()?;
        st.release = self.identity.release.clone();
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
        let live = self.live_patches(&st)?;
        let before = live.active();
        let previous = before.as_ref().map(|b| b.0).unwrap_or(0);
        if before.as_ref().is_some_and(|(_, n)| *n == m.name) {
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
        if livepatch::module_loaded(&self.cfg.kernel.sys, &m.name)
            && !all.iter().any(|p| p.name == m.name)
        {
            let this = ModuleNotes::from_module(&vb.module).unwrap_or_default();
            let same = ModuleNotes::loaded(&self.cfg.kernel.sys, &m.name)
                .map(|n| n.compare_with_file(&this) == Comparison::Same)
                .unwrap_or(false);
            if !same {
                if let Err(why) = self.identify(&m.name, &st) {
                    return Err(AgentError::Refused(format!(
                        "a module named {} is loaded that is not level {} ({why}); the kernel cannot load a second module of that name: unload it first",
                        m.name, m.level
                    )));
                }
            }
            livepatch::unload_module(&m.name).map_err(AgentError::failed)?;
            notes.push(format!("removed stale module {}", m.name));
        }

        self.store
            .save_bundle(&self.build_id, m.level, bytes)
            .map_err(AgentError::failed)?;
        st.levels.entry(m.level).or_insert_with(|| LevelRecord {
            name: m.name.clone(),
            applied_at: None,
        });
        self.save_state(&st)?;

        let marker = Marker {
            level: m.level,
            name: m.name.clone(),
            boot_id: state::boot_id(&self.cfg.kernel.proc),
            at: audit::now(),
        };
        self.store
            .set_marker(&self.build_id, &marker)
            .map_err(AgentError::failed)?;
        let taint_before = livepatch::tainted(&self.cfg.kernel.proc).unwrap_or(0);

        let load_start = Instant::now();
        let loaded = load(&m.name, &vb.module);
        let load_ms = ms(load_start.elapsed());
        if let Err(e) = loaded {
            self.store
                .clear_marker(&self.build_id)
                .map_err(AgentError::failed)?;
            return Err(e);
        }

        let t_start = Instant::now();
        let watched = self.watch(&m.name);
        let transition_ms = ms(t_start.elapsed());
        let signalled = match watched {
            Ok(s) => s,
            Err(e) => {
                self.store
                    .clear_marker(&self.build_id)
                    .map_err(AgentError::failed)?;
                return Err(e);
            }
        };

        // The replaced level's module stays loaded but is no patch any more.
        let mut unload_ms = 0.0;
        if let Some((_, old)) = &before {
            if self.lp.state(old).map_err(AgentError::failed)?.is_none() {
                let u = Instant::now();
                let r = livepatch::unload_module(old);
                unload_ms = ms(u.elapsed());
                match r {
                    Ok(()) => notes.push(format!("unloaded replaced module {old}")),
                    Err(e) => notes.push(format!("replaced module {old} stays loaded: {e}")),
                }
            }
        }

        let healthy = if check_health {
            self.health(&m.name, taint_before)
        } else {
            Ok(())
        };
        if let Err(why) = healthy {
            let back = self.put_back(before.as_ref().map(|b| b.0), &m.name, foreign);
            self.store
                .clear_marker(&self.build_id)
                .map_err(AgentError::failed)?;
            return Err(AgentError::RolledBack(format!(
                "level {} failed its health check: {why}; {back}",
                m.level
            )));
        }

        let now = audit::now();
        if let Some(r) = st.levels.get_mut(&m.level) {
            r.applied_at = Some(now.clone());
        }
        st.wanted = Some(Applied {
            level: m.level,
            name: m.name.clone(),
            at: now,
        });
        st.skipped.retain(|s| s.level != m.level);
        self.save_state(&st)?;
        self.write_scanner_files(Some(m))?;
        self.store
            .clear_marker(&self.build_id)
            .map_err(AgentError::failed)?;
        let total_ms = ms(self.started.elapsed().max(started.elapsed()));
        Ok(ApplyReport {
            level: m.level,
            name: m.name.clone(),
            previous,
            changed: true,
            signalled,
            load_ms,
            transition_ms,
            total_ms,
            unload_ms,
            agent_overhead_ms: (total_ms - load_ms - transition_ms - unload_ms).max(0.0),
            peak_rss_kib: peak_rss_kib(),
            replaced_foreign,
            notes,
        })
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
    fn reverse(&self, name: &str) -> String {
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
    fn put_back(&self, previous: Option<u32>, failed: &str, foreign: Foreign) -> String {
        match previous {
            Some(level) => {
                let res = self.keys().and_then(|keys| {
                    let path = self.store.bundle_path(&self.build_id, level);
                    let (bytes, vb) = self.open_file(&path, &keys)?;
                    self.apply_inner(&bytes, &vb, Instant::now(), false, foreign)
                });
                match res {
                    Ok(_) => {
                        let _ = unload_when_free(failed);
                        format!("level {level} is active again")
                    }
                    Err(e) => format!("putting level {level} back failed: {e}"),
                }
            }
            None => self.reverse(failed),
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

    /// Puts a cached level in place (revert, boot).
    pub fn apply_cached(
        &self,
        level: u32,
        action: &str,
        foreign: Foreign,
    ) -> Result<ApplyReport, AgentError> {
        let keys = self.keys()?;
        let path = self.store.bundle_path(&self.build_id, level);
        if !path.exists() {
            return Err(AgentError::Nothing(format!(
                "level {level} is not cached for this kernel ({})",
                path.display()
            )));
        }
        let (bytes, vb) = self.open_file(&path, &keys)?;
        self.apply(&bytes, &vb, action, foreign)
    }

    /// Disables and unloads every live patch of ours.
    pub fn unload_all(&self, action: &str) -> Result<Vec<String>, AgentError> {
        let started = Instant::now();
        let mut st = self.state()?;
        let mut done = Vec::new();
        let mut errors = Vec::new();
        for p in self.live(&st)? {
            let what = self.reverse(&p.name);
            if what.starts_with("reversed and unloaded") {
                done.push(p.name.clone());
            } else {
                errors.push(what);
            }
        }
        // Replaced levels' modules that are still loaded (and are those
        // levels' modules, not others of their names).
        for r in st.levels.values() {
            if !done.contains(&r.name)
                && livepatch::module_loaded(&self.cfg.kernel.sys, &r.name)
                && self.lp.state(&r.name).ok().flatten().is_none()
                && self.identify(&r.name, &st).is_ok()
                && livepatch::unload_module(&r.name).is_ok()
            {
                done.push(r.name.clone());
            }
        }
        if errors.is_empty() {
            st.wanted = None;
            self.save_state(&st)?;
            self.write_scanner_files(None)?;
        }
        let detail = if errors.is_empty() {
            format!(
                "unloaded: {}",
                if done.is_empty() {
                    "nothing".into()
                } else {
                    done.join(", ")
                }
            )
        } else {
            errors.join("; ")
        };
        let result = if errors.is_empty() { "ok" } else { "failed" };
        self.log(action, 0, "", result, started, detail.clone())?;
        if errors.is_empty() {
            Ok(done)
        } else {
            Err(AgentError::Failed(detail))
        }
    }

    /// `revert [--to LEVEL]`: a cached lower level, or none (`0`).
    pub fn revert(
        &self,
        to: Option<u32>,
        foreign: Foreign,
    ) -> Result<Option<ApplyReport>, AgentError> {
        let st = self.state()?;
        let Some((current, _)) = self.active(&st)? else {
            return Err(AgentError::Nothing(
                "nothing is applied; nothing to revert".into(),
            ));
        };
        let target = match to {
            Some(t) => t,
            None => self
                .store
                .cached_levels(&self.build_id)
                .map_err(AgentError::failed)?
                .into_iter()
                .filter(|l| *l < current && !st.is_skipped(*l))
                .max()
                .unwrap_or(0),
        };
        if target == current {
            return Err(AgentError::Nothing(format!(
                "level {current} is already active"
            )));
        }
        if target == 0 {
            self.unload_all("revert")?;
            return Ok(None);
        }
        self.apply_cached(target, "revert", foreign).map(Some)
    }

    /// `boot`: the crash guard, then the wanted level from the cache.
    pub fn boot(&self, foreign: Foreign) -> Result<BootReport, AgentError> {
        let started = Instant::now();
        let mut st = self.state()?;
        let mut report = BootReport::default();
        // The marker is written whole (rename into place), so one that
        // cannot be read was not left by a load that crashed: it names no
        // level to hold back, and must not hold back every level.
        let marker = match self.store.marker(&self.build_id) {
            Ok(m) => m,
            Err(state::StateError::Corrupt { path, message }) => {
                self.store
                    .clear_marker(&self.build_id)
                    .map_err(AgentError::failed)?;
                let note = format!(
                    "crash guard: the marker {} could not be read ({message}) and was removed; it names no level to skip",
                    path.display()
                );
                self.log("crash-guard", 0, "", "no-op", started, note.clone())?;
                report.notes.push(note);
                None
            }
            Err(e) => return Err(AgentError::failed(e)),
        };
        if let Some(marker) = marker {
            let now_boot = state::boot_id(&self.cfg.kernel.proc);
            let reason = if marker.boot_id != now_boot {
                format!(
                    "crash guard: the machine went down while level {} ({}) was being applied at {}",
                    marker.level, marker.name, marker.at
                )
            } else {
                format!(
                    "crash guard: an agent stopped while applying level {} ({}) at {}",
                    marker.level, marker.name, marker.at
                )
            };
            if !st.is_skipped(marker.level) {
                st.skipped.push(Skipped {
                    level: marker.level,
                    reason: reason.clone(),
                    at: audit::now(),
                });
            }
            if st.wanted.as_ref().is_some_and(|w| w.level == marker.level) {
                st.wanted = None;
            }
            self.save_state(&st)?;
            self.store
                .clear_marker(&self.build_id)
                .map_err(AgentError::failed)?;
            self.log(
                "crash-guard",
                marker.level,
                &marker.name,
                "skipped",
                started,
                reason.clone(),
            )?;
            report.skipped = Some(marker.level);
            report.notes.push(reason);
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

    /// Rewrites the scanner files for the level now active (`None`: no
    /// patch: the kernel's own version).
    pub fn write_scanner_files(&self, m: Option<&Manifest>) -> Result<(), AgentError> {
        let (version, cves) = match m {
            Some(m) => (
                effective_uname_v(&self.identity.version, m),
                m.cves.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
            ),
            None => (self.identity.version.clone(), Vec::new()),
        };
        self.store
            .write_scanner_files(&version, &self.identity.release, &cves)
            .map_err(AgentError::failed)
    }

    /// The manifest of a cached level (verified again).
    pub fn cached_manifest(&self, level: u32, keys: &TrustedKeys) -> Result<Manifest, AgentError> {
        let path = self.store.bundle_path(&self.build_id, level);
        Ok(self.open_file(&path, keys)?.1.manifest)
    }
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

/// `uname -v` as it reads with the level's effective version: the
/// kernel's own package version replaced by it, or noted after it.
pub fn effective_uname_v(kernel_version: &str, m: &Manifest) -> String {
    let Some(eff) = m.effective_version.as_deref().filter(|e| !e.is_empty()) else {
        return kernel_version.to_string();
    };
    if let Some(own) = m.kernel.version.as_deref().filter(|v| !v.is_empty()) {
        if kernel_version.contains(own) {
            return kernel_version.replacen(own, eff, 1);
        }
    }
    format!("{kernel_version} (noreboot {eff})")
}

/// Whether a transition ran long enough for the kernel's own signalling.
fn waited_long(start: Instant) -> bool {
    start.elapsed() >= Duration::from_secs(14)
}

/// VmHWM of this process from /proc/self/status (0 if unreadable).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn read_limited(path: &Path) -> Result<Vec<u8>, AgentError> {
    bundle::read_file(path).map_err(|e| match e {
        bundle::BundleError::Io { .. } => AgentError::Failed(e.to_string()),
        other => AgentError::Refused(format!("{}: {other}", path.display())),
    })
}

/// Loads module bytes through a memfd: nothing is written to disk and the
/// kernel reads exactly the verified bytes.
fn load(name: &str, module: &[u8]) -> Result<(), AgentError> {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| AgentError::Failed(format!("memfd_create: {e}")))?;
    let mut f = std::fs::File::from(fd);
    f.write_all(module)
        .map_err(|e| AgentError::Failed(format!("writing module {name} to a memfd: {e}")))?;
    livepatch::load_module(name, &f).map_err(AgentError::failed)
}

/// Unloads a module, retrying briefly while its refcount drops (the
/// kernel frees a disabled patch from a work item).
fn unload_when_free(name: &str) -> Result<(), livepatch::LivepatchError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match livepatch::unload_module(name) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn describe_tasks(tasks: &[BlockingTask]) -> String {
    if tasks.is_empty() {
        return "none found".into();
    }
    tasks
        .iter()
        .map(|t| {
            format!(
                "{} (pid {}, tid {}) in [{}]",
                t.comm,
                t.pid,
                t.tid,
                t.stack
                    .iter()
                    .map(|f| f.trim_start_matches("[<0>] "))
                    .collect::<Vec<_>>()
                    .join(" < ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn run_health_command(cmd: &str, limit: Duration) -> Result<(), String> {
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", cmd])
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting health command {cmd:?}: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("health command {cmd:?} failed ({st})")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "health command {cmd:?} did not finish within {}",
                    humantime::format_duration(limit)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for health command {cmd:?}: {e}")),
        }
    }
}
