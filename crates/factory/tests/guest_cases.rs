//! Factory cases that need more than `--verify` shows, each observed in a
//! real 6.1 guest: a fix to a module that is loaded only after the live
//! patch (its livepatch relocations are applied when it arrives), and the
//! author's `NOREBOOT_IGNORE_FUNCTION` keeping a function the fix changes
//! but no transition could ever replace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kernel_tree::{AptArchive, Cache, Workspace};

const RELEASE: &str = "6.1.0-47-cloud-amd64";

fn workspace() -> (Workspace, PathBuf) {
    let cache = Cache::from_env().unwrap();
    let archive = AptArchive::new();
    let ws = Workspace::fetch(&cache, &archive, &RELEASE.parse().unwrap()).unwrap();
    let tree = ws
        .source_tree(&cache, &archive)
        .unwrap()
        .dir()
        .to_path_buf();
    (ws, tree)
}

fn out_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("guest-cases")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A patch of `rel` with each `from` replaced by `to` once.
fn edit(tree: &Path, rel: &str, edits: &[(&str, &str)], out: &Path) -> PathBuf {
    let mut text = std::fs::read_to_string(tree.join(rel)).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{rel} has no {from:?}");
        text = text.replacen(from, to, 1);
    }
    std::fs::create_dir_all(out).unwrap();
    let edited = out.join(rel.replace('/', "_"));
    std::fs::write(&edited, text).unwrap();
    let diff = Command::new("diff")
        .arg("-u")
        .arg(format!("--label=a/{rel}"))
        .arg(format!("--label=b/{rel}"))
        .arg(tree.join(rel))
        .arg(&edited)
        .output()
        .unwrap();
    let patch = out.join(format!("{}.patch", rel.replace('/', "_")));
    std::fs::write(&patch, diff.stdout).unwrap();
    patch
}

