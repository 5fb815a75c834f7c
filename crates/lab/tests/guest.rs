//! Guest tests: real Debian kernels booted in QEMU. Nothing here is
//! mocked; every test boots the kernel workspace's image. They need the
//! setup packages (qemu-system-x86, busybox-static, gcc-12, make) and the
//! package archive, and fail — never skip — when something is missing.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kernel_tree::{discover, AptArchive, Cache, Workspace};
use lab::{Guest, GuestConfig, LabError};

/// The kernel workspace all tests share (fetched once, under a lock).
fn ws() -> &'static Workspace {
    static WS: OnceLock<Workspace> = OnceLock::new();
    WS.get_or_init(|| {
        let archive = AptArchive::new();
        let cache = Cache::from_env().expect("cache directory");
        let sel = discover::default_release(&cache, &archive).expect("choosing the test kernel");
        eprintln!("test kernel: {sel}");
        Workspace::fetch(&cache, &archive, &sel.release).expect("fetching the kernel workspace")
    })
}

#[test]
#[ignore = "slow tier: boots a 6.1 guest; scripts/test runs it"]
fn run_returns_status_output_dmesg_and_timing() {
    let cfg = GuestConfig::for_workspace(ws());
    let r = lab::run(&cfg, "echo out; echo err >&2; uname -r; exit 7").unwrap();
    assert_eq!(r.status, 7);
    assert_eq!(r.stdout, format!("out\n{}\n", ws().release()));
    assert_eq!(r.stderr, "err\n");
    assert!(r.dmesg.contains("Linux version"), "{}", r.dmesg);
    assert!(r.console.contains("lab: ready"), "{}", r.console);
    assert!(r.boot > Duration::ZERO && r.total >= r.boot + r.exec);
    eprintln!("boot {:?} exec {:?} total {:?}", r.boot, r.exec, r.total);
}

#[test]
#[ignore = "slow tier: boots a 6.1 guest; scripts/test runs it"]
fn session_keeps_state_across_steps() {
    let mut g = Guest::boot(&GuestConfig::for_workspace(ws())).unwrap();
    g.exec_ok("echo first > /tmp/state").unwrap();
    assert_eq!(g.exec_ok("cat /tmp/state").unwrap(), "first\n");
    let r = g.exec("false").unwrap();
    assert_eq!(r.status, 1);
    // Binary-safe output and large output both survive the channel.
    let big = g
        .exec_ok("head -c 300000 /dev/zero | tr '\\0' 'x'; printf '\\001\\377'")
        .unwrap();
    assert_eq!(big.len(), 300_000 + 1 + "\u{fffd}".len());
    let err = g.exec_ok("echo boom >&2; exit 3").unwrap_err();
    assert!(
        matches!(err, LabError::CommandFailed { status: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("boom"), "{err}");
    let console = g.shutdown().unwrap();
    assert!(console.contains("reboot: Restarting system"), "{console}");
}

#[test]
#[ignore = "slow tier: boots a 6.1 guest; scripts/test runs it"]
fn image_build_id_is_what_the_running_kernel_reports() {
    let mut g = Guest::boot(&GuestConfig::for_workspace(ws())).unwrap();
    let hex = g
        .exec_ok("od -An -v -tx1 /sys/kernel/notes | tr -d ' \\n'")
        .unwrap();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let running = kernel::notes::build_id(&bytes).unwrap();
    assert_eq!(running, ws().identity().build_id);
    let uname_v = g.exec_ok("uname -v").unwrap();
    assert_eq!(uname_v.trim(), ws().identity().uname_version);
    g.shutdown().unwrap();
}

#[test]
#[ignore = "slow tier: boots a 6.1 guest; scripts/test runs it"]
fn guest_reaches_host_loopback_over_user_networking() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        s.write_all(b"pong\n").unwrap();
        line
    });
    let cfg = GuestConfig::for_workspace(ws()).with_network();
    let r = lab::run(
        &cfg,
        &format!("echo ping-from-guest | nc -w 5 10.0.2.2 {port}"),
    )
    .unwrap();
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.stdout, "pong\n");
    assert_eq!(server.join().unwrap(), "ping-from-guest\n");
}

