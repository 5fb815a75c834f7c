//! Pass 3, compare: for every correlated function and object, whether its
//! bytes and relocations are the same. Relocation fields are masked in the
//! bytes and compared by what they point at — the correlated symbol's
//! original name, or for string literals the string itself — so renumbered
//! symbols and moved strings are not changes. A function whose only
//! differences are `__LINE__` immediates handed to `__might_sleep`-style
//! helpers is reported as line-only and left out of the patch.

use std::collections::HashSet;

use crate::correlate::Correlation;
use crate::lines::LineMap;
use crate::read::{Object, Reloc, SymKind, SymbolId};

/// What a relocation points at, in terms comparable across the objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A named symbol (the original's name for correlated ones), addend.
    Symbol(String, i64),
    /// A symbol only the patched object has.
    NewSymbol(String, i64),
    /// A string literal, by content, plus the place bias of the reference.
    Str(Vec<u8>, i64),
    /// A place in a section no symbol covers.
    Section(String, i64),
}

/// Callees that take `__LINE__` as an argument.
const LINE_CALLEES: &[&str] = &[
    "__might_sleep",
    "___might_sleep",
    "__might_resched",
    "__might_fault",
    "__cant_sleep",
    "__cant_migrate",
    "__warn_printk",
    "lockdep_rcu_suspicious",
];

/// Per-symbol outcome of the comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Identical.
    Same,
    /// Only `__LINE__` immediates differ.
    LineOnly,
    /// Different, with the reasons.
    Changed(Vec<String>),
}

/// Normalises the target of relocation `r` found in `obj`.
pub fn target(obj: &Object, r: &Reloc, name_of: &dyn Fn(SymbolId) -> Option<String>) -> Target {
    let sym = obj.symbol(r.symbol);
    // PC-relative references to data point 4 bytes past the field.
    let bias = if r.is_pc_relative() { 4 } else { 0 };
    if let Some(sec) = sym.section {
        let s = obj.section(sec);
        if s.sh_flags & u64::from(object::elf::SHF_MERGE) != 0 && !s.data.is_empty() {
            // Merged constants and strings: the linker may fold or move
            // them, so they are compared by content.
            let off = sym.value as i64 + r.addend + bias;
            let start = usize::try_from(off).unwrap_or(usize::MAX).min(s.data.len());
            let end = if s.is_strings() {
                s.data[start..]
                    .iter()
                    .position(|&b| b == 0)
                    .map_or(s.data.len(), |n| start + n)
            } else {
                (start + s.sh_entsize.max(1) as usize).min(s.data.len())
            };
            return Target::Str(s.data[start..end].to_vec(), bias);
        }
    }
    if sym.kind != SymKind::Section {
        return match name_of(r.symbol) {
            Some(n) => Target::Symbol(n, r.addend),
            None => Target::NewSymbol(sym.name.clone(), r.addend),
        };
    }
    let Some(sec) = sym.section else {
        return Target::Section(sym.name.clone(), r.addend);
    };
    let s = obj.section(sec);
    match crate::correlate::section_target(obj, sec, r.addend, &r.place_biases()) {
        Some(id) => {
            let delta = r.addend - obj.symbol(id).value as i64;
            match name_of(id) {
                Some(n) => Target::Symbol(n, delta),
                None => Target::NewSymbol(obj.symbol(id).name.clone(), delta),
            }
        }
        None => Target::Section(crate::correlate::stem(&s.name), r.addend),
    }
}

/// Names comparable across the objects: the original's name for correlated
/// symbols and for undefined ones; `None` for symbols new in the patch.
pub struct Namer<'a> {
    orig: &'a Object,
    patched: &'a Object,
    c: &'a Correlation,
}

impl<'a> Namer<'a> {
    /// A namer over a correlation.
    pub fn new(orig: &'a Object, patched: &'a Object, c: &'a Correlation) -> Self {
        Namer { orig, patched, c }
    }

    /// The correlation it names through.
    pub fn correlation(&self) -> &'a Correlation {
        self.c
    }

    /// Name of an original symbol.
    pub fn orig(&self, id: SymbolId) -> Option<String> {
        Some(self.orig.symbol(id).name.clone())
    }

    /// Name of a patched symbol.
    pub fn patched(&self, id: SymbolId) -> Option<String> {
        let s = self.patched.symbol(id);
        if s.is_undefined() {
            return Some(s.name.clone());
        }
        self.c
            .sym_p2o
            .get(&id)
            .map(|o| self.orig.symbol(*o).name.clone())
    }
}

