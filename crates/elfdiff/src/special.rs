//! Pass 5, special sections: tables the kernel keeps about code — bug and
//! exception tables, alternatives, jump labels, static calls, retpoline and
//! return thunk sites, lock prefixes, paravirt sites, ORC unwind data,
//! fentry records. Each entry belongs to the function its first code
//! reference points into; the patch keeps exactly the entries of included
//! functions. Entry sizes come from the object: the section's `sh_entsize`
//! when set, else the smallest size at which every entry carries the same
//! relocation layout — never a per-kernel-version constant.

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

/// The entry size of a relocated table: `sh_entsize`, or inferred from
/// the relocation layout. `None` when no size explains the layout.
pub fn entry_size(obj: &Object, sec: SectionId) -> Option<u64> {
    let s = obj.section(sec);
    if s.size == 0 {
        return None;
    }
    if s.sh_entsize > 0 && s.size.is_multiple_of(s.sh_entsize) {
        return Some(s.sh_entsize);
    }
    if s.relocs.is_empty() {
        return None;
    }
    (1..=s.size.min(256))
        .find(|&e| s.size.is_multiple_of(e) && layout_repeats(&s.relocs, e, s.size / e))
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

/// Splits a special section into entries.
pub fn entries(obj: &Object, sec: SectionId) -> Option<Vec<Entry>> {
    let e = entry_size(obj, sec)?;
    let s = obj.section(sec);
    let mut out: Vec<Entry> = (0..s.size / e)
        .map(|i| Entry {
            offset: i * e,
            size: e,
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
