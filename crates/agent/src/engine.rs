//! The agent's actions on the running kernel: apply a verified bundle as
//! journaled steps (`apply`), make the recorded state agree with the kernel
//! and re-apply at boot behind the crash guard (`reconcile`), revert to a
//! cached level, unload everything of ours. The invariant every path
//! keeps: after any failure the previously active level is still the
//! active one and no module of a failed level stays loaded; after any
//! stop, even SIGKILL, the next command brings state and kernel together.
//!
//! A live patch is ours only when its module is a level this agent
//! verified: the identity notes the kernel shows for the loaded module
//! (`kernel::module_id`) equal those of the module in that level's cached
//! bundle, checked again against the trusted keys. Its name only says
//! which level to compare with. Every other live patch is foreign, and
//! since each level replaces all live patches atomically, loading a level
//! while one is loaded is refused unless the caller allows it.

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;
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
use crate::journal::JournalFile;
use crate::state::{self, KernelState, Store};

mod apply;
mod reconcile;

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

    /// The same error (and exit status) with a note after its message.
    pub(crate) fn with_note(&self, note: String) -> AgentError {
        let add = |m: &String| format!("{m}; {note}");
        match self {
            AgentError::Refused(m) => AgentError::Refused(add(m)),
            AgentError::RolledBack(m) => AgentError::RolledBack(add(m)),
            AgentError::Nothing(m) => AgentError::Nothing(add(m)),
            AgentError::Failed(m) => AgentError::Failed(add(m)),
        }
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
    /// Identity notes of cached levels' modules, verified this run.
    notes: RefCell<BTreeMap<u32, ModuleNotes>>,
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
            notes: RefCell::new(BTreeMap::new()),
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

    /// This kernel's apply journal.
    fn journal(&self) -> JournalFile {
        self.store.journal(&self.build_id)
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
    /// verified once per run (a command asks several times: reconciling,
    /// planning, reporting; each verification is a signature check).
    fn level_notes(&self, level: u32) -> Result<ModuleNotes, AgentError> {
        if let Some(n) = self.notes.borrow().get(&level) {
            return Ok(n.clone());
        }
        let keys = self.keys()?;
        let path = self.store.bundle_path(&self.build_id, level);
        let (_, vb) = self.open_file(&path, &keys)?;
        let notes = ModuleNotes::from_module(&vb.module)
            .map_err(|e| AgentError::Failed(format!("{}: {e}", path.display())))?;
        self.notes.borrow_mut().insert(level, notes.clone());
        Ok(notes)
    }

    /// Forgets what [`Agent::level_notes`] read of a level whose cached
    /// bundle is being replaced.
    fn forget_notes(&self, level: u32) {
        self.notes.borrow_mut().remove(&level);
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
        let started = Instant::now();
        let (bytes, vb) = match self.open_file(&path, &keys) {
            Ok(x) => x,
            Err(e) => {
                self.log(action, level, "", "refused", started, e.to_string())?;
                return Err(e);
            }
        };
        self.apply(&bytes, &vb, action, foreign)
    }

    /// Disables and unloads every live patch of ours.
    pub fn unload_all(&self, action: &str) -> Result<Vec<String>, AgentError> {
        let started = Instant::now();
        let mut st = self.state()?;
        // Nothing is touched unless the outcome can be recorded.
        self.audit
            .check_writable()
            .map_err(|e| AgentError::Failed(format!("nothing unloaded: {e}")))?;
        // The state first: an agent killed after this and before the
        // kernel let go leaves a level running that the state does not
        // keep, which the next command records as kept again (the kernel
        // is the truth of what runs), never a state that wants a level
        // the user removed.
        let wanted = st.wanted.take();
        self.save_state(&st)
            .map_err(|e| AgentError::Failed(format!("nothing unloaded: {e}")))?;
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
            self.write_scanner_files(None)?;
        } else if self.live(&st)?.is_empty() {
            // Reversed, only a module left behind: nothing of ours runs.
            self.write_scanner_files(None)?;
        } else {
            st.wanted = wanted;
            self.save_state(&st)?;
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

    /// Rewrites the scanner files for the level now active (`None`: no
    /// patch: the kernel's own version), `vex.json` included (removed
    /// without a level).
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
            .map_err(AgentError::failed)?;
        // A level whose package cannot be named (or that lists no CVE)
        // has no document: the old one must not outlive its level.
        let now = audit::now();
        let doc = m.and_then(|m| {
            crate::vex::document(
                &self.identity.release,
                &self.identity.version,
                &crate::vex::hostname(),
                m,
                &now,
                &now,
            )
            .ok()
        });
        self.store
            .write_vex(doc.as_ref())
            .map_err(AgentError::failed)
    }

    /// The manifest of a cached level (verified again).
    pub fn cached_manifest(&self, level: u32, keys: &TrustedKeys) -> Result<Manifest, AgentError> {
        let path = self.store.bundle_path(&self.build_id, level);
        Ok(self.open_file(&path, keys)?.1.manifest)
    }
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
