//! Patch-author markers: records a fix's source adds so the factory knows
//! what an automatic diff cannot — functions and sections to leave alone,
//! callbacks to run around patching. Both noreboot's own macros
//! (`<noreboot/livepatch.h>`, `.discard.noreboot.*` sections) and kpatch's
//! (`kpatch-macros.h`, `.kpatch.*` sections) are read, so a patch written
//! for kpatch builds unchanged; the marker sections are never code or data
//! of the patch.

use std::collections::BTreeSet;

use crate::read::{Object, SymKind, SymbolId};

/// `NOREBOOT_IGNORE_FUNCTION(fn)`: one pointer per function the author
/// declares intentionally unchanged.
pub const IGNORE_FUNCTIONS: &str = ".discard.noreboot.ignore";
/// `KPATCH_IGNORE_FUNCTION(fn)`: the same, kpatch's spelling (a global
/// `void *` in a writable, allocated section).
pub const KPATCH_IGNORE_FUNCTIONS: &str = ".kpatch.ignore.functions";
/// `KPATCH_IGNORE_SECTION(".name")`: one `char *` per section name whose
/// changes the patch leaves out.
pub const KPATCH_IGNORE_SECTIONS: &str = ".kpatch.ignore.sections";
/// `KPATCH_FORCE_UNSAFE(fn)`: kpatch's way around its own activeness
/// check, which kernel livepatch does not have.
pub const KPATCH_FORCE: &str = ".kpatch.force";
/// `NOREBOOT_DATA_REDIRECTED(var)`: one pointer per changed read-only
/// object whose remaining references in the running kernel the author's
/// callbacks point at the patch's copy.
pub const REDIRECTED_DATA: &str = ".discard.noreboot.redirected";
/// Prefix of noreboot's callback sections: one function pointer each.
pub const CALLBACK_PREFIX: &str = ".discard.noreboot.callback.";
/// Prefix of kpatch's callback sections: `{ fn, objname }` records, 16
/// bytes each; objname is NULL in the source (kpatch fills it in, noreboot
/// knows the target object already).
pub const KPATCH_CALLBACK_PREFIX: &str = ".kpatch.callbacks.";
/// kpatch's old load and unload hooks (`KPATCH_LOAD_HOOK`), `{ fn,
/// objname }` records: run after patching and before unpatching, as kpatch
/// itself ran them once it moved to kernel livepatch.
const KPATCH_HOOKS: &[(&str, &str)] = &[
    (".kpatch.hooks.load", "post_patch"),
    (".kpatch.hooks.unload", "pre_unpatch"),
];

/// Whether section `name` holds author markers rather than code or data
/// of the patch (kpatch's are allocated and writable, so without this they
/// would look like new data).
pub fn is_marker_section(name: &str) -> bool {
    name.starts_with(".discard.noreboot.") || name.starts_with(".kpatch.")
}

/// The function or object a marker relocation points at: the symbol
/// itself, or for a section symbol the function or object at the addend.
fn target(obj: &Object, symbol: SymbolId, addend: i64) -> Option<String> {
    let t = obj.symbol(symbol);
    if t.kind != SymKind::Section {
        return Some(t.name.clone());
    }
    obj.symbols
        .iter()
        .find(|x| {
            x.section == t.section
                && matches!(x.kind, SymKind::Func | SymKind::Object)
                && x.value as i64 == addend
        })
        .map(|x| x.name.clone())
}

/// Functions the author marked intentionally unchanged, with either macro.
pub fn ignored_functions(obj: &Object) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, sec) in obj.sections() {
        if sec.name != IGNORE_FUNCTIONS && sec.name != KPATCH_IGNORE_FUNCTIONS {
            continue;
        }
        for r in &sec.relocs {
            if let Some(name) = target(obj, r.symbol, r.addend) {
                out.insert(name);
            }
        }
    }
    out
}

/// Read-only data the author declared redirected by their callbacks
/// (`NOREBOOT_DATA_REDIRECTED`).
pub fn redirected_data(obj: &Object) -> BTreeSet<String> {
    obj.sections()
        .filter(|(_, s)| s.name == REDIRECTED_DATA)
        .flat_map(|(_, s)| s.relocs.iter())
        .filter_map(|r| target(obj, r.symbol, r.addend))
        .collect()
}

/// Sections the author marked ignored (`KPATCH_IGNORE_SECTION`): the
/// strings the marker pointers point at.
pub fn ignored_sections(obj: &Object) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, sec) in obj.sections() {
        if sec.name != KPATCH_IGNORE_SECTIONS {
            continue;
        }
        for r in &sec.relocs {
            let t = obj.symbol(r.symbol);
            let Some(s) = t.section.map(|s| obj.section(s)) else {
                continue;
            };
            let start = (t.value as i64).saturating_add(r.addend);
            let Some(bytes) = usize::try_from(start).ok().and_then(|a| s.data.get(a..)) else {
                continue;
            };
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            out.insert(String::from_utf8_lossy(&bytes[..end]).into_owned());
        }
    }
    out
}

/// Functions marked `KPATCH_FORCE_UNSAFE`, which noreboot refuses: kernel
/// livepatch has no way to skip its consistency model.
pub fn forced_functions(obj: &Object) -> BTreeSet<String> {
    obj.sections()
        .filter(|(_, s)| s.name == KPATCH_FORCE)
        .flat_map(|(_, s)| s.relocs.iter())
        .filter_map(|r| target(obj, r.symbol, r.addend))
        .collect()
}

/// A callback the author declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// `pre_patch`, `post_patch`, `pre_unpatch` or `post_unpatch`.
    pub kind: String,
    /// The function symbol.
    pub function: String,
}

/// Why a callback record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// A callback section of a kind that does not exist.
    #[error("unknown callback kind {0} (section {1})")]
    UnknownKind(String, String),
    /// A record pointing at no function.
    #[error("callback record at {offset:#x} in {section} points at no function")]
    NoFunction {
        /// The section.
        section: String,
        /// The record's offset.
        offset: u64,
    },
}

/// The kinds kernel livepatch runs (`struct klp_callbacks`).
pub const CALLBACK_KINDS: &[&str] = &["pre_patch", "post_patch", "pre_unpatch", "post_unpatch"];

/// Callbacks declared with noreboot's or kpatch's macros, in section order.
pub fn callbacks(obj: &Object) -> Result<Vec<Callback>, CallbackError> {
    let mut out = Vec::new();
    for (_, s) in obj.sections() {
        // (kind, bytes per record: the function pointer is at its start)
        let (kind, record) = if let Some(k) = s.name.strip_prefix(CALLBACK_PREFIX) {
            (k, 8)
        } else if let Some(k) = s.name.strip_prefix(KPATCH_CALLBACK_PREFIX) {
            (k, 16)
        } else if let Some((_, k)) = KPATCH_HOOKS.iter().find(|(n, _)| *n == s.name) {
            (*k, 16)
        } else {
            continue;
        };
        if !CALLBACK_KINDS.contains(&kind) {
            return Err(CallbackError::UnknownKind(kind.into(), s.name.clone()));
        }
        for r in s.relocs.iter().filter(|r| r.offset % record == 0) {
            let function =
                target(obj, r.symbol, r.addend).ok_or_else(|| CallbackError::NoFunction {
                    section: s.name.clone(),
                    offset: r.offset,
                })?;
            out.push(Callback {
                kind: kind.to_string(),
                function,
            });
        }
    }
    Ok(out)
}
