//! Pass 4, include: decides, from the comparison, what the live patch
//! carries — changed and new functions, new data, new copies of changed
//! read-only data — and refuses what it cannot carry safely: changed
//! initial values or sizes of existing writable data, changed `__init` and
//! `__exit` code, replaced functions without an fentry call, new static
//! locals in shared data sections, changed section groups.

use std::collections::{HashMap, HashSet};

use object::elf;

use crate::compare::{changed_rodata, compare_symbol, Namer, Verdict};
use crate::correlate::{stem, Correlation};
use crate::lines::LineMap;
use crate::read::{Object, SectionId, SymKind, SymbolId};
use crate::report::{DataReport, FunctionReport, Outcome, Refusal, Report, Status};

fn section_name(obj: &Object, id: SymbolId) -> String {
    obj.symbol(id)
        .section
        .map(|s| obj.section(s).name.clone())
        .unwrap_or_default()
}

fn is_init_or_exit(section: &str) -> bool {
    [
        ".init.text",
        ".exit.text",
        ".init.data",
        ".exit.data",
        ".init.rodata",
    ]
    .iter()
    .any(|p| section == *p || section.starts_with(&format!("{p}.")))
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
    s.is_alloc() && !s.name.starts_with(".discard")
}

/// Section of the records `NOREBOOT_IGNORE_FUNCTION(fn)` emits: one
/// pointer per function the patch author declares intentionally unchanged.
pub const IGNORE_SECTION: &str = ".discard.noreboot.ignore";

