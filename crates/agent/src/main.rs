//! `noreboot`, the host agent: identifies the running kernel by its GNU
//! build-id, applies signed cumulative live patch levels and watches their
//! transition, reverts, re-applies at boot behind a crash guard, and tells
//! people and scanners what the kernel is now protected against. Errors
//! become exit codes in `exit_code` only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;

use agent::config::{self, Config};
use agent::engine::{self, Agent, AgentError};
use agent::lock::{AgentLock, LockError};
use agent::{client, state, update};

#[derive(Parser)]
#[command(
    name = "noreboot",
    version,
    about = "Live patches for the running Linux kernel"
)]
struct Cli {
    /// Configuration file [default: /etc/noreboot/config.toml, or
    /// $NOREBOOT_CONFIG].
    #[arg(long, global = true, env = "NOREBOOT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Machine-readable output on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The kernel, the active level, whether it is up to date, and live
    /// patches that are not ours.
    ///
    /// Exit status: 0 up to date, 1 nothing applied, 2 a newer level is
    /// available but not applied, 3 no patches exist for this kernel, 4 a
    /// level is active but foreign live patches are loaded beside it (they
    /// may replace the same functions, so its fixes cannot be vouched for).
    Status,
    /// Verify and apply a bundle file (local or air-gapped use).
    ///
    /// Exit status: 0 applied (or already active), 4 refused (nothing was
    /// loaded), 5 rolled back (stall or failed health check: the previous
    /// level is active), 6 another agent is busy, 1 other errors.
    Apply {
        /// The bundle (.nrb).
        file: PathBuf,
        /// Apply it even when it is older than the active level (a
        /// downgrade; `noreboot revert` is the usual way back).
        #[arg(long)]
        allow_downgrade: bool,
        #[command(flatten)]
        foreign: ReplaceForeign,
    },
    /// Apply the level the server (or the update directory) has for this
    /// host; retries with backoff while the server is unreachable.
    Update {
        #[command(flatten)]
        foreign: ReplaceForeign,
    },
    /// Join a noreboot-server's fleet with a registration key.
    Register {
        /// The server, e.g. https://patches.example.com.
        #[arg(long)]
        server: String,
        /// The registration key an administrator gave you.
        #[arg(long)]
        key: String,
        /// Tags for the fleet view (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Go back to an earlier cached level (default: the one before).
    Revert {
        /// The level to go to; 0 removes every patch.
        #[arg(long)]
        to: Option<u32>,
        #[command(flatten)]
        foreign: ReplaceForeign,
    },
    /// Disable and unload every live patch of ours.
    Unload,
    /// Re-apply the cached level at boot (no network), behind the crash
    /// guard.
    Boot {
        #[command(flatten)]
        foreign: ReplaceForeign,
    },
    /// Like uname(1), with the effective kernel version of the active level.
    Uname {
        /// All fields.
        #[arg(short = 'a', long)]
        all: bool,
        /// Kernel name.
        #[arg(short = 's')]
        kernel_name: bool,
        /// Host name.
        #[arg(short = 'n')]
        nodename: bool,
        /// Kernel release.
        #[arg(short = 'r')]
        release: bool,
        /// Kernel version (the effective one).
        #[arg(short = 'v')]
        kernel_version: bool,
        /// Machine.
        #[arg(short = 'm')]
        machine: bool,
    },
    /// Cached levels for this kernel: CVEs, functions, when applied.
    Patches,
    /// The host's OpenVEX document for vulnerability scanners (`trivy
    /// --vex`): each CVE the active level fixes, `fixed` in the running
    /// kernel's package. The same document is kept in
    /// /var/lib/noreboot/vex.json after every change of level.
    ///
    /// Exit status: 0, 1 nothing applied (nothing to state) or no package
    /// version known, 4 foreign live patches are loaded beside the level
    /// (its fixes cannot be vouched for).
    Vex,
    /// The audit log.
    Log {
        /// Only the last N entries.
        #[arg(long, short = 'n')]
        last: Option<usize>,
        /// Check the log's hash chain instead of printing it: exit 0 when
        /// intact, 1 naming every break (an edited, removed, truncated or
        /// emptied log).
        #[arg(long)]
        verify: bool,
    },
    /// Bundle files.
    #[command(subcommand)]
    Bundle(BundleCmd),
}

/// `--replace-foreign` of the commands that load a level.
#[derive(clap::Args)]
struct ReplaceForeign {
    /// Load the level even though live patches that are not noreboot's
    /// are loaded (another vendor's, or loaded by hand). Every level
    /// replaces all live patches atomically, so this disables them; it is
    /// audited. Without it the level is refused (exit 4) while any is
    /// loaded.
    #[arg(long)]
    replace_foreign: bool,
}

impl ReplaceForeign {
    fn policy(&self) -> engine::Foreign {
        if self.replace_foreign {
            engine::Foreign::Replace
        } else {
            engine::Foreign::Refuse
        }
    }
}

#[derive(Subcommand)]
enum BundleCmd {
    /// Show a bundle's manifest and check it (signature against the
    /// trusted keys, module hash) without applying it.
    Inspect {
        /// The bundle.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("noreboot: {}", render_error(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// An error and its causes on one line, each cause once: errors here say
/// their cause in their own message (`audit log PATH: No space left on
/// device`) and also keep it as their source, which a plain chain would
/// print a second time.
fn render_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The one place errors become exit codes.
fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(a) = e.downcast_ref::<AgentError>() {
        return match a {
            AgentError::Refused(_) => 4,
            AgentError::RolledBack(_) => 5,
            AgentError::Nothing(_) | AgentError::Failed(_) => 1,
        };
    }
    if let Some(LockError::Busy { .. }) = e.downcast_ref::<LockError>() {
        return 6;
    }
    1
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let (path, explicit) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(config::DEFAULT_PATH), false),
    };
    Ok(Config::load(&path, explicit)?)
}

