//! Pass 4, include: decides, from the comparison, what the live patch
//! carries, what it leaves out under a stated rule (line-only changes,
//! init and exit code, author-ignored functions, removed functions,
//! dropped exports: the report's `not_carried`), and what it refuses —
//! changed data that code left with the running kernel still uses,
//! functions ftrace cannot redirect, changed section groups. A changed
//! fragment without an fentry call brings in the functions that enter it.

use std::collections::{BTreeSet, HashMap, HashSet};

use object::elf;

use crate::compare::{changed_rodata, compare_symbol, Namer, Verdict};
use crate::correlate::{is_string_literal, stem, Correlation};
use crate::lines::LineMap;
use crate::read::{Object, SectionId, SymKind, SymbolId};
use crate::report::{DataReport, FunctionReport, NotCarried, Outcome, Refusal, Report, Status};

fn section_name(obj: &Object, id: SymbolId) -> String {
    obj.symbol(id)
        .section
        .map(|s| obj.section(s).name.clone())
        .unwrap_or_default()
}

/// Init and exit code and data, and the tables the kernel runs init and
/// exit code from (`.initcall*`, `.exitcall.exit`: `module_init` and
/// `module_exit` entries, run at boot or module load and unload, never
/// for a live patch).
fn is_init_or_exit(section: &str) -> bool {
    [
        ".init.text",
        ".exit.text",
        ".init.data",
        ".exit.data",
        ".init.rodata",
        ".exitcall.exit",
        ".con_initcall.init",
        ".init.setup",
    ]
    .iter()
    .any(|p| section == *p || section.starts_with(&format!("{p}.")))
        || (section.starts_with(".initcall") && section.ends_with(".init"))
}

/// objtool's name for the call padding before a function
/// (`__pfx_<function>`, `--prefix`; `__cfi_<function>` with kCFI): not a
/// function of its own, it travels with the function it precedes.
fn is_padding_label(s: &crate::read::Symbol) -> bool {
    s.kind == SymKind::Func && (s.name.starts_with("__pfx_") || s.name.starts_with("__cfi_"))
}

/// Code that must never be instrumented (entry code, `noinstr`).
fn is_noinstr(section: &str) -> bool {
    [".noinstr.text", ".entry.text", ".cpuidle.text"]
        .iter()
        .any(|p| section == *p || section.starts_with(&format!("{p}.")))
}

/// The exported name if `name` in section `section` is export-table
/// machinery (`__ksymtab_*`, `__kstrtab_*`, `__kstrtabns_*`, `__crc_*`).
pub fn export_of<'n>(name: &'n str, section: &str) -> Option<&'n str> {
    if let Some(n) = name.strip_prefix("__ksymtab_") {
        return Some(n);
    }
    for p in ["__kstrtab_", "__kstrtabns_", "__crc_"] {
        if let Some(n) = name.strip_prefix(p) {
            return Some(n);
        }
    }
    (section.starts_with("___ksymtab")
        || section.starts_with("__ksymtab")
        || section.starts_with("__kcrctab"))
    .then_some(name)
}

/// Sections whose entries describe code elsewhere (call sites, line
/// numbers, format strings) rather than hold program state: a changed
/// entry follows its function into the patch or is ignored with it, and is
/// never a changed initial value. The special sections pass keeps exactly
/// the entries of included functions.
pub fn is_descriptor_section(name: &str) -> bool {
    const SPECIAL: &[&str] = &[
        "__dyndbg",
        "__dyndbg_classes",
        // Dynamic debug descriptors before 5.9 (renamed __dyndbg).
        "__verbose",
        "__bug_table",
        "__ex_table",
        "__jump_table",
        ".printk_index",
        ".static_call_sites",
        ".altinstructions",
        ".altinstr_replacement",
        ".parainstructions",
        ".smp_locks",
        ".retpoline_sites",
        ".return_sites",
        ".call_sites",
        ".orc_unwind",
        ".orc_unwind_ip",
        "__mcount_loc",
        "__patchable_function_entries",
    ];
    SPECIAL
        .iter()
        .any(|s| name == *s || name.starts_with(&format!("{s}.")))
}

/// Statics the compiler makes for one call site each, in a section shared
/// by many: one-shot flags (`__already_done` of `DO_ONCE_LITE`, the
/// `WARN_ONCE`/`pr_*_once` flag in `.data..once` since 5.x, `.data.once`
/// before; `__warned` and `__print_once` in `.data.unlikely` on 4.x) and
/// dynamic debug descriptors (`__dyndbg`, `__verbose` before 5.x). A new
/// one belongs to new code only, and the patch module holds its own:
/// nothing in the running kernel looks for it among the section's other
/// entries (`clear_warn_once` resets only the kernel's own flags; the patch
/// module's `__dyndbg` is registered when it loads).
pub fn is_callsite_private(name: &str, section: &str) -> bool {
    let flag = ["__already_done", "__warned", "__print_once"]
        .iter()
        .any(|f| stem(name) == format!("{f}.N") || name == *f);
    let flags_section = [".data..once", ".data.once", ".data.unlikely"].contains(&section);
    (flag && flags_section) || crate::emit::DYNDBG.contains(&section)
}