/// Functions the patched object's author marked intentionally unchanged.
pub fn ignored_functions(obj: &Object) -> HashSet<String> {
    let mut out = HashSet::new();
    for (_, sec) in obj.sections() {
        if sec.name != IGNORE_SECTION {
            continue;
        }
        for r in &sec.relocs {
            let t = obj.symbol(r.symbol);
            if t.kind == SymKind::Section {
                // Against the function's section: the function at the
                // addend.
                if let Some(f) = obj.symbols.iter().find(|x| {
                    x.section == t.section && x.kind == SymKind::Func && x.value as i64 == r.addend
                }) {
                    out.insert(f.name.clone());
                }
            } else {
                out.insert(t.name.clone());
            }
        }
    }
    out
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

/// Compares every function and object and builds the report.
pub fn analyse(
    orig: &Object,
    patched: &Object,
    c: &Correlation,
    lines: Option<&LineMap>,
) -> Report {
    let namer = Namer::new(orig, patched, c);
    let rodata = changed_rodata(orig, patched, &namer, c);
    let ignored = ignored_functions(patched);
    // A `.cold` part follows its parent.
    let is_ignored = |name: &str| {
        ignored.contains(name) || ignored.contains(name.split(".cold").next().unwrap_or(name))
    };
    let mut ignored_seen: HashSet<String> = HashSet::new();
    let mut functions = Vec::new();
    let mut data = Vec::new();
    let mut refusals = Vec::new();
    let mut included: Vec<u32> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut refuse = |subject: &str, reason: String| {
        refusals.push(Refusal {
            subject: subject.to_string(),
            reason,
        })
    };

    for (p, sp) in patched.symbols() {
        let Some(sec) = sp.section else { continue };
        if !is_runtime(patched, sec) || is_padding_label(sp) {
            continue;
        }
        let psec = section_name(patched, p);
        match (sp.kind, c.sym_p2o.get(&p)) {
            (SymKind::Func, Some(&o)) => {
                let so = orig.symbol(o);
                let verdict = compare_symbol(orig, patched, &namer, o, p, &rodata, lines);
                let (status, reasons) = match verdict {
                    Verdict::Same => (Status::Unchanged, Vec::new()),
                    Verdict::LineOnly => (Status::LineOnly, Vec::new()),
                    Verdict::Changed(r) if is_ignored(&sp.name) => (Status::Ignored, r),
                    Verdict::Changed(r) => (Status::Changed, r),
                };
                if is_ignored(&sp.name) {
                    ignored_seen.insert(
                        sp.name
                            .split(".cold")
                            .next()
                            .unwrap_or(&sp.name)
                            .to_string(),
                    );
                }
                if status == Status::Changed {
                    let osec = section_name(orig, o);
                    if is_noinstr(&osec) {
                        refuse(&so.name, format!("changed {osec} code (noinstr/entry): it must never be traced, so ftrace cannot redirect it"));
                    } else if is_init_or_exit(&osec) || is_init_or_exit(&psec) {
                        refuse(&so.name, format!("changed {osec} code: it ran at boot or runs at unload, a live patch cannot replace it"));
                    } else if !is_child_part(&so.name) && !has_fentry(orig, o) {
                        refuse(
                            &so.name,
                            "has no fentry call (notrace/noinstr): ftrace cannot redirect it"
                                .into(),
                        );
                    }
                }
                if status == Status::Changed {
                    included.push(p.0);
                }
                functions.push(FunctionReport {
                    name: so.name.clone(),
                    patched_name: (so.name != sp.name).then(|| sp.name.clone()),
                    status,
                    reasons,
                    section: psec,
                });
            }
            (SymKind::Func, None) => {
                if is_init_or_exit(&psec) {
                    refuse(
                        &sp.name,
                        format!("new {psec} code cannot run in a live patch"),
                    );
                }
                included.push(p.0);
                functions.push(FunctionReport {
                    name: sp.name.clone(),
                    patched_name: None,
                    status: Status::New,
                    reasons: Vec::new(),
                    section: psec,
                });
            }
            (SymKind::Object, Some(&o)) => {
                let so = orig.symbol(o);
                let osec = orig.symbol(o).section.map(|s| orig.section(s));
                let writable = osec.is_some_and(|s| s.is_writable());
                if let Verdict::Changed(reasons) =
                    compare_symbol(orig, patched, &namer, o, p, &HashSet::new(), None)
                {
                    if is_descriptor_section(&psec) {
                        // Follows its function (see is_descriptor_section).
                    } else if so.size != sp.size {
                        refuse(&so.name, format!("data size changed from {} to {} bytes: the running kernel's layout cannot change (use a shadow variable)", so.size, sp.size));
                    } else if writable {
                        refuse(&so.name, format!("initial value of existing data changed ({}): the running kernel keeps the old value", reasons.join("; ")));
                    } else {
                        included.push(p.0);
                        data.push(DataReport {
                            name: so.name.clone(),
                            status: Status::Changed,
                            section: psec,
                            reasons,
                        });
                    }
                }
            }
            (SymKind::Object, None) if export_of(&sp.name, &psec).is_some() => {
                // The running kernel's export table cannot grow; a module
                // needing the symbol must wait for a reboot.
                if let Some(name) = export_of(&sp.name, &psec) {
                    notes.push(format!(
                        "export of {name} dropped: the running kernel's export table cannot grow, the patch carries the function, unexported, until a reboot"
                    ));
                }
            }
            (SymKind::Object, None) => {
                if let Some(sec) = sp.section {
                    let shared = patched.section(sec).symbols.iter().any(|other| {
                        *other != p
                            && patched.symbol(*other).kind == SymKind::Object
                            && c.sym_p2o.contains_key(other)
                    });
                    if shared
                        && patched.section(sec).is_writable()
                        && !is_callsite_private(&sp.name, &psec)
                    {
                        refuse(&sp.name, format!("new data in the shared section {psec}, which the running kernel already holds (build with -fdata-sections)"));
                    }
                }
                included.push(p.0);
                data.push(DataReport {
                    name: sp.name.clone(),
                    status: Status::New,
                    section: psec,
                    reasons: Vec::new(),
                });
            }
            _ => {}
        }
    }
    for (o, so) in orig.symbols() {
        if so.kind == SymKind::Func
            && so.section.is_some_and(|s| is_runtime(orig, s))
            && !c.sym_o2p.contains_key(&o)
        {
            functions.push(FunctionReport {
                name: so.name.clone(),
                patched_name: None,
                status: Status::Removed,
                reasons: Vec::new(),
                section: section_name(orig, o),
            });
        }
    }
    // Section groups: the linker keeps one copy of each group signature
    // across the whole kernel, a live patch cannot redo that choice. What
    // the patch carries must sit in a group that is the same in both
    // objects — signature, kind and members — or in none.
    let mut shapes_o = HashMap::new();
    let mut shapes_p = HashMap::new();
    for &p in &included {
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
        refuse(
            name,
            format!("{why}; a live patch cannot reproduce the linker's group deduplication"),
        );
    }
    // Runtime constants: the kernel writes their values into its code once,
    // at boot. A pointer constant becomes a load of the variable when the
    // patch is emitted (what a module build of the same code does); a
    // shift count has no such form, so a function using one cannot be
    // carried.
    let carried: HashSet<u32> = included.iter().copied().collect();
    for site in crate::special::runtime_sites(patched) {
        if site.kind == crate::special::RuntimeKind::Ptr {
            continue;
        }
        let Some(f) = crate::correlate::symbol_at(patched, site.section, site.offset as i64) else {
            continue;
        };
        if carried.contains(&f.0) {
            refuse(
                &patched.symbol(f).name,
                format!(
                    "uses runtime constant {} ({}): the kernel writes it into its code only at boot, and a patch cannot receive it",
                    site.variable, site.table
                ),
            );
        }
    }
    // A marker for a function that is new, or that nothing correlates
    // with, is a mistake the author should hear about.
    for name in &ignored {
        if !ignored_seen.contains(name) {
            refuse(
                name,
                "marked unchanged (NOREBOOT_IGNORE_FUNCTION) but it is not a function of the original object".into(),
            );
        }
    }
    functions.sort_by(|a, b| a.name.cmp(&b.name));
    data.sort_by(|a, b| a.name.cmp(&b.name));
    notes.sort();
    notes.dedup();
    refusals.sort_by(|a, b| (&a.subject, &a.reason).cmp(&(&b.subject, &b.reason)));
    refusals.dedup();
    let outcome = if !refusals.is_empty() {
        Outcome::Refused
    } else if functions
        .iter()
        .any(|f| matches!(f.status, Status::Changed | Status::New))
        || !data.is_empty()
    {
        Outcome::Changed
    } else {
        Outcome::NoChange
    };
    Report {
        orig: orig.path.clone(),
        patched: patched.path.clone(),
        outcome,
        functions,
        data,
        refusals,
        notes,
        included,
    }
}
