//! Passes 6 and 7, resolve and emit: the output object holds the included
//! functions and data (each in a section of its own, so functions that share
//! a named section such as `.sched.text` are carried one by one), the merged
//! strings and constants they use, the special-section entries of the
//! included functions, and of `.altinstr_replacement` only the fragments
//! the kept `.altinstructions` entries point at. Every reference to
//! something the patch does not carry is resolved against the running
//! kernel through a [`Resolver`] (the `resolve` module decides how each
//! reference is expressed): an exported symbol becomes an ordinary
//! undefined symbol; anything else becomes a livepatch relocation record in
//! `.noreboot.klp` (place, type, addend, object, name, sympos) for the
//! post-link conversion to `.klp.rela.*` sections — linkers would mangle
//! those if emitted now. The output is re-read and its invariants checked
//! before it is returned.

use std::collections::{BTreeSet, HashMap, HashSet};

use object::build::elf::{Builder, SectionData, SectionId as BSec, SymbolId as BSym};
use object::build::Id;
use object::elf;

use crate::compare::Namer;
use crate::correlate::{reloc_target, Correlation};
use crate::read::{Object, Reloc, SectionId, SymKind, SymbolId};
use crate::report::Report;
use crate::special;

use crate::resolve::{Ctx, Fragments, Record, Ref};
pub use crate::resolve::{Outside, Resolver};

/// Symbol-less code referenced from functions and tables; kept whole (its
/// own references are resolved like any other). `.altinstr_aux` holds the
/// slow paths of `static_cpu_has()`, entered by jumps from code, and nothing
/// in the object marks where one ends.
pub const WHOLE_SECTIONS: &[&str] = &[".altinstr_aux", ".fixup", ".text..refcount"];

/// Alternative replacements: carried fragment by fragment, see [`Fragments`].
pub const ALT_REPLACEMENT: &str = ".altinstr_replacement";
/// The alternatives table whose entries delimit [`ALT_REPLACEMENT`].
pub const ALT_TABLE: &str = ".altinstructions";

/// Largest `.altinstr_replacement` alignment honoured when fragments are
/// placed; a larger one (never seen, 1 is usual) is refused rather than
/// padded for.
pub(crate) const MAX_FRAGMENT_ALIGN: u64 = 4096;

/// Name of the livepatch record section.
pub const KLP_RECORDS: &str = crate::records::SECTION;
/// Name of the record strings section.
pub const KLP_STRINGS: &str = crate::records::STRINGS;
/// Size of one record (the format: [`crate::records`]).
pub const KLP_RECORD_SIZE: u64 = crate::records::SIZE;

/// What the emit pass produced.
#[derive(Debug, Clone)]
pub struct Emitted {
    /// The object file.
    pub bytes: Vec<u8>,
    /// Functions carried (names in the patched object).
    pub functions: Vec<String>,
    /// Exported kernel symbols referenced.
    pub exports: Vec<String>,
    /// Livepatch records: (object defining the symbol, name, sympos).
    pub livepatch: Vec<(String, String, u32)>,
    /// Special sections: (name, entries kept, entries in the patched
    /// object); for `.altinstr_replacement`, fragments instead of entries.
    pub special: Vec<(String, usize, usize)>,
    /// Entries of carried functions deliberately left out, and why.
    pub notes: Vec<String>,
}

/// Why no object could be emitted.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The report refuses the change.
    #[error("the change is refused: {0}")]
    Refused(String),
    /// A reference could not be resolved against the running kernel.
    #[error("cannot resolve {name} (referenced from {from}): {reason}")]
    Unresolved {
        /// The symbol.
        name: String,
        /// The section referring to it.
        from: String,
        /// The resolver's reason.
        reason: String,
    },
    /// A special section's entries cannot be delimited.
    #[error("special section {0}: cannot infer its entry size from the object")]
    UnknownLayout(String),
    /// Writing or re-reading the output failed, or an invariant broke.
    #[error("emitting the patch object: {0}")]
    Output(String),
}

/// Emits the patch object for a report without refusals. Reads as the
/// passes it runs, each over what the ones before made: what is carried,
/// the output opened, carried ranges placed in sections of their own and
/// their relocations rewritten, special-section entries of carried code
/// kept, sections kept whole relocated, livepatch places zeroed and the
/// records written, everything else dropped; the result is re-read and
/// checked.
pub fn emit(
    orig: &Object,
    patched: &Object,
    c: &Correlation,
    report: &Report,
    resolver: &dyn Resolver,
) -> Result<Emitted, EmitError> {
    if let Some(r) = report.refusals.first() {
        return Err(EmitError::Refused(format!("{}: {}", r.subject, r.reason)));
    }
    let carried = carried_symbols(orig, patched, c, report, resolver);
    let raw = without_groups(patched)?;
    let mut out = Output::open(&raw, orig, patched, c, resolver, &carried.syms)?;
    let placed = out.place_carried(&carried.syms);
    out.relocate_carried(&placed)?;
    let mut special = out.keep_special_entries(&carried.syms)?;
    special.report.extend(out.relocate_whole_sections()?);
    out.zero_livepatch_places();
    out.write_records();
    let Output { ctx, records, .. } = &out;
    let emitted = Emitted {
        functions: carried
            .syms
            .iter()
            .filter(|s| patched.symbol(**s).kind == SymKind::Func)
            .map(|s| patched.symbol(*s).name.clone())
            .collect(),
        exports: ctx.exports.iter().cloned().collect(),
        livepatch: records
            .iter()
            .map(|r| (r.symbol_object.clone(), r.name.clone(), r.sympos))
            .collect(),
        special: special.report,
        notes: special
            .dropped_late
            .into_iter()
            .map(|d| format!("{d} left out: it refers into a module the patch must not wait for"))
            .chain(carried.notes)
            .collect(),
        bytes: out.finish()?,
    };
    check(&emitted)?;
    Ok(emitted)
}

