//! `--verify`: the built module in the kernel it was built for, booted in
//! the lab. The target modules are loaded first, the author's checks run
//! before (they must fail where the fix is observable) and after loading
//! (they must pass), the transition must finish, dmesg must show no oops
//! or WARN and the taint no flag beyond the livepatch and out-of-tree
//! ones; then the patch is disabled and unloaded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use kernel_tree::Workspace;
use lab::{dmesg_problems, Guest, GuestConfig};

use crate::factory::Manifest;

/// One check script's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    /// Script file name.
    pub script: String,
    /// Exit status before loading the patch.
    pub before: i32,
    /// Exit status with the patch applied.
    pub after: i32,
    /// Its output with the patch applied.
    pub output: String,
}

/// What the verification saw.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Seconds from insmod to transition 0.
    pub transition_seconds: f64,
    /// Seconds from `enabled=0` to the patch gone.
    pub unpatch_seconds: f64,
    /// Per target object, `patched` read from sysfs.
    pub patched: Vec<(String, String)>,
    /// Check scripts.
    pub checks: Vec<CheckResult>,
    /// Kernel taint with the patch loaded.
    pub taint: u64,
    /// Targets the lab could not load (no such device or hypervisor):
    /// the patch was loaded and transitioned with them absent, their
    /// functions were not exercised. Each says which and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_exercised: Vec<String>,
    /// What the lab kernel reported before the patch was loaded — while
    /// the targets loaded (crypto's self-tests warn when `drbg` loads
    /// under TCG) — with the taint it had then: not the patch's doing,
    /// and not counted against it. The patch is blamed only for what
    /// comes after.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub before_patch: Vec<String>,
    /// Everything that went wrong (empty: verified).
    pub problems: Vec<String>,
    /// Seconds for the whole verification, boot included.
    pub seconds: f64,
}

/// Taint flags a live patch module itself causes: livepatch (K),
/// out-of-tree (O), unsigned (E).
const EXPECTED_TAINT: u64 = (1 << 15) | (1 << 12) | (1 << 13);

/// A smoke test: the kernel still runs processes, files and /proc.
const SMOKE: &str = "cat /proc/version >/dev/null && ls / >/dev/null && echo smoke > /tmp/smoke && [ \"$(cat /tmp/smoke)\" = smoke ]";

/// Boots the kernel, loads `ko` and checks everything: the target
/// modules loaded first, a baseline of taint and log, the checks before,
/// the patch loaded and its transition, what it patched, the smoke test
/// and the checks after, the taint, the patch disabled and unloaded, and
/// the kernel log after the baseline.
pub fn verify(
    ws: &Workspace,
    ko: &Path,
    module: &str,
    manifest: &Manifest,
    checks: &[PathBuf],
    work: &Path,
) -> anyhow::Result<VerifyReport> {
    let started = Instant::now();
    std::fs::create_dir_all(work)?;
    let (cfg, targets) = guest_config(ws, ko, manifest, checks)?;
    let mut guest = Guest::boot(&cfg)?;
    let mut rep = VerifyReport::default();
    let loaded = load_targets(&mut guest, &targets, &mut rep)?;
    // The baseline: the taint the kernel has and what it logged before
    // the patch arrives; a marker in the log splits before from after.
    let taint_before = read_taint(&mut guest)?;
    guest.exec_ok(&format!("echo '{BASELINE_MARK}' > /dev/kmsg"))?;
    if guest.exec(SMOKE)?.status != 0 {
        rep.problems
            .push("the smoke test fails before the patch is loaded".into());
    }
    checks_before(&mut guest, checks, &mut rep)?;
    let sys = format!("/sys/kernel/livepatch/{module}");
    if !load_patch(&mut guest, &sys, manifest, work, &mut rep)? {
        let _ = guest.shutdown();
        rep.seconds = started.elapsed().as_secs_f64();
        return Ok(rep);
    }
    patched_state(&mut guest, &sys, manifest, &loaded, &mut rep)?;
    if guest.exec(SMOKE)?.status != 0 {
        rep.problems
            .push("the smoke test fails with the patch applied".into());
    }
    checks_after(&mut guest, &mut rep)?;
    rep.taint = read_taint(&mut guest)?;
    let new_taint = rep.taint & !taint_before & !EXPECTED_TAINT;
    if new_taint != 0 {
        rep.problems.push(format!(
            "unexpected kernel taint {:#x} (new since the patch loaded: {new_taint:#x})",
            rep.taint
        ));
    }
    unload_patch(&mut guest, &sys, module, &mut rep)?;
    kernel_log(&mut guest, work, taint_before, &mut rep)?;
    guest.shutdown()?;
    rep.seconds = started.elapsed().as_secs_f64();
    Ok(rep)
}

