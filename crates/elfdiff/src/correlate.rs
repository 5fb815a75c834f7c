//! Pass 2, correlate: which symbol of the patched object is which symbol of
//! the original. Exact names first; then names with the compiler's numbered
//! suffixes (`.isra.N`, `.constprop.N`, `.part.N`, `.cold.N`, static locals'
//! `name.N`, `__UNIQUE_ID_*N`) when the stem is unique on both sides; then
//! static locals through the functions that use them (in the order each
//! function refers to them when it uses several; numbered statics that
//! share a stem are matched this way before their names are trusted, since
//! one new static renumbers the rest). Sections follow the
//! function or object they were made for; sections without one match by
//! name. String literals are not correlated at all: comparison reads them
//! by content.

use std::collections::{HashMap, HashSet};

use crate::read::{Object, SectionId, SymKind, SymbolId};

/// The correspondence between two objects.
#[derive(Debug, Clone, Default)]
pub struct Correlation {
    /// Patched symbol → original symbol.
    pub sym_p2o: HashMap<SymbolId, SymbolId>,
    /// Original symbol → patched symbol.
    pub sym_o2p: HashMap<SymbolId, SymbolId>,
    /// Patched section → original section.
    pub sec_p2o: HashMap<SectionId, SectionId>,
    /// Original section → patched section.
    pub sec_o2p: HashMap<SectionId, SectionId>,
}

impl Correlation {
    fn pair(&mut self, o: SymbolId, p: SymbolId) {
        self.sym_o2p.insert(o, p);
        self.sym_p2o.insert(p, o);
    }
}

/// The local label gcc gives UBSAN's per-check descriptors (`.Lubsan_data`)
/// and type descriptors (`.Lubsan_type`); with `-fdata-sections` each sits in
/// a section of that name, `.data..Lubsan_data12`.
pub const UBSAN_LABEL: &str = "Lubsan_";

/// Whether `section` holds one of gcc's UBSAN descriptors: data no symbol
/// names, private to the code that references it.
pub fn is_ubsan_descriptor(section: &str) -> bool {
    section
        .strip_prefix(".data..")
        .is_some_and(|rest| rest.starts_with(UBSAN_LABEL))
}

/// The name with compiler-generated numbering removed, so that `foo.isra.0`
/// and `foo.isra.3`, or `__key.12` and `__key.14`, share a stem.
pub fn stem(name: &str) -> String {
    let mut parts: Vec<String> = name.split('.').map(str::to_string).collect();
    for p in parts.iter_mut().skip(1) {
        if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
            *p = "N".into();
        }
    }
    // gcc's UBSAN descriptors, one section each with -fdata-sections and
    // numbered through the object: `.data..Lubsan_data12`,
    // `.data..Lubsan_type3`.
    for p in parts.iter_mut().skip(1) {
        if p.starts_with(UBSAN_LABEL) {
            let head = p.trim_end_matches(|c: char| c.is_ascii_digit()).len();
            if head < p.len() {
                p.truncate(head);
                p.push('N');
            }
        }
    }
    // `__UNIQUE_ID_<prefix><counter>`, also as a static local that gcc
    // numbers again (`__UNIQUE_ID_ddebug417.12`).
    if parts.len() > 1 && parts[0].starts_with("__UNIQUE_ID_") {
        let head = parts[0]
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .len();
        if head < parts[0].len() {
            parts[0].truncate(head);
            parts[0].push('N');
        }
    }
    let mut s = parts.join(".");
    // __COUNTER__ numbering: `__BTF_ID__struct__x__655311`, `foo__12`.
    if let Some(pos) = s.rfind("__") {
        let tail = &s[pos + 2..];
        if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) {
            s.truncate(pos + 2);
            s.push('N');
            return s;
        }
    }
    if s.starts_with("__UNIQUE_ID_") && !s.contains('.') {
        let trimmed = s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        s.truncate(trimmed);
        s.push('N');
    }
    s
}