/// What the patch object carries: the report's inclusions, the parts and
/// literals they need ([`crate::include::carried_closure`]), and the
/// dynamic debug descriptors that must be the patch's own.
struct Carried {
    syms: Vec<SymbolId>,
    /// A note per descriptor made the patch's own.
    notes: Vec<String>,
}

fn carried_symbols(
    orig: &Object,
    patched: &Object,
    c: &Correlation,
    report: &Report,
    resolver: &dyn Resolver,
) -> Carried {
    let mut syms = crate::include::carried_closure(patched, &report.included);
    let mut seen: HashSet<SymbolId> = syms.iter().copied().collect();
    let notes = own_descriptors(
        orig,
        patched,
        &Namer::new(orig, patched, c),
        resolver,
        &mut syms,
        &mut seen,
    );
    Carried { syms, notes }
}

/// Entries of special sections the output keeps, per section, and those
/// left out because the kernel would need them before it can resolve them.
struct SpecialKept {
    /// (section, entries kept, entries in the patched object).
    report: Vec<(String, usize, usize)>,
    /// Entries left out, each naming what it refers to.
    dropped_late: Vec<String>,
}

/// The output object while it is being built: a copy of the patched
/// object in the builder, the reference context, and the livepatch
/// records gathered so far.
struct Output<'a> {
    b: Builder<'a>,
    ctx: Ctx<'a>,
    /// The builder's ids of the patched object's sections, by index - 1.
    sec_ids: Vec<BSec>,
    symtab: BSec,
    records: Vec<Record>,
}

impl<'a> Output<'a> {
    /// Reads the patched object (its groups already dissolved) into the
    /// builder; merge sections used by carried code stay whole.
    fn open(
        raw: &'a [u8],
        orig: &'a Object,
        patched: &'a Object,
        c: &'a Correlation,
        resolver: &'a dyn Resolver,
        carried_syms: &[SymbolId],
    ) -> Result<Self, EmitError> {
        let mut b = Builder::read(raw).map_err(|e| {
            EmitError::Output(format!("re-reading {}: {e}", patched.path.display()))
        })?;
        let sec_ids: Vec<BSec> = b.sections.iter().map(|s| s.id()).collect();
        // LLVM names sections from the symbol string table (one `.strtab`);
        // the builder reads that as the symbols' and needs its own for names.
        if !b
            .sections
            .iter()
            .any(|s| matches!(s.data, SectionData::SectionString))
        {
            let shstrtab = b.sections.add();
            shstrtab.name = b".shstrtab".to_vec().into();
            shstrtab.sh_type = elf::SHT_STRTAB;
            shstrtab.sh_addralign = 1;
            shstrtab.data = SectionData::SectionString;
        }
        let sym_ids: Vec<BSym> = b.symbols.iter().map(|s| s.id()).collect();
        let symtab = b
            .sections
            .iter()
            .find(|s| matches!(s.data, SectionData::Symbol))
            .map(|s| s.id())
            .ok_or_else(|| EmitError::Output("no symbol table".into()))?;

        // Merge sections used by carried code stay whole.
        let mut merge_kept = HashSet::new();
        for &s in carried_syms {
            let sym = patched.symbol(s);
            let Some(sec) = sym.section else { continue };
            for r in &patched.section(sec).relocs {
                if r.offset < sym.value || r.offset >= sym.value + sym.size.max(1) {
                    continue;
                }
                if let Some(ts) = patched.symbol(r.symbol).section {
                    if patched.section(ts).sh_flags & u64::from(elf::SHF_MERGE) != 0 {
                        merge_kept.insert(ts);
                    }
                }
            }
        }

        let ctx = Ctx {
            orig,
            patched,
            namer: Namer::new(orig, patched, c),
            resolver,
            carried: HashMap::new(),
            merge_kept,
            whole_pending: Vec::new(),
            fragments: Fragments::of(patched),
            sym_ids,
            section_syms: HashMap::new(),
            undefined: HashMap::new(),
            exports: BTreeSet::new(),
        };
        Ok(Output {
            b,
            ctx,
            sec_ids,
            symtab,
            records: Vec::new(),
        })
    }