/// Runs noreboot-build with `--json`; returns (exit code, manifest, stderr).
fn build(args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_noreboot-build"))
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "slow tier: builds a 6.1 patch and boots a guest; scripts/test runs it"]
fn a_fix_to_a_module_loaded_after_the_patch_takes_effect_when_it_loads() {
    let (ws, tree) = workspace();
    let out = out_dir("late-module");
    // binfmt_misc is a module of this kernel; its status file reads a
    // static of the module (`enabled`): a livepatch relocation that the
    // kernel can only apply once the module is there.
    let patch = edit(
        &tree,
        "fs/binfmt_misc.c",
        &[(
            "char *s = enabled ? \"enabled\\n\" : \"disabled\\n\";",
            "char *s = enabled ? \"enabled (live patched)\\n\" : \"disabled (live patched)\\n\";",
        )],
        &out,
    );
    let dir = out.join("module");
    let (code, m, stderr) = build(&[
        "--kernel",
        RELEASE,
        "--patch",
        patch.to_str().unwrap(),
        "--name",
        "late_binfmt",
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let targets = m["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1, "{m}");
    assert_eq!(targets[0]["object"], "binfmt_misc", "{m}");
    let ko = dir.join("late_binfmt.ko");
    // Shipped without debugging information; the full module stays beside.
    let sections = Command::new("readelf")
        .args(["-S", "-W"])
        .arg(&ko)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&sections.stdout).contains(".debug_"));
    assert!(dir.join("late_binfmt.ko.debug").is_file());
    let index = kernel_tree::modules::ModuleIndex::new(&ws.modules_dir()).unwrap();
    let target = index.path("binfmt_misc").unwrap().unwrap();

    let cfg = lab::GuestConfig::for_workspace(&ws)
        .with_file(&ko, "/root/late_binfmt.ko")
        .with_file(&target, "/root/binfmt_misc.ko");
    let mut g = lab::Guest::boot(&cfg).unwrap();
    assert!(!g
        .exec_ok("cat /proc/modules")
        .unwrap()
        .contains("binfmt_misc"));
    g.exec_ok("insmod /root/late_binfmt.ko").unwrap();
    let lp = "/sys/kernel/livepatch/late_binfmt";
    g.wait_until(
        &format!("[ \"$(cat {lp}/transition)\" = 0 ]"),
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(g.exec_ok(&format!("cat {lp}/enabled")).unwrap().trim(), "1");
    assert_eq!(
        g.exec_ok(&format!("cat {lp}/binfmt_misc/patched"))
            .unwrap()
            .trim(),
        "0",
        "the target is not loaded yet"
    );
    // Now the module arrives: the kernel patches it while loading it.
    g.exec_ok(
        "insmod /root/binfmt_misc.ko && mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc",
    )
    .unwrap();
    assert_eq!(
        g.exec_ok(&format!("cat {lp}/binfmt_misc/patched"))
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(
        g.exec_ok("cat /proc/sys/fs/binfmt_misc/status").unwrap(),
        "enabled (live patched)\n"
    );
    // Disabling puts the module's own code back.
    g.exec_ok(&format!("echo 0 > {lp}/enabled")).unwrap();
    g.wait_until(&format!("[ ! -d {lp} ]"), Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        g.exec_ok("cat /proc/sys/fs/binfmt_misc/status").unwrap(),
        "enabled\n"
    );
    let dmesg = g.dmesg().unwrap();
    assert!(lab::dmesg_problems(&dmesg).is_empty(), "{dmesg}");
}

#[test]
#[ignore = "slow tier: builds a 6.1 patch and boots a guest; scripts/test runs it"]
fn a_function_marked_unchanged_is_left_to_the_kernel() {
    let (_ws, tree) = workspace();
    let out = out_dir("ignore");
    // kthreadd never leaves its loop: a patch replacing it could never
    // finish its transition. The fix changes it and /proc/cmdline; the
    // author keeps kthreadd as it is.
    let kthread = edit(
        &tree,
        "kernel/kthread.c",
        &[
            (
                "#include <trace/events/sched.h>\n",
                "#include <trace/events/sched.h>\n#include <noreboot/livepatch.h>\n\n/* kthreadd never returns: it cannot be live patched. */\nNOREBOOT_IGNORE_FUNCTION(kthreadd);\n",
            ),
            (
                "\t\t__set_current_state(TASK_RUNNING);\n\n\t\tspin_lock(&kthread_create_lock);",
                "\t\t__set_current_state(TASK_RUNNING);\n\t\tcpu_relax();\n\n\t\tspin_lock(&kthread_create_lock);",
            ),
        ],
        &out,
    );
    let cmdline = edit(
        &tree,
        "fs/proc/cmdline.c",
        &[(
            "\tseq_puts(m, saved_command_line);",
            "\tseq_puts(m, \"noreboot-ignore-example \");\n\tseq_puts(m, saved_command_line);",
        )],
        &out,
    );
    let check = out.join("check.sh");
    std::fs::write(
        &check,
        "grep -q '^noreboot-ignore-example ' /proc/cmdline\n",
    )
    .unwrap();
    let dir = out.join("module");
    let (code, m, stderr) = build(&[
        "--kernel",
        RELEASE,
        "--patch",
        kthread.to_str().unwrap(),
        "--patch",
        cmdline.to_str().unwrap(),
        "--name",
        "ignore_example",
        "--verify",
        "--check",
        check.to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let funcs: Vec<&str> = m["targets"][0]["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f[0].as_str().unwrap())
        .collect();
    assert_eq!(funcs, ["cmdline_proc_show"], "{m}");
    let notes = m["targets"][0]["notes"].to_string();
    assert!(
        notes.contains("kthreadd") && notes.contains("NOREBOOT_IGNORE_FUNCTION"),
        "{m}"
    );
    assert_eq!(m["verify"]["problems"], serde_json::json!([]), "{m}");

    // Without the marker the same fix replaces kthreadd too.
    let bare = edit(
        &tree,
        "kernel/kthread.c",
        &[(
            "\t\t__set_current_state(TASK_RUNNING);\n\n\t\tspin_lock(&kthread_create_lock);",
            "\t\t__set_current_state(TASK_RUNNING);\n\t\tcpu_relax();\n\n\t\tspin_lock(&kthread_create_lock);",
        )],
        &out.join("bare"),
    );
    // Built, it can never take effect: kthreadd (pid 2) sleeps in the
    // replaced function for ever, and the lab says so, naming the task,
    // where it sleeps and the way out.
    let (code, m, stderr) = build(&[
        "--kernel",
        RELEASE,
        "--patch",
        bare.to_str().unwrap(),
        "--name",
        "ignore_bare",
        "--verify",
        "-o",
        out.join("bare-module").to_str().unwrap(),
    ]);
    assert_eq!(code, 6, "{stderr}");
    assert!(
        m.is_null() && stderr.contains("verification failed"),
        "{stderr}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bare-module/manifest.json")).unwrap())
            .unwrap();
    assert!(
        manifest["targets"][0]["functions"]
            .to_string()
            .contains("kthreadd"),
        "{manifest}"
    );
    let problems = manifest["verify"]["problems"].to_string();
    assert!(
        problems.contains("the transition did not finish in 60 s")
            && problems.contains("task kthreadd (pid 2) stays unpatched: kthreadd")
            && problems.contains("NOREBOOT_IGNORE_FUNCTION(kthreadd)"),
        "{problems}"
    );
    assert!(stderr.contains("task kthreadd (pid 2)"), "{stderr}");
}

/// A replaced function that asks whether its kernel thread should stop is
/// that thread's main loop: the factory warns before any lab run (the
/// fix here is a real one's shape: kernel/audit.c between 6.1.170-3 and
/// 6.1.192-3 changes kauditd_thread).
#[test]
#[ignore = "slow tier: builds a 6.1 patch and boots a guest; scripts/test runs it"]
fn a_replaced_kthread_main_loop_is_warned_about() {
    let (_ws, tree) = workspace();
    let out = out_dir("kthread-loop");
    let patch = edit(
        &tree,
        "kernel/audit.c",
        &[("#define UNICAST_RETRIES 5", "#define UNICAST_RETRIES 6")],
        &out,
    );
    let (code, m, stderr) = build(&[
        "--kernel",
        RELEASE,
        "--patch",
        patch.to_str().unwrap(),
        "--name",
        "kauditd_loop",
        "-o",
        out.join("module").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        m["targets"][0]["functions"]
            .to_string()
            .contains("kauditd_thread"),
        "{m}"
    );
    let warnings = m["targets"][0]["warnings"].to_string();
    assert!(
        warnings.contains("kauditd_thread looks like a kernel thread's main loop")
            && warnings.contains("NOREBOOT_IGNORE_FUNCTION(kauditd_thread)"),
        "{m}"
    );
    assert!(
        stderr.contains("warning: kernel/audit.o: kauditd_thread"),
        "{stderr}"
    );
}

#[test]
#[ignore = "slow tier: builds a 6.1 patch and boots a guest; scripts/test runs it"]
fn a_signed_module_carries_its_signature_and_still_verifies() {
    let (_ws, tree) = workspace();
    let out = out_dir("signed");
    let key = out.join("signing_key.pem");
    let cert = out.join("signing_cert.pem");
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=noreboot test signing key",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let patch = edit(
        &tree,
        "fs/proc/cmdline.c",
        &[(
            "\tseq_puts(m, saved_command_line);",
            "\tseq_puts(m, \"noreboot-signed \");\n\tseq_puts(m, saved_command_line);",
        )],
        &out,
    );
    let check = out.join("check.sh");
    std::fs::write(&check, "grep -q '^noreboot-signed ' /proc/cmdline\n").unwrap();
    let dir = out.join("module");
    let (code, m, stderr) = build(&[
        "--kernel",
        RELEASE,
        "--patch",
        patch.to_str().unwrap(),
        "--name",
        "signed_example",
        "--sign-key",
        key.to_str().unwrap(),
        "--sign-cert",
        cert.to_str().unwrap(),
        "--verify",
        "--check",
        check.to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(m["signed"], true, "{m}");
    let ko = std::fs::read(dir.join("signed_example.ko")).unwrap();
    assert!(ko.ends_with(b"~Module signature appended~\n"));
    // The manifest's hash is of the signed file.
    let sha = m["module"][1].as_str().unwrap();
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&ko)), sha);
    assert_eq!(m["verify"]["problems"], serde_json::json!([]), "{m}");
    // A key that is not a key is a clear error.
    std::fs::write(&key, "not a key\n").unwrap();
    let (code, _, stderr) = build(&[
        "--kernel",
        RELEASE,
        "--patch",
        patch.to_str().unwrap(),
        "--name",
        "signed_bad",
        "--sign-key",
        key.to_str().unwrap(),
        "--sign-cert",
        cert.to_str().unwrap(),
        "-o",
        out.join("bad").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("signing") && stderr.contains("signed_bad.ko"),
        "{stderr}"
    );
}

#[test]
#[ignore = "slow tier: builds a 6.1 patch and boots a guest; scripts/test runs it"]
fn a_new_pr_debug_is_a_dynamic_debug_callsite_of_the_patch() {
    let (ws, tree) = workspace();
    let out = out_dir("dyndbg");
    let patch = edit(
        &tree,
        "fs/proc/cmdline.c",
        &[(
            "\tseq_puts(m, saved_command_line);",
            "\tpr_debug(\"noreboot dyndbg %d\\n\", 7);\n\tseq_puts(m, saved_command_line);",
        )],
        &out,
    );
    let dir = out.join("module");
    let (code, _, stderr) = build(&[
        "--kernel",
        RELEASE,
        "--patch",
        patch.to_str().unwrap(),
        "--name",
        "dyndbg_example",
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let cfg =
        lab::GuestConfig::for_workspace(&ws).with_file(dir.join("dyndbg_example.ko"), "/root/p.ko");
    let mut g = lab::Guest::boot(&cfg).unwrap();
    g.exec_ok("insmod /root/p.ko").unwrap();
    g.wait_until(
        "[ \"$(cat /sys/kernel/livepatch/dyndbg_example/transition)\" = 0 ]",
        Duration::from_secs(60),
    )
    .unwrap();
    // The callsite is the module's, off until enabled like any other.
    let control = g
        .exec_ok("grep 'noreboot dyndbg' /sys/kernel/debug/dynamic_debug/control")
        .unwrap();
    assert!(
        control.contains("[dyndbg_example]cmdline_proc_show =_"),
        "{control}"
    );
    g.exec_ok("cat /proc/cmdline").unwrap();
    assert!(!g.dmesg().unwrap().contains("noreboot dyndbg 7"));
    g.exec_ok("echo 'module dyndbg_example +p' > /sys/kernel/debug/dynamic_debug/control && cat /proc/cmdline")
        .unwrap();
    assert!(g.dmesg().unwrap().contains("noreboot dyndbg 7"));
}

#[test]
#[ignore = "slow tier: builds a 6.1 patch and boots a guest; scripts/test runs it"]
fn a_carried_pr_debug_in_a_module_is_the_patch_modules_own_call_site() {
    let (ws, tree) = workspace();
    let out = out_dir("dyndbg-module");
    // binfmt_misc's create_entry (run by a write to the register file)
    // has pr_debug call sites whose descriptors and static keys live in the
    // module; the patch module cannot use those keys (its jump labels are
    // registered before relocations into binfmt_misc exist), so it
    // carries its own.
    let patch = edit(
        &tree,
        "fs/binfmt_misc.c",
        &[(
            "pr_debug(\"register: received %zu bytes\\n\", count);",
            "pr_debug(\"register (live patched): received %zu bytes\\n\", count);",
        )],
        &out,
    );
    let dir = out.join("module");
    let (code, m, stderr) = build(&[
        "--kernel",
        RELEASE,
        "--patch",
        patch.to_str().unwrap(),
        "--name",
        "dyndbg_module",
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let targets = m["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1, "{m}");
    assert_eq!(targets[0]["object"], "binfmt_misc", "{m}");
    let index = kernel_tree::modules::ModuleIndex::new(&ws.modules_dir()).unwrap();
    let target = index.path("binfmt_misc").unwrap().unwrap();
    let cfg = lab::GuestConfig::for_workspace(&ws)
        .with_file(dir.join("dyndbg_module.ko"), "/root/p.ko")
        .with_file(&target, "/root/binfmt_misc.ko");
    let mut g = lab::Guest::boot(&cfg).unwrap();
    g.exec_ok(
        "insmod /root/binfmt_misc.ko && mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc",
    )
    .unwrap();
    g.exec_ok("insmod /root/p.ko").unwrap();
    let lp = "/sys/kernel/livepatch/dyndbg_module";
    g.wait_until(
        &format!("[ \"$(cat {lp}/transition)\" = 0 ]"),
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(
        g.exec_ok(&format!("cat {lp}/binfmt_misc/patched"))
            .unwrap()
            .trim(),
        "1"
    );
    let control = "/proc/dynamic_debug/control";
    let listed = g.exec_ok(&format!("grep 'register' {control}")).unwrap();
    // The patch's call site is listed under the patch module, off; the
    // module's own (now unused) stays under binfmt_misc.
    assert!(
        listed.contains("[dyndbg_module]create_entry =_ \"register (live patched)"),
        "{listed}"
    );
    assert!(
        listed.contains("[binfmt_misc]create_entry =_ \"register: received"),
        "{listed}"
    );
    let register = "echo ':noreboot:E::nrb::/bin/true:' > /proc/sys/fs/binfmt_misc/register";
    g.exec_ok(register).unwrap();
    assert!(!g.dmesg().unwrap().contains("register (live patched)"));
    g.exec_ok(&format!(
        "echo -1 > /proc/sys/fs/binfmt_misc/noreboot && echo 'module dyndbg_module +p' > {control} && {register}"
    ))
    .unwrap();
    let dmesg = g.dmesg().unwrap();
    assert!(
        dmesg.contains("register (live patched): received"),
        "{dmesg}"
    );
    assert!(lab::dmesg_problems(&dmesg).is_empty(), "{dmesg}");
    // The switch belongs to the patch module: disabling the patch removes
    // it with the module's descriptors.
    g.exec_ok(&format!("echo 0 > {lp}/enabled")).unwrap();
    g.wait_until(&format!("[ ! -d {lp} ]"), Duration::from_secs(60))
        .unwrap();
}