/// The target modules a patch needs loaded first: their names, and each
/// file's guest path with its module name.
struct Targets {
    modules: Vec<String>,
    loads: Vec<(String, String)>,
}

/// The guest: the patch, the target modules (and what they need) and
/// the check scripts copied in.
fn guest_config(
    ws: &Workspace,
    ko: &Path,
    manifest: &Manifest,
    checks: &[PathBuf],
) -> anyhow::Result<(GuestConfig, Targets)> {
    let mut cfg = GuestConfig::for_workspace(ws).with_file(ko, "/root/patch.ko");
    let modules: Vec<String> = manifest
        .targets
        .iter()
        .filter(|t| t.object != "vmlinux")
        .map(|t| t.object.clone())
        .collect();
    let mut loads = Vec::new();
    if !modules.is_empty() {
        let index = kernel_tree::modules::ModuleIndex::new(&ws.modules_dir())?;
        for (i, path) in index.resolve(&modules)?.into_iter().enumerate() {
            let guest = format!("/root/mods/{i}.ko");
            let name = path
                .file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .split('.')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
                .unwrap_or_default();
            cfg = cfg.with_file(path, guest.clone());
            loads.push((guest, name));
        }
    }
    for (i, c) in checks.iter().enumerate() {
        let text = std::fs::read(c).with_context(|| format!("reading check {}", c.display()))?;
        cfg.contents
            .push((format!("/root/check{i}.sh"), text, 0o755));
    }
    Ok((cfg, Targets { modules, loads }))
}

/// Loads the target modules in order; returns the modules the guest then
/// has. A target whose device or hypervisor the lab lacks (xen-netback,
/// Hyper-V's drivers: "No such device") cannot load here; it, and the
/// ones loaded after it (which need it), are then left out, and the
/// patch is verified with them absent: it must load, transition and
/// unload, and it patches them when they load on a real host.
fn load_targets(
    guest: &mut Guest,
    t: &Targets,
    rep: &mut VerifyReport,
) -> anyhow::Result<Vec<String>> {
    let mut failed_load = None;
    for (path, name) in &t.loads {
        let r = guest.exec(&format!("insmod {path}"))?;
        if r.status != 0 {
            let why = r
                .stderr
                .trim()
                .rsplit(": ")
                .next()
                .unwrap_or("")
                .to_string();
            failed_load = Some((name.clone(), why));
            break;
        }
    }
    let loaded: Vec<String> = guest
        .exec_ok("cut -d' ' -f1 /proc/modules")?
        .lines()
        .map(str::to_string)
        .collect();
    if let Some((name, why)) = failed_load {
        for m in t
            .modules
            .iter()
            .filter(|m| !loaded.contains(&m.replace('-', "_")))
        {
            rep.not_exercised.push(format!(
                "target {m}: {name} cannot load in the lab ({why}); the patch was verified with {m} absent, and patches it when it loads"
            ));
        }
    }
    Ok(loaded)
}

/// Runs each check before the patch (it must fail then).
fn checks_before(
    guest: &mut Guest,
    checks: &[PathBuf],
    rep: &mut VerifyReport,
) -> anyhow::Result<()> {
    for (i, c) in checks.iter().enumerate() {
        let r = guest.exec(&format!("sh /root/check{i}.sh"))?;
        rep.checks.push(CheckResult {
            script: c
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            before: r.status,
            after: -1,
            output: String::new(),
        });
    }
    Ok(())
}