    /// One new section per carried symbol, holding its range (and the
    /// call padding before a function); returns (symbol, new section).
    fn place_carried(&mut self, carried_syms: &[SymbolId]) -> Vec<(SymbolId, BSec)> {
        let (b, ctx) = (&mut self.b, &mut self.ctx);
        let patched = ctx.patched;
        let mut new_sections: Vec<(SymbolId, BSec)> = Vec::new();
        for &s in carried_syms {
            let sym = patched.symbol(s);
            let Some(sec) = sym.section else { continue };
            let src = patched.section(sec);
            let (start, size) = (sym.value, sym.size.max(if src.size > 0 { 1 } else { 0 }));
            let size = if size == 0 { src.size } else { size };
            // Call padding (6.12: -fpatchable-function-entry=16,16): the nops
            // before a function are where the kernel writes call-depth
            // accounting thunks, for modules too, after checking they are
            // nops. The function keeps them.
            let pad = padding_before(patched, s);
            let (start, size) = (start - pad, size + pad);
            let ns = add_like(b, src);
            ns.data = if src.sh_type == elf::SHT_NOBITS {
                SectionData::UninitializedData(size)
            } else {
                let a = (start as usize).min(src.data.len());
                let e = ((start + size) as usize).min(src.data.len());
                SectionData::Data(src.data[a..e].to_vec().into())
            };
            let nsid = ns.id();
            let ss = b.symbols.add();
            ss.set_st_info(elf::STB_LOCAL, elf::STT_SECTION);
            ss.section = Some(nsid);
            ctx.section_syms.insert(nsid.index(), ss.id());
            ctx.carried.insert(s, (nsid, start));
            new_sections.push((s, nsid));
            let bs = b.symbols.get_mut(ctx.sym_ids[s.0 as usize - 1]);
            bs.section = Some(nsid);
            bs.st_value -= start;
        }

        new_sections
    }

    /// The relocations of the carried ranges, and the runtime-constant
    /// sites in them, rewritten for the output.
    fn relocate_carried(&mut self, placed: &[(SymbolId, BSec)]) -> Result<(), EmitError> {
        let (b, ctx, records, symtab) =
            (&mut self.b, &mut self.ctx, &mut self.records, self.symtab);
        let patched = ctx.patched;
        let mut runtime: HashMap<SectionId, Vec<special::RuntimeSite>> = HashMap::new();
        for site in special::runtime_sites(patched) {
            runtime.entry(site.section).or_default().push(site);
        }
        for &(s, nsid) in placed {
            let sym = patched.symbol(s);
            let Some(sec) = sym.section else { continue };
            let src = patched.section(sec);
            // Where the carried range begins (before the function when it
            // keeps its padding).
            let start = ctx.carried[&s].1;
            let mut relas = Vec::new();
            for r in src
                .relocs
                .iter()
                .filter(|r| r.offset >= sym.value && r.offset < sym.value + sym.size.max(1))
            {
                let place = r.offset - start;
                ctx.rewrite(b, r, sec, nsid, place, &mut relas, records)?;
            }
            for site in runtime.get(&sec).into_iter().flatten() {
                if site.offset < sym.value || site.offset >= sym.value + sym.size {
                    continue;
                }
                let place = site.offset - start;
                let load = ctx.runtime_ptr_load(b, nsid, place, site, &sym.name)?;
                match load {
                    Ref::Sym(id, addend) => relas.push(object::build::elf::Relocation {
                        r_offset: place + 1,
                        symbol: Some(id),
                        r_type: elf::R_X86_64_PC32,
                        r_addend: addend,
                    }),
                    Ref::Klp(k) => records.push(Record {
                        section: nsid,
                        place: place + 1,
                        r_type: elf::R_X86_64_PC32,
                        object: k.object,
                        symbol_object: k.symbol_object,
                        name: k.name,
                        sympos: k.sympos,
                        addend: k.addend,
                    }),
                }
            }
            if !relas.is_empty() {
                add_rela(b, nsid, symtab, relas);
            }
        }

        Ok(())
    }