/// Symbols that correlation considers: defined functions and objects.
fn candidates(obj: &Object) -> Vec<SymbolId> {
    obj.symbols()
        // Untyped symbols are labels defined in assembly (BTF id lists,
        // return thunks, kprobe templates): correlated like the rest.
        .filter(|(_, s)| {
            matches!(s.kind, SymKind::Func | SymKind::Object | SymKind::NoType)
                && s.section.is_some()
                && !s.name.is_empty()
        })
        .map(|(id, _)| id)
        .collect()
}

/// Correlates `orig` and `patched`.
pub fn correlate(orig: &Object, patched: &Object) -> Correlation {
    let mut c = Correlation::default();
    let co = candidates(orig);
    let cp = candidates(patched);

    // 1. Exact names, unique on both sides, same kind. A numbered static
    //    local whose stem several objects share waits for step 3: the
    //    compiler numbers them in order, so one added before them renames
    //    the rest and equal names then mean nothing (`__already_done.2` of
    //    one function becomes another's).
    let by_name = |obj: &Object, ids: &[SymbolId]| {
        let mut m: HashMap<String, Vec<SymbolId>> = HashMap::new();
        for &id in ids {
            m.entry(obj.symbol(id).name.clone()).or_default().push(id);
        }
        m
    };
    let stem_count = |obj: &Object, ids: &[SymbolId]| {
        let mut m: HashMap<String, usize> = HashMap::new();
        for &id in ids {
            if obj.symbol(id).kind == SymKind::Object {
                *m.entry(stem(&obj.symbol(id).name)).or_default() += 1;
            }
        }
        m
    };
    let (stems_o, stems_p) = (stem_count(orig, &co), stem_count(patched, &cp));
    let renumbered = |obj: &Object, id: SymbolId| {
        let s = obj.symbol(id);
        let st = stem(&s.name);
        s.kind == SymKind::Object
            && st != s.name
            && (stems_o.get(&st).copied().unwrap_or(0) > 1
                || stems_p.get(&st).copied().unwrap_or(0) > 1)
    };
    let no = by_name(orig, &co);
    let np = by_name(patched, &cp);
    let exact = |c: &mut Correlation, deferred: bool, skip: &HashSet<SymbolId>| {
        for (name, ps) in &np {
            if let (Some(os), [p]) = (no.get(name), ps.as_slice()) {
                if let [o] = os.as_slice() {
                    if orig.symbol(*o).kind == patched.symbol(*p).kind
                        && renumbered(patched, *p) == deferred
                        && !c.sym_o2p.contains_key(o)
                        && !c.sym_p2o.contains_key(p)
                        && !skip.contains(p)
                    {
                        c.pair(*o, *p);
                    }
                }
            }
        }
    };
    exact(&mut c, false, &HashSet::new());

    // 2. Stems, unique among the still unmatched on both sides.
    let so = by_stem(orig, &co, &c.sym_o2p);
    let sp = by_stem(patched, &cp, &c.sym_p2o);
    for (key, ps) in &sp {
        if let (Some([o]), [p]) = (so.get(key).map(Vec::as_slice), ps.as_slice()) {
            c.pair(*o, *p);
        }
    }

    // 3. Numbered static locals a correlated function refers to several of
    //    (two `mutex_init` keys `__key.N`): in the order the function pair
    //    refers to them when both refer to equally many and the name
    //    strings handed over beside them agree, else by those strings.
    in_reference_order(orig, patched, &mut c);

    // 4. Static locals sharing a stem with several candidates: the one used
    //    by the same (already correlated) functions. Where two patched
    //    symbols would take the same original (a function that gained a
    //    second one-shot flag), neither does: which is the old one is not
    //    known, and both become new.
    let contested = by_users(orig, patched, &co, &cp, &mut c);

    // 5. Numbered statics the users could not place, and that no other
    //    symbol contested: by exact name, as before step 3 existed (data
    //    nothing in code uses keeps its name when nothing renumbers it).
    exact(&mut c, true, &contested);

    correlate_sections(orig, patched, &mut c);
    c
}