/// Loads the patch and waits for its transition, naming the tasks that
/// hold it up if it does not finish. False when the load itself failed
/// (the report says why; nothing more to check).
fn load_patch(
    guest: &mut Guest,
    sys: &str,
    manifest: &Manifest,
    work: &Path,
    rep: &mut VerifyReport,
) -> anyhow::Result<bool> {
    let t0 = Instant::now();
    let load = guest.exec("insmod /root/patch.ko")?;
    if load.status != 0 {
        rep.problems
            .push(format!("insmod failed: {}", load.stderr.trim()));
        let dmesg = guest.dmesg().unwrap_or_default();
        let tail: Vec<&str> = dmesg.lines().rev().take(15).collect();
        rep.problems.push(format!(
            "dmesg:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
        return Ok(false);
    }
    let finished = wait_or_note(
        guest,
        &format!("[ \"$(cat {sys}/transition)\" = 0 ]"),
        "the transition",
        &mut rep.problems,
    );
    rep.transition_seconds = t0.elapsed().as_secs_f64();
    if !finished {
        let replaced: Vec<&str> = manifest
            .targets
            .iter()
            .flat_map(|t| t.functions.iter().map(|(f, _)| f.as_str()))
            .collect();
        let stuck = stragglers(guest, &replaced, work)?;
        rep.problems.extend(stuck);
    }
    Ok(true)
}

/// Each target object's `patched` flag: 1 for vmlinux and loaded
/// modules; an absent module's object is patched once it loads.
fn patched_state(
    guest: &mut Guest,
    sys: &str,
    manifest: &Manifest,
    loaded: &[String],
    rep: &mut VerifyReport,
) -> anyhow::Result<()> {
    for t in &manifest.targets {
        let dir = t.object.replace('-', "_");
        let v = guest.exec(&format!("cat {sys}/{dir}/patched"))?;
        let v = v.stdout.trim().to_string();
        let want = if t.object == "vmlinux" || loaded.contains(&dir) {
            "1"
        } else {
            "0"
        };
        if v != want {
            rep.problems
                .push(format!("{sys}/{dir}/patched is {v:?}, not {want}"));
        }
        rep.patched.push((t.object.clone(), v));
    }
    Ok(())
}

/// Runs each check with the patch applied: it must pass now, and must
/// have failed before (else it does not observe the fix).
fn checks_after(guest: &mut Guest, rep: &mut VerifyReport) -> anyhow::Result<()> {
    let problems = &mut rep.problems;
    for (i, r) in rep.checks.iter_mut().enumerate() {
        let after = guest.exec(&format!("sh /root/check{i}.sh"))?;
        r.after = after.status;
        r.output = format!("{}{}", after.stdout, after.stderr);
        if r.before == 0 {
            problems.push(format!(
                "check {} already passes without the patch: it does not observe the fix",
                r.script
            ));
        }
        if r.after != 0 {
            problems.push(format!(
                "check {} fails with the patch applied (status {}): {}",
                r.script,
                r.after,
                r.output.trim()
            ));
        }
    }
    Ok(())
}

/// Disables the patch, waits for it to go, and unloads its module.
fn unload_patch(
    guest: &mut Guest,
    sys: &str,
    module: &str,
    rep: &mut VerifyReport,
) -> anyhow::Result<()> {
    let t1 = Instant::now();
    guest.exec_ok(&format!("echo 0 > {sys}/enabled"))?;
    wait_or_note(
        guest,
        &format!("[ ! -e {sys} ]"),
        "disabling",
        &mut rep.problems,
    );
    rep.unpatch_seconds = t1.elapsed().as_secs_f64();
    if guest.exec(&format!("rmmod {module}"))?.status != 0 {
        rep.problems.push(format!("rmmod {module} failed"));
    }
    Ok(())
}

/// The kernel log, kept in `work`: problems after the baseline are the
/// patch's; those before (and taint the kernel had) are reported apart.
fn kernel_log(
    guest: &mut Guest,
    work: &Path,
    taint_before: u64,
    rep: &mut VerifyReport,
) -> anyhow::Result<()> {
    let dmesg = guest.dmesg()?;
    std::fs::write(work.join("dmesg.txt"), &dmesg)?;
    let (before, after) = split_at_baseline(&dmesg);
    for p in dmesg_problems(after) {
        rep.problems.push(format!("dmesg: {p}"));
    }
    let earlier = dmesg_problems(before);
    if !earlier.is_empty() || taint_before & !EXPECTED_TAINT != 0 {
        rep.before_patch
            .push(format!("kernel taint {taint_before:#x}"));
        rep.before_patch
            .extend(earlier.into_iter().map(|p| format!("dmesg: {p}")));
    }
    Ok(())
}

/// What verification writes to the guest's kernel log once the targets
/// are loaded, just before the patch.
const BASELINE_MARK: &str = "noreboot-verify: baseline, the patch loads next";

/// The kernel log before and after [`BASELINE_MARK`] (all of it is
/// "after" if the mark is missing: nothing is excused then).
fn split_at_baseline(dmesg: &str) -> (&str, &str) {
    match dmesg.find(BASELINE_MARK) {
        Some(at) => {
            let line_start = dmesg[..at].rfind('\n').map_or(0, |n| n + 1);
            (&dmesg[..line_start], &dmesg[at..])
        }
        None => ("", dmesg),
    }
}

fn read_taint(guest: &mut Guest) -> anyhow::Result<u64> {
    let text = guest.exec_ok("cat /proc/sys/kernel/tainted")?;
    text.trim()
        .parse()
        .with_context(|| format!("the guest's /proc/sys/kernel/tainted reads {text:?}"))
}

/// Waits up to a minute for `cond` in the guest; a timeout is a problem
/// of the patch, noted, not an error of the verification. Says whether
/// `cond` came true.
fn wait_or_note(guest: &mut Guest, cond: &str, what: &str, problems: &mut Vec<String>) -> bool {
    match guest.wait_until(cond, Duration::from_secs(60)) {
        Ok(_) => true,
        Err(lab::LabError::CommandFailed { .. }) => {
            problems.push(format!("{what} did not finish in 60 s"));
            false
        }
        Err(e) => {
            problems.push(format!("{what} did not finish: {e}"));
            false
        }
    }
}

/// Lists every task (thread) still unpatched: its name, then the
/// functions on its kernel stack, innermost first.
const STRAGGLERS: &str = r#"for d in /proc/[0-9]*/task/[0-9]*; do [ "$(cat $d/patch_state 2>/dev/null)" = 0 ] || continue; echo "T ${d##*/} $(cat $d/comm)"; sed -n 's/^\[<[0-9a-f]*>\] \([^+ ]*\).*/F \1/p' $d/stack 2>/dev/null; done"#;

/// Why a patching transition does not finish: each task still unpatched,
/// what it sleeps in, and — when that is a function the patch replaces —
/// what the author can do about it.
fn stragglers(guest: &mut Guest, replaced: &[&str], work: &Path) -> anyhow::Result<Vec<String>> {
    let out = guest.exec_ok(STRAGGLERS)?;
    std::fs::write(work.join("stragglers.txt"), &out)?;
    Ok(describe_stragglers(&out, replaced))
}

/// The problems [`stragglers`] reports, from the guest script's output.
fn describe_stragglers(listing: &str, replaced: &[&str]) -> Vec<String> {
    struct Task<'a> {
        pid: &'a str,
        comm: &'a str,
        stack: Vec<&'a str>,
    }
    let mut tasks: Vec<Task> = Vec::new();
    for line in listing.lines() {
        if let Some(rest) = line.strip_prefix("T ") {
            let (pid, comm) = rest.split_once(' ').unwrap_or((rest, ""));
            tasks.push(Task {
                pid,
                comm,
                stack: Vec::new(),
            });
        } else if let (Some(f), Some(t)) = (line.strip_prefix("F "), tasks.last_mut()) {
            t.stack.push(f);
        }
    }
    if tasks.is_empty() {
        return vec!["no task is left unpatched, yet the transition did not finish".into()];
    }
    let mut problems = Vec::new();
    for t in &tasks {
        let held: Vec<&str> = t
            .stack
            .iter()
            .copied()
            .filter(|f| replaced.contains(f))
            .collect();
        let stack = if t.stack.is_empty() {
            "no kernel stack to show".to_string()
        } else {
            t.stack.join(" ← ")
        };
        let mut p = format!("task {} (pid {}) stays unpatched: {stack}", t.comm, t.pid);
        if let Some(f) = held.first() {
            p.push_str(&format!(
                "; it sleeps inside {f}, which the patch replaces, and a task is only switched to the new code when none of the replaced functions is on its stack"
            ));
            // The function the thread was started with (called by
            // kthread(), or by the fork return for kthreadd itself).
            let entry = t
                .stack
                .iter()
                .position(|x| x == f)
                .and_then(|i| t.stack.get(i + 1));
            if entry
                .is_some_and(|c| matches!(*c, "kthread" | "ret_from_fork" | "ret_from_fork_asm"))
            {
                p.push_str(&format!(
                    ". {f} is the main loop of a kernel thread and never returns, so the transition cannot finish while the thread runs: leave the change to {f} out with NOREBOOT_IGNORE_FUNCTION({f}) if it may wait for a reboot, or move it into a function the loop calls"
                ));
            }
        }
        problems.push(p);
    }
    problems
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_log_splits_at_the_baseline_mark() {
        let log = format!(
            "[ 1.7] WARNING: CPU: 0 PID: 92 at crypto/testmgr.c:5907 alg_test\n[ 1.8] {}\n[ 1.9] livepatch: 'p': patching complete\n",
            super::BASELINE_MARK
        );
        let (before, after) = super::split_at_baseline(&log);
        assert!(before.contains("testmgr") && !before.contains("noreboot-verify"));
        assert!(after.starts_with(super::BASELINE_MARK) && after.contains("patching complete"));
        assert!(!super::dmesg_problems(before).is_empty());
        assert!(super::dmesg_problems(after).is_empty());
        // No mark: nothing is excused.
        assert_eq!(super::split_at_baseline("[ 1.0] x\n"), ("", "[ 1.0] x\n"));
    }

    use super::describe_stragglers;

    #[test]
    fn a_kthread_sleeping_in_a_replaced_loop_is_named_with_the_way_out() {
        let listing =
            "T 27 kauditd\nF kauditd_thread\nF kthread\nF ret_from_fork\nT 1 init\nF do_wait\n";
        let p = describe_stragglers(listing, &["kauditd_thread", "audit_log_end"]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("task kauditd (pid 27) stays unpatched: kauditd_thread ← kthread ← ret_from_fork; it sleeps inside kauditd_thread"), "{}", p[0]);
        assert!(
            p[0].contains("NOREBOOT_IGNORE_FUNCTION(kauditd_thread)"),
            "{}",
            p[0]
        );
        assert_eq!(p[1], "task init (pid 1) stays unpatched: do_wait");
        // kthreadd runs straight from the fork return; a replaced
        // function deeper in a thread's stack is not its loop.
        let p = describe_stragglers(
            "T 2 kthreadd\nF kthreadd\nF ret_from_fork\nT 9 worker\nF schedule\nF helper\nF worker_loop\nF kthread\n",
            &["kthreadd", "helper"],
        );
        assert!(
            p[0].contains("NOREBOOT_IGNORE_FUNCTION(kthreadd)"),
            "{}",
            p[0]
        );
        assert!(
            p[1].contains("it sleeps inside helper") && !p[1].contains("main loop"),
            "{}",
            p[1]
        );
    }

    #[test]
    fn no_straggler_is_said_plainly() {
        let p = describe_stragglers("", &["f"]);
        assert_eq!(
            p,
            ["no task is left unpatched, yet the transition did not finish"]
        );
    }
}