fn lock(agent: &Agent, what: &str) -> anyhow::Result<AgentLock> {
    agent.store.ensure()?;
    let l = AgentLock::acquire(
        &agent.store.lock_path(),
        agent.cfg.lock.wait,
        what,
        |holder| {
            eprintln!(
                "noreboot: waiting up to {} for another agent ({holder})",
                humantime::format_duration(agent.cfg.lock.wait)
            )
        },
    )?;
    Ok(l)
}

/// Takes the lock and makes the recorded state agree with the kernel
/// (an apply an agent left unfinished is finished or undone) before a
/// command acts; what was found goes to stderr.
fn lock_reconciled(
    agent: &Agent,
    what: &str,
    foreign: engine::Foreign,
) -> anyhow::Result<AgentLock> {
    let l = lock(agent, what)?;
    for n in agent.reconcile(foreign)?.notes {
        eprintln!("noreboot: {n}");
    }
    Ok(l)
}

/// For commands that report: reconcile when no other agent is at work
/// (never waiting for one), else say so. A state directory this user
/// cannot lock (not root) is read as it is. Returns notes for the report.
fn reconcile_if_free(agent: &Agent, what: &str) -> anyhow::Result<Vec<String>> {
    if agent.store.ensure().is_err() {
        return Ok(Vec::new());
    }
    match AgentLock::acquire(
        &agent.store.lock_path(),
        std::time::Duration::ZERO,
        what,
        |_| {},
    ) {
        // What the command reports matters more than reconciling now (a
        // full disk, say): the reason is one of its notes.
        Ok(_l) => Ok(match agent.reconcile(engine::Foreign::Refuse) {
            Ok(r) => r.notes,
            Err(e) => vec![format!(
                "the recorded state could not be brought in line with the kernel: {e}"
            )],
        }),
        Err(LockError::Busy { holder, .. }) => Ok(vec![format!(
            "another noreboot is at work ({holder}): what this shows may be about to change"
        )]),
        Err(LockError::Io { .. }) => Ok(Vec::new()),
    }
}