/// Sections that exist in the running kernel: allocated, and not thrown
/// away by the kernel's linker script (`.discard*`, `.exit.*` of built-in
/// code stays, so it is not excluded here).
pub fn is_runtime(obj: &Object, sec: crate::read::SectionId) -> bool {
    let s = obj.section(sec);
    s.is_alloc() && !s.name.starts_with(".discard") && !crate::markers::is_marker_section(&s.name)
}

/// Functions the patched object's author marked intentionally unchanged
/// (`NOREBOOT_IGNORE_FUNCTION` or kpatch's `KPATCH_IGNORE_FUNCTION`).
pub fn ignored_functions(obj: &Object) -> HashSet<String> {
    crate::markers::ignored_functions(obj).into_iter().collect()
}

/// `.cold` (and `.part`-less) fragments gcc splits off a function: entered
/// only by jumps from their parent, never called, so they have no fentry
/// call of their own and are included together with the parent.
pub fn is_child_part(name: &str) -> bool {
    name.split('.').any(|p| p == "cold")
}

/// Whether the function starts with a call to `__fentry__` (after an
/// optional `endbr64`), which is what ftrace, and so livepatch, redirects.
pub fn has_fentry(obj: &Object, id: SymbolId) -> bool {
    let s = obj.symbol(id);
    let Some(sec) = s.section else { return false };
    obj.section(sec)
        .relocs
        .iter()
        .take_while(|r| r.offset < s.value + 16)
        .any(|r| r.offset >= s.value && obj.symbol(r.symbol).name == "__fentry__")
}

/// A section group as the linker sees it: the signature it deduplicates
/// by, whether it is COMDAT, and its members (relocation sections, which
/// follow their targets, left out; compiler numbering stemmed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupShape {
    signature: String,
    comdat: bool,
    members: Vec<String>,
}

impl GroupShape {
    fn describe(&self) -> String {
        let kind = if self.comdat { "COMDAT " } else { "" };
        format!("{kind}section group {}", self.signature)
    }

    /// What changed from `self` (original) to `new` (patched).
    fn difference(&self, new: &GroupShape) -> String {
        let mut out = Vec::new();
        if self.signature != new.signature {
            out.push(format!("signature {} -> {}", self.signature, new.signature));
        }
        if self.comdat != new.comdat {
            out.push(format!("COMDAT {} -> {}", self.comdat, new.comdat));
        }
        let added: Vec<&str> = new
            .members
            .iter()
            .filter(|m| !self.members.contains(m))
            .map(String::as_str)
            .collect();
        let removed: Vec<&str> = self
            .members
            .iter()
            .filter(|m| !new.members.contains(m))
            .map(String::as_str)
            .collect();
        if !added.is_empty() {
            out.push(format!("members added {}", added.join(" ")));
        }
        if !removed.is_empty() {
            out.push(format!("members removed {}", removed.join(" ")));
        }
        if out.is_empty() {
            out.push(format!(
                "members {} -> {}",
                self.members.join(" "),
                new.members.join(" ")
            ));
        }
        out.join("; ")
    }
}

/// The signature of group section `g`: the name of the symbol its
/// `sh_info` names (for a section symbol, the section's name).
fn group_signature(obj: &Object, g: SectionId) -> String {
    obj.symbols
        .get(obj.section(g).sh_info as usize)
        .map(|s| s.name.clone())
        .unwrap_or_default()
}

