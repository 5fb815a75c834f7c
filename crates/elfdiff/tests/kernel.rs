//! Real kernel objects: the Debian 6.1 and 6.12 cloud kernels' own sources,
//! compiled with their configs and flags plus function sections, before and
//! after real fixes taken from the changes between two Debian source
//! packages of each (6.1.170-3 → 6.1.192-3, 6.12.107 → 6.12.117; the
//! patches are made at test time from the packages, not copied in).
//! Expectations live in `kernel-fixes.toml` and `kernel-fixes-6.12.toml`,
//! with the reason each fix was chosen. Every original object must also diff
//! against itself to "no change". A header fix is checked on the one
//! object its entry names, compiled with the new header, without a line map.

use std::collections::BTreeSet;
use std::path::PathBuf;

use elfdiff::correlate::stem;
use elfdiff::read::Object;
use elfdiff::report::Status;
use kernel_tree::source::{extract_files, DIFF_CFLAGS};
use kernel_tree::{AptArchive, Cache, Workspace};

use test_support::fixes;

fn set(v: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    v.into_iter().map(|n| stem(&n)).collect()
}

#[test]
#[ignore = "slow tier: compiles real fixes in the 6.1 kernel source; scripts/test runs it"]
fn real_debian_6_1_fixes_and_large_objects() {
    check_selection("kernel-fixes.toml");
}

#[test]
#[ignore = "slow tier: compiles real fixes in the 6.12 kernel source; scripts/test runs it"]
fn real_debian_6_12_fixes_and_large_objects() {
    check_selection("kernel-fixes-6.12.toml");
}