    /// Special sections: the entries of carried functions, rewritten;
    /// `.orc_unwind` follows `.orc_unwind_ip` index by index.
    fn keep_special_entries(
        &mut self,
        carried_syms: &[SymbolId],
    ) -> Result<SpecialKept, EmitError> {
        let (b, ctx, records, symtab) =
            (&mut self.b, &mut self.ctx, &mut self.records, self.symtab);
        let patched = ctx.patched;
        let mut special_report = Vec::new();
        let carried_funcs: HashSet<SymbolId> = carried_syms
            .iter()
            .copied()
            .filter(|s| patched.symbol(*s).kind == SymKind::Func)
            .collect();
        let mut orc_keep: Option<Vec<bool>> = None;
        let mut dropped_late: Vec<String> = Vec::new();
        for (sid, s) in patched.sections() {
            if !special::is_special(&s.name) {
                continue;
            }
            let entries = special::entries(patched, sid)
                .ok_or_else(|| EmitError::UnknownLayout(s.name.clone()))?;
            let keep: Vec<bool> = entries
                .iter()
                .map(|e| {
                    e.relocs.iter().any(|r| {
                        reloc_target(patched, r).is_some_and(|tg| carried_funcs.contains(&tg))
                    })
                })
                .collect();
            if s.name == ".orc_unwind_ip" {
                orc_keep = Some(keep.clone());
            }
            let mut data = Vec::new();
            let mut relas = Vec::new();
            let ns = add_like(b, s).id();
            // Jump labels and static calls are registered when the patch
            // module loads, before livepatch relocations into a target module
            // are applied (those wait for that module): such entries would
            // hand the kernel a null key.
            let load_time = s.name == "__jump_table" || s.name == ".static_call_sites";
            let mut kept = 0;
            for (e, k) in entries.iter().zip(&keep) {
                if !*k {
                    continue;
                }
                let (data_len, relas_len, records_len) = (data.len(), relas.len(), records.len());
                let base = data.len() as u64;
                data.extend_from_slice(&s.data[e.offset as usize..(e.offset + e.size) as usize]);
                for r in &e.relocs {
                    let place = base + (r.offset - e.offset);
                    ctx.rewrite(b, r, sid, ns, place, &mut relas, records)?;
                }
                let late = records[records_len..]
                    .iter()
                    .find(|rec| rec.object != "vmlinux")
                    .map(|rec| rec.name.clone());
                if let (true, Some(key)) = (load_time, late) {
                    data.truncate(data_len);
                    relas.truncate(relas_len);
                    records.truncate(records_len);
                    // A static call site left out still calls through the
                    // trampoline, which the kernel keeps current; a tracepoint
                    // left out stays off in the patched function. Any other
                    // key would freeze a branch: refuse.
                    if s.name == "__jump_table" && !key.starts_with("__tracepoint_") {
                        return Err(EmitError::Refused(format!(
                            "{key}: a carried function branches on this static key of a loadable module; \
                             the kernel registers the patch's jump labels when it loads, before it can \
                             resolve that key, and a branch left out would stay frozen in its default \
                             direction (move the branch into a function the patch does not replace, or \
                             test the key's value with static_key_enabled() instead)"
                        )));
                    }
                    dropped_late.push(format!("{} entry for {key}", s.name));
                    continue;
                }
                kept += 1;
            }
            special_report.push((s.name.clone(), kept, entries.len()));
            // The output's entries are whole and say their size: a stride only
            // the kernel knew (the last entry may lack its padding), or the
            // one the patched object's layout told, which the output alone may
            // no longer tell (a field the kernel resolves through a livepatch
            // record has no relocation left in some entries).
            let stride = patched
                .entry_sizes
                .get(&s.name)
                .copied()
                .filter(|&e| special::inferred_entry_size(patched, sid) != Some(e))
                .or_else(|| entries.first().map(|e| e.size))
                .filter(|&e| e > 0);
            if let (0, Some(stride)) = (s.sh_entsize, stride) {
                data.resize((data.len() as u64).next_multiple_of(stride) as usize, 0);
                b.sections.get_mut(ns).sh_entsize = stride;
            }
            b.sections.get_mut(ns).data = SectionData::Data(data.into());
            if kept == 0 {
                b.sections.get_mut(ns).delete = true;
            } else if !relas.is_empty() {
                add_rela(b, ns, symtab, relas);
            }
        }
        // .orc_unwind has no relocations: it follows .orc_unwind_ip index by index.
        if let (Some(keep), Some(sid)) = (orc_keep, patched.section_by_name(".orc_unwind")) {
            let s = patched.section(sid);
            if keep.is_empty() || !s.size.is_multiple_of(keep.len() as u64) {
                return Err(EmitError::UnknownLayout(".orc_unwind".into()));
            }
            let e = (s.size / keep.len() as u64) as usize;
            let data: Vec<u8> = keep
                .iter()
                .enumerate()
                .filter(|(_, k)| **k)
                .flat_map(|(i, _)| s.data[i * e..(i + 1) * e].to_vec())
                .collect();
            let kept = data.len() / e;
            special_report.push((".orc_unwind".into(), kept, keep.len()));
            let n = add_like(b, s);
            n.delete = kept == 0;
            n.data = SectionData::Data(data.into());
        }

        Ok(SpecialKept {
            report: special_report,
            dropped_late,
        })
    }

    /// Relocations of sections kept whole and of kept alternative
    /// fragments, each of which may pull in more of either; returns the
    /// fragments' line of the special-section report.
    fn relocate_whole_sections(&mut self) -> Result<Option<(String, usize, usize)>, EmitError> {
        let (b, ctx, records, symtab) =
            (&mut self.b, &mut self.ctx, &mut self.records, self.symtab);
        let patched = ctx.patched;
        let sec_ids = &self.sec_ids;
        let mut fragment_relas = Vec::new();
        loop {
            if let Some(sec) = ctx.whole_pending.pop() {
                let src = patched.section(sec);
                let bsec = sec_ids[sec.0 as usize - 1];
                let mut relas = Vec::new();
                for r in &src.relocs {
                    ctx.rewrite(b, r, sec, bsec, r.offset, &mut relas, records)?;
                }
                if !relas.is_empty() {
                    add_rela(b, bsec, symtab, relas);
                }
                continue;
            }
            let Some(f) = ctx.fragments.as_mut() else {
                break;
            };
            let Some(i) = f.pending.pop() else { break };
            let ((start, end), sec) = (f.range(i), f.section);
            let (Some((out, _)), Some(&new_start)) = (f.out, f.kept.get(&i)) else {
                return Err(EmitError::Output(format!(
                    "{ALT_REPLACEMENT} fragment {start:#x} pending but not placed"
                )));
            };
            for r in patched
                .section(sec)
                .relocs
                .iter()
                .filter(|r| r.offset >= start && r.offset < end)
            {
                // A boundary inside an instruction's relocated field would cut
                // that field apart.
                if r.offset + r.width().unwrap_or(0) > end {
                    return Err(EmitError::Output(format!(
                        "{ALT_REPLACEMENT}: the relocation at {:#x} crosses the fragment end {end:#x}",
                        r.offset
                    )));
                }
                let place = new_start + (r.offset - start);
                ctx.rewrite(b, r, sec, out, place, &mut fragment_relas, records)?;
            }
        }
        let Some(f) = ctx.fragments.take() else {
            return Ok(None);
        };
        if let Some((out, _)) = f.out {
            b.sections.get_mut(out).data = SectionData::Data(f.data.into());
            if !fragment_relas.is_empty() {
                add_rela(b, out, symtab, fragment_relas);
            }
        }
        Ok(Some((
            ALT_REPLACEMENT.to_string(),
            f.kept.len(),
            f.starts.len(),
        )))
    }