/// Symbols of `ids` not yet matched, by (stem, kind).
fn by_stem(
    obj: &Object,
    ids: &[SymbolId],
    matched: &HashMap<SymbolId, SymbolId>,
) -> HashMap<(String, u8), Vec<SymbolId>> {
    let mut m: HashMap<(String, u8), Vec<SymbolId>> = HashMap::new();
    for &id in ids.iter().filter(|id| !matched.contains_key(id)) {
        let s = obj.symbol(id);
        let kind = match s.kind {
            SymKind::Func => 0,
            SymKind::Object => 1,
            _ => 2,
        };
        m.entry((stem(&s.name), kind)).or_default().push(id);
    }
    m
}

/// Step 4 of [`correlate`]: static locals sharing a stem with several
/// candidates, paired through the (already correlated) functions that use
/// them. Returns the patched symbols that were contested (two wanting one
/// original, or users that disagree): they stay unpaired.
fn by_users(
    orig: &Object,
    patched: &Object,
    co: &[SymbolId],
    cp: &[SymbolId],
    c: &mut Correlation,
) -> HashSet<SymbolId> {
    let so = by_stem(orig, co, &c.sym_o2p);
    let sp = by_stem(patched, cp, &c.sym_p2o);
    let users_o = users(orig);
    let users_p = users(patched);
    let mut wanted: HashMap<SymbolId, Vec<SymbolId>> = HashMap::new();
    let mut contested: HashSet<SymbolId> = HashSet::new();
    for (key, ps) in &sp {
        let Some(os) = so.get(key) else { continue };
        for &p in ps {
            let want: Vec<SymbolId> = users_p
                .get(&p)
                .into_iter()
                .flatten()
                .filter_map(|u| c.sym_p2o.get(u).copied())
                .collect();
            if want.is_empty() {
                continue;
            }
            let hits: Vec<SymbolId> = os
                .iter()
                .copied()
                .filter(|o| {
                    users_o
                        .get(o)
                        .is_some_and(|us| us.iter().any(|u| want.contains(u)))
                })
                .collect();
            match hits.as_slice() {
                [o] => wanted.entry(*o).or_default().push(p),
                [] => {}
                _ => match by_order(orig, patched, c, &users_p, p, &hits) {
                    Some(o) => wanted.entry(o).or_default().push(p),
                    None => {
                        contested.insert(p);
                    }
                },
            }
        }
    }
    for (o, ps) in &wanted {
        match ps.as_slice() {
            [p] => c.pair(*o, *p),
            _ => contested.extend(ps.iter().copied()),
        }
    }
    contested
}

/// Sections: through their primary symbols, else by unique name.
fn correlate_sections(orig: &Object, patched: &Object, c: &mut Correlation) {
    for (&o, &p) in &c.sym_o2p.clone() {
        let (Some(so), Some(sp)) = (orig.symbol(o).section, patched.symbol(p).section) else {
            continue;
        };
        if orig.primary_symbol(so) == Some(o) && patched.primary_symbol(sp) == Some(p) {
            c.sec_o2p.insert(so, sp);
            c.sec_p2o.insert(sp, so);
        }
    }
    let mut names_o: HashMap<&str, Vec<SectionId>> = HashMap::new();
    for (id, s) in orig.sections() {
        names_o.entry(s.name.as_str()).or_default().push(id);
    }
    let mut names_p: HashMap<&str, Vec<SectionId>> = HashMap::new();
    for (id, s) in patched.sections() {
        names_p.entry(s.name.as_str()).or_default().push(id);
    }
    for (name, ps) in &names_p {
        if let (Some([o]), [p]) = (names_o.get(name).map(Vec::as_slice), ps.as_slice()) {
            if !c.sec_p2o.contains_key(p) && !c.sec_o2p.contains_key(o) {
                c.sec_o2p.insert(*o, *p);
                c.sec_p2o.insert(*p, *o);
            }
        }
    }
}