fn group_shape(obj: &Object, g: SectionId) -> GroupShape {
    let flags = obj
        .section(g)
        .data
        .get(..4)
        .map_or(0, |w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    let mut members: Vec<String> = obj
        .sections()
        .filter(|(_, s)| s.group == Some(g) && !matches!(s.sh_type, elf::SHT_RELA | elf::SHT_REL))
        .map(|(_, s)| stem(&s.name))
        .collect();
    members.sort();
    GroupShape {
        signature: group_signature(obj, g),
        comdat: flags & elf::GRP_COMDAT != 0,
        members,
    }
}

/// Compiler-made pieces of a function (`.cold`, `.part.N`, `.isra.N`,
/// `.constprop.N`, `.lto_priv.N`, `.localalias`): when one has no fentry
/// call of its own, the kernel reaches it only through the functions that
/// enter it.
pub fn is_fragment(name: &str) -> bool {
    name.split('.').skip(1).any(|p| {
        matches!(
            p,
            "cold" | "part" | "isra" | "constprop" | "lto_priv" | "localalias"
        )
    })
}

/// One function of either object while the pass decides about it.
struct Func {
    /// Patched symbol (`None` for removed functions).
    p: Option<SymbolId>,
    /// Original symbol (`None` for new functions).
    o: Option<SymbolId>,
    report: FunctionReport,
}

/// Compares every function and object and builds the report. Statuses
/// come first (compare), then changes spread from fragments to the
/// functions that enter them, then each changed function is carried,
/// left out with a stated rule, or refused; data last, once it is known
/// which code the patch replaces.
pub fn analyse(
    orig: &Object,
    patched: &Object,
    c: &Correlation,
    lines: Option<&LineMap>,
) -> Report {
    let namer = Namer::new(orig, patched, c);
    let rodata = changed_rodata(orig, patched, &namer, c);
    let ignored = ignored_functions(patched);
    let mut out = Decisions::default();

    let ignored_sections = crate::markers::ignored_sections(patched);
    let (mut funcs, changed_data, ignored_seen) = compare_all(
        orig,
        patched,
        c,
        &namer,
        &rodata,
        lines,
        (&ignored, &ignored_sections),
        &mut out,
    );
    escalate_fragments(orig, patched, &mut funcs, &mut out);
    decide_functions(orig, patched, &mut funcs, &mut out);
    decide_data(orig, patched, &funcs, &changed_data, &mut out);
    check_groups(orig, patched, c, &mut out);
    check_runtime_constants(patched, &mut out);
    check_types(orig, patched, &mut out);
    for name in crate::markers::forced_functions(patched) {
        out.refuse(
            &name,
            "marked KPATCH_FORCE_UNSAFE: kernel livepatch cannot skip its consistency model; drop the marker (the transition waits until no task runs the function)".into(),
        );
    }
    // A marker for a function that is new, or that nothing correlates
    // with, is a mistake the author should hear about.
    for name in &ignored {
        if !ignored_seen.contains(name) {
            out.refuse(
                name,
                "marked unchanged (NOREBOOT_IGNORE_FUNCTION or KPATCH_IGNORE_FUNCTION) but it is not a function of the original object".into(),
            );
        }
    }
    out.finish(orig, patched, funcs)
}

/// What the pass has decided so far.
#[derive(Default)]
struct Decisions {
    data: Vec<DataReport>,
    refusals: Vec<Refusal>,
    included: Vec<u32>,
    notes: Vec<String>,
    not_carried: Vec<NotCarried>,
}

impl Decisions {
    fn refuse(&mut self, subject: &str, reason: String) {
        self.refusals.push(Refusal {
            subject: subject.to_string(),
            reason,
        });
    }

    fn leave_out(&mut self, subject: &str, rule: &'static str, reason: String) {
        self.not_carried.push(NotCarried {
            subject: subject.to_string(),
            rule,
            reason,
        });
    }

    fn finish(mut self, orig: &Object, patched: &Object, funcs: Vec<Func>) -> Report {
        let mut functions: Vec<FunctionReport> = funcs.into_iter().map(|f| f.report).collect();
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        self.data.sort_by(|a, b| a.name.cmp(&b.name));
        self.notes.sort();
        self.notes.dedup();
        self.not_carried
            .sort_by(|a, b| (&a.subject, a.rule).cmp(&(&b.subject, b.rule)));
        self.not_carried.dedup();
        self.refusals
            .sort_by(|a, b| (&a.subject, &a.reason).cmp(&(&b.subject, &b.reason)));
        self.refusals.dedup();
        self.included.sort_unstable();
        self.included.dedup();
        let outcome = if !self.refusals.is_empty() {
            Outcome::Refused
        } else if !self.included.is_empty() {
            Outcome::Changed
        } else {
            Outcome::NoChange
        };
        Report {
            orig: orig.path.clone(),
            patched: patched.path.clone(),
            outcome,
            functions,
            data: self.data,
            refusals: self.refusals,
            notes: self.notes,
            not_carried: self.not_carried,
            included: self.included,
        }
    }
}

/// An existing data object whose contents differ: (original, patched,
/// reasons).
type ChangedData = (SymbolId, SymbolId, Vec<String>);

/// Compare: the status of every function; new data carried; changed data
/// set aside for [`decide_data`]. Returns the functions, the changed data
/// and the author-ignored functions met.
#[allow(clippy::too_many_arguments)]
fn compare_all(
    orig: &Object,
    patched: &Object,
    c: &Correlation,
    namer: &Namer,
    rodata: &HashSet<String>,
    lines: Option<&LineMap>,
    (ignored, ignored_sections): (&HashSet<String>, &BTreeSet<String>),
    out: &mut Decisions,
) -> (Vec<Func>, Vec<ChangedData>, HashSet<String>) {
    // A `.cold` part follows its parent.
    let parent = |name: &str| name.split(".cold").next().unwrap_or(name).to_string();
    let is_ignored = |name: &str| ignored.contains(name) || ignored.contains(&parent(name));
    let mut ignored_seen = HashSet::new();
    let mut funcs = Vec::new();
    let mut changed_data = Vec::new();
    for (p, sp) in patched.symbols() {
        let Some(sec) = sp.section else { continue };
        if !is_runtime(patched, sec) || is_padding_label(sp) {
            continue;
        }
        let psec = section_name(patched, p);
        match (sp.kind, c.sym_p2o.get(&p)) {
            (SymKind::Func, Some(&o)) => {
                let so = orig.symbol(o);
                let verdict = compare_symbol(orig, patched, namer, o, p, rodata, lines);
                if is_ignored(&sp.name) {
                    ignored_seen.insert(parent(&sp.name));
                }
                let (status, reasons) = match verdict {
                    Verdict::Same => (Status::Unchanged, Vec::new()),
                    Verdict::LineOnly => (Status::LineOnly, Vec::new()),
                    Verdict::Changed(r) if ignored_sections.contains(&psec) => (Status::Ignored, r),
                    Verdict::Changed(r) if is_ignored(&sp.name) => (Status::Ignored, r),
                    Verdict::Changed(r) => (Status::Changed, r),
                };
                funcs.push(Func {
                    p: Some(p),
                    o: Some(o),
                    report: FunctionReport {
                        name: so.name.clone(),
                        patched_name: (so.name != sp.name).then(|| sp.name.clone()),
                        status,
                        reasons,
                        section: psec,
                        fragment: false,
                        left_out: false,
                    },
                });
            }
            (SymKind::Func, None) => funcs.push(Func {
                p: Some(p),
                o: None,
                report: FunctionReport {
                    name: sp.name.clone(),
                    patched_name: None,
                    status: Status::New,
                    reasons: Vec::new(),
                    section: psec,
                    fragment: false,
                    left_out: false,
                },
            }),
            (SymKind::Object, Some(&o)) => {
                if let Verdict::Changed(reasons) =
                    compare_symbol(orig, patched, namer, o, p, &HashSet::new(), None)
                {
                    if ignored_sections.contains(&psec) {
                        out.notes.push(format!(
                            "{} changed but its section {psec} is ignored by the patch author (KPATCH_IGNORE_SECTION): the kernel keeps the old value",
                            orig.symbol(o).name
                        ));
                        out.leave_out(
                            &orig.symbol(o).name,
                            "author-ignored",
                            format!("its section {psec} is ignored by the patch author (KPATCH_IGNORE_SECTION): the kernel keeps the old value"),
                        );
                    } else if !is_descriptor_section(&psec) {
                        // Descriptors follow their function (see
                        // is_descriptor_section).
                        changed_data.push((o, p, reasons));
                    }
                }
            }
            (SymKind::Object, None) => new_data(patched, c, p, sec, psec, out),
            _ => {}
        }
    }
    funcs.extend(removed_functions(orig, c));
    (funcs, changed_data, ignored_seen)
}

/// A new data symbol: an export dropped, init data left out, a new module
/// parameter refused, new data in a shared writable section refused;
/// otherwise carried.
fn new_data(
    patched: &Object,
    c: &Correlation,
    p: SymbolId,
    sec: SectionId,
    psec: String,
    out: &mut Decisions,
) {
    let sp = patched.symbol(p);
    if let Some(name) = export_of(&sp.name, &psec) {
        // The running kernel's export table cannot grow; a
        // module needing the symbol must wait for a reboot.
        out.notes.push(format!(
            "export of {name} dropped: the running kernel's export table cannot grow, the patch carries the function, unexported, until a reboot"
        ));
        out.leave_out(
            &sp.name,
            "export-dropped",
            format!("the running kernel's export table cannot grow: {name} is carried unexported until a reboot"),
        );
        return;
    }
    if is_init_or_exit(&psec) {
        out.leave_out(
            &sp.name,
            "init-data",
            format!("new {psec} data: init or exit machinery (the code, or the table the kernel runs it from at boot, module load or unload), which the patch does not carry"),
        );
        return;
    }
    if psec == "__param" {
        // The module loader registers a module's parameters
        // from its own __param table once, at load: the
        // running module cannot gain one, and an entry carried
        // in the patch would become a parameter of the patch.
        out.refuse(
            &sp.name,
            format!("a new module parameter ({}): the running module's parameters are fixed when it loads; a live patch cannot add one", sp.name.trim_start_matches("__param_")),
        );
        return;
    }
    let shared = patched.section(sec).symbols.iter().any(|other| {
        *other != p
            && patched.symbol(*other).kind == SymKind::Object
            && c.sym_p2o.contains_key(other)
    });
    if shared && patched.section(sec).is_writable() && !is_callsite_private(&sp.name, &psec) {
        out.refuse(&sp.name, format!("new data in the shared section {psec}, which the running kernel already holds (build with -fdata-sections)"));
    }
    out.included.push(p.0);
    out.data.push(DataReport {
        name: sp.name.clone(),
        status: Status::New,
        section: psec,
        reasons: Vec::new(),
    });
}

/// Functions of the original the patched object no longer has.
fn removed_functions(orig: &Object, c: &Correlation) -> Vec<Func> {
    let mut out = Vec::new();
    for (o, so) in orig.symbols() {
        if so.kind == SymKind::Func
            && so.section.is_some_and(|s| is_runtime(orig, s))
            && !is_padding_label(so)
            && !c.sym_o2p.contains_key(&o)
        {
            out.push(Func {
                p: None,
                o: Some(o),
                report: FunctionReport {
                    name: so.name.clone(),
                    patched_name: None,
                    status: Status::Removed,
                    reasons: Vec::new(),
                    section: section_name(orig, o),
                    fragment: false,
                    left_out: false,
                },
            });
        }
    }
    out
}

/// A changed fragment without an fentry call is never entered through
/// ftrace: the functions that enter it are replaced with it, up to ones
/// the kernel can redirect.
fn escalate_fragments(orig: &Object, patched: &Object, funcs: &mut [Func], out: &mut Decisions) {
    let needs_parent = |f: &Func| {
        f.report.status == Status::Changed
            && is_fragment(&f.report.name)
            && !f.o.is_some_and(|o| has_fentry(orig, o))
    };
    let mut work: Vec<usize> = (0..funcs.len())
        .filter(|&i| needs_parent(&funcs[i]))
        .collect();
    if work.is_empty() {
        return;
    }
    let users = crate::correlate::users(patched);
    let by_patched: HashMap<SymbolId, usize> = funcs
        .iter()
        .enumerate()
        .filter_map(|(i, f)| Some((f.p?, i)))
        .collect();
    let mut done = HashSet::new();
    while let Some(i) = work.pop() {
        if !done.insert(i) {
            continue;
        }
        let Some(p) = funcs[i].p else { continue };
        let fragment = funcs[i].report.name.clone();
        let entering: Vec<usize> = users
            .get(&p)
            .into_iter()
            .flatten()
            .filter(|u| **u != p)
            .filter_map(|u| by_patched.get(u).copied())
            .collect();
        if entering.is_empty() {
            out.refuse(
                &fragment,
                "changed, has no fentry call of its own, and no function of the object enters it: the kernel would never run the new code".into(),
            );
            continue;
        }
        for e in entering {
            let f = &mut funcs[e];
            match f.report.status {
                Status::Unchanged | Status::LineOnly => {
                    f.report.status = Status::Changed;
                    f.report
                        .reasons
                        .push(format!("enters the changed fragment {fragment}"));
                    if needs_parent(&funcs[e]) {
                        work.push(e);
                    }
                }
                Status::Ignored => out.notes.push(format!(
                    "{} enters the changed fragment {fragment} but is marked unchanged by the patch author: the kernel's copy keeps entering the old fragment",
                    f.report.name
                )),
                _ => {}
            }
        }
    }
}

/// Each changed, new, line-only or ignored function: carried, left out
/// under a stated rule, or refused.
fn decide_functions(orig: &Object, patched: &Object, funcs: &mut [Func], out: &mut Decisions) {
    for f in funcs.iter_mut() {
        let name = f.report.name.clone();
        let psec = f.report.section.clone();
        let osec = f.o.map(|o| section_name(orig, o)).unwrap_or_default();
        let init = [osec.as_str(), psec.as_str()]
            .into_iter()
            .find(|s| is_init_or_exit(s));
        match f.report.status {
            Status::Changed | Status::New => {
                let Some(p) = f.p else { continue };
                let new = f.o.is_none();
                if let Some(sec) = init {
                    let (rule, when) = if sec.starts_with(".exit") {
                        ("exit-code", "runs when its module is removed, from the running kernel's own copy")
                    } else {
                        ("init-code", "ran once, at boot or when its module was loaded; a module loaded after the patch runs its own copy")
                    };
                    let what = if new { "new" } else { "changed" };
                    let touches = runtime_data_touched(patched, p);
                    let setup = if touches.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; the state it sets up in {} is what the running kernel keeps",
                            touches.join(", ")
                        )
                    };
                    out.leave_out(&name, rule, format!("{what} {sec} code {when}{setup}"));
                    f.report.left_out = true;
                    continue;
                }
                if !new && is_noinstr(&osec) {
                    out.refuse(&name, format!("changed {osec} code (noinstr/entry): it must never be traced, so ftrace cannot redirect it"));
                    continue;
                }
                let fentry = match f.o {
                    Some(o) => has_fentry(orig, o),
                    None => has_fentry(patched, p),
                };
                if is_fragment(&name) && !fentry {
                    // Entered only from carried functions (see
                    // escalate_fragments): carried, never redirected.
                    f.report.fragment = true;
                } else if !new && !fentry {
                    out.refuse(
                        &name,
                        "has no fentry call (notrace/noinstr): ftrace cannot redirect it".into(),
                    );
                    continue;
                }
                out.included.push(p.0);
            }
            Status::LineOnly => out.leave_out(
                &name,
                "line-only",
                "only __LINE__ numbers differ (a line moved above it): the kernel's copy behaves the same".into(),
            ),
            Status::Ignored => out.leave_out(
                &name,
                "author-ignored",
                "marked unchanged by the patch author (NOREBOOT_IGNORE_FUNCTION, KPATCH_IGNORE_FUNCTION or KPATCH_IGNORE_SECTION): the kernel's own copy stays".into(),
            ),
            Status::Removed if init.is_none() => out.leave_out(
                &name,
                "removed",
                "gone from the fixed source: the running kernel keeps its copy, which replaced code no longer calls".into(),
            ),
            _ => {}
        }
    }
}