    /// Livepatch places must hold zeros: the kernel writes them.
    fn zero_livepatch_places(&mut self) {
        let (b, records) = (&mut self.b, &self.records);
        for rec in records {
            let w = (Reloc {
                offset: 0,
                r_type: rec.r_type,
                symbol: SymbolId(0),
                addend: 0,
                tail: None,
            })
            .width()
            .unwrap_or(0) as usize;
            if let SectionData::Data(d) = &mut b.sections.get_mut(rec.section).data {
                let at = rec.place as usize;
                if let Some(field) = d.to_mut().get_mut(at..at.saturating_add(w)) {
                    field.fill(0);
                }
            }
        }
    }

    /// The records, in `.noreboot.klp` with their strings
    /// ([`crate::records`]).
    fn write_records(&mut self) {
        let (b, ctx, records, symtab) = (&mut self.b, &self.ctx, &self.records, self.symtab);
        if !records.is_empty() {
            let mut strings = vec![0u8];
            let mut offsets: HashMap<String, u32> = HashMap::new();
            let mut intern = |s: &str, strings: &mut Vec<u8>| -> u32 {
                *offsets.entry(s.to_string()).or_insert_with(|| {
                    let o = strings.len() as u32;
                    strings.extend_from_slice(s.as_bytes());
                    strings.push(0);
                    o
                })
            };
            // The string offsets are relocations against the strings section,
            // not plain numbers: the module link concatenates the tables of
            // all parts, and only relocations follow that.
            let st = b.sections.add();
            st.name = KLP_STRINGS.as_bytes().to_vec().into();
            st.sh_type = elf::SHT_PROGBITS;
            st.sh_addralign = 1;
            let stid = st.id();
            let st_sym = {
                let ss = b.symbols.add();
                ss.set_st_info(elf::STB_LOCAL, elf::STT_SECTION);
                ss.section = Some(stid);
                ss.id()
            };
            let mut data = Vec::new();
            let mut relas = Vec::new();
            for (i, rec) in records.iter().enumerate() {
                let Record {
                    section: sec,
                    place,
                    r_type,
                    object: obj,
                    symbol_object,
                    name,
                    sympos: pos,
                    addend,
                } = rec;
                let base = i as u64 * KLP_RECORD_SIZE;
                data.extend_from_slice(&crate::records::encode(crate::records::Fixed {
                    r_type: *r_type,
                    sympos: *pos,
                    addend: *addend,
                }));
                let strs = [
                    intern(obj, &mut strings),
                    intern(symbol_object, &mut strings),
                    intern(name, &mut strings),
                ];
                for (field, off) in crate::records::NAME_FIELDS.into_iter().zip(strs) {
                    relas.push(object::build::elf::Relocation {
                        r_offset: base + field,
                        symbol: Some(st_sym),
                        r_type: elf::R_X86_64_32,
                        r_addend: off as i64,
                    });
                }
                relas.push(object::build::elf::Relocation {
                    r_offset: base + crate::records::PLACE,
                    symbol: Some(ctx.section_syms.get(&sec.index()).copied().unwrap_or_else(
                        || {
                            let ss = b.symbols.add();
                            ss.set_st_info(elf::STB_LOCAL, elf::STT_SECTION);
                            ss.section = Some(*sec);
                            ss.id()
                        },
                    )),
                    r_type: elf::R_X86_64_64,
                    r_addend: *place as i64,
                });
            }
            let rs = b.sections.add();
            rs.name = KLP_RECORDS.as_bytes().to_vec().into();
            rs.sh_type = elf::SHT_PROGBITS;
            rs.sh_addralign = 8;
            rs.sh_entsize = KLP_RECORD_SIZE;
            rs.data = SectionData::Data(data.into());
            let rsid = rs.id();
            b.sections.get_mut(stid).data = SectionData::Data(strings.into());
            add_rela(b, rsid, symtab, relas);
        }
    }

