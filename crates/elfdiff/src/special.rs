//! Pass 5, special sections: tables the kernel keeps about code — bug and
//! exception tables, alternatives, jump labels, static calls, retpoline and
//! return thunk sites, lock prefixes, paravirt sites, ORC unwind data,
//! fentry records. Each entry belongs to the function its first code
//! reference points into; the patch keeps exactly the entries of included
//! functions. Entry sizes come from the object — the section's `sh_entsize`
//! when set, else the smallest size at which every entry carries the same
//! relocation layout — or from the kernel the object was built for
//! ([`crate::layout`]); never from a per-kernel-version constant.

use crate::read::{Object, Reloc, SectionId};

/// Sections handled here (by exact name; `.rela` companions follow).
pub const SPECIAL_SECTIONS: &[&str] = &[
    "__bug_table",
    "__ex_table",
    ".altinstructions",
    "__jump_table",
    ".static_call_sites",
    ".retpoline_sites",
    ".return_sites",
    ".call_sites",
    ".smp_locks",
    ".parainstructions",
    ".orc_unwind_ip",
    "__mcount_loc",
    "__patchable_function_entries",
    ".ibt_endbr_seal",
];

/// Whether `name` is a special section this pass filters.
pub fn is_special(name: &str) -> bool {
    SPECIAL_SECTIONS.contains(&name)
}

/// The entry size (array stride) of a relocated table: `sh_entsize`;
/// else the size known from outside the object ([`Object::entry_sizes`]:
/// the kernel's BTF or `--entry-size`), provided every relocation lies in
/// an entry; else inferred from the relocation layout. `None` when nothing
/// explains the layout — and when the only explanation is one entry
/// spanning the whole section while its relocations reach more than one
/// function: that is several entries whose stride the object cannot tell
/// (a single-entry table, or the 4.x `.parainstructions`, whose last entry
/// lacks its trailing padding), and guessing would hand the kernel entries
/// of functions the patch does not carry.
pub fn entry_size(obj: &Object, sec: SectionId) -> Option<u64> {
    let s = obj.section(sec);
    if s.size == 0 {
        return None;
    }
    // A table has bytes (a NOBITS section claiming a size has none).
    if s.data.len() as u64 != s.size {
        return None;
    }
    if s.sh_entsize > 0 && s.size.is_multiple_of(s.sh_entsize) {
        return Some(s.sh_entsize);
    }
    if let Some(&e) = obj.entry_sizes.get(&s.name) {
        let inside = s
            .relocs
            .iter()
            .all(|r| r.offset.saturating_add(r.width().unwrap_or(0)) <= s.size);
        return (e > 0 && e <= crate::layout::MAX_ENTRY_SIZE && inside).then_some(e);
    }
    inferred_entry_size(obj, sec)
}

/// The entry size the object's own relocation layout tells (see
/// [`entry_size`]), ignoring `sh_entsize` and sizes known from outside.
pub fn inferred_entry_size(obj: &Object, sec: SectionId) -> Option<u64> {
    let s = obj.section(sec);
    if s.relocs.is_empty() || s.size == 0 {
        return None;
    }
    let e = (1..=s.size.min(256)).find(|&e| {
        s.size.is_multiple_of(e)
            && layout_repeats(&s.relocs, e, s.size / e)
            && kinds_repeat(obj, &s.relocs, e)
    })?;
    (e < s.size || functions_reached(obj, &s.relocs) <= 1).then_some(e)
}

/// How many distinct functions `relocs` point into.
fn functions_reached(obj: &Object, relocs: &[Reloc]) -> usize {
    relocs
        .iter()
        .filter_map(|r| crate::correlate::reloc_target(obj, r))
        .map(|t| obj.symbol(t))
        .filter(|t| t.kind == crate::read::SymKind::Func)
        // A `.cold` part belongs to its parent.
        .map(|t| t.name.split(".cold").next().unwrap_or_default())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// Every entry has at least one relocation and the same set of
/// relocation offsets within the entry.
fn layout_repeats(relocs: &[Reloc], e: u64, entries: u64) -> bool {
    if !(relocs.len() as u64).is_multiple_of(entries) {
        return false;
    }
    let per = relocs.len() as u64 / entries;
    if per == 0 {
        return false;
    }
    let first: Vec<u64> = relocs.iter().take(per as usize).map(|r| r.offset).collect();
    if first.iter().any(|&o| o >= e) {
        return false;
    }
    relocs.chunks(per as usize).enumerate().all(|(i, chunk)| {
        chunk
            .iter()
            .zip(&first)
            .all(|(r, &f)| r.offset == i as u64 * e + f)
    })
}

/// What a table field points at, for telling fields apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Into a function.
    Function,
    /// Into code no function symbol covers (`.fixup`, `.text..refcount`,
    /// `.altinstr_replacement`).
    LooseCode,
    /// Data, strings, or a symbol of another object.
    Other,
}

fn reach(obj: &Object, r: &Reloc) -> Reach {
    let t = obj.symbol(r.symbol);
    let code = t.section.is_some_and(|s| obj.section(s).is_text());
    // A place in a section of functions counts as a function's even where
    // no symbol covers the exact byte (a bug entry's `ud2` at the very end
    // of its function, seen from the PC-relative bias): what tells fields
    // apart is function code against loose code (`.fixup`), which has no
    // function symbols at all.
    let function = t.kind == crate::read::SymKind::Func
        || t.section.is_some_and(|s| {
            obj.section(s)
                .symbols
                .iter()
                .any(|x| obj.symbol(*x).kind == crate::read::SymKind::Func)
        });
    match (code, function) {
        (true, true) => Reach::Function,
        (true, false) => Reach::LooseCode,
        (false, _) => Reach::Other,
    }
}