#[test]
#[ignore = "slow tier: boots a 6.1 guest; scripts/test runs it"]
fn host_binary_runs_with_its_shared_libraries() {
    let cfg = GuestConfig::for_workspace(ws()).with_binary("/usr/bin/xz", "/usr/bin/xz");
    // By path: Debian's busybox shell runs its own applet for a bare `xz`.
    let r = lab::run(
        &cfg,
        "echo compressed-in-guest | /usr/bin/xz | /usr/bin/xz -d",
    )
    .unwrap();
    assert_eq!(
        (r.status, r.stdout.as_str()),
        (0, "compressed-in-guest\n"),
        "{}",
        r.stderr
    );
}

#[test]
#[ignore = "slow tier: boots a 6.1 guest; scripts/test runs it"]
fn guest_panic_is_reported_with_the_console() {
    let started = Instant::now();
    let err = lab::run(
        &GuestConfig::for_workspace(ws()),
        "echo c > /proc/sysrq-trigger",
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LabError::GuestPanic { .. }), "{msg}");
    assert!(msg.contains("Kernel panic - not syncing"), "{msg}");
    assert!(msg.contains("sysrq"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
#[ignore = "slow tier: boots a 6.1 guest; scripts/test runs it"]
fn hung_command_times_out_and_kills_the_guest() {
    let mut g = Guest::boot(&GuestConfig::for_workspace(ws())).unwrap();
    let started = Instant::now();
    let err = g
        .exec_timeout("sleep 600", Duration::from_secs(3))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LabError::Timeout { .. }), "{msg}");
    assert!(
        msg.contains("timed out after 3.0s while running \"sleep 600\""),
        "{msg}"
    );
    assert!(msg.contains("lab: ready"), "console tail expected in {msg}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The guest is gone: the next command fails at once instead of hanging.
    let again = g.exec_timeout("true", Duration::from_secs(30)).unwrap_err();
    assert!(matches!(again, LabError::GuestExited { .. }), "{again}");
}

#[test]
#[ignore = "slow tier: boots a 6.1 guest; scripts/test runs it"]
fn hung_boot_times_out_with_console() {
    let mut cfg = GuestConfig::for_workspace(ws());
    cfg.boot_script = Some("sleep 600".into());
    cfg.boot_timeout = Duration::from_secs(30);
    let err = Guest::boot(&cfg).err().expect("boot must time out");
    let msg = err.to_string();
    assert!(matches!(err, LabError::Timeout { .. }), "{msg}");
    assert!(msg.contains("booting to the command channel"), "{msg}");
    assert!(msg.contains("lab: running boot script"), "{msg}");
}

#[test]
fn missing_kernel_is_a_clear_error() {
    let err = Guest::boot(&GuestConfig::new("/nonexistent/vmlinuz-x", "x"))
        .err()
        .unwrap();
    assert!(matches!(err, LabError::MissingKernel { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("/nonexistent/vmlinuz-x does not exist"),
        "{err}"
    );
}

#[test]
#[ignore = "slow tier: needs the 6.1 kernel workspace; scripts/test runs it"]
fn unknown_module_is_a_clear_error() {
    let mut cfg = GuestConfig::for_workspace(ws());
    cfg.modules = vec!["no_such_module_xyz".into()];
    let err = Guest::boot(&cfg).err().unwrap();
    assert!(
        err.to_string()
            .contains("no_such_module_xyz: no such module"),
        "{err}"
    );
}

/// Item 4 of the foundation issue: the kernel's livepatch sample idea,
/// written as the project's fixture, on the real kernel.
#[test]
#[ignore = "slow tier: builds the fixture module and boots a 6.1 guest; scripts/test runs it"]
fn livepatch_fixture_patches_and_unpatches_cmdline() {
    let dir = tempfile::tempdir().unwrap();
    let r = lab::sample::run_cmdline_sample(ws(), dir.path()).unwrap();
    eprintln!(
        "build {:?} boot {:?} patch {:?} unpatch {:?} total {:?}",
        r.build, r.boot, r.patch_transition, r.unpatch_transition, r.total
    );
    assert!(r.before.contains("console=ttyS0"), "{r:?}");
    assert_eq!(r.patched, lab::sample::PATCHED_TEXT);
    assert_eq!(r.enabled, "1");
    assert_eq!(r.transition, "0");
    assert_eq!(r.after, r.before, "enabled=0 must bring the original back");
    assert!(
        r.dmesg
            .contains("livepatch: 'livepatch_cmdline': patching complete"),
        "{}",
        r.dmesg
    );
    assert!(
        r.dmesg
            .contains("livepatch: 'livepatch_cmdline': unpatching complete"),
        "{}",
        r.dmesg
    );
    assert!(
        r.dmesg_problems.is_empty(),
        "oops/WARN in dmesg: {:?}",
        r.dmesg_problems
    );
    // TAINT_LIVEPATCH (bit 15) must be set: the kernel knows it was patched.
    let taint: u64 = r.taint.parse().unwrap();
    assert_ne!(taint & (1 << 15), 0, "taint {taint}");
}

#[test]
#[ignore = "slow tier: boots a 6.1 guest through noreboot-lab; scripts/test runs it"]
fn cli_runs_a_command_and_passes_its_exit_status() {
    let exe = env!("CARGO_BIN_EXE_noreboot-lab");
    let out = std::process::Command::new(exe)
        .args([
            "run",
            "--kernel",
            ws().release().as_str(),
            "--",
            "cat /proc/cmdline; exit 5",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("console=ttyS0 panic=-1"));
    let out = std::process::Command::new(exe)
        .args(["run", "--kernel", "6.1.0-9-cloud-amd64", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("unknown kernel release 6.1.0-9-cloud-amd64"),
        "{stderr}"
    );
    assert!(Path::new(exe).exists());
}

/// The workspace's symbol table (from the -dbg package) is the running
/// kernel's: with KASLR off, /proc/kallsyms gives the same addresses.
#[test]
#[ignore = "slow tier: downloads the -dbg symbols and boots a 6.1 guest; scripts/test runs it"]
fn symbol_table_matches_kallsyms_of_the_booted_kernel() {
    let table = ws()
        .symbols(&Cache::from_env().unwrap(), &AptArchive::new())
        .unwrap();
    let map = kernel_tree::symbols::parse_system_map(
        &std::fs::read_to_string(&table.system_map).unwrap(),
    )
    .unwrap();
    let mut cfg = GuestConfig::for_workspace(ws());
    cfg.cmdline.push("nokaslr".into());
    let names = [
        "cmdline_proc_show",
        "init_task",
        "klp_enable_patch",
        "jiffies_64",
    ];
    let script = names
        .iter()
        .map(|n| format!("grep -E ' {n}$' /proc/kallsyms"))
        .collect::<Vec<_>>()
        .join("; ");
    let r = lab::run(&cfg, &script).unwrap();
    let live = kernel_tree::symbols::parse_system_map(&r.stdout).unwrap();
    for n in names {
        let in_guest: Vec<u64> = live
            .iter()
            .filter(|s| s.name == n)
            .map(|s| s.address)
            .collect();
        let in_map: Vec<u64> = map
            .iter()
            .filter(|s| s.name == n)
            .map(|s| s.address)
            .collect();
        assert!(
            !in_guest.is_empty(),
            "{n} not in /proc/kallsyms: {}",
            r.stdout
        );
        assert_eq!(in_guest, in_map, "{n}");
    }
}