    /// Drops everything not carried (original sections but merge sections
    /// in use and the file's own tables, unused undefined symbols), checks
    /// that no kept relocation lost its symbol, and writes the object.
    fn finish(self) -> Result<Vec<u8>, EmitError> {
        let Output {
            mut b,
            ctx,
            sec_ids,
            ..
        } = self;
        for (i, &bid) in sec_ids.iter().enumerate() {
            let keep = {
                let bs = b.sections.get(bid);
                matches!(
                    bs.data,
                    SectionData::Symbol
                        | SectionData::String
                        | SectionData::SectionString
                        | SectionData::SymbolSectionIndex
                ) || ctx.merge_kept.contains(&SectionId(i as u32 + 1))
                    || bs.name.as_slice() == b".note.GNU-stack"
            };
            let bs = b.sections.get_mut(bid);
            if !keep {
                bs.delete = true;
            }
        }
        // Relocation sections of kept merge sections are not needed (merge
        // sections carry none), and every other original .rela went with its
        // section.
        for sym in b.symbols.iter_mut() {
            if sym.st_type() == elf::STT_FILE {
                continue;
            }
            if sym.section.is_none()
                && sym.st_shndx == elf::SHN_UNDEF
                && !ctx.undefined.values().any(|u| *u == sym.id())
            {
                sym.delete = true;
            }
        }
        b.delete_orphan_symbols();
        // delete_orphans drops relocations to deleted symbols; none of ours may
        // be among them, or the patch would silently lose a reference.
        for sec in b.sections.iter() {
            if let SectionData::Relocation(relas) = &sec.data {
                if sec.delete {
                    continue;
                }
                if let Some(r) = relas
                    .iter()
                    .find(|r| r.symbol.is_some_and(|s| b.symbols.get(s).delete))
                {
                    return Err(EmitError::Output(format!(
                        "{} at {:#x} refers to a symbol that is not carried",
                        String::from_utf8_lossy(sec.name.as_slice()),
                        r.r_offset
                    )));
                }
            }
        }
        b.delete_orphans();
        // No group section survives, so no section may claim membership in one
        // (carried and merge sections copy their flags from group members).
        for sec in b.sections.iter_mut() {
            sec.sh_flags &= !u64::from(elf::SHF_GROUP);
        }
        // Carried symbols stay; a global new function must not clash with the
        // kernel's: the patch glue refers to it through its own symbol.
        let mut out = Vec::new();
        b.write(&mut out)
            .map_err(|e| EmitError::Output(e.to_string()))?;
        Ok(out)
    }
}

/// Sections of dynamic debug descriptors (`struct _ddebug`, one per
/// `pr_debug`/`dev_dbg` call site): `__dyndbg`, `__verbose` before 5.x.
pub const DYNDBG: &[&str] = &["__dyndbg", "__verbose"];