/// Each field of an entry (offset modulo `e`) is relocated with one type
/// reaching one kind of place in every entry, and some field reaches code.
/// Offsets alone repeat at a fraction of the true stride when every field
/// of an entry is relocated (4.x: `__ex_table` from, to and handler, or
/// from and a `.fixup` landing; `__jump_table` code, target and key); what
/// the fields point at does not. A field may lack its relocation in some
/// entries: in an emitted object, a reference the kernel resolves is a
/// livepatch record, not an ELF relocation (a jump entry's key).
fn kinds_repeat(obj: &Object, relocs: &[Reloc], e: u64) -> bool {
    let mut fields: std::collections::HashMap<u64, (u32, Reach)> = Default::default();
    let mut code = false;
    for r in relocs {
        let kind = (r.r_type, reach(obj, r));
        code |= kind.1 != Reach::Other;
        if *fields.entry(r.offset % e).or_insert(kind) != kind {
            return false;
        }
    }
    code
}

/// One entry of a special section.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Offset of the entry in its section.
    pub offset: u64,
    /// Size.
    pub size: u64,
    /// Its relocations (offsets absolute in the section).
    pub relocs: Vec<Reloc>,
}

/// Splits a special section into entries. With a stride known from
/// outside the object, the last entry may be shorter: an array element's
/// trailing padding is only written before the next element.
pub fn entries(obj: &Object, sec: SectionId) -> Option<Vec<Entry>> {
    let e = entry_size(obj, sec)?;
    let s = obj.section(sec);
    let mut out: Vec<Entry> = (0..s.size.div_ceil(e))
        .map(|i| Entry {
            offset: i * e,
            size: e.min(s.size - i * e),
            relocs: Vec::new(),
        })
        .collect();
    for r in &s.relocs {
        let i = (r.offset / e) as usize;
        out.get_mut(i)?.relocs.push(r.clone());
    }
    Some(out)
}

/// What a runtime-constant table (6.12 on) patches: the kernel writes a
/// value it learns at boot straight into the code, once, while its text is
/// still writable, and never into modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// `runtime_const_ptr(sym)`: the 8-byte immediate of a
    /// `movabs $0x0123456789abcdef, %reg`.
    Ptr,
    /// `runtime_const_shift_right_32(val, sym)`: the count of a `shrl $12`.
    Shift,
    /// A `runtime_*` table of a kind this version does not know.
    Other,
}

/// One site a runtime-constant table points at.
#[derive(Debug, Clone)]
pub struct RuntimeSite {
    /// The table's kind.
    pub kind: RuntimeKind,
    /// The kernel variable whose value the site receives.
    pub variable: String,
    /// The code section holding the site.
    pub section: SectionId,
    /// Offset of the patched bytes in that section.
    pub offset: u64,
    /// The table, for messages.
    pub table: String,
}

/// The placeholder `runtime_const_ptr()` compiles in.
pub const RUNTIME_PTR_PLACEHOLDER: u64 = 0x0123_4567_89ab_cdef;

/// Every site of the object's runtime-constant tables (`runtime_ptr_X`,
/// `runtime_shift_X`: one `.long site - .` per use of variable X).
pub fn runtime_sites(obj: &Object) -> Vec<RuntimeSite> {
    let mut out = Vec::new();
    for (_, s) in obj.sections() {
        let Some(rest) = s.name.strip_prefix("runtime_") else {
            continue;
        };
        let (kind, variable) = if let Some(v) = rest.strip_prefix("ptr_") {
            (RuntimeKind::Ptr, v)
        } else if let Some(v) = rest.strip_prefix("shift_") {
            (RuntimeKind::Shift, v)
        } else {
            (RuntimeKind::Other, rest)
        };
        for r in &s.relocs {
            let t = obj.symbol(r.symbol);
            let (Some(section), Ok(offset)) = (t.section, u64::try_from(t.value as i64 + r.addend))
            else {
                continue;
            };
            out.push(RuntimeSite {
                kind,
                variable: variable.to_string(),
                section,
                offset,
                table: s.name.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::SymbolId;

    fn r(offset: u64) -> Reloc {
        Reloc {
            offset,
            r_type: object::elf::R_X86_64_PC32,
            symbol: SymbolId(1),
            addend: 0,
            tail: None,
        }
    }

    #[test]
    fn infers_bug_table_and_ex_table_layouts() {
        // 12-byte entries with relocations at 0 and 4 (bug_entry on 6.1).
        let relocs: Vec<Reloc> = (0..5).flat_map(|i| [r(i * 12), r(i * 12 + 4)]).collect();
        assert!(layout_repeats(&relocs, 12, 5));
        assert!(!layout_repeats(&relocs, 6, 10));
        assert!(!layout_repeats(&relocs, 4, 15));
        // One relocation per 4-byte entry (.return_sites).
        let sites: Vec<Reloc> = (0..8).map(|i| r(i * 4)).collect();
        assert!(layout_repeats(&sites, 4, 8));
    }
}