/// Runtime data (not init, not descriptors) that function `f` refers to.
fn runtime_data_touched(obj: &Object, f: SymbolId) -> Vec<String> {
    let s = obj.symbol(f);
    let Some(sec) = s.section else {
        return Vec::new();
    };
    let mut names: Vec<String> = obj
        .section(sec)
        .relocs
        .iter()
        .filter(|r| r.offset >= s.value && r.offset < s.value + s.size.max(1))
        .filter_map(|r| crate::correlate::reloc_target(obj, r))
        .filter(|t| {
            let ts = obj.symbol(*t);
            ts.kind == SymKind::Object
                && ts.section.is_some_and(|ds| {
                    let d = obj.section(ds);
                    d.is_alloc() && !is_init_or_exit(&d.name) && !is_descriptor_section(&d.name)
                })
        })
        .map(|t| obj.symbol(t).name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The places in `obj` that refer to data object `target`, outside the
/// symbols in `except`: `container+offset` for each (descriptor sections,
/// which follow their functions, and sections the kernel does not keep
/// are not places).
fn references_to(obj: &Object, target: SymbolId, except: &HashSet<SymbolId>) -> Vec<String> {
    let t = obj.symbol(target);
    // With -fdata-sections an object has its section to itself, so any
    // reference relative to that section is a reference to it.
    let own_section = t.section.filter(|s| obj.section(*s).symbols.len() == 1);
    let mut out = Vec::new();
    for (sid, sec) in obj.sections() {
        if !is_runtime(obj, sid) || is_descriptor_section(&sec.name) {
            continue;
        }
        for r in &sec.relocs {
            let rs = obj.symbol(r.symbol);
            let hits = r.symbol == target
                || (rs.kind == SymKind::Section
                    && rs.section.is_some()
                    && rs.section == own_section)
                || crate::correlate::reloc_target(obj, r) == Some(target);
            if !hits {
                continue;
            }
            let at = r.offset as i64;
            match crate::correlate::symbol_at(obj, sid, at) {
                Some(c) if c == target || except.contains(&c) => {}
                Some(c) => {
                    let cs = obj.symbol(c);
                    out.push(format!("{}+{:#x}", cs.name, r.offset - cs.value));
                }
                None => out.push(format!("{}+{:#x}", sec.name, r.offset)),
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Changed initial values of existing data. A patch can carry its own copy
/// of read-only data only when every reference to it is from code the
/// patch replaces (or from data it carries): any other reference keeps
/// the running kernel on the old contents while the new code assumes the
/// new ones. Writable data keeps its state in the running kernel, so a
/// changed initial value or size is always refused.
fn decide_data(
    orig: &Object,
    patched: &Object,
    funcs: &[Func],
    changed: &[ChangedData],
    out: &mut Decisions,
) {
    let redirected = crate::markers::redirected_data(patched);
    let carried: HashSet<u32> = out.included.iter().copied().collect();
    let mut replaced: HashSet<SymbolId> = funcs
        .iter()
        .filter(|f| f.p.is_some_and(|p| carried.contains(&p.0)))
        .filter_map(|f| f.o)
        .collect();
    let mut pending: Vec<(SymbolId, SymbolId, &Vec<String>)> = Vec::new();
    let advice = "replace its users with the fix too, or use a shadow variable, or point the running kernel's references at the patch's copy from a pre-patch callback (and back from a post-unpatch callback) and declare that with NOREBOOT_DATA_REDIRECTED";
    for (o, p, reasons) in changed {
        let (so, sp) = (orig.symbol(*o), patched.symbol(*p));
        let osec = so.section.map(|s| orig.section(s));
        let secname = osec.map(|s| s.name.clone()).unwrap_or_default();
        if is_init_or_exit(&secname) {
            out.leave_out(
                &so.name,
                "init-data",
                format!(
                    "{secname} data changed ({}): only init or exit code uses it",
                    reasons.join("; ")
                ),
            );
            continue;
        }
        if is_string_literal(patched, *p) {
            // `__func__` and its kin: read-only, referenced by the code of
            // the function they name, never compared by address; the
            // carried code uses its copy, the kernel's code its own.
            out.included.push(p.0);
            out.data.push(DataReport {
                name: so.name.clone(),
                status: Status::Changed,
                section: section_name(patched, *p),
                reasons: reasons.clone(),
            });
            continue;
        }
        if so.size != sp.size {
            out.refuse(&so.name, format!("data size changed from {} to {} bytes: the running kernel's layout cannot change (use a shadow variable)", so.size, sp.size));
        } else if !is_plain_rodata(&secname) && !osec.is_some_and(|s| s.is_writable()) {
            // A section the kernel walks as a table (`__param`: module
            // parameters; tracepoint and event tables): the running kernel
            // reads its own entry through the table, never through a
            // reference a patch could redirect, and a copy in the patch
            // module would be registered as the patch's own.
            out.refuse(
                &so.name,
                format!(
                    "read-only data changed ({}): the kernel reads {secname} as a table of its own (module parameters, tracepoints, …), so the running kernel keeps its entry and a copy in the patch is never used (a changed module parameter cannot be applied live)",
                    reasons.join("; ")
                ),
            );
        } else if osec.is_some_and(|s| s.is_writable()) {
            out.refuse(&so.name, format!("initial value of existing data changed ({}): the running kernel keeps the old value and the state it holds; set the new value from a pre-patch callback, or keep new state in a shadow variable", reasons.join("; ")));
        } else {
            // Carried as a copy unless a reference stays behind; decided
            // together below, since carried data may refer to other
            // carried data.
            replaced.insert(*o);
            pending.push((*o, *p, reasons));
        }
    }
    // Drop, until nothing changes, copies that something left with the
    // running kernel still refers to.
    let mut refused: HashMap<SymbolId, Vec<String>> = HashMap::new();
    loop {
        let mut more = false;
        for (o, p, _) in &pending {
            if refused.contains_key(o) {
                continue;
            }
            let so = orig.symbol(*o);
            let mut staying = references_to(orig, *o, &replaced);
            if !so.is_local() {
                staying.push("other objects of the kernel (it is global)".into());
            }
            if !staying.is_empty() && !redirected.contains(&patched.symbol(*p).name) {
                replaced.remove(o);
                refused.insert(*o, staying);
                more = true;
            }
        }
        if !more {
            break;
        }
    }
    for (o, p, reasons) in pending {
        let so = orig.symbol(o);
        let psec = section_name(patched, p);
        if let Some(staying) = refused.get(&o) {
            out.refuse(
                &so.name,
                format!(
                    "initial value of read-only data changed ({}): the patch would carry its own copy, but these references stay with the running kernel's old copy: {}; {advice}({})",
                    reasons.join("; "),
                    staying.join(", "),
                    so.name
                ),
            );
            continue;
        }
        if redirected.contains(&patched.symbol(p).name) {
            let staying = references_to(orig, o, &replaced);
            out.notes.push(format!(
                "{} changed: the patch carries its own copy; the references {} are redirected by the patch author's callbacks (NOREBOOT_DATA_REDIRECTED)",
                so.name,
                if staying.is_empty() { "from other objects".to_string() } else { staying.join(", ") }
            ));
        }
        out.included.push(p.0);
        out.data.push(DataReport {
            name: so.name.clone(),
            status: Status::Changed,
            section: psec,
            reasons: reasons.clone(),
        });
    }
}

/// `.rodata` and its per-symbol and merged sections: data only code reads,
/// through references the patch can see.
fn is_plain_rodata(section: &str) -> bool {
    section == ".rodata" || section.starts_with(".rodata.")
}

/// Section groups: the linker keeps one copy of each group signature
/// across the whole kernel, a live patch cannot redo that choice. What the
/// patch carries must sit in a group that is the same in both objects —
/// signature, kind and members — or in none.
/// Structures, unions and enumerations whose layout the fix changes
/// ([`crate::types`]): refused when the patch carries anything, since the
/// carried code would meet instances the running kernel laid out the old
/// way; listed as not carried when it carries nothing (no code changed
/// with the layout).
fn check_types(orig: &Object, patched: &Object, out: &mut Decisions) {
    let carried = !out.included.is_empty();
    match crate::types::changed_types(orig, patched) {
        Ok(None) => {
            if carried {
                out.notes.push(
                    "type layouts not compared: the objects carry no debugging information (DWARF)"
                        .into(),
                );
            }
        }
        Ok(Some(changes)) => {
            for c in changes {
                if carried {
                    out.refuse(
                        &c.name,
                        format!(
                            "layout changed ({}): instances the running kernel already holds keep the old layout, and the carried code would use them with the new one; keep new state in a shadow variable (klp_shadow_get_or_alloc, docs/factory.md) and leave the type as it is",
                            c.detail
                        ),
                    );
                } else {
                    out.not_carried.push(NotCarried {
                        subject: c.name,
                        rule: "type-layout",
                        reason: format!(
                            "layout changed ({}), but no code changed with it",
                            c.detail
                        ),
                    });
                }
            }
        }
        Err(e) => {
            if carried {
                out.refuse(
                    "debugging information",
                    format!("cannot compare type layouts: {e}"),
                );
            }
        }
    }
}

fn check_groups(orig: &Object, patched: &Object, c: &Correlation, out: &mut Decisions) {
    let mut shapes_o = HashMap::new();
    let mut shapes_p = HashMap::new();
    let mut refusals = Vec::new();
    for &p in &out.included {
        let p = SymbolId(p);
        let sp = patched.symbol(p);
        let Some(psec) = sp.section else { continue };
        let o = c.sym_p2o.get(&p).copied();
        let pg = patched.section(psec).group;
        let og = match o {
            Some(o) => orig.symbol(o).section.and_then(|s| orig.section(s).group),
            // A new symbol: the original's group of the same signature.
            None => pg.and_then(|pg| {
                let sig = group_signature(patched, pg);
                orig.sections()
                    .find(|(g, s)| s.sh_type == elf::SHT_GROUP && group_signature(orig, *g) == sig)
                    .map(|(g, _)| g)
            }),
        };
        if pg.is_none() && og.is_none() {
            continue;
        }
        let shape_p = pg.map(|g| {
            shapes_p
                .entry(g)
                .or_insert_with(|| group_shape(patched, g))
                .clone()
        });
        let shape_o = og.map(|g| {
            shapes_o
                .entry(g)
                .or_insert_with(|| group_shape(orig, g))
                .clone()
        });
        let secname = &patched.section(psec).name;
        let name = o.map_or(&sp.name, |o| &orig.symbol(o).name);
        let why = match (shape_o, shape_p) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => format!(
                "section {secname} is in {}, which changed: {}",
                b.describe(),
                a.difference(&b)
            ),
            (None, Some(b)) if o.is_some() => {
                format!("section {secname} joined {}", b.describe())
            }
            (None, Some(b)) => format!(
                "section {secname} is in {}, which the original object does not have",
                b.describe()
            ),
            (Some(a), None) => format!("section {secname} left {}", a.describe()),
            (None, None) => continue,
        };
        refusals.push((
            name.clone(),
            format!("{why}; a live patch cannot reproduce the linker's group deduplication"),
        ));
    }
    for (name, why) in refusals {
        out.refuse(&name, why);
    }
}

/// Runtime constants: the kernel writes their values into its code once,
/// at boot. A pointer constant becomes a load of the variable when the
/// patch is emitted (what a module build of the same code does); a shift
/// count has no such form, so a function using one cannot be carried.
fn check_runtime_constants(patched: &Object, out: &mut Decisions) {
    let carried: HashSet<u32> = out.included.iter().copied().collect();
    for site in crate::special::runtime_sites(patched) {
        if site.kind == crate::special::RuntimeKind::Ptr {
            continue;
        }
        let Some(f) = crate::correlate::symbol_at(patched, site.section, site.offset as i64) else {
            continue;
        };
        if carried.contains(&f.0) {
            out.refuse(
                &patched.symbol(f).name,
                format!(
                    "uses runtime constant {} ({}): the kernel writes it into its code only at boot, and a patch cannot receive it",
                    site.variable, site.table
                ),
            );
        }
    }
}

/// What the patch object carries for the report's inclusions (`included`,
/// symbol indices of the patched object): those symbols, the compiler's
/// parts of carried functions (`.cold`, `.part.N`: entered by jumps, never
/// by call, so never reached through ftrace), and copies of the string
/// literals they use (resolving one would need the kernel's copy told
/// apart from its namesakes, and a copy is as good); transitively.
pub fn carried_closure(patched: &Object, included: &[u32]) -> Vec<SymbolId> {
    let mut carried: Vec<SymbolId> = included.iter().map(|&i| SymbolId(i)).collect();
    let mut seen: HashSet<SymbolId> = carried.iter().copied().collect();
    let mut i = 0;
    while i < carried.len() {
        let s = patched.symbol(carried[i]);
        if let Some(sec) = s.section {
            for r in &patched.section(sec).relocs {
                if r.offset < s.value || r.offset >= s.value + s.size {
                    continue;
                }
                if let Some(tg) = crate::correlate::reloc_target(patched, r) {
                    let ts = patched.symbol(tg);
                    let child = ts.kind == SymKind::Func && is_child_part(&ts.name);
                    if (child || is_string_literal(patched, tg)) && seen.insert(tg) {
                        carried.push(tg);
                    }
                }
            }
        }
        i += 1;
    }
    carried
}
