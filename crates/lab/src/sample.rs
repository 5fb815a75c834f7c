//! The first live patch shown on a real kernel: the project's fixture that
//! replaces `cmdline_proc_show`, built with kbuild against a workspace's
//! headers, loaded in a guest, checked through `/proc/cmdline` and the
//! livepatch sysfs interface, then disabled and unloaded. Shared by the
//! demo (which prints the report) and the guest test (which asserts on it).

use std::path::Path;
use std::time::{Duration, Instant};

use kernel_tree::Workspace;

use crate::error::LabError;
use crate::guest::{dmesg_problems, Guest, GuestConfig};

/// The fixture's sources, embedded so the demo works from any directory.
pub const FIXTURE_SOURCE: &str =
    include_str!("../../../fixtures/livepatch-cmdline/livepatch_cmdline.c");
/// The fixture's Kbuild file.
pub const FIXTURE_KBUILD: &str = include_str!("../../../fixtures/livepatch-cmdline/Kbuild");
/// The patch's name in `/sys/kernel/livepatch`.
pub const PATCH_NAME: &str = "livepatch_cmdline";
/// What the patched `/proc/cmdline` shows.
pub const PATCHED_TEXT: &str = "noreboot: cmdline_proc_show is live patched";

/// What happened to the kernel during the sample.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SampleReport {
    /// Release booted.
    pub release: String,
    /// `/proc/cmdline` before loading.
    pub before: String,
    /// `/proc/cmdline` with the patch enabled.
    pub patched: String,
    /// `/proc/cmdline` after `enabled=0` and unload.
    pub after: String,
    /// `enabled` read back after loading.
    pub enabled: String,
    /// `transition` once it settled.
    pub transition: String,
    /// Time from insmod to transition 0.
    pub patch_transition: Duration,
    /// Time from `enabled=0` until the patch was gone.
    pub unpatch_transition: Duration,
    /// Lines of dmesg that indicate an oops, BUG or WARN.
    pub dmesg_problems: Vec<String>,
    /// The whole dmesg at the end.
    pub dmesg: String,
    /// Kernel taint flags at the end.
    pub taint: String,
    /// Time to build the module.
    pub build: Duration,
    /// Time to boot the guest.
    pub boot: Duration,
    /// From build start to guest off.
    pub total: Duration,
}

/// Builds the fixture against `ws` in `build_dir`; returns the module path.
pub fn build_fixture(ws: &Workspace, build_dir: &Path) -> Result<std::path::PathBuf, LabError> {
    let src = build_dir.join("src");
    std::fs::create_dir_all(&src).map_err(|e| LabError::io("create", &src, e))?;
    for (name, text) in [
        ("livepatch_cmdline.c", FIXTURE_SOURCE),
        ("Kbuild", FIXTURE_KBUILD),
    ] {
        let p = src.join(name);
        std::fs::write(&p, text).map_err(|e| LabError::io("write", &p, e))?;
    }
    let kos = ws.build_module(&src, &build_dir.join("build"))?;
    Ok(kos[0].clone())
}

/// Runs the whole sample on `ws`'s kernel.
pub fn run_cmdline_sample(ws: &Workspace, build_dir: &Path) -> Result<SampleReport, LabError> {
    let started = Instant::now();
    let ko = build_fixture(ws, build_dir)?;
    let build = started.elapsed();
    let cfg = GuestConfig::for_workspace(ws).with_file(&ko, "/root/livepatch_cmdline.ko");
    let mut guest = Guest::boot(&cfg)?;
    let boot = guest.boot_time();
    let sys = format!("/sys/kernel/livepatch/{PATCH_NAME}");

    let before = guest.exec_ok("cat /proc/cmdline")?;
    let t0 = Instant::now();
    guest.exec_ok("insmod /root/livepatch_cmdline.ko")?;
    guest.wait_until(
        &format!("[ \"$(cat {sys}/transition)\" = 0 ]"),
        Duration::from_secs(30),
    )?;
    let patch_transition = t0.elapsed();
    let enabled = guest
        .exec_ok(&format!("cat {sys}/enabled"))?
        .trim()
        .to_string();
    let transition = guest
        .exec_ok(&format!("cat {sys}/transition"))?
        .trim()
        .to_string();
    let patched = guest.exec_ok("cat /proc/cmdline")?;

    let t1 = Instant::now();
    guest.exec_ok(&format!("echo 0 > {sys}/enabled"))?;
    // The kernel removes the sysfs directory once unpatching completes.
    guest.wait_until(&format!("[ ! -e {sys} ]"), Duration::from_secs(30))?;
    let unpatch_transition = t1.elapsed();
    guest.exec_ok(&format!("rmmod {PATCH_NAME}"))?;
    let after = guest.exec_ok("cat /proc/cmdline")?;
    let taint = guest
        .exec_ok("cat /proc/sys/kernel/tainted")?
        .trim()
        .to_string();
    let dmesg = guest.dmesg()?;
    guest.shutdown()?;
    Ok(SampleReport {
        release: ws.release().to_string(),
        before: before.trim_end().to_string(),
        patched: patched.trim_end().to_string(),
        after: after.trim_end().to_string(),
        enabled,
        transition,
        patch_transition,
        unpatch_transition,
        dmesg_problems: dmesg_problems(&dmesg),
        dmesg,
        taint,
        build,
        boot,
        total: started.elapsed(),
    })
}
