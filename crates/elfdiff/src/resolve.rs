//! Resolution, the part of the emit pass that decides how each reference
//! of carried code is expressed in the output: to something carried (a
//! symbol of the output, a fragment of `.altinstr_replacement`, a section
//! kept whole), to an export of the running kernel, or to a livepatch
//! relocation record against a symbol of vmlinux or a module, as the
//! [`Resolver`] answers. `emit` drives it; the output is written there.

use std::collections::{BTreeSet, HashMap, HashSet};

use object::build::elf::{Builder, SectionData, SectionId as BSec, SymbolId as BSym};
use object::build::Id;
use object::elf;

use crate::compare::Namer;
use crate::correlate::{section_target, Correlation};
use crate::emit::{
    add_like, EmitError, ALT_REPLACEMENT, ALT_TABLE, MAX_FRAGMENT_ALIGN, WHOLE_SECTIONS,
};
use crate::read::{Object, Reloc, SectionId, SymKind, SymbolId};
use crate::special;

/// Where an outside reference lands in the running kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outside {
    /// Exported to modules: an ordinary undefined symbol.
    Export,
    /// Not exported: a livepatch relocation against `object`'s symbol at
    /// position `sympos`.
    Livepatch {
        /// `vmlinux` or the module name.
        object: String,
        /// Position among same-named symbols (0 = unique).
        sympos: u32,
    },
    /// Exported by another loadable module, `module`, that the patched
    /// module `target` depends on: a livepatch relocation applied when
    /// `target` loads (`module` is loaded by then), so the patch module
    /// does not depend on `module` itself — which may never load on this
    /// host (a hypervisor's bus driver).
    ModuleExport {
        /// The patched module.
        target: String,
        /// The module that exports the symbol.
        module: String,
    },
}

/// Answers how the running kernel provides a symbol the patch refers to.
pub trait Resolver {
    /// `name` as the running kernel knows it; `local` if it is a static
    /// symbol of the patched object file.
    fn resolve(&self, name: &str, local: bool) -> Result<Outside, String>;
}

/// A livepatch relocation record: where (output section and offset), the
/// original relocation type and addend, the object it is applied with,
/// and the kernel symbol (its object, name and position).
pub(crate) struct Record {
    pub(crate) section: BSec,
    pub(crate) place: u64,
    pub(crate) r_type: u32,
    pub(crate) object: String,
    pub(crate) symbol_object: String,
    pub(crate) name: String,
    pub(crate) sympos: u32,
    pub(crate) addend: i64,
}

/// A reference as the output will express it.
pub(crate) enum Ref {
    /// To a symbol the output defines or declares.
    Sym(BSym, i64),
    /// A livepatch record.
    Klp(Klp),
}

/// A livepatch reference: applied with `object`, against `symbol_object`'s
/// `name` at `sympos`.
pub(crate) struct Klp {
    pub(crate) object: String,
    pub(crate) symbol_object: String,
    pub(crate) name: String,
    pub(crate) sympos: u32,
    pub(crate) addend: i64,
}

/// `.altinstr_replacement` cut into fragments. The offsets
/// `.altinstructions` entries point at (and the section start) are the
/// boundaries; a fragment runs to the next boundary or the section end.
/// Taking the boundaries from the object, not from `struct alt_instr`,
/// works for every kernel's layout (12 bytes on 6.1, 14 on 6.12). An empty
/// replacement shares its offset with the next one, so keeping it keeps
/// that neighbour's bytes too: unused, but harmless.
pub(crate) struct Fragments {
    /// The section in the patched object.
    pub(crate) section: SectionId,
    /// Fragment starts, ascending; the first is 0.
    pub(crate) starts: Vec<u64>,
    /// The section's size, where the last fragment ends.
    pub(crate) size: u64,
    /// The output section and its section symbol, once a fragment is kept.
    pub(crate) out: Option<(BSec, BSym)>,
    /// Kept fragments by index → their offset in the output section.
    pub(crate) kept: HashMap<usize, u64>,
    /// The output section's bytes.
    pub(crate) data: Vec<u8>,
    /// Kept fragments whose relocations still need rewriting.
    pub(crate) pending: Vec<usize>,
}