/// Among `hits`, the original static that patched static `p` replaces by
/// position: for each function using `p` (several when an inline
/// function's static is inlined into several), a correlated function
/// using as many statics of `p`'s stem in both objects, the k-th it refers
/// to (in code order) in the patched object is the k-th in the original —
/// call sites of `pr_debug` or `WARN_ONCE` in one function keep their
/// order. Every user must name the same original. `None` when a count
/// differs (a call site came or went) or the users disagree.
fn by_order(
    orig: &Object,
    patched: &Object,
    c: &Correlation,
    users_p: &HashMap<SymbolId, Vec<SymbolId>>,
    p: SymbolId,
    hits: &[SymbolId],
) -> Option<SymbolId> {
    let key = stem(&patched.symbol(p).name);
    let mut found: Option<SymbolId> = None;
    for fp in users_p.get(&p)? {
        let fo = *c.sym_p2o.get(fp)?;
        let lp: Vec<SymbolId> = code_refs(patched, *fp)
            .into_iter()
            .filter(|s| stem(&patched.symbol(*s).name) == key && !c.sym_p2o.contains_key(s))
            .collect();
        let lo: Vec<SymbolId> = code_refs(orig, fo)
            .into_iter()
            .filter(|s| stem(&orig.symbol(*s).name) == key && !c.sym_o2p.contains_key(s))
            .collect();
        if lp.len() != lo.len() {
            return None;
        }
        let o = lo[lp.iter().position(|s| *s == p)?];
        if found.is_some_and(|f| f != o) {
            return None;
        }
        found = Some(o);
    }
    found.filter(|o| hits.contains(o))
}

