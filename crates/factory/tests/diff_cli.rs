//! `noreboot-build diff` on objects it did not build: every well-formed
//! input gets a diff (0), "no change" (3) or a refusal with its reason (4),
//! never a tool error (1). Objects come from the C cases of the differ
//! (`crates/elfdiff/tests/cases`), compiled here by gcc or clang with the
//! kernel's layout-shaping flags.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CFLAGS: &[&str] = &[
    "-c",
    "-O2",
    "-fno-pic",
    "-mcmodel=kernel",
    "-mno-red-zone",
    "-ffunction-sections",
    "-fdata-sections",
    "-pg",
    "-mfentry",
    "-fno-asynchronous-unwind-tables",
    "-fno-stack-protector",
    "-w",
];

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../elfdiff/tests/cases")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("diff-cli")
        .join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Compiles a case's two sources with `cc` and `extra` flags.
fn compile(cc: &str, name: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    // Tests run in parallel: each compilation has a directory of its own.
    let out = tmp(&format!("{name}-{cc}{}", extra.concat()));
    let objs = ["orig", "patched"].map(|v| {
        let o = out.join(format!("{v}.o"));
        let st = Command::new(cc)
            .args(CFLAGS)
            .args(extra)
            .arg(case(name).join(format!("{v}.c")))
            .arg("-o")
            .arg(&o)
            .status()
            .unwrap_or_else(|e| panic!("{cc} is a setup requirement: {e}"));
        assert!(st.success(), "{cc} failed on {name}");
        o
    });
    let [o, p] = objs;
    (o, p)
}

/// A kernel's symbols for the cases: `__fentry__` exported, the rest
/// local to vmlinux.
fn kernel(dir: &Path) -> (PathBuf, PathBuf) {
    let map = dir.join("System.map");
    std::fs::write(
        &map,
        "ffffffff81000000 T __fentry__\nffffffff81000100 T printk\nffffffff82000000 D pv_ops\nffffffff82000100 B counter\n",
    )
    .unwrap();
    let symvers = dir.join("Module.symvers");
    std::fs::write(&symvers, "0x00000000\t__fentry__\tvmlinux\tEXPORT_SYMBOL\t\n0x00000000\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n").unwrap();
    (map, symvers)
}

