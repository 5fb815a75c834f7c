//! Small C cases: each directory under `tests/cases` holds `orig.c` and
//! `patched.c`; directive lines in `patched.c` (`//# key: values`) state the
//! expected outcome, the exact sets of changed/new/line-only/removed
//! functions, changed and new data, refusals (`subject: text`), a known emit
//! limitation (`emit-error: text`, the error emit fails with), and checks of
//! the emitted object: `special: NAME KEPT/TOTAL` (what emit reports for a
//! special section), `section-bytes: NAME HEX…` (the output section's exact
//! bytes), `relocs: NAME TARGET…` (the exact set of symbols its relocations
//! name, section symbols by their section) and `lands: FROM INTO OFFSET…`
//! (where FROM's relocations into section INTO land, in order),
//! `records: NAME…` (the exact set of kernel symbols the livepatch records
//! name; numbered exactly, or any numbering written `.N`), `record-addends:
//! NAME ADDEND…` (the addends of the records naming NAME, in order) and `target:
//! module NAME` (emit as for a loadable module: the
//! object's statics are livepatch references into module NAME), `cflags:
//! FLAGS` (gcc flags a kernel option adds, for both files). Every
//! emitted object must also be accepted by `readelf -S -W` and `ld -r` and
//! hold no section group. Both files are compiled by gcc with kernel-like
//! flags inside the test; a failure prints the one command that reproduces
//! it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use elfdiff::correlate::stem;
use elfdiff::read::Object;
use elfdiff::report::Status;

use gcc::TestResolver;
use test_support::gcc;