/// The byte range and relocations of a symbol.
fn body(obj: &Object, id: SymbolId) -> (&[u8], Vec<&Reloc>, u64) {
    let s = obj.symbol(id);
    let Some(sec) = s.section else {
        return (&[], Vec::new(), 0);
    };
    let sec = obj.section(sec);
    let start = s.value;
    let end = s.value.saturating_add(s.size);
    let bytes = if sec.data.is_empty() {
        &[][..]
    } else {
        let a = (start as usize).min(sec.data.len());
        let b = (end as usize).min(sec.data.len());
        &sec.data[a..b]
    };
    let relocs = sec
        .relocs
        .iter()
        .filter(|r| r.offset >= start && r.offset < end)
        .collect();
    (bytes, relocs, start)
}

/// Compares original symbol `o` with patched symbol `p`.
pub fn compare_symbol(
    orig: &Object,
    patched: &Object,
    namer: &Namer,
    o: SymbolId,
    p: SymbolId,
    changed_rodata: &HashSet<String>,
    lines: Option<&LineMap>,
) -> Verdict {
    let so = orig.symbol(o);
    let sp = patched.symbol(p);
    let mut reasons = Vec::new();
    if so.size != sp.size {
        reasons.push(format!("size {} -> {}", so.size, sp.size));
    }
    let (bo, ro, base_o) = body(orig, o);
    let (bp, rp, base_p) = body(patched, p);
    let mut masked_o = bo.to_vec();
    let mut masked_p = bp.to_vec();
    for (mask, rs, base) in [(&mut masked_o, &ro, base_o), (&mut masked_p, &rp, base_p)] {
        for r in rs.iter() {
            let from = (r.offset - base) as usize;
            let to = (from + r.width().unwrap_or(0) as usize).min(mask.len());
            mask[from..to].iter_mut().for_each(|b| *b = 0);
        }
    }
    if ro.len() != rp.len() {
        reasons.push(format!("{} -> {} relocations", ro.len(), rp.len()));
    } else {
        for (a, b) in ro.iter().zip(&rp) {
            let ta = target(orig, a, &|id| namer.orig(id));
            let tb = target(patched, b, &|id| namer.patched(id));
            let (ao, bo) = (a.offset - base_o, b.offset - base_p);
            if ao != bo {
                reasons.push(format!(
                    "code moved: the reference to {} at +{ao:#x} is now at +{bo:#x}",
                    describe(&ta)
                ));
                break;
            }
            if a.r_type != b.r_type {
                reasons.push(format!(
                    "reference at +{ao:#x}: relocation type {} -> {}",
                    a.r_type, b.r_type
                ));
                break;
            }
            if ta != tb && !same_modulo_lines(&ta, &tb, lines) {
                reasons.push(format!(
                    "reference at +{ao:#x}: {} -> {}",
                    describe(&ta),
                    describe(&tb)
                ));
                break;
            }
            if let Target::Symbol(n, _) = &tb {
                if changed_rodata.contains(n) {
                    reasons.push(format!("uses changed read-only data {n}"));
                }
            }
        }
    }
    if reasons.is_empty() && masked_o != masked_p {
        if masked_o.len() == masked_p.len() {
            let shifted = match lines {
                Some(map) => line_only(&masked_o, &masked_p, |old, new| map.get(old) == Some(new)),
                None => {
                    line_only(&masked_o, &masked_p, |_, _| true) && calls_line_taker(&rp, patched)
                }
            };
            if shifted {
                return Verdict::LineOnly;
            }
        }
        let first = masked_o
            .iter()
            .zip(&masked_p)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        reasons.push(format!("code differs from +{first:#x}"));
    }
    if reasons.is_empty() {
        Verdict::Same
    } else {
        Verdict::Changed(reasons)
    }
}

/// Strings that differ only in line numbers the fix moved (`__FILE__ ":"
/// __stringify(__LINE__)` in fortify and assertion messages) are the same
/// string; only with a line map, never by guessing.
fn same_modulo_lines(a: &Target, b: &Target, lines: Option<&LineMap>) -> bool {
    let (Target::Str(x, bx), Target::Str(y, by), Some(map)) = (a, b, lines) else {
        return false;
    };
    if bx != by {
        return false;
    }
    fn split(s: &[u8]) -> Vec<&[u8]> {
        s.chunk_by(|p, q| p.is_ascii_digit() == q.is_ascii_digit())
            .collect()
    }
    let (sx, sy) = (split(x), split(y));
    let mut shifted = false;
    let same = sx.len() == sy.len()
        && sx.iter().zip(&sy).all(|(p, q)| {
            if p == q {
                return true;
            }
            let num = |t: &[u8]| {
                std::str::from_utf8(t)
                    .ok()
                    .and_then(|t| t.parse::<u32>().ok())
            };
            match (num(p), num(q)) {
                (Some(o), Some(n)) if map.get(o) == Some(n) => {
                    shifted = true;
                    true
                }
                _ => false,
            }
        });
    same && shifted
}