impl Fragments {
    /// The fragments of `patched`'s `.altinstr_replacement`, if it has one.
    pub(crate) fn of(patched: &Object) -> Option<Fragments> {
        let section = patched.section_by_name(ALT_REPLACEMENT)?;
        let size = patched.section(section).size;
        let mut starts = BTreeSet::from([0u64]);
        if let Some(table) = patched.section_by_name(ALT_TABLE) {
            for r in &patched.section(table).relocs {
                let t = patched.symbol(r.symbol);
                if t.section != Some(section) {
                    continue;
                }
                // Table fields are `.long label - .`: the addend is the
                // label's offset, with no instruction-length bias.
                if let Ok(off) = u64::try_from(t.value as i64 + r.addend) {
                    if off <= size {
                        starts.insert(off);
                    }
                }
            }
        }
        Some(Fragments {
            section,
            starts: starts.into_iter().collect(),
            size,
            out: None,
            kept: HashMap::new(),
            data: Vec::new(),
            pending: Vec::new(),
        })
    }

    /// Start and end of fragment `i`.
    pub(crate) fn range(&self, i: usize) -> (u64, u64) {
        let end = self.starts.get(i + 1).copied().unwrap_or(self.size);
        (self.starts[i], end)
    }

    /// The fragment holding `off`, or starting there (an empty replacement
    /// at the section end).
    pub(crate) fn index_of(&self, off: i64) -> Option<usize> {
        let off = u64::try_from(off).ok()?;
        let i = self.starts.partition_point(|&s| s <= off).checked_sub(1)?;
        let (start, end) = self.range(i);
        (off < end || off == start).then_some(i)
    }
}

pub(crate) struct Ctx<'a> {
    pub(crate) orig: &'a Object,
    pub(crate) patched: &'a Object,
    pub(crate) namer: Namer<'a>,
    pub(crate) resolver: &'a dyn Resolver,
    /// Included patched symbols → (their new section, range start).
    pub(crate) carried: HashMap<SymbolId, (BSec, u64)>,
    /// Sections kept whole (merged constants, alternative fragments).
    pub(crate) merge_kept: HashSet<SectionId>,
    /// Kept-whole sections whose relocations still need rewriting.
    pub(crate) whole_pending: Vec<SectionId>,
    /// `.altinstr_replacement`, carried fragment by fragment.
    pub(crate) fragments: Option<Fragments>,
    pub(crate) sym_ids: Vec<BSym>,
    /// New section symbols of the carried sections, by builder index.
    pub(crate) section_syms: HashMap<usize, BSym>,
    pub(crate) undefined: HashMap<String, BSym>,
    pub(crate) exports: BTreeSet<String>,
}