/// The symbols function `f`'s code refers to, each once, in code order.
fn code_refs(obj: &Object, f: SymbolId) -> Vec<SymbolId> {
    let s = obj.symbol(f);
    let Some(sec) = s.section else {
        return Vec::new();
    };
    let mut out: Vec<SymbolId> = Vec::new();
    for r in &obj.section(sec).relocs {
        if r.offset < s.value || r.offset >= s.value + s.size.max(1) {
            continue;
        }
        if let Some(t) = reloc_target(obj, r) {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

/// A static local the compiler numbered (`__key.3`, `__func__.10`,
/// `__warned.7`): an object whose name ends in `.N`.
fn is_numbered_local(obj: &Object, id: SymbolId) -> bool {
    let s = obj.symbol(id);
    s.kind == SymKind::Object
        && s.is_local()
        && s.name.rsplit_once('.').is_some_and(|(base, n)| {
            !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        })
}

/// A numbered static local as function code refers to it: the symbol and
/// the merged strings the neighbouring references load (the name
/// `mutex_init` hands over beside its `__key`).
struct NumberedRef {
    symbol: SymbolId,
    beside: Vec<Vec<u8>>,
}

/// The string a reference into a merged-strings section reaches.
fn string_at(obj: &Object, r: &crate::read::Reloc) -> Option<Vec<u8>> {
    let t = obj.symbol(r.symbol);
    let s = obj.section(t.section?);
    if !s.is_strings() {
        return None;
    }
    let bias = if r.is_pc_relative() { 4 } else { 0 };
    let start = usize::try_from(t.value as i64 + r.addend + bias).ok()?;
    let rest = s.data.get(start..)?;
    Some(rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())].to_vec())
}

/// The numbered static locals function `f` refers to and correlation has
/// not paired yet, by stem, each in the order of its first reference.
fn numbered_refs(
    obj: &Object,
    f: SymbolId,
    matched: &HashMap<SymbolId, SymbolId>,
) -> HashMap<String, Vec<NumberedRef>> {
    let mut out: HashMap<String, Vec<NumberedRef>> = HashMap::new();
    let s = obj.symbol(f);
    let Some(sec) = s.section else { return out };
    let relocs: Vec<&crate::read::Reloc> = obj
        .section(sec)
        .relocs
        .iter()
        .filter(|r| r.offset >= s.value && r.offset < s.value + s.size.max(1))
        .collect();
    for (i, r) in relocs.iter().enumerate() {
        let Some(t) = reloc_target(obj, r) else {
            continue;
        };
        if !is_numbered_local(obj, t) || matched.contains_key(&t) {
            continue;
        }
        let list = out.entry(stem(&obj.symbol(t).name)).or_default();
        if list.iter().any(|n| n.symbol == t) {
            continue;
        }
        let beside = [i.checked_sub(1), Some(i + 1)]
            .into_iter()
            .flatten()
            .filter_map(|j| relocs.get(j).and_then(|r| string_at(obj, r)))
            .collect();
        list.push(NumberedRef { symbol: t, beside });
    }
    out
}

/// Pairs numbered static locals by the order correlated functions refer
/// to them (see [`correlate`], step 3).
fn in_reference_order(orig: &Object, patched: &Object, c: &mut Correlation) {
    let mut funcs: Vec<(SymbolId, SymbolId)> = c
        .sym_p2o
        .iter()
        .filter(|(p, _)| patched.symbol(**p).kind == SymKind::Func)
        .map(|(p, o)| (*p, *o))
        .collect();
    funcs.sort();
    for (p, o) in funcs {
        let refs_o = numbered_refs(orig, o, &c.sym_o2p);
        let refs_p = numbered_refs(patched, p, &c.sym_p2o);
        for (key, ps) in &refs_p {
            let Some(os) = refs_o.get(key) else { continue };
            // In order, unless a pair was handed different name strings
            // (two `mutex_init` calls swapped).
            let agree = |o: &NumberedRef, p: &NumberedRef| {
                o.beside.is_empty()
                    || p.beside.is_empty()
                    || o.beside.iter().any(|b| p.beside.contains(b))
            };
            if os.len() == ps.len() && os.iter().zip(ps).all(|(o, p)| agree(o, p)) {
                for (o, p) in os.iter().zip(ps) {
                    c.pair(o.symbol, p.symbol);
                }
                continue;
            }
            // A function that gained or lost one: the ones handed the
            // same name string, where that string is unique on both sides.
            let unique = |list: &[NumberedRef], n: &NumberedRef| {
                !n.beside.is_empty()
                    && list
                        .iter()
                        .filter(|m| m.beside.iter().any(|b| n.beside.contains(b)))
                        .count()
                        == 1
            };
            for p in ps.iter().filter(|p| unique(ps, p)) {
                let hits: Vec<&NumberedRef> = os
                    .iter()
                    .filter(|o| o.beside.iter().any(|b| p.beside.contains(b)))
                    .collect();
                if let [o] = hits.as_slice() {
                    if unique(os, o) && !c.sym_o2p.contains_key(&o.symbol) {
                        c.pair(o.symbol, p.symbol);
                    }
                }
            }
        }
    }
}

/// For every defined symbol, the functions whose code refers to it.
pub fn users(obj: &Object) -> HashMap<SymbolId, Vec<SymbolId>> {
    let mut m: HashMap<SymbolId, Vec<SymbolId>> = HashMap::new();
    for (_, sec) in obj.sections() {
        if !sec.is_text() {
            continue;
        }
        for r in &sec.relocs {
            let Some(func) = sec.symbols.iter().copied().rfind(|f| {
                let s = obj.symbol(*f);
                s.kind == SymKind::Func && s.value <= r.offset && r.offset < s.value + s.size.max(1)
            }) else {
                continue;
            };
            let Some(target_id) = reloc_target(obj, r) else {
                continue;
            };
            let list = m.entry(target_id).or_default();
            if !list.contains(&func) {
                list.push(func);
            }
        }
    }
    m
}

/// What relocation `r` points at: its named symbol, or for a reference
/// relative to a section the function or object covering the place
/// (PC-relative references point 4 bytes past the field).
pub fn reloc_target(obj: &Object, r: &crate::read::Reloc) -> Option<SymbolId> {
    let t = obj.symbol(r.symbol);
    if t.kind != SymKind::Section {
        return Some(r.symbol);
    }
    section_target(obj, t.section?, r.addend, &r.place_biases())
}

/// The symbol a section-relative reference (section symbol + `addend`)
/// points into. A PC-relative field counts from the end of its
/// instruction: the field's end (`addend` = offset - 4) unless an
/// immediate follows it (`movb $1, x(%rip)`: offset - 5, `movl $v,
/// x(%rip)`: offset - 8). `biases` are the distances to try, nearest
/// first ([`crate::read::Reloc::place_biases`]): one when the instruction
/// was decoded, which tells 1-byte neighbours (`.data..once` flags) apart
/// exactly. Where only guesses were possible, the symbol found is in the
/// same input section, which the kernel holds laid out as in the object,
/// so the symbol plus the adjusted addend still reaches the same byte.
pub fn section_target(
    obj: &Object,
    sec: SectionId,
    addend: i64,
    biases: &[i64],
) -> Option<SymbolId> {
    let first = *biases.first()?;
    biases
        .iter()
        .find_map(|t| symbol_at(obj, sec, addend.checked_add(*t)?))
        .or_else(|| label_at(obj, sec, addend.checked_add(first)?))
        .or_else(|| {
            biases
                .iter()
                .find_map(|t| owner_past_end(obj, sec, addend.checked_add(*t)?))
        })
        .or_else(|| {
            biases
                .iter()
                .find_map(|t| object_ending_at(obj, sec, addend.checked_add(*t)?))
        })
}

/// The object that ends exactly at `offset` when nothing begins there: a
/// pointer one past an array's last element (`pool < pools + N`), in a
/// section other objects share (`.data..read_mostly`, where
/// `z_erofs_workqueue` precedes `pcluster_pool`), with the array last. C
/// allows that pointer; the kernel keeps the input section whole, so the
/// object plus its size is the same place there.
fn object_ending_at(obj: &Object, sec: SectionId, offset: i64) -> Option<SymbolId> {
    let off = u64::try_from(offset).ok()?;
    obj.section(sec).symbols.iter().copied().find(|id| {
        let sym = obj.symbol(*id);
        sym.kind == SymKind::Object && sym.size > 0 && sym.value.checked_add(sym.size) == Some(off)
    })
}

/// String literals the compiler gives a symbol: `__func__`,
/// `__FUNCTION__` and `__PRETTY_FUNCTION__` (static locals `__func__.N`,
/// in `.rodata.__func__.N` with `-fdata-sections`; anonymous literals sit
/// in merged string sections, which travel whole anyway). Read-only, and
/// nothing compares their addresses, so a copy in the patch serves as
/// well as the kernel's own: a patch carries them instead of resolving
/// them (same-named ones abound in a module, `__func__.10` in two of
/// nfsd's objects).
pub fn is_string_literal(obj: &Object, id: SymbolId) -> bool {
    let s = obj.symbol(id);
    let Some(sec) = s.section else { return false };
    let sec = obj.section(sec);
    let base = s.name.split('.').next().unwrap_or_default();
    s.kind == SymKind::Object
        && s.is_local()
        && !sec.is_writable()
        && !sec.is_text()
        && sec.sh_flags & u64::from(object::elf::SHF_MERGE) == 0
        && ["__func__", "__FUNCTION__", "__PRETTY_FUNCTION__"].contains(&base)
}

/// The object a section was made for (`-fdata-sections` names it
/// `.rodata.<name>`, `.data.<name>`, `.bss.<name>`), when `offset` lies
/// past its end but within one more of its size: a loop bound, one past
/// the last element plus the offset of the field the loop reads
/// (`virtnet_rq_stats_desc+352`, 8 entries of 40 bytes and the field at
/// 32). The section holds nothing else, and the kernel keeps an input
/// section whole, so that object plus the same distance is the same place
/// there.
fn owner_past_end(obj: &Object, sec: SectionId, offset: i64) -> Option<SymbolId> {
    let off = u64::try_from(offset).ok()?;
    let s = obj.section(sec);
    let mut objects = s.symbols.iter().copied().filter(|id| {
        let sym = obj.symbol(*id);
        matches!(sym.kind, SymKind::Func | SymKind::Object)
    });
    let (Some(only), None) = (objects.next(), objects.next()) else {
        return None;
    };
    let sym = obj.symbol(only);
    let made_for = s
        .name
        .strip_suffix(sym.name.as_str())
        .is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1);
    let end = sym.value.checked_add(sym.size)?;
    (made_for && sym.kind == SymKind::Object && off >= end && off <= end.checked_add(sym.size)?)
        .then_some(only)
}