fn describe(t: &Target) -> String {
    match t {
        Target::Symbol(n, a) => format!("{n}{a:+}"),
        Target::NewSymbol(n, a) => format!("new {n}{a:+}"),
        Target::Str(s, _) => format!("string {:?}", String::from_utf8_lossy(s)),
        Target::Section(s, a) => format!("{s}{a:+}"),
    }
}

fn calls_line_taker(relocs: &[&Reloc], obj: &Object) -> bool {
    relocs
        .iter()
        .any(|r| LINE_CALLEES.contains(&obj.symbol(r.symbol).name.as_str()))
}

/// Whether a 32-bit immediate starts at `imm`: preceded by `mov $imm32,
/// %r32` (B8+r), `push $imm32` (68), or `movl $imm32` to the stack
/// (`c7 04 24`, `c7 44 24 d8`) — the ways gcc passes a line number as an
/// argument in a register or on the stack.
fn imm32_at(code: &[u8], imm: usize) -> bool {
    if imm + 4 > code.len() {
        return false;
    }
    let before = |n: usize| imm.checked_sub(n).map(|s| &code[s..imm]);
    matches!(before(1), Some([0xb8..=0xbf]) | Some([0x68])) && !matches!(before(2), Some([0x0f, _]))
        || matches!(before(3), Some([0xc7, 0x04, 0x24]))
        || matches!(before(4), Some([0xc7, 0x44, 0x24, _]))
}

/// Every difference lies in a 32-bit immediate argument (see
/// [`imm32_at`]) and each changed pair is accepted by `is_shift(old, new)`.
fn line_only(a: &[u8], b: &[u8], is_shift: impl Fn(u32, u32) -> bool) -> bool {
    let mut any = false;
    let mut i = 0;
    while i < a.len() {
        if a[i] == b[i] {
            i += 1;
            continue;
        }
        any = true;
        let start = (0..=3)
            .filter(|back| i >= *back)
            .map(|back| i - back)
            .find(|&s| {
                // Same instruction in both (opcode and operand bytes before
                // the immediate), only the immediate differs.
                let lead = s.saturating_sub(4);
                imm32_at(a, s) && imm32_at(b, s) && a[lead..s] == b[lead..s]
            });
        let Some(s) = start else { return false };
        let imm = |x: &[u8]| u32::from_le_bytes([x[s], x[s + 1], x[s + 2], x[s + 3]]);
        if !is_shift(imm(a), imm(b)) {
            return false;
        }
        i = s + 4;
    }
    any
}

/// Names of read-only data objects whose contents changed, for marking the
/// functions that use them as changed.
pub fn changed_rodata(
    orig: &Object,
    patched: &Object,
    namer: &Namer,
    c: &Correlation,
) -> HashSet<String> {
    let mut out = HashSet::new();
    for (&p, &o) in &c.sym_p2o {
        let sp = patched.symbol(p);
        if sp.kind != SymKind::Object {
            continue;
        }
        let Some(sec) = sp.section else { continue };
        let s = patched.section(sec);
        if s.is_writable() || s.is_text() || !s.is_alloc() {
            continue;
        }
        if let Verdict::Changed(_) =
            compare_symbol(orig, patched, namer, o, p, &HashSet::new(), None)
        {
            out.insert(orig.symbol(o).name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_immediates_only() {
        // mov $0x12,%esi ; call
        let a = [0xbe, 0x12, 0, 0, 0, 0xe8, 0, 0, 0, 0];
        let mut b = a;
        b[1] = 0x15;
        assert!(line_only(&a, &b, |_, _| true));
        assert!(line_only(&a, &b, |o, n| (o, n) == (0x12, 0x15)));
        assert!(
            !line_only(&a, &b, |o, n| (o, n) == (0x12, 0x16)),
            "not where the patch moved that line"
        );
        let mut c = a;
        c[5] = 0xe9;
        assert!(!line_only(&a, &c, |_, _| true));
        assert!(
            !line_only(&a, &a, |_, _| true),
            "no difference is not a line change"
        );
    }
}
