//! Small C cases: each directory under `tests/cases` holds `orig.c` and
//! `patched.c`; directive lines in `patched.c` (`//# key: values`) state the
//! expected outcome, the exact sets of changed/new/line-only/removed
//! functions, changed and new data, refusals (`subject: text`), and a
//! known emit limitation (`emit-error: text`, the error emit fails with). Both
//! files are compiled by gcc with kernel-like flags inside the test; a
//! failure prints the one command that reproduces it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use elfdiff::correlate::stem;
use elfdiff::read::Object;
use elfdiff::report::Status;

/// The flags the kernel's build uses that shape object layout, plus the
/// function and data sections noreboot-build adds.
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
    "-mrecord-mcount",
    "-fno-asynchronous-unwind-tables",
    "-fno-stack-protector",
    "-fno-jump-tables",
    "-fno-common",
    "-w",
];

fn compile(src: &Path, out: &Path) {
    let st = Command::new("gcc")
        .args(CFLAGS)
        .arg(src)
        .arg("-o")
        .arg(out)
        .status()
        .expect("gcc is a setup requirement");
    assert!(st.success(), "gcc failed on {}", src.display());
}

#[derive(Default, Debug)]
struct Expect {
    outcome: Option<String>,
    sets: Vec<(String, BTreeSet<String>)>,
    refused: Vec<(String, String)>,
    notes: Vec<String>,
    /// A known limitation of the emit pass: emitting fails with this text.
    emit_error: Option<String>,
}

fn directives(src: &Path) -> Expect {
    let mut e = Expect::default();
    for line in std::fs::read_to_string(src).unwrap().lines() {
        let Some(d) = line.strip_prefix("//# ") else {
            continue;
        };
        let (key, val) = d
            .split_once(':')
            .unwrap_or_else(|| panic!("bad directive {line:?}"));
        let val = val.trim();
        match key {
            "outcome" => e.outcome = Some(val.to_string()),
            "note" => e.notes.push(val.to_string()),
            "emit-error" => e.emit_error = Some(val.to_string()),
            "refused" => {
                let (subject, text) = val
                    .split_once(':')
                    .unwrap_or_else(|| panic!("refused needs `subject: text`: {line:?}"));
                e.refused
                    .push((subject.trim().to_string(), text.trim().to_string()));
            }
            "changed" | "new" | "line-only" | "removed" | "ignored" | "data-changed"
            | "data-new" => {
                e.sets.push((
                    key.to_string(),
                    val.split_whitespace().map(str::to_string).collect(),
                ));
            }
            other => panic!("unknown directive {other:?} in {}", src.display()),
        }
    }
    e
}