fn check_selection(name: &str) {
    let spec = fixes::load_named(name);
    let cache = Cache::from_env().unwrap();
    let archive = AptArchive::new();
    let ws = Workspace::fetch(&cache, &archive, &spec.release.parse().unwrap())
        .unwrap_or_else(|e| panic!("the fixes are pinned to {}: {e}", spec.release));
    let tree = ws.source_tree(&cache, &archive).unwrap();
    let fixed = ws
        .other_source(&cache, &archive, &spec.fixed_version)
        .unwrap();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name.trim_end_matches(".toml"));
    let newer = out.join("fixed-sources");
    let files: Vec<&str> = spec.fix.iter().map(|f| f.file.as_str()).collect();
    extract_files(&fixed, &files, &newer).unwrap();

    let table = ws.symbols(&cache, &archive).unwrap();
    let ksyms = klp::KernelSymbols::from_vmlinux(&table.vmlinux).unwrap();
    let symvers = klp::Symvers::read(&ws.module_symvers()).unwrap();
    let mut failures = Vec::new();
    let mut special_kept = BTreeSet::new();
    for obj in &spec.large_objects {
        let o = out.join(obj.replace('/', "_"));
        tree.compile(obj, DIFF_CFLAGS, &o).unwrap();
        let a = Object::read(&o).unwrap();
        let report = elfdiff::diff(&a, &a);
        if report.outcome != elfdiff::Outcome::NoChange {
            failures.push(format!("{obj} against itself:\n{report}"));
        }
    }
    for fix in &spec.fix {
        // A header fix is checked on the one object its expectations
        // describe, compiled with the header's new contents.
        let object = fix.object();
        let key = fix.file.replace('/', "_");
        let (o, p) = (
            out.join(format!("{key}.orig.o")),
            out.join(format!("{key}.patched.o")),
        );
        let contents = std::fs::read(newer.join(&fix.file)).unwrap();
        // A fix that no longer compiles is one failure among the others,
        // so one run shows them all.
        if let Err(e) = tree
            .compile(&object, DIFF_CFLAGS, &o)
            .and_then(|()| tree.compile_with(&object, &[(&fix.file, &contents)], DIFF_CFLAGS, &p))
        {
            failures.push(format!("{} ({}) does not compile: {e}", fix.file, fix.why));
            continue;
        }
        // The fix as a unified diff of the source file, the way the factory
        // gets it: its line map tells shifted __LINE__ numbers apart. A
        // header has none (its lines are not the object's C file's).
        let map = (!fix.header).then(|| {
            let udiff = std::process::Command::new("diff")
                .arg("-u")
                .arg(tree.dir().join(&fix.file))
                .arg(newer.join(&fix.file))
                .output()
                .unwrap();
            elfdiff::lines::LineMap::from_unified_diff(&String::from_utf8_lossy(&udiff.stdout))
                .unwrap()
        });
        let orig = Object::read(&o).unwrap();
        let patched_obj = Object::read(&p).unwrap();
        let (c, report) = elfdiff::analyse(&orig, &patched_obj, map.as_ref());
        let mut problems = Vec::new();
        let outcome = report.outcome.name();
        if outcome != fix.outcome {
            problems.push(format!("outcome {outcome}, expected {}", fix.outcome));
        }
        for (what, want, status) in [
            ("changed", &fix.changed, Status::Changed),
            ("new", &fix.new, Status::New),
        ] {
            let got = set(report.names(status).into_iter().map(str::to_string));
            if got != set(want.iter().cloned()) {
                problems.push(format!(
                    "{what}: got {got:?}, expected {:?}",
                    set(want.iter().cloned())
                ));
            }
        }
        let got: BTreeSet<String> = report.refusals.iter().map(|r| stem(&r.subject)).collect();
        if got != set(fix.refused.iter().cloned()) {
            problems.push(format!(
                "refused: got {got:?}, expected {:?}",
                set(fix.refused.iter().cloned())
            ));
        }
        if report.outcome == elfdiff::Outcome::Changed {
            let target = fix.module.as_deref().unwrap_or("vmlinux");
            let resolver = klp::KernelResolver::new(&ksyms, &symvers, target, &orig);
            match resolver.map_err(|e| e.to_string()).and_then(|r| {
                elfdiff::emit::emit(&orig, &patched_obj, &c, &report, &r).map_err(|e| e.to_string())
            }) {
                Ok(_) if fix.module.is_some() => problems.push("emitting for a module target is expected to be refused until modules' symbol tables are read".into()),
                Err(err) if fix.module.is_some() && err.contains("for_module") => {}
                Ok(e) => {
                    // .cold parts ride along with their parents.
                    let no_cold = |v: Vec<String>| set(v.into_iter().filter(|n| !n.contains(".cold")));
                    let want = no_cold(fix.changed.iter().chain(&fix.new).cloned().collect());
                    let got = no_cold(e.functions.clone());
                    if got != want {
                        problems.push(format!("emitted {:?}, expected {want:?}", e.functions));
                    }
                    special_kept.extend(
                        e.special
                            .iter()
                            .filter(|(_, k, _)| *k > 0)
                            .map(|(n, _, _)| n.clone()),
                    );
                    if !e
                        .special
                        .iter()
                        .any(|(n, k, _)| n == "__mcount_loc" && *k > 0)
                    {
                        problems.push("no __mcount_loc entry kept".into());
                    }
                }
                Err(err) => problems.push(format!("emit: {err}")),
            }
        }
        let self_diff = elfdiff::diff(&orig, &orig);
        if self_diff.outcome != elfdiff::Outcome::NoChange {
            problems.push(format!(
                "original against itself is {:?}",
                self_diff.outcome
            ));
        }
        if !problems.is_empty() {
            let lines = if fix.header {
                ""
            } else {
                " --lines-from fix.diff"
            };
            failures.push(format!(
                "{} ({}, {object}):\n  {}\n{report}reproduce: diff -u {} {} > fix.diff; cargo run -q -p factory --bin noreboot-build -- diff{lines} {} {}",
                fix.file,
                fix.why,
                problems.join("\n  "),
                tree.dir().join(&fix.file).display(),
                newer.join(&fix.file).display(),
                o.display(),
                p.display()
            ));
        }
    }
    eprintln!("{name}: special sections with entries kept: {special_kept:?}");
    let missing: Vec<&String> = spec
        .special_kept
        .iter()
        .filter(|s| !special_kept.contains(*s))
        .collect();
    if !missing.is_empty() {
        failures.push(format!(
            "no emitted object kept an entry of {missing:?} (kept: {special_kept:?})"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