impl Ctx<'_> {
    /// How reference `r` (in the patched object's section `from_sec`) is
    /// expressed in the output.
    pub(crate) fn reference(
        &mut self,
        b: &mut Builder,
        r: &Reloc,
        from_sec: SectionId,
    ) -> Result<Ref, EmitError> {
        let from = self.patched.section(from_sec).name.as_str();
        let t = self.patched.symbol(r.symbol);
        let bias = if r.is_pc_relative() { 4 } else { 0 };
        if t.section.is_some() && t.section == self.fragments.as_ref().map(|f| f.section) {
            // A relative field in code is followed by the end of its
            // instruction (`jmp 1f`: addend = target - 4); in a table it is
            // `label - .` and the addend is the target itself.
            let code_bias = if self.patched.section(from_sec).is_text() {
                bias
            } else {
                0
            };
            return self.fragment_ref(b, r, t.value as i64 + r.addend + code_bias, from);
        }
        // Merged strings and constants (named `.LC*` labels or section
        // symbols), the symbol-less slow paths of static_cpu_has(), and
        // UBSAN's descriptors (per check, written once it reported: the
        // carried check reports through its own) travel whole with
        // whatever refers to them.
        if let Some(sec) = t.section {
            let s = self.patched.section(sec);
            if s.sh_flags & u64::from(elf::SHF_MERGE) != 0
                || WHOLE_SECTIONS.contains(&s.name.as_str())
                || crate::correlate::is_ubsan_descriptor(&s.name)
            {
                if self.merge_kept.insert(sec) && !s.relocs.is_empty() {
                    self.whole_pending.push(sec);
                }
                return Ok(Ref::Sym(self.sym_ids[r.symbol.0 as usize - 1], r.addend));
            }
        }
        // Resolve section-relative references to the symbol they point into.
        let (target, addend) = if t.kind == SymKind::Section {
            let Some(sec) = t.section else {
                return Err(EmitError::Output(format!(
                    "section symbol without section in {from}"
                )));
            };
            if self.merge_kept.contains(&sec) {
                return Ok(Ref::Sym(self.sym_ids[r.symbol.0 as usize - 1], r.addend));
            }
            match section_target(self.patched, sec, r.addend, &r.place_biases()) {
                Some(s) => (s, r.addend - self.patched.symbol(s).value as i64),
                None => {
                    return Err(EmitError::Unresolved {
                        name: format!("{}{:+}", self.patched.section(sec).name, r.addend),
                        from: from.to_string(),
                        reason: "no symbol covers that place".into(),
                    })
                }
            }
        } else {
            (r.symbol, r.addend)
        };
        if let Some(&(bsec, start)) = self.carried.get(&target) {
            // Into carried code or data: relative to its new section.
            let value = self.patched.symbol(target).value;
            let ssym = self.section_syms[&bsec.index()];
            return Ok(Ref::Sym(ssym, addend + (value - start) as i64));
        }
        let ts = self.patched.symbol(target);
        let (name, local) = if ts.is_undefined() {
            (ts.name.clone(), false)
        } else {
            match self.namer.patched(target) {
                Some(n) => {
                    let o = self.patched_to_orig(target);
                    (
                        n,
                        o.map(|o| self.orig.symbol(o).is_local())
                            .unwrap_or(ts.is_local()),
                    )
                }
                None => {
                    return Err(EmitError::Unresolved {
                        name: ts.name.clone(),
                        from: from.to_string(),
                        reason: "new in the patch but not carried by it".into(),
                    })
                }
            }
        };
        self.outside(b, name, local, from, addend)
    }

    /// A reference to kernel symbol `name`, which the patch does not carry.
    pub(crate) fn outside(
        &mut self,
        b: &mut Builder,
        name: String,
        local: bool,
        from: &str,
        addend: i64,
    ) -> Result<Ref, EmitError> {
        match self.resolver.resolve(&name, local) {
            Ok(Outside::Export) => {
                self.exports.insert(name.clone());
                let id = *self.undefined.entry(name.clone()).or_insert_with(|| {
                    let s = b.symbols.add();
                    s.name = name.clone().into_bytes().into();
                    s.set_st_info(elf::STB_GLOBAL, elf::STT_NOTYPE);
                    s.st_shndx = elf::SHN_UNDEF;
                    s.id()
                });
                Ok(Ref::Sym(id, addend))
            }
            Ok(Outside::Livepatch { object, sympos }) => Ok(Ref::Klp(Klp {
                symbol_object: object.clone(),
                object,
                name,
                sympos,
                addend,
            })),
            Ok(Outside::ModuleExport { target, module }) => Ok(Ref::Klp(Klp {
                object: target,
                symbol_object: module,
                name,
                sympos: 0,
                addend,
            })),
            Err(reason) => Err(EmitError::Unresolved {
                name,
                from: from.to_string(),
                reason,
            }),
        }
    }

    /// The reference `r`, reaching `target` in `.altinstr_replacement`,
    /// against the fragment holding it in the output (kept now if it was
    /// not yet).
    pub(crate) fn fragment_ref(
        &mut self,
        b: &mut Builder,
        r: &Reloc,
        target: i64,
        from: &str,
    ) -> Result<Ref, EmitError> {
        let patched = self.patched;
        let Some(f) = self.fragments.as_mut() else {
            return Err(EmitError::Output(format!("{ALT_REPLACEMENT} vanished")));
        };
        let i = f.index_of(target).ok_or_else(|| EmitError::Unresolved {
            name: format!("{ALT_REPLACEMENT}{target:+}"),
            from: from.to_string(),
            reason: format!("outside the section's {} bytes", f.size),
        })?;
        let (start, end) = f.range(i);
        let src = patched.section(f.section);
        let (out, ssym) = *f.out.get_or_insert_with(|| {
            let out = add_like(b, src).id();
            let ss = b.symbols.add();
            ss.set_st_info(elf::STB_LOCAL, elf::STT_SECTION);
            ss.section = Some(out);
            (out, ss.id())
        });
        self.section_syms.insert(out.index(), ssym);
        let new_start = match f.kept.get(&i) {
            Some(&n) => n,
            None => {
                // Each fragment keeps its offset modulo the section's
                // alignment; the padding is never executed.
                let align = src.sh_addralign.max(1);
                if align > MAX_FRAGMENT_ALIGN {
                    return Err(EmitError::Output(format!(
                        "{ALT_REPLACEMENT} asks for {align}-byte alignment"
                    )));
                }
                let pad = (start % align + align - f.data.len() as u64 % align) % align;
                f.data.resize(f.data.len() + pad as usize, 0xcc);
                let bytes = src.data.get(start as usize..end as usize).ok_or_else(|| {
                    EmitError::Output(format!(
                        "{ALT_REPLACEMENT} fragment {start:#x}..{end:#x} has no bytes"
                    ))
                })?;
                let n = f.data.len() as u64;
                f.data.extend_from_slice(bytes);
                f.kept.insert(i, n);
                f.pending.push(i);
                n
            }
        };
        // The addend moves with the fragment; whatever the bias, the place
        // it reaches stays the same byte of the fragment.
        Ok(Ref::Sym(
            ssym,
            r.addend + self.patched.symbol(r.symbol).value as i64 - start as i64 + new_start as i64,
        ))
    }

    /// Rewrites relocation `r` of the patched object's section `from`, now
    /// at `place` of output section `sec`: an ordinary relocation, or a
    /// livepatch record.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rewrite(
        &mut self,
        b: &mut Builder,
        r: &Reloc,
        from: SectionId,
        sec: BSec,
        place: u64,
        relas: &mut Vec<object::build::elf::Relocation>,
        records: &mut Vec<Record>,
    ) -> Result<(), EmitError> {
        match self.reference(b, r, from)? {
            Ref::Sym(id, addend) => relas.push(object::build::elf::Relocation {
                r_offset: place,
                symbol: Some(id),
                r_type: r.r_type,
                r_addend: addend,
            }),
            Ref::Klp(k) => records.push(Record {
                section: sec,
                place,
                r_type: r.r_type,
                object: k.object,
                symbol_object: k.symbol_object,
                name: k.name,
                sympos: k.sympos,
                addend: k.addend,
            }),
        }
        Ok(())
    }

    /// Rewrites the runtime-constant site at `place` of carried section
    /// `sec` into a load of its variable and returns the reference the
    /// load's displacement (at `place + 1`) needs. The kernel fills the
    /// site's immediate at boot and never in a module, so the patch
    /// reads the variable instead, as the module build of the same code
    /// does: `movabs $imm64, %r` (REX.W [+B], B8+r, imm64; 10 bytes)
    /// becomes `mov var(%rip), %r` (REX.W [+R], 8B, ModRM 00 r 101,
    /// disp32; 7 bytes) and a 3-byte nop.
    pub(crate) fn runtime_ptr_load(
        &mut self,
        b: &mut Builder,
        sec: BSec,
        place: u64,
        site: &special::RuntimeSite,
        function: &str,
    ) -> Result<Ref, EmitError> {
        let unsupported = |why: &str| {
            EmitError::Output(format!(
                "{function}: runtime constant {} at {:#x} ({}): {why}",
                site.variable, place, site.table
            ))
        };
        if site.kind != special::RuntimeKind::Ptr {
            return Err(unsupported("only pointer constants can be carried"));
        }
        let SectionData::Data(d) = &mut b.sections.get_mut(sec).data else {
            return Err(unsupported("not in code"));
        };
        let v = d.to_mut();
        let at = usize::try_from(place).unwrap_or(usize::MAX);
        if at < 2 || at.saturating_add(8) > v.len() {
            return Err(unsupported("the site is not inside the function"));
        }
        let (rex, op) = (v[at - 2], v[at - 1]);
        let imm = u64::from_le_bytes(v[at..at + 8].try_into().unwrap_or_default());
        if rex & 0xfe != 0x48
            || !(0xb8..=0xbf).contains(&op)
            || imm != special::RUNTIME_PTR_PLACEHOLDER
        {
            return Err(unsupported(&format!(
                "expected movabs $0x{:x}, found bytes {:02x?}",
                special::RUNTIME_PTR_PLACEHOLDER,
                &v[at - 2..at + 8]
            )));
        }
        let reg = op - 0xb8;
        let start = at - 2;
        v[start..start + 10].copy_from_slice(&[
            0x48 | ((rex & 1) << 2),
            0x8b,
            (reg << 3) | 0b101,
            0,
            0,
            0,
            0,
            0x0f,
            0x1f,
            0x00,
        ]);
        self.outside(b, site.variable.clone(), false, function, -4)
    }

    pub(crate) fn patched_to_orig(&self, p: SymbolId) -> Option<SymbolId> {
        self.namer_corr().sym_p2o.get(&p).copied()
    }

    pub(crate) fn namer_corr(&self) -> &Correlation {
        self.namer.correlation()
    }
}