#[derive(Default, Debug)]
struct Expect {
    outcome: Option<String>,
    sets: Vec<(String, BTreeSet<String>)>,
    refused: Vec<(String, String)>,
    /// `not-carried: SUBJECT: RULE[: text]`.
    not_carried: Vec<(String, String, String)>,
    /// `strict-refused: SUBJECT: text`: a refusal under `--strict`.
    strict_refused: Vec<(String, String)>,
    notes: Vec<String>,
    /// A known limitation of the emit pass: emitting fails with this text.
    emit_error: Option<String>,
    /// `special`: (section, kept, total) as emit reports it.
    special: Vec<(String, usize, usize)>,
    /// `section-bytes`: an output section's exact contents.
    bytes: Vec<(String, Vec<u8>)>,
    /// `relocs`: the names an output section's relocations target.
    relocs: Vec<(String, BTreeSet<String>)>,
    /// `lands`: offsets in section `.1` that section `.0`'s relocations
    /// into it reach, in relocation order.
    lands: Vec<(String, String, Vec<i64>)>,
    /// `cc`: the compiler (`gcc` unless told, e.g. `clang`).
    cc: Option<String>,
    /// `cflags`: gcc flags added to the kernel-like ones (a configuration
    /// option's, e.g. UBSAN's `-fsanitize=bounds-strict`).
    cflags: Vec<String>,
    /// `entry-size`: special-section entry sizes the kernel would give
    /// (`SECTION=BYTES`, as `--entry-size`).
    entry_sizes: Vec<(String, u64)>,
    /// `klp`: the symbols of the livepatch records, in order.
    klp: Option<Vec<String>>,
    /// `records`: the kernel symbols the livepatch records name.
    records: Option<BTreeSet<String>>,
    /// `target: module NAME`: the loadable module the object belongs to.
    module: Option<String>,
    /// `record-addends: NAME ADDEND…`: the addends of the livepatch
    /// records naming NAME, in record order.
    record_addends: Vec<(String, Vec<i64>)>,
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
            "klp" => e.klp = Some(val.split_whitespace().map(str::to_string).collect()),
            "note" => e.notes.push(val.to_string()),
            "emit-error" => e.emit_error = Some(val.to_string()),
            "cc" => e.cc = Some(val.to_string()),
            "cflags" => e.cflags.extend(val.split_whitespace().map(str::to_string)),
            "entry-size" => e.entry_sizes.push(
                elfdiff::layout::parse_entry_size(val)
                    .unwrap_or_else(|err| panic!("{err}: {line:?}")),
            ),
            "record-addends" => {
                let mut it = val.split_whitespace();
                let name = it.next().expect("record-addends: NAME ADDEND…").to_string();
                let addends = it.map(|a| a.parse().expect("an addend")).collect();
                e.record_addends.push((name, addends));
            }
            "records" => e.records = Some(val.split_whitespace().map(str::to_string).collect()),
            "target" => {
                let name = val
                    .strip_prefix("module ")
                    .unwrap_or_else(|| panic!("target needs `module NAME`: {line:?}"));
                e.module = Some(name.trim().to_string());
            }
            "special" => {
                let parsed = val.split_once(' ').and_then(|(name, counts)| {
                    let (k, t) = counts.trim().split_once('/')?;
                    Some((name.to_string(), k.parse().ok()?, t.parse().ok()?))
                });
                e.special.push(
                    parsed.unwrap_or_else(|| panic!("special needs `NAME KEPT/TOTAL`: {line:?}")),
                );
            }
            "section-bytes" | "relocs" | "lands" => {
                let mut words = val.split_whitespace().map(str::to_string);
                let name = words
                    .next()
                    .unwrap_or_else(|| panic!("{key} needs a section: {line:?}"));
                match key {
                    "section-bytes" => e.bytes.push((
                        name,
                        words
                            .map(|w| {
                                u8::from_str_radix(&w, 16)
                                    .unwrap_or_else(|_| panic!("bad byte {w:?}: {line:?}"))
                            })
                            .collect(),
                    )),
                    "relocs" => e.relocs.push((name, words.collect())),
                    _ => {
                        let into = words
                            .next()
                            .unwrap_or_else(|| panic!("lands needs FROM INTO: {line:?}"));
                        let offsets = words
                            .map(|w| w.parse().unwrap_or_else(|_| panic!("bad offset {w:?}")))
                            .collect();
                        e.lands.push((name, into, offsets));
                    }
                }
            }
            "refused" | "strict-refused" => {
                let (subject, text) = val
                    .split_once(':')
                    .unwrap_or_else(|| panic!("{key} needs `subject: text`: {line:?}"));
                let pair = (subject.trim().to_string(), text.trim().to_string());
                if key == "refused" {
                    e.refused.push(pair);
                } else {
                    e.strict_refused.push(pair);
                }
            }
            "not-carried" => {
                let mut parts = val.splitn(3, ':').map(|p| p.trim().to_string());
                let (Some(subject), Some(rule)) = (parts.next(), parts.next()) else {
                    panic!("not-carried needs `subject: rule[: text]`: {line:?}");
                };
                e.not_carried
                    .push((subject, rule, parts.next().unwrap_or_default()));
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
    let expect = directives(&dir.join("patched.c"));
    match expect.cc.as_deref() {
        None | Some("gcc") => {
            let extra: Vec<&str> = expect.cflags.iter().map(String::as_str).collect();
            gcc::compile(&dir.join("orig.c"), &o, &extra);
            gcc::compile(&dir.join("patched.c"), &p, &extra);
        }
        Some(cc) => {
            gcc::compile_with(cc, &dir.join("orig.c"), &o);
            gcc::compile_with(cc, &dir.join("patched.c"), &p);
        }
    }
    let (mut oo, mut po) = (Object::read(&o).unwrap(), Object::read(&p).unwrap());
    oo.entry_sizes.extend(expect.entry_sizes.iter().cloned());
    po.entry_sizes.extend(expect.entry_sizes.iter().cloned());
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
    for (subject, rule, text) in &expect.not_carried {
        if !report
            .not_carried
            .iter()
            .any(|n| &n.subject == subject && n.rule == rule && n.reason.contains(text.as_str()))
        {
            problems.push(format!(
                "expected {subject} not carried under rule {rule} with {text:?}, not carried: {:?}",
                report.not_carried
            ));
        }
    }
    if !expect.strict_refused.is_empty() {
        let mut strict = report.clone();
        strict.make_strict();
        for (subject, text) in &expect.strict_refused {
            if strict.outcome != elfdiff::Outcome::Refused
                || !strict
                    .refusals
                    .iter()
                    .any(|r| &r.subject == subject && r.reason.contains(text.as_str()))
            {
                problems.push(format!(
                    "under --strict, expected refusal of {subject} containing {text:?}, got {:?}",
                    strict.refusals
                ));
            }
        }
    }
    if expect.refused.is_empty() && !report.refusals.is_empty() {
        problems.push(format!("unexpected refusals {:?}", report.refusals));
    }
    // Whatever can be patched must also emit a checked object: carried
    // functions exactly the changed and new ones (plus .cold parts).
    if report.outcome == elfdiff::Outcome::Changed {
        let module = expect.module.as_deref().map(gcc::ModuleResolver);
        let resolver: &dyn elfdiff::emit::Resolver = match &module {
            Some(m) => m,
            None => &TestResolver,
        };
        match elfdiff::emit::emit(&oo, &po, &c, &report, resolver) {
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
                // Carried: what the report includes (init and exit code
                // stay out), .cold parts aside (they travel with parents).
                let want: BTreeSet<String> = report
                    .functions
                    .iter()
                    .filter(|f| matches!(f.status, Status::Changed | Status::New))
                    .filter(|f| !f.left_out)
                    .map(|f| stem(f.patched_name.as_deref().unwrap_or(&f.name)))
                    .filter(|n| !n.contains(".cold"))
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
                problems.extend(check_output(&expect, &e, &out.join("out.o")));
                let mcount = e.special.iter().find(|(n, _, _)| n == "__mcount_loc");
                if let Some((_, kept, _)) = mcount {
                    let fentry = want.len();
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
            "case {}:\n  {}\nreport:\n{report}reproduce: cargo run -q -p factory --bin noreboot-build -- diff {} {}",
            dir.file_name().unwrap().to_string_lossy(),
            problems.join("\n  "),
            o.display(),
            p.display()
        ))
    }
}

/// The emitted object against the case's output directives, and against
/// the tools that will consume it: `readelf` reads it without complaint and
/// `ld -r` links it; no section group survives (the output carries no
/// group section, so a member flag would dangle).
fn check_output(expect: &Expect, e: &elfdiff::emit::Emitted, path: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(want) = &expect.records {
        // A name written with `.N` matches any numbering; one written with
        // its number must be exactly that symbol.
        let loose = want.iter().any(|n| n.ends_with(".N") || n.contains(".N."));
        let got: BTreeSet<String> = e
            .livepatch
            .iter()
            .map(|(_, n, _)| if loose { stem(n) } else { n.clone() })
            .collect();
        let want: BTreeSet<String> = want
            .iter()
            .map(|n| if loose { stem(n) } else { n.clone() })
            .collect();
        if got != want {
            problems.push(format!("livepatch records name {got:?}, expected {want:?}"));
        }
    }
    for (name, kept, total) in &expect.special {
        let got = e.special.iter().find(|(n, _, _)| n == name);
        if got.map(|(_, k, t)| (*k, *t)) != Some((*kept, *total)) {
            problems.push(format!(
                "special {name}: got {got:?}, expected {kept}/{total}"
            ));
        }
    }
    if let Some(want) = &expect.klp {
        let got: Vec<String> = e.livepatch.iter().map(|(_, n, _)| n.clone()).collect();
        if &got != want {
            problems.push(format!("livepatch records name {got:?}, expected {want:?}"));
        }
    }
    let o = match Object::parse(path, &e.bytes) {
        Ok(o) => o,
        Err(err) => return vec![format!("emitted object does not parse: {err}")],
    };
    let section = |name: &str| o.section_by_name(name).map(|id| o.section(id));
    for (name, want) in &expect.bytes {
        match section(name) {
            Some(s) if &s.data == want => {}
            Some(s) => problems.push(format!(
                "output {name} holds {:02x?}, expected {want:02x?}",
                s.data
            )),
            None => problems.push(format!("output has no {name}")),
        }
    }
    for (name, want) in &expect.relocs {
        let got: BTreeSet<String> = section(name)
            .map(|s| {
                s.relocs
                    .iter()
                    .map(|r| o.symbol(r.symbol).name.clone())
                    .collect()
            })
            .unwrap_or_default();
        if &got != want {
            problems.push(format!(
                "output {name} relocations target {got:?}, expected {want:?}"
            ));
        }
    }
    for (from, into, want) in &expect.lands {
        let got: Vec<i64> = section(from)
            .map(|s| {
                s.relocs
                    .iter()
                    .filter_map(|r| {
                        let t = o.symbol(r.symbol);
                        let sec = o.section(t.section?);
                        (sec.name == *into).then_some(t.value as i64 + r.addend)
                    })
                    .collect()
            })
            .unwrap_or_default();
        if &got != want {
            problems.push(format!(
                "output {from} lands in {into} at {got:?}, expected {want:?}"
            ));
        }
    }
    for (name, want) in &expect.record_addends {
        let got = record_addends(&o, name);
        if &got != want {
            problems.push(format!(
                "livepatch records naming {name} have addends {got:?}, expected {want:?}"
            ));
        }
    }
    for (_, s) in o.sections() {
        if s.sh_type == object::elf::SHT_GROUP
            || s.sh_flags & u64::from(object::elf::SHF_GROUP) != 0
        {
            problems.push(format!("output section {} is (in) a section group", s.name));
        }
    }
    let readelf = Command::new("readelf")
        .args(["-S", "-W"])
        .arg(path)
        .output()
        .expect("binutils are a setup requirement");
    if !readelf.status.success() || !readelf.stderr.is_empty() {
        problems.push(format!(
            "readelf -S -W on the output: {}",
            String::from_utf8_lossy(&readelf.stderr)
        ));
    }
    let ld = Command::new("ld")
        .arg("-r")
        .arg("-o")
        .arg(path.with_extension("ld.o"))
        .arg(path)
        .output()
        .expect("binutils are a setup requirement");
    if !ld.status.success() || !ld.stderr.is_empty() {
        problems.push(format!(
            "ld -r on the output: {}",
            String::from_utf8_lossy(&ld.stderr)
        ));
    }
    problems
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

/// The addends of the emitted livepatch records whose symbol-name field
/// names `name`, in record order (names are relocations into the string
/// table, see `elfdiff::records`).
fn record_addends(o: &Object, name: &str) -> Vec<i64> {
    use elfdiff::records;
    let (Some(sec), Some(strs)) = (
        o.section_by_name(records::SECTION),
        o.section_by_name(records::STRINGS),
    ) else {
        return Vec::new();
    };
    let (sec, strs) = (o.section(sec), &o.section(strs).data);
    let name_at = |rec: u64| -> Option<&str> {
        let field = rec + records::NAME_FIELDS[2];
        let r = sec.relocs.iter().find(|r| r.offset == field)?;
        let tail = strs.get(usize::try_from(r.addend).ok()?..)?;
        let end = tail.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&tail[..end]).ok()
    };
    sec.data
        .chunks_exact(records::SIZE as usize)
        .enumerate()
        .filter(|(i, _)| name_at(*i as u64 * records::SIZE) == Some(name))
        .filter_map(|(_, rec)| records::decode(rec).map(|f| f.addend))
        .collect()
}