fn print_json(v: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let cfg = load_config(&cli)?;
    if let Cmd::Bundle(BundleCmd::Inspect { file }) = &cli.command {
        return inspect(&cfg, file, cli.json);
    }
    let agent = Agent::new(cfg)?;
    let json = cli.json;
    match cli.command {
        Cmd::Status => {
            let notes = reconcile_if_free(&agent, "status")?;
            status(&agent, json, notes)
        }
        Cmd::Apply {
            file,
            allow_downgrade,
            foreign,
        } => apply(&agent, &file, allow_downgrade, foreign.policy(), json),
        Cmd::Update { foreign } => {
            let _l = lock_reconciled(&agent, "update", foreign.policy())?;
            let rep = update::run(&agent, foreign.policy())?;
            if json {
                print_json(&rep)?;
            } else {
                println!("{}", rep.summary);
            }
            Ok(0)
        }
        Cmd::Register { server, key, tags } => register(&agent, &server, key, tags, json),
        Cmd::Revert { to, foreign } => {
            let _l = lock_reconciled(&agent, "revert", foreign.policy())?;
            match agent.revert(to, foreign.policy())? {
                Some(rep) => report_apply(&rep, json),
                None => {
                    if json {
                        print_json(&serde_json::json!({"level": 0}))?;
                    } else {
                        println!("reverted: no live patch is active");
                    }
                    Ok(0)
                }
            }
        }
        Cmd::Unload => {
            let _l = lock_reconciled(&agent, "unload", engine::Foreign::Refuse)?;
            let done = agent.unload_all("unload")?;
            if json {
                print_json(&serde_json::json!({ "unloaded": done }))?;
            } else if done.is_empty() {
                println!("no live patch of ours was loaded");
            } else {
                println!("unloaded {}", done.join(", "));
            }
            Ok(0)
        }
        Cmd::Boot { foreign } => {
            let _l = lock(&agent, "boot")?;
            let rep = agent.boot(foreign.policy())?;
            if json {
                print_json(&rep)?;
            } else {
                for n in &rep.notes {
                    println!("{n}");
                }
                match &rep.applied {
                    Some(a) => println!("boot: level {} ({}) re-applied", a.level, a.name),
                    None => println!("boot: no level to re-apply"),
                }
            }
            Ok(0)
        }
        Cmd::Uname {
            all,
            kernel_name,
            nodename,
            release,
            kernel_version,
            machine,
        } => uname(
            &agent,
            UnameFields {
                all,
                kernel_name,
                nodename,
                release,
                kernel_version,
                machine,
            },
            json,
        ),
        Cmd::Patches => {
            for n in reconcile_if_free(&agent, "patches")? {
                eprintln!("noreboot: {n}");
            }
            patches(&agent, json)
        }
        Cmd::Vex => {
            for n in reconcile_if_free(&agent, "vex")? {
                eprintln!("noreboot: {n}");
            }
            vex(&agent)
        }
        Cmd::Log { verify: true, .. } => log_verify(&agent, json),
        Cmd::Log { last, .. } => log(&agent, last, json),
        Cmd::Bundle(_) => unreachable!("handled above"),
    }
}

/// `apply FILE`: verify, refuse a downgrade unless allowed, apply.
fn apply(
    agent: &Agent,
    file: &std::path::Path,
    allow_downgrade: bool,
    policy: engine::Foreign,
    json: bool,
) -> anyhow::Result<u8> {
    let _l = lock_reconciled(agent, &format!("apply {}", file.display()), policy)?;
    let keys = agent.keys()?;
    let (bytes, vb) = match agent.open_file(file, &keys) {
        Ok(x) => x,
        Err(e) => {
            agent.log(
                "apply",
                0,
                "",
                "refused",
                std::time::Instant::now(),
                e.to_string(),
            )?;
            return Err(e.into());
        }
    };
    // An older level, validly signed, must not replace a newer one
    // unasked: that would quietly take fixes away.
    let started = std::time::Instant::now();
    let active = agent.active(&agent.state()?)?.map(|(level, _)| level);
    let m = &vb.manifest;
    if let Some(active) = active.filter(|a| m.level < *a) {
        if !allow_downgrade {
            let e = AgentError::Refused(format!(
                "{}: level {} is older than the active level {active}: a downgrade takes fixes away; `noreboot revert` goes back to an earlier level, or apply with --allow-downgrade",
                file.display(),
                m.level
            ));
            agent.log("apply", m.level, &m.name, "refused", started, e.to_string())?;
            return Err(e.into());
        }
    }
    let rep = agent.apply(&bytes, &vb, "apply", policy)?;
    if let Some(active) = active.filter(|a| m.level < *a) {
        agent.log(
            "downgrade",
            m.level,
            &m.name,
            "ok",
            started,
            format!("from level {active}, allowed by --allow-downgrade"),
        )?;
    }
    report_apply(&rep, json)
}