/// A label (`STT_NOTYPE`, as assembler-made tables define them: the BTF ID
/// lists of `.BTF_ids`) at `offset`, or the nearest one before it that
/// covers it; for sections no function or object symbol describes.
fn label_at(obj: &Object, sec: SectionId, offset: i64) -> Option<SymbolId> {
    let off = u64::try_from(offset).ok()?;
    obj.section(sec)
        .symbols
        .iter()
        .copied()
        .filter(|s| {
            let sym = obj.symbol(*s);
            sym.kind == SymKind::NoType
                && !sym.name.is_empty()
                && sym.value <= off
                && (off < sym.value + sym.size || sym.value == off)
        })
        .max_by_key(|s| {
            let sym = obj.symbol(*s);
            // The nearest; at one place a bare label (the name C code
            // uses, e.g. a BTF_SET's) before a sized one.
            (sym.value, sym.size == 0)
        })
}

/// The function or object symbol of `sec` that covers `offset`.
pub fn symbol_at(obj: &Object, sec: SectionId, offset: i64) -> Option<SymbolId> {
    let off = u64::try_from(offset).ok()?;
    obj.section(sec).symbols.iter().copied().rfind(|s| {
        let sym = obj.symbol(*s);
        matches!(sym.kind, SymKind::Func | SymKind::Object)
            && sym.value <= off
            && off < sym.value + sym.size.max(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_drop_compiler_numbering_only() {
        assert_eq!(stem("foo.isra.0"), "foo.isra.N");
        assert_eq!(stem("foo.constprop.12.isra.3"), "foo.constprop.N.isra.N");
        assert_eq!(stem("foo.part.1"), "foo.part.N");
        assert_eq!(stem("foo.cold"), "foo.cold");
        assert_eq!(stem("__key.42"), "__key.N");
        assert_eq!(stem("__UNIQUE_ID_ddebug417"), "__UNIQUE_ID_ddebugN");
        assert_eq!(stem("__UNIQUE_ID_ddebug417.12"), "__UNIQUE_ID_ddebugN.N");
        assert_eq!(stem(".data..Lubsan_data12"), ".data..Lubsan_dataN");
        assert_eq!(stem(".data..Lubsan_type3"), ".data..Lubsan_typeN");
        assert!(is_ubsan_descriptor(".data..Lubsan_data0"));
        assert!(!is_ubsan_descriptor(".data.Lubsan_data0"));
        assert!(!is_ubsan_descriptor(".data..percpu"));
        assert_eq!(stem("plain"), "plain");
        assert_eq!(
            stem("__BTF_ID__struct__map__655311"),
            "__BTF_ID__struct__map__N"
        );
        assert_eq!(stem("v4.2x"), "v4.2x");
    }
}