fn diff(o: &Path, p: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_noreboot-build"))
        .arg("diff")
        .args(args)
        .arg(o)
        .arg(p)
        .output()
        .unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_single_entry_table_needs_its_entry_size_and_takes_it_from_the_command_line() {
    let (o, p) = compile("gcc", "paravirt-old", &[]);
    let dir = tmp("paravirt-old-kernel");
    let (map, symvers) = kernel(&dir);
    let out = dir.join("out.o");
    let sym = [
        "--symbols",
        map.to_str().unwrap(),
        "--symvers",
        symvers.to_str().unwrap(),
    ];
    let mut args = sym.to_vec();
    args.extend(["-o", out.to_str().unwrap()]);
    // Unknown stride: a refusal that says what to give, not a tool error.
    let r = diff(&o, &p, &args);
    assert_eq!(r.status.code(), Some(4), "{}", show(&r));
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(
        text.contains("cannot infer its entry size")
            && text.contains("--entry-size .parainstructions="),
        "{}",
        show(&r)
    );
    args.extend(["--entry-size", ".parainstructions=16"]);
    let r = diff(&o, &p, &args);
    assert_eq!(r.status.code(), Some(0), "{}", show(&r));
    assert!(
        String::from_utf8_lossy(&r.stdout).contains(".parainstructions 1/2"),
        "{}",
        show(&r)
    );
    // A malformed size is a usage error.
    let r = diff(&o, &p, &["--entry-size", ".parainstructions=0"]);
    assert_eq!(r.status.code(), Some(2), "{}", show(&r));
}

#[test]
fn clang_objects_diff_and_emit() {
    let dir = tmp("clang-kernel");
    let (map, symvers) = kernel(&dir);
    // Flags of clang-built kernels and what they add: address-significance
    // tables always, basic-block address maps (SHT_LLVM_BB_ADDR_MAP),
    // call padding, ENDBR, split functions, stack-size sections, DWARF 5.
    let flags: &[&[&str]] = &[
        &[],
        &["-g", "-gdwarf-5"],
        &["-fbasic-block-sections=labels"],
        &["-fpatchable-function-entry=16,16", "-fcf-protection=branch"],
        &["-fsplit-machine-functions", "-fstack-size-section"],
    ];
    let names = [
        "clang-call-graph-profile",
        "one-changed",
        "string-changed",
        "sched-text",
    ];
    for (i, extra) in flags.iter().enumerate() {
        for name in names {
            let (o, p) = compile("clang", name, extra);
            let out = dir.join(format!("{name}-{i}.o"));
            let r = diff(
                &o,
                &p,
                &[
                    "--symbols",
                    map.to_str().unwrap(),
                    "--symvers",
                    symvers.to_str().unwrap(),
                    "-o",
                    out.to_str().unwrap(),
                ],
            );
            assert_eq!(r.status.code(), Some(0), "{name} {extra:?}: {}", show(&r));
        }
    }
}

#[test]
fn well_formed_objects_never_exit_1() {
    // Every case, by both compilers, with debug information as kernels
    // are built: a diff, no change or a refusal.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../elfdiff/tests/cases");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut failures = Vec::new();
    for cc in ["gcc", "clang"] {
        for name in &names {
            let src = std::fs::read_to_string(root.join(name).join("patched.c")).unwrap();
            if cc == "gcc" && src.contains("//# cc: clang") {
                continue;
            }
            let (o, p) = compile(cc, name, &["-g"]);
            let r = diff(&o, &p, &[]);
            if !matches!(r.status.code(), Some(0 | 3 | 4)) {
                failures.push(format!("{cc} {name}: {}", show(&r)));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn llvm_bitcode_is_refused_with_its_reason() {
    let (o, p) = compile("clang", "one-changed", &["-flto=thin"]);
    let r = diff(&o, &p, &[]);
    assert_eq!(r.status.code(), Some(4), "{}", show(&r));
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("LLVM bitcode"),
        "{}",
        show(&r)
    );
}

/// A CVE id the bundler would refuse is refused by the factory first,
/// before any work (one rule for both: `bundle::manifest::is_cve_id`).
#[test]
fn a_cve_id_the_bundle_refuses_is_refused_before_the_build() {
    let out = tmp("bad-cve");
    for bad in [
        "CVE-2026-12345678901234567890",
        "CVE-26-1234",
        "cve-2026-1234",
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_noreboot-build"))
            .args([
                "--kernel",
                "6.1.0-47-cloud-amd64",
                "--patch",
                "/dev/null",
                "--name",
                "bad_cve",
                "--cve",
                bad,
                "-o",
            ])
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{bad}: {stderr}");
        assert!(
            stderr.contains(&format!("--cve {bad:?} is not a CVE identifier")),
            "{bad}: {stderr}"
        );
        assert!(
            !stderr.contains("workspace"),
            "{bad}: work was done first: {stderr}"
        );
    }
}

/// The example catalog is valid; a broken one is refused naming the file
/// and the field (docs/catalog.md).
#[test]
fn the_catalog_command_checks_and_lists_a_catalog() {
    let bin = env!("CARGO_BIN_EXE_noreboot-build");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/catalog");
    let o = Command::new(bin)
        .arg("catalog")
        .arg(&example)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("cve-2026-99362")
            && stdout.contains("6.1.192-2 -> 6.1.192-3: fs/nfsd/nfs4state.c")
            && stdout.contains("completes 6.1.192-3 for builds from 6.1.192-1"),
        "{stdout}"
    );
    let o = Command::new(bin)
        .args(["catalog", "--json"])
        .arg(&example)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["fixes"].as_array().unwrap().len(), 3, "{v}");

    let bad = tmp("bad-catalog");
    let _ = std::fs::remove_dir_all(&bad);
    std::fs::create_dir_all(bad.join("fixes/x")).unwrap();
    std::fs::write(
        bad.join("fixes/x/fix.toml"),
        "description = \"d\"\ncves = [\"CVE-2026-1\"]\n[source]\nfrom = \"1-1\"\nto = \"1-2\"\nfiles = [\"a.c\"]\n",
    )
    .unwrap();
    let o = Command::new(bin).arg("catalog").arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("fixes/x/fix.toml: cves[0]: \"CVE-2026-1\" is not CVE-YYYY-NNNN"),
        "{stderr}"
    );
}