fn check_case(dir: &Path, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).unwrap();
    let (o, p) = (out.join("orig.o"), out.join("patched.o"));
    compile(&dir.join("orig.c"), &o);
    compile(&dir.join("patched.c"), &p);
    let expect = directives(&dir.join("patched.c"));
    let (oo, po) = (Object::read(&o).unwrap(), Object::read(&p).unwrap());
    let (c, report) = elfdiff::analyse(&oo, &po, None);
    let mut problems = Vec::new();
    let outcome = report.outcome.name();
    if let Some(want) = &expect.outcome {
        if outcome != want.as_str() {
            problems.push(format!("outcome {outcome}, expected {want}"));
        }
    }
    let status_of = |k: &str| match k {
        "changed" => Some(Status::Changed),
        "new" => Some(Status::New),
        "line-only" => Some(Status::LineOnly),
        "removed" => Some(Status::Removed),
        "ignored" => Some(Status::Ignored),
        _ => None,
    };
    // Sets not mentioned must be empty, so every case pins all of them.
    for key in [
        "changed",
        "new",
        "line-only",
        "removed",
        "ignored",
        "data-changed",
        "data-new",
    ] {
        // Compiler numbering (`hits.2`) is compared by stem (`hits.N`).
        let want: BTreeSet<String> = expect
            .sets
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.iter().map(|n| stem(n)))
            .collect();
        let got: BTreeSet<String> = match status_of(key) {
            Some(st) => report.names(st).into_iter().map(stem).collect(),
            None => {
                let st = if key == "data-new" {
                    Status::New
                } else {
                    Status::Changed
                };
                report
                    .data
                    .iter()
                    .filter(|d| d.status == st)
                    .map(|d| stem(&d.name))
                    .collect()
            }
        };
        if got != want {
            problems.push(format!("{key}: got {got:?}, expected {want:?}"));
        }
    }
    for (subject, text) in &expect.refused {
        if !report
            .refusals
            .iter()
            .any(|r| &r.subject == subject && r.reason.contains(text.as_str()))
        {
            problems.push(format!("expected refusal of {subject} containing {text:?}"));
        }
    }
    for n in &expect.notes {
        if !report.notes.iter().any(|r| r.contains(n.as_str())) {
            problems.push(format!(
                "expected a note containing {n:?}, notes: {:?}",
                report.notes
            ));
        }
    }
    if expect.refused.is_empty() && !report.refusals.is_empty() {
        problems.push(format!("unexpected refusals {:?}", report.refusals));
    }
    // Whatever can be patched must also emit a checked object: carried
    // functions exactly the changed and new ones (plus .cold parts).
    if report.outcome == elfdiff::Outcome::Changed {
        match elfdiff::emit::emit(&oo, &po, &c, &report, &TestResolver) {
            Ok(_) if expect.emit_error.is_some() => problems.push(format!(
                "emit succeeded, expected it to fail with {:?}: drop the emit-error directive",
                expect.emit_error.as_deref().unwrap_or_default()
            )),
            Err(err)
                if expect
                    .emit_error
                    .as_deref()
                    .is_some_and(|want| err.to_string().contains(want)) => {}
            Ok(e) => {
                std::fs::write(out.join("out.o"), &e.bytes).unwrap();
                let want: BTreeSet<String> = report
                    .functions
                    .iter()
                    .filter(|f| matches!(f.status, Status::Changed | Status::New))
                    .map(|f| stem(f.patched_name.as_deref().unwrap_or(&f.name)))
                    .collect();
                let got: BTreeSet<String> = e
                    .functions
                    .iter()
                    .map(|n| stem(n))
                    .filter(|n| !n.contains(".cold"))
                    .collect();
                if got != want {
                    problems.push(format!("emitted functions {got:?}, expected {want:?}"));
                }
                let mcount = e.special.iter().find(|(n, _, _)| n == "__mcount_loc");
                if let Some((_, kept, _)) = mcount {
                    let fentry = want.len()
                        - report
                            .functions
                            .iter()
                            .filter(|f| f.status == Status::New && f.section.starts_with(".init"))
                            .count();
                    if *kept != fentry {
                        problems.push(format!(
                            "__mcount_loc keeps {kept} entries for {fentry} functions"
                        ));
                    }
                }
            }
            Err(err) => problems.push(format!("emit failed: {err}")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "case {}:\n  {}\nreport:\n{report}reproduce: cargo run -q -p build --bin noreboot-build -- diff {} {}",
            dir.file_name().unwrap().to_string_lossy(),
            problems.join("\n  "),
            o.display(),
            p.display()
        ))
    }
}

/// Test resolution: statics of the object are livepatch references,
/// everything undefined is taken as exported.
struct TestResolver;

impl elfdiff::emit::Resolver for TestResolver {
    fn resolve(&self, _name: &str, local: bool) -> Result<elfdiff::emit::Outside, String> {
        Ok(if local {
            elfdiff::emit::Outside::Livepatch {
                object: "vmlinux".into(),
                sympos: 0,
            }
        } else {
            elfdiff::emit::Outside::Export
        })
    }
}

#[test]
fn c_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("elfdiff-cases");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 10, "cases missing under {}", root.display());
    let failures: Vec<String> = dirs
        .iter()
        .filter_map(|d| check_case(d, &out.join(d.file_name().unwrap())).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}
