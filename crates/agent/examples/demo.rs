//! The end-to-end demo (`scripts/demo`): a real Debian fix turned into a
//! live patch, published on a noreboot-server, and taken over the network
//! by the agent on a guest running the vulnerable kernel — with the fixed
//! behaviour shown before and after, and the server's compliance report
//! moving the host from exposed to protected.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{run, workspace_bin, RELEASE};
use kernel_tree::{AptArchive, Cache, Workspace};

/// The fix: Debian 6.1.192-3's fs/proc/generic.c. A proc directory's link
/// count must be 2 + its subdirectories; 6.1.170-3 counted every entry.
const FIX_FILE: &str = "fs/proc/generic.c";
const FIXED_VERSION: &str = "6.1.192-3";
/// The fix has no CVE id of its own; the report needs one to track.
const CVE: &str = "CVE-2099-0001";
/// In the guest: the link count of a new network namespace's
/// /proc/self/net, and its number of subdirectories.
const OBSERVE: &str =
    "unshare -n sh -c 'echo $(stat -c %h /proc/self/net) $(ls -l /proc/self/net | grep -c ^d)'";

fn step(n: u32, text: &str) {
    println!("\n[{n}/7] {text}");
}

fn observe(g: &mut lab::Guest) -> (u64, u64) {
    let out = g.exec_ok(OBSERVE).unwrap();
    let mut it = out
        .split_whitespace()
        .map(|x| x.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// `uname -v` as the agent shows it: with the active level's effective
/// version (the kernel's own string does not change).
fn uname_v(g: &mut lab::Guest) -> String {
    g.exec_ok("/usr/sbin/noreboot uname -v")
        .unwrap()
        .trim()
        .to_string()
}

fn report(server: &Path, data: &Path) {
    let out = run(Command::new(server)
        .args(["admin", "--data"])
        .arg(data)
        .args(["report", "compliance"]));
    for l in out.lines() {
        println!("      {l}");
    }
}

fn main() {
    let t0 = Instant::now();
    step(1, &format!("kernel workspace for {RELEASE}"));
    let cache = Cache::from_env().expect("cache");
    let archive = AptArchive::new();
    let ws = Workspace::fetch(&cache, &archive, &RELEASE.parse().unwrap()).expect("workspace");
    let tree = ws.source_tree(&cache, &archive).expect("source tree");
    println!(
        "      {} ({}), build-id {}",
        RELEASE,
        ws.version(),
        ws.identity().build_id
    );

    let dir = std::env::temp_dir().join(format!("noreboot-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let build = workspace_bin("noreboot-build", "factory");
    let server = workspace_bin("noreboot-server", "server");
    let agent = workspace_bin("noreboot", "agent");

    step(
        2,
        &format!("the fix: {FIX_FILE} as Debian {FIXED_VERSION} has it"),
    );
    let fixed = ws
        .other_source(&cache, &archive, FIXED_VERSION)
        .expect("the fixed source package");
    let newer = dir.join("fixed");
    kernel_tree::source::extract_files(&fixed, &[FIX_FILE], &newer).expect("extract the fix");
    let diff = Command::new("diff")
        .arg("-u")
        .arg(format!("--label=a/{FIX_FILE}"))
        .arg(format!("--label=b/{FIX_FILE}"))
        .arg(tree.dir().join(FIX_FILE))
        .arg(newer.join(FIX_FILE))
        .output()
        .unwrap();
    let patch = dir.join("proc-nlink.patch");
    std::fs::write(&patch, &diff.stdout).unwrap();
    println!(
        "      {} lines of diff: a proc directory's link count counts only its subdirectories",
        String::from_utf8_lossy(&diff.stdout).lines().count()
    );

    step(3, "noreboot-build: live patch module, signed bundle");
    let t = Instant::now();
    run(Command::new(&build)
        .args(["keygen", "-o"])
        .arg(dir.join("keys")));
    let out = dir.join("build");
    let manifest = run(Command::new(&build)
        .args(["--kernel", RELEASE, "--patch"])
        .arg(&patch)
        .args(["--name", "demo_proc_nlink", "--cve", CVE])
        .args([
            "--description",
            "proc: a directory's link count is 2 + its subdirectories (Debian 6.1.192-3)",
        ])
        .arg("-o")
        .arg(&out)
        .arg("--json")
        .stderr(Stdio::inherit()));
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let nrb = dir.join("demo-1.nrb");
    // The level carries one of the fixes Debian made up to 6.1.192-3, not
    // all of them, so it may not say 6.1.192-3 (scanners trust the
    // string): it says the kernel's own version plus this level, which
    // sorts after 6.1.170-3 and before any later Debian upload.
    let effective = format!("{}+noreboot1", ws.version());
    run(Command::new(&build)
        .args(["bundle", "--from"])
        .arg(&out)
        .args(["--level", "1", "--effective-version", &effective, "--key"])
        .arg(dir.join("keys/noreboot.key"))
        .arg("-o")
        .arg(&nrb));
    println!(
        "      replaces {} in {:.1} s; bundle {} ({} bytes; effective version {effective}; {CVE} is a placeholder id: the fix has none of its own)",
        m["targets"][0]["functions"],
        t.elapsed().as_secs_f64(),
        nrb.display(),
        std::fs::metadata(&nrb).unwrap().len()
    );

    step(4, "noreboot-server (SQLite): publish, registration key");
    let data = dir.join("server");
    std::fs::create_dir_all(data.join("trusted.d")).unwrap();
    std::fs::copy(
        dir.join("keys/noreboot.pub"),
        data.join("trusted.d/demo.pub"),
    )
    .unwrap();
    run(Command::new(&server)
        .args(["admin", "--data"])
        .arg(&data)
        .args(["publish"])
        .arg(&nrb)
        .args(["--feed", "stable"]));
    let key = run(Command::new(&server)
        .args(["admin", "--json", "--data"])
        .arg(&data)
        .args(["key", "create", "--feed", "stable"]));
    let key: serde_json::Value = serde_json::from_str(&key).unwrap();
    let mut srv = Command::new(&server)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(srv.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().rsplit(':').next().unwrap().to_string();
    println!("      level 1 published to feed stable; {}", line.trim());

    step(
        5,
        "a guest running the vulnerable kernel, agent installed, registered",
    );
    let cfg = lab::GuestConfig::for_workspace(&ws)
        .with_network()
        .with_binary(&agent, "/usr/sbin/noreboot")
        .with_file(
            dir.join("keys/noreboot.pub"),
            "/etc/noreboot/trusted.d/demo.pub",
        );
    let mut g = lab::Guest::boot(&cfg).expect("guest");
    g.exec_ok("hostname demo-host").unwrap();
    let r = g
        .exec_ok(&format!(
            "/usr/sbin/noreboot register --server http://10.0.2.2:{port} --key {} --tag demo",
            key["secret"].as_str().unwrap()
        ))
        .unwrap();
    println!(
        "      booted in {:.1} s; {}",
        g.boot_time().as_secs_f64(),
        r.trim()
    );
    println!("      noreboot uname -v: {}", uname_v(&mut g));
    let (links, dirs) = observe(&mut g);
    println!("      before: a new network namespace's /proc/self/net has link count {links}, with {dirs} subdirectories (should be {})", dirs + 2);

    step(6, "the server's compliance report: the host is exposed");
    report(&server, &data);

    step(
        7,
        "noreboot update over the network, then the fixed behaviour and the report",
    );
    let up = g.exec("/usr/sbin/noreboot update").unwrap();
    println!("      {}", up.stdout.trim());
    let (links, dirs) = observe(&mut g);
    println!("      after:  link count {links}, with {dirs} subdirectories (= 2 + {dirs}: fixed)");
    println!("      noreboot uname -v: {}", uname_v(&mut g));
    let st = g.exec("/usr/sbin/noreboot status").unwrap();
    for l in st.stdout.lines() {
        println!("      {l}");
    }
    report(&server, &data);
    let _ = srv.kill();
    let _ = srv.wait();
    println!(
        "\ndone in {:.0} s (work files in {})",
        t0.elapsed().as_secs_f64(),
        dir.display()
    );
}