/// Dynamic debug descriptors the patch must hold itself, added to
/// `carried` (with `seen`); returns a note for each. A carried function's
/// call site is switched by the static key inside its descriptor, through
/// a `__jump_table` entry that the kernel registers when the patch module
/// loads — before livepatch relocations into a target module, which wait
/// for that module, are applied. So a descriptor whose running copy is in
/// a loadable module (or cannot be found) becomes the patch module's own,
/// and so does what it points at in that module (`__func__`), since the
/// kernel reads the descriptor as soon as it registers it: the call site
/// then appears under the patch module's name in
/// `/proc/dynamic_debug/control`, off until enabled there. A descriptor in
/// vmlinux stays the kernel's: vmlinux relocations are applied as the
/// patch module loads, and the call site keeps its one switch and setting.
fn own_descriptors(
    orig: &Object,
    patched: &Object,
    namer: &Namer,
    resolver: &dyn Resolver,
    carried: &mut Vec<SymbolId>,
    seen: &mut HashSet<SymbolId>,
) -> Vec<String> {
    let in_module = |tg: SymbolId| {
        let ts = patched.symbol(tg);
        // New symbols are carried if included; undefined ones are not ours.
        let Some(name) = namer.patched(tg).filter(|_| !ts.is_undefined()) else {
            return false;
        };
        let local = namer
            .correlation()
            .sym_p2o
            .get(&tg)
            .map_or(ts.is_local(), |o| orig.symbol(*o).is_local());
        match resolver.resolve(&name, local) {
            Ok(Outside::Livepatch { object, .. }) => object != "vmlinux",
            Ok(Outside::ModuleExport { .. }) => true,
            Ok(Outside::Export) => false,
            Err(_) => true,
        }
    };
    let in_dyndbg = |id: SymbolId| {
        patched
            .symbol(id)
            .section
            .is_some_and(|s| DYNDBG.contains(&patched.section(s).name.as_str()))
    };
    let mut notes = Vec::new();
    // A call site that never passes its descriptor on (btrfs_debug and
    // the other `_dynamic_func_call_no_desc` users) refers to it only
    // through the key of its `__jump_table` entry.
    let carried_funcs: Vec<(SectionId, u64, u64)> = carried
        .iter()
        .map(|&id| patched.symbol(id))
        .filter(|s| s.kind == SymKind::Func)
        .filter_map(|s| Some((s.section?, s.value, s.value + s.size.max(1))))
        .collect();
    let in_carried = |r: &Reloc| {
        let t = patched.symbol(r.symbol);
        let (sec, at) = if t.kind == SymKind::Section {
            (t.section, r.addend)
        } else {
            (t.section, t.value as i64 + r.addend)
        };
        sec.is_some_and(|sec| {
            carried_funcs
                .iter()
                .any(|&(fs, lo, hi)| fs == sec && at >= lo as i64 && at < hi as i64)
        })
    };
    for (sid, sec) in patched.sections() {
        if sec.name != "__jump_table" {
            continue;
        }
        for e in crate::special::entries(patched, sid).unwrap_or_default() {
            let Some(code) = e.relocs.iter().find(|r| r.offset == e.offset) else {
                continue;
            };
            if !in_carried(code) {
                continue;
            }
            for r in e.relocs.iter().filter(|r| r.offset != e.offset) {
                let Some(tg) = reloc_target(patched, r) else {
                    continue;
                };
                if !in_dyndbg(tg) || seen.contains(&tg) || !in_module(tg) {
                    continue;
                }
                seen.insert(tg);
                carried.push(tg);
                let name = namer
                    .patched(tg)
                    .unwrap_or_else(|| patched.symbol(tg).name.clone());
                notes.push(format!(
                    "dynamic debug descriptor {name} carried as the patch module's own (its key switches a call site of a carried function): \
                     it is listed under the patch module in /proc/dynamic_debug/control"
                ));
            }
        }
    }
    let mut i = 0;
    while i < carried.len() {
        let s = patched.symbol(carried[i]);
        let (is_func, is_descriptor) = (s.kind == SymKind::Func, in_dyndbg(carried[i]));
        i += 1;
        let Some(sec) = s.section.filter(|_| is_func || is_descriptor) else {
            continue;
        };
        for r in &patched.section(sec).relocs {
            if r.offset < s.value || r.offset >= s.value + s.size.max(1) {
                continue;
            }
            let Some(tg) = reloc_target(patched, r) else {
                continue;
            };
            let ts = patched.symbol(tg);
            let wanted = if is_func {
                in_dyndbg(tg)
            } else {
                ts.kind == SymKind::Object
            };
            if !wanted || seen.contains(&tg) || !in_module(tg) {
                continue;
            }
            seen.insert(tg);
            carried.push(tg);
            let name = namer.patched(tg).unwrap_or_else(|| ts.name.clone());
            notes.push(if is_func {
                format!(
                    "dynamic debug descriptor {name} of {} carried as the patch module's own: \
                     its call site is listed under the patch module in /proc/dynamic_debug/control",
                    s.name
                )
            } else {
                format!("{name} carried with the dynamic debug descriptor that points at it")
            });
        }
    }
    notes
}

/// Bytes of nop padding (0x90, or int3 0xcc) between the start of a
/// function's own section and the function: the padding the compiler put
/// before it, which objtool (`--prefix`) names `__pfx_<function>`. Zero
/// when the function shares its section with anything else.
fn padding_before(obj: &Object, id: SymbolId) -> u64 {
    let sym = obj.symbol(id);
    let Some(sec) = sym.section else { return 0 };
    let s = obj.section(sec);
    if sym.kind != SymKind::Func || s.sh_type == elf::SHT_NOBITS {
        return 0;
    }
    let prefix = format!("__pfx_{}", sym.name);
    let alone = s.symbols.iter().all(|&o| {
        let t = obj.symbol(o);
        o == id
            || !matches!(t.kind, SymKind::Func | SymKind::Object)
            || t.value >= sym.value
            || t.name == prefix
    });
    let before = s.data.get(..sym.value as usize).unwrap_or_default();
    if alone && before.iter().all(|&b| b == 0x90 || b == 0xcc) {
        sym.value
    } else {
        0
    }
}

/// The patched object's bytes as `object::build::elf` can read them: its
/// `SHT_GROUP` headers, and those of types the builder does not know
/// (LLVM's `SHT_LLVM_ADDRSIG`, `SHT_LLVM_BB_ADDR_MAP`, …, see
/// [`crate::read::builder_cannot_read`]), retyped `SHT_PROGBITS`: the
/// builder refuses them and the output drops them anyway (of the original
/// sections it keeps only the symbol and string tables and merged
/// constants). The analysis has already refused changed groups.
fn without_groups(patched: &Object) -> Result<std::borrow::Cow<'_, [u8]>, EmitError> {
    use object::read::elf::FileHeader;
    let groups: Vec<SectionId> = patched
        .sections()
        .filter(|(_, s)| s.sh_type == elf::SHT_GROUP || crate::read::builder_cannot_read(s.sh_type))
        .map(|(id, _)| id)
        .collect();
    if groups.is_empty() {
        return Ok(std::borrow::Cow::Borrowed(&patched.raw));
    }
    let bad = |what: &str| EmitError::Output(format!("{}: {what}", patched.path.display()));
    let header = elf::FileHeader64::<object::LittleEndian>::parse(&*patched.raw)
        .map_err(|e| bad(&e.to_string()))?;
    let shoff = header.e_shoff(object::LittleEndian);
    let shentsize = u64::from(header.e_shentsize(object::LittleEndian));
    let mut raw = patched.raw.clone();
    for g in groups {
        // sh_type is the second 32-bit field of a section header.
        let at = u64::from(g.0)
            .checked_mul(shentsize)
            .and_then(|o| o.checked_add(shoff))
            .and_then(|o| o.checked_add(4))
            .and_then(|o| usize::try_from(o).ok());
        let field = at
            .and_then(|at| raw.get_mut(at..at.checked_add(4)?))
            .ok_or_else(|| bad(&format!("section header {} lies outside the file", g.0)))?;
        field.copy_from_slice(&elf::SHT_PROGBITS.to_le_bytes());
    }
    Ok(std::borrow::Cow::Owned(raw))
}