/// `register`: join a server's fleet and keep its token.
fn register(
    agent: &Agent,
    server: &str,
    key: String,
    tags: Vec<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let _l = lock(agent, "register")?;
    let client = client::Client::new(server, None, &agent.cfg.server)?;
    let hostname = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let r = client.register(&protocol::RegisterRequest {
        registration_key: key,
        hostname,
        kernel: update::kernel(agent),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        tags,
    })?;
    let reg = client::Registration {
        url: server.trim_end_matches('/').to_string(),
        host_id: r.host_id.clone(),
        token: r.token,
        feed: r.feed.clone(),
    };
    agent.store.ensure()?;
    reg.save(agent.store.root())?;
    agent.log(
        "register",
        0,
        "",
        "ok",
        std::time::Instant::now(),
        format!("host {} on feed {} of {}", r.host_id, r.feed, reg.url),
    )?;
    if json {
        print_json(&serde_json::json!({"host_id": r.host_id, "feed": r.feed, "server": reg.url}))?;
    } else {
        println!(
            "registered with {} as host {} on feed {}",
            reg.url, r.host_id, r.feed
        );
    }
    Ok(0)
}

/// Which fields `uname` prints.
struct UnameFields {
    all: bool,
    kernel_name: bool,
    nodename: bool,
    release: bool,
    kernel_version: bool,
    machine: bool,
}

/// `uname`: uname(1) with the effective version in `-v`.
fn uname(agent: &Agent, f: UnameFields, json: bool) -> anyhow::Result<u8> {
    let UnameFields {
        all,
        kernel_name,
        nodename,
        release,
        kernel_version,
        machine,
    } = f;
    for n in reconcile_if_free(agent, "uname")? {
        eprintln!("noreboot: {n}");
    }
    let u = rustix::system::uname();
    let eff = effective_version(agent);
    let mut fields = Vec::new();
    let none = !(kernel_name || nodename || release || kernel_version || machine);
    if all || kernel_name || none {
        fields.push(u.sysname().to_string_lossy().into_owned());
    }
    if all || nodename {
        fields.push(u.nodename().to_string_lossy().into_owned());
    }
    if all || release {
        fields.push(agent.identity.release.clone());
    }
    if all || kernel_version {
        fields.push(eff.clone());
    }
    if all || machine {
        fields.push(u.machine().to_string_lossy().into_owned());
    }
    if all {
        fields.push("GNU/Linux".into());
    }
    if json {
        print_json(&serde_json::json!({
            "sysname": u.sysname().to_string_lossy(),
            "nodename": u.nodename().to_string_lossy(),
            "release": agent.identity.release,
            "version": eff,
            "kernel_version": agent.identity.version,
            "machine": u.machine().to_string_lossy(),
        }))?;
    } else {
        println!("{}", fields.join(" "));
    }
    Ok(0)
}

/// `log --verify`: the audit log's hash chain checked.
fn log_verify(agent: &Agent, json: bool) -> anyhow::Result<u8> {
    let v = agent.audit.verify()?;
    if json {
        print_json(&v)?;
    } else if v.problems.is_empty() {
        println!(
            "{}: intact, {} chained entries{}",
            agent.audit.path().display(),
            v.checked,
            if v.unchained > 0 {
                format!(" ({} older ones written before the chain)", v.unchained)
            } else {
                String::new()
            }
        );
    } else {
        for p in &v.problems {
            println!("{}: {p}", agent.audit.path().display());
        }
    }
    Ok(if v.problems.is_empty() { 0 } else { 1 })
}

/// `log [-n N]`: the audit log, the last N entries.
fn log(agent: &Agent, last: Option<usize>, json: bool) -> anyhow::Result<u8> {
    let r = agent.audit.read()?;
    let skip = last.map(|n| r.entries.len().saturating_sub(n)).unwrap_or(0);
    let entries = &r.entries[skip..];
    if json {
        print_json(&entries)?;
    } else {
        for e in entries {
            println!(
                "{} {:<11} level {:<3} {:<11} {:>6} ms  {}  {}{}",
                e.time,
                e.action,
                e.level,
                e.result,
                e.duration_ms,
                e.invoker,
                e.name,
                if e.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", e.detail)
                }
            );
        }
    }
    if r.skipped > 0 {
        eprintln!(
            "noreboot: {} unreadable line(s) in {} (torn by a crash?)",
            r.skipped,
            agent.audit.path().display()
        );
    }
    Ok(0)
}