/// A new output section with the name and attributes of `src` (data set
/// by the caller).
pub(crate) fn add_like<'b, 'd>(
    b: &'b mut Builder<'d>,
    src: &crate::read::Section,
) -> &'b mut object::build::elf::Section<'d> {
    let n = b.sections.add();
    n.name = src.name.clone().into_bytes().into();
    n.sh_type = src.sh_type;
    n.sh_flags = src.sh_flags;
    n.sh_addralign = src.sh_addralign.max(1);
    n.sh_entsize = src.sh_entsize;
    n
}

fn add_rela(
    b: &mut Builder,
    target: BSec,
    symtab: BSec,
    relas: Vec<object::build::elf::Relocation>,
) {
    let name = format!(
        ".rela{}",
        String::from_utf8_lossy(b.sections.get(target).name.as_slice())
    );
    let rs = b.sections.add();
    rs.name = name.into_bytes().into();
    rs.sh_type = elf::SHT_RELA;
    rs.sh_flags = u64::from(elf::SHF_INFO_LINK);
    rs.sh_addralign = 8;
    rs.sh_entsize = 24;
    rs.sh_link_section = Some(symtab);
    rs.sh_info_section = Some(target);
    rs.data = SectionData::Relocation(relas);
}

/// Re-reads the output and checks its invariants: it parses; no section
/// group or group member is left; every relocation targets a symbol defined in the output or a declared export;
/// every special-section entry points into carried code; the records are
/// whole.
pub fn check(e: &Emitted) -> Result<(), EmitError> {
    let o = Object::parse("emitted.o".as_ref(), &e.bytes)
        .map_err(|err| EmitError::Output(format!("re-reading: {err}")))?;
    for (_, s) in o.sections() {
        if s.sh_type == elf::SHT_GROUP || s.sh_flags & u64::from(elf::SHF_GROUP) != 0 {
            return Err(EmitError::Output(format!(
                "{} is (in) a section group, which the output does not carry",
                s.name
            )));
        }
        for r in &s.relocs {
            let t = o.symbol(r.symbol);
            let ok = if t.is_undefined() {
                e.exports.contains(&t.name)
            } else {
                t.section.is_some()
            };
            if !ok {
                return Err(EmitError::Output(format!(
                    "relocation at {}+{:#x} targets {:?}, which the output neither defines nor declares",
                    s.name, r.offset, t.name
                )));
            }
        }
        if special::is_special(&s.name) {
            // Every kept entry points into code the output carries.
            let id = o
                .section_by_name(&s.name)
                .ok_or_else(|| EmitError::Output(format!("{} vanished", s.name)))?;
            let entries = special::entries(&o, id)
                .ok_or_else(|| EmitError::UnknownLayout(format!("{} (output)", s.name)))?;
            for e in entries {
                let into_code = e.relocs.iter().any(|r| {
                    let t = o.symbol(r.symbol);
                    t.section.is_some_and(|ts| o.section(ts).is_text())
                });
                if !into_code {
                    return Err(EmitError::Output(format!(
                        "{} entry at {:#x} points into no carried code",
                        s.name, e.offset
                    )));
                }
            }
        }
        if s.name == KLP_RECORDS
            && (s.size != e.livepatch.len() as u64 * KLP_RECORD_SIZE
                || s.relocs.len() != crate::records::RELOCATIONS_PER_RECORD * e.livepatch.len())
        {
            return Err(EmitError::Output(format!(
                "{} holds {} bytes and {} relocations for {} records",
                KLP_RECORDS,
                s.size,
                s.relocs.len(),
                e.livepatch.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragments(starts: &[u64], size: u64) -> Fragments {
        Fragments {
            section: SectionId(1),
            starts: starts.to_vec(),
            size,
            out: None,
            kept: HashMap::new(),
            data: Vec::new(),
            pending: Vec::new(),
        }
    }

    #[test]
    fn fragments_run_to_the_next_boundary() {
        let f = fragments(&[0, 5, 10], 10);
        assert_eq!(f.index_of(0), Some(0));
        assert_eq!(f.index_of(4), Some(0));
        assert_eq!(f.index_of(5), Some(1));
        assert_eq!(f.range(1), (5, 10));
        // An empty replacement at the very end is a fragment of its own.
        assert_eq!(f.index_of(10), Some(2));
        assert_eq!(f.range(2), (10, 10));
        assert_eq!(f.index_of(11), None);
        assert_eq!(f.index_of(-1), None);
        // Without a boundary there, the section end is in no fragment.
        assert_eq!(fragments(&[0, 5], 10).index_of(10), None);
    }
}