fn report_apply(rep: &engine::ApplyReport, json: bool) -> anyhow::Result<u8> {
    if json {
        print_json(rep)?;
    } else if !rep.changed {
        println!("level {} ({}) is already active", rep.level, rep.name);
    } else {
        println!(
            "level {} ({}) applied, replacing level {}: transition {:.0} ms{}",
            rep.level,
            rep.name,
            rep.previous,
            rep.transition_ms,
            if rep.signalled {
                " (blocking tasks were signalled)"
            } else {
                ""
            }
        );
        for n in &rep.notes {
            println!("  {n}");
        }
    }
    Ok(0)
}

fn effective_version(agent: &Agent) -> String {
    std::fs::read_to_string(agent.store.root().join("effective-version"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && agent_active(agent))
        .unwrap_or_else(|| agent.identity.version.clone())
}

fn agent_active(agent: &Agent) -> bool {
    agent
        .state()
        .and_then(|st| agent.active(&st))
        .map(|a| a.is_some())
        .unwrap_or(false)
}

#[derive(Serialize)]
struct Status {
    release: String,
    version: String,
    build_id: String,
    active: Option<ActiveLevel>,
    live: Vec<engine::LivePatch>,
    foreign: Vec<engine::ForeignPatch>,
    wanted: Option<u32>,
    newest_known: u32,
    effective_version: String,
    cves: Vec<String>,
    skipped: Vec<state::Skipped>,
    offer: Option<state::Offer>,
    state: &'static str,
    notes: Vec<String>,
}

#[derive(Serialize)]
struct ActiveLevel {
    level: u32,
    name: String,
    applied_at: Option<String>,
}

fn status(agent: &Agent, json: bool, mut notes: Vec<String>) -> anyhow::Result<u8> {
    let st = agent.state()?;
    let patches = agent.live_patches(&st)?;
    let active = patches.active();
    let cached = agent.store.cached_levels(&agent.build_id)?;
    let newest_cached = cached
        .iter()
        .copied()
        .filter(|l| !st.is_skipped(*l))
        .max()
        .unwrap_or(0);
    let offered = st.offer.as_ref().map(|o| o.level).unwrap_or(0);
    let newest_known = newest_cached.max(offered);
    let mut cves = Vec::new();
    let mut effective = agent.identity.version.clone();
    if let Some((level, _)) = &active {
        match agent.keys().and_then(|k| agent.cached_manifest(*level, &k)) {
            Ok(m) => {
                cves = m.cves.iter().map(|c| c.id.clone()).collect();
                effective = engine::effective_uname_v(&agent.identity.version, &m);
            }
            Err(e) => notes.push(format!("cached level {level} cannot be read: {e}")),
        }
    }
    // Still there after reconciling: another agent is applying it now.
    if let Ok(Some(j)) = agent.store.journal(&agent.build_id).read() {
        notes.push(format!(
            "level {} is being applied (pid {}, since {}, step {})",
            j.level,
            j.pid,
            j.at,
            j.step.as_str()
        ));
    }
    if let Some(w) = &st.wanted {
        if active.as_ref().map(|a| a.0) != Some(w.level) {
            notes.push(format!(
                "level {} should be active but is not loaded (run `noreboot boot`)",
                w.level
            ));
        }
    }
    if !patches.foreign.is_empty() {
        let names: Vec<&str> = patches.foreign.iter().map(|f| f.name.as_str()).collect();
        notes.push(match &active {
            // Whichever patch is newest on the kernel's stack wins for the
            // functions both replace, so the level's fixes are not certain.
            Some((level, _)) => format!(
                "foreign live patches are loaded beside level {level}: {}; they may replace the same functions, so level {level}'s fixes cannot be vouched for",
                names.join(", ")
            ),
            None => format!(
                "foreign live patches are loaded: {}; applying a level would replace them, which apply and update refuse without --replace-foreign",
                names.join(", ")
            ),
        });
    }
    let active_level = active.as_ref().map(|a| a.0).unwrap_or(0);
    let (state, code) = if st.offer.as_ref().is_some_and(|o| !o.supported) && active.is_none() {
        ("unsupported", 3)
    } else if active.is_none() {
        ("unpatched", 1)
    } else if !patches.foreign.is_empty() {
        ("foreign-patches", 4)
    } else if newest_known > active_level {
        ("update-available", 2)
    } else {
        ("up-to-date", 0)
    };
    let s = Status {
        release: agent.identity.release.clone(),
        version: agent.identity.version.clone(),
        build_id: agent.build_id.clone(),
        active: active.map(|(level, name)| ActiveLevel {
            applied_at: st.levels.get(&level).and_then(|r| r.applied_at.clone()),
            level,
            name,
        }),
        live: patches.ours,
        foreign: patches.foreign,
        wanted: st.wanted.as_ref().map(|w| w.level),
        newest_known,
        effective_version: effective,
        cves,
        skipped: st.skipped.clone(),
        offer: st.offer.clone(),
        state,
        notes,
    };
    if json {
        print_json(&s)?;
    } else {
        println!("kernel:    {} {}", s.release, s.version);
        println!("build-id:  {}", s.build_id);
        match &s.active {
            Some(a) => println!(
                "level:     {} ({}), applied {}",
                a.level,
                a.name,
                a.applied_at.as_deref().unwrap_or("?")
            ),
            None => println!("level:     none"),
        }
        println!("effective: {}", s.effective_version);
        if !s.cves.is_empty() {
            println!("fixes:     {}", s.cves.join(" "));
        }
        if newest_known > active_level {
            println!("newer:     level {newest_known} is available");
        }
        for sk in &s.skipped {
            println!("skipped:   level {}: {}", sk.level, sk.reason);
        }
        for f in &s.foreign {
            println!(
                "foreign:   {}",
                engine::describe_foreign(std::slice::from_ref(f))
            );
        }
        for n in &s.notes {
            println!("note:      {n}");
        }
        println!("state:     {}", s.state);
    }
    Ok(code)
}

/// `vex`: the active level's document, made afresh (always JSON).
fn vex(agent: &Agent) -> anyhow::Result<u8> {
    let st = agent.state()?;
    let patches = agent.live_patches(&st)?;
    let Some((level, _)) = patches.active() else {
        return Err(AgentError::Nothing(
            "nothing is applied: the running kernel has no fix of ours, so there is nothing to state".into(),
        )
        .into());
    };
    if !patches.foreign.is_empty() {
        let names: Vec<&str> = patches.foreign.iter().map(|f| f.name.as_str()).collect();
        return Err(AgentError::Refused(format!(
            "foreign live patches are loaded beside level {level}: {}; they may replace the same functions, so level {level}'s fixes cannot be vouched for and no VEX document is made",
            names.join(", ")
        ))
        .into());
    }
    let m = agent
        .cached_manifest(level, &agent.keys()?)
        .with_context(|| format!("cached level {level}"))?;
    let applied = st
        .levels
        .get(&level)
        .and_then(|r| r.applied_at.clone())
        .unwrap_or_else(agent::audit::now);
    let doc = agent::vex::document(
        &agent.identity.release,
        &agent.identity.version,
        &agent::vex::hostname(),
        &m,
        &applied,
        &agent::audit::now(),
    )?;
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(0)
}

fn patches(agent: &Agent, json: bool) -> anyhow::Result<u8> {
    let st = agent.state()?;
    let keys = agent.keys()?;
    let active = agent.active(&st)?.map(|a| a.0);
    let mut out = Vec::new();
    for level in agent.store.cached_levels(&agent.build_id)? {
        let m = agent
            .cached_manifest(level, &keys)
            .with_context(|| format!("cached level {level}"))?;
        out.push(serde_json::json!({
            "level": level,
            "name": m.name,
            "active": active == Some(level),
            "skipped": st.is_skipped(level),
            "applied_at": st.levels.get(&level).and_then(|r| r.applied_at.clone()),
            "effective_version": m.effective_version,
            "cves": m.cves,
            "targets": m.targets,
            "description": m.description,
        }));
    }
    if json {
        print_json(&out)?;
        return Ok(0);
    }
    if out.is_empty() {
        println!("no levels cached for this kernel ({})", agent.build_id);
    }
    for p in &out {
        println!(
            "level {} {}{}{} applied {}",
            p["level"],
            p["name"].as_str().unwrap_or(""),
            if p["active"] == true { " [active]" } else { "" },
            if p["skipped"] == true {
                " [skipped]"
            } else {
                ""
            },
            p["applied_at"].as_str().unwrap_or("never")
        );
        for c in p["cves"].as_array().into_iter().flatten() {
            println!(
                "  {}  {}",
                c["id"].as_str().unwrap_or(""),
                c["description"].as_str().unwrap_or("")
            );
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            let funcs: Vec<&str> = t["functions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["name"].as_str())
                .collect();
            println!(
                "  {}: {}",
                t["object"].as_str().unwrap_or(""),
                funcs.join(", ")
            );
        }
    }
    Ok(0)
}

fn inspect(cfg: &Config, file: &PathBuf, json: bool) -> anyhow::Result<u8> {
    let bytes = bundle::read_file(file)?;
    // Keys that cannot be loaded are a failed signature check, never a
    // skipped one: "all pass" must mean the signer is trusted here.
    let r = match bundle::TrustedKeys::load_dir_skipping(&cfg.trusted_keys) {
        Ok((keys, skipped)) => {
            for (path, why) in skipped {
                eprintln!(
                    "noreboot: warning: trusted key file {} left out: {why}",
                    path.display()
                );
            }
            bundle::inspect(&bytes, Some(&keys))
        }
        Err(e) => {
            let mut r = bundle::inspect(&bytes, None);
            r.fail_signature(format!(
                "the trusted keys cannot be loaded from {}: {e}",
                cfg.trusted_keys.display()
            ));
            r
        }
    };
    // What a loaded copy of this module will be recognised by (read from
    // the module whether or not the checks passed: `ok` says whether to
    // trust it).
    let identity = bundle::container::read(&bytes)
        .ok()
        .map(|m| module_identity(m.module));
    if json {
        let checks: Vec<_> = r
            .checks
            .iter()
            .map(|c| {
                let (outcome, detail) = match &c.outcome {
                    bundle::Outcome::Pass(d) => ("pass", d.clone()),
                    bundle::Outcome::Fail(e) => ("fail", e.to_string()),
                    bundle::Outcome::Skipped(d) => ("skipped", d.clone()),
                };
                serde_json::json!({"check": c.what, "outcome": outcome, "detail": detail})
            })
            .collect();
        print_json(&serde_json::json!({
            "file": file,
            "size": r.size,
            "members": r.members,
            "signer": r.signer.map(|k| k.to_string()),
            "trusted_comment": r.trusted_comment,
            "manifest": r.manifest,
            "module_identity": identity,
            "checks": checks,
            "ok": r.passed(),
        }))?;
    } else {
        print!("{r}");
        if let Some(identity) = identity {
            println!("module identity: {identity}");
        }
    }
    Ok(if r.passed() { 0 } else { 4 })
}

/// How hosts will recognise a loaded copy of a module: its marker, else
/// (a module from before markers) its GNU build-id.
fn module_identity(module: &[u8]) -> String {
    use kernel::module_id::ModuleNotes;
    match ModuleNotes::from_module(module) {
        Err(e) => format!("unreadable: {e}"),
        Ok(n) => match (n.marker(), n.build_id()) {
            (Some(Ok(m)), _) => format!("marker {m}"),
            (Some(Err(e)), _) => format!("bad marker: {e}"),
            (None, Some(id)) => format!("no marker; GNU build-id {id}"),
            (None, None) => "none: a loaded copy cannot be recognised".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_cause_is_printed_once() {
        let t = tempfile::tempdir().unwrap();
        // Appending to a log whose path is a directory fails with an I/O
        // error that the audit error both says and keeps as its source.
        let log = agent::audit::AuditLog::new(t.path());
        let e = anyhow::Error::from(log.check_writable().unwrap_err());
        let text = render_error(&e);
        let cause = std::io::Error::from_raw_os_error(21).to_string();
        assert_eq!(text.matches(&cause).count(), 1, "{text}");
        assert!(text.starts_with("audit log "), "{text}");
        // A context that adds words keeps them, and its cause once.
        let e = e.context("level 2 not applied");
        let text = render_error(&e);
        assert!(text.starts_with("level 2 not applied: audit log"), "{text}");
        assert_eq!(text.matches(&cause).count(), 1, "{text}");
    }
}
