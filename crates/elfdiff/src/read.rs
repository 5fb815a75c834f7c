//! Pass 1, read: an x86-64 ELF relocatable object parsed into an owned,
//! index-based model (sections, symbols, relocations grouped by the section
//! they patch). Later passes work on `u32` ids into these vectors instead of
//! names. Everything that is not a 64-bit little-endian x86-64 `ET_REL`, or
//! whose tables point outside the file, is an error naming the object and
//! the offending section or symbol — never a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{FileHeader, Rela, SectionHeader, Sym};
use object::LittleEndian as LE;

use crate::error::{Error, Result};

/// Largest section size, entry size, symbol extent or relocation addend
/// magnitude accepted: 2^57 bytes is all that 5-level paging can map, so
/// anything larger is corruption. The bound also keeps the offset
/// arithmetic of the later passes (`value + addend + 4`) inside `i64`.
pub const MAX_EXTENT: u64 = 1 << 57;

/// Index of a section in [`Object::sections`] (equals its ELF index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SectionId(pub u32);

/// Index of a symbol in [`Object::symbols`] (equals its ELF index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymbolId(pub u32);

/// One relocation applied to a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloc {
    /// Offset in the patched section.
    pub offset: u64,
    /// `R_X86_64_*`.
    pub r_type: u32,
    /// Target symbol.
    pub symbol: SymbolId,
    /// Addend.
    pub addend: i64,
    /// For a 32-bit PC-relative field in code: the bytes between the
    /// field's end and its instruction's end (an immediate operand), when
    /// the instruction shows it for certain ([`crate::insn`]).
    pub tail: Option<u8>,
}

impl Reloc {
    /// Bytes the relocation writes, or `None` for types elfdiff does not
    /// know (which makes any comparison involving them conservative).
    pub fn width(&self) -> Option<u64> {
        match self.r_type {
            elf::R_X86_64_64
            | elf::R_X86_64_PC64
            | elf::R_X86_64_GOTPC64
            | elf::R_X86_64_GOTOFF64 => Some(8),
            elf::R_X86_64_PC32
            | elf::R_X86_64_PLT32
            | elf::R_X86_64_32
            | elf::R_X86_64_32S
            | elf::R_X86_64_GOTPCREL
            | elf::R_X86_64_GOTPCRELX
            | elf::R_X86_64_REX_GOTPCRELX => Some(4),
            elf::R_X86_64_NONE => Some(0),
            _ => None,
        }
    }

    /// The distances a section-relative reference may count from the
    /// field to the place it means: the field's width plus the
    /// instruction's known tail; each distance an x86 instruction can
    /// leave after a 32-bit field when the tail is unknown, nearest
    /// first; none for absolute references.
    pub fn place_biases(&self) -> Vec<i64> {
        match (self.is_pc_relative(), self.tail) {
            (false, _) => vec![0],
            (true, Some(t)) => vec![4 + i64::from(t)],
            (true, None) => vec![4, 5, 6, 8],
        }
    }

    /// Whether the relocated value is relative to the place.
    pub fn is_pc_relative(&self) -> bool {
        matches!(
            self.r_type,
            elf::R_X86_64_PC32
                | elf::R_X86_64_PLT32
                | elf::R_X86_64_PC64
                | elf::R_X86_64_GOTPCREL
                | elf::R_X86_64_GOTPCRELX
                | elf::R_X86_64_REX_GOTPCRELX
        )
    }
}

/// A section of the object.
#[derive(Debug, Clone)]
pub struct Section {
    /// Its name.
    pub name: String,
    /// `SHT_*`.
    pub sh_type: u32,
    /// `SHF_*`.
    pub sh_flags: u64,
    /// Alignment.
    pub sh_addralign: u64,
    /// Entry size (0 if not a table).
    pub sh_entsize: u64,
    /// `sh_link`.
    pub sh_link: u32,
    /// `sh_info`.
    pub sh_info: u32,
    /// Size (also for NOBITS).
    pub size: u64,
    /// Contents (empty for NOBITS).
    pub data: Vec<u8>,
    /// Relocations applied to this section, sorted by offset.
    pub relocs: Vec<Reloc>,
    /// The `.rela*` section holding them.
    pub rela_section: Option<SectionId>,
    /// The section symbol (`STT_SECTION`) naming this section, if any.
    pub section_symbol: Option<SymbolId>,
    /// Function and object symbols defined in it, by ascending value.
    pub symbols: Vec<SymbolId>,
    /// The `SHT_GROUP` section it belongs to.
    pub group: Option<SectionId>,
}

impl Section {
    /// Executable code.
    pub fn is_text(&self) -> bool {
        self.sh_flags & u64::from(elf::SHF_EXECINSTR) != 0
    }

    /// Merged string literals (`.rodata.str1.1` and friends).
    pub fn is_strings(&self) -> bool {
        let f = u64::from(elf::SHF_MERGE | elf::SHF_STRINGS);
        self.sh_flags & f == f
    }

    /// Loaded at run time.
    pub fn is_alloc(&self) -> bool {
        self.sh_flags & u64::from(elf::SHF_ALLOC) != 0
    }

    /// Writable data.
    pub fn is_writable(&self) -> bool {
        self.sh_flags & u64::from(elf::SHF_WRITE) != 0
    }
}

/// Section types of other toolchains that `object::build::elf` (which the
/// emit pass edits the patched object with) refuses, all of them metadata
/// the output drops: LLVM's address-significance table
/// (`SHT_LLVM_ADDRSIG`), basic-block address maps, call-graph profile,
/// linker options and the like (the `0x6fff4c00` range, but for
/// `SHT_LLVM_DEPENDENT_LIBRARIES`, which the builder reads), and any type
/// outside the standard, GNU and x86-64 ones.
pub fn builder_cannot_read(sh_type: u32) -> bool {
    const KNOWN: &[u32] = &[
        elf::SHT_NULL,
        elf::SHT_PROGBITS,
        elf::SHT_SYMTAB,
        elf::SHT_STRTAB,
        elf::SHT_RELA,
        elf::SHT_HASH,
        elf::SHT_DYNAMIC,
        elf::SHT_NOTE,
        elf::SHT_NOBITS,
        elf::SHT_REL,
        elf::SHT_DYNSYM,
        elf::SHT_INIT_ARRAY,
        elf::SHT_FINI_ARRAY,
        elf::SHT_PREINIT_ARRAY,
        elf::SHT_SYMTAB_SHNDX,
        elf::SHT_RELR,
        elf::SHT_CREL,
        elf::SHT_LLVM_DEPENDENT_LIBRARIES,
        elf::SHT_GNU_ATTRIBUTES,
        elf::SHT_GNU_HASH,
        elf::SHT_GNU_VERSYM,
        elf::SHT_GNU_VERDEF,
        elf::SHT_GNU_VERNEED,
        elf::SHT_X86_64_UNWIND,
    ];
    !KNOWN.contains(&sh_type) && sh_type != elf::SHT_GROUP
}

/// Symbol kinds elfdiff distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SymKind {
    /// `STT_NOTYPE` (undefined references, labels).
    NoType,
    /// `STT_OBJECT`.
    Object,
    /// `STT_FUNC`.
    Func,
    /// `STT_SECTION`.
    Section,
    /// `STT_FILE`.
    File,
    /// Anything else (TLS, common, GNU ifunc).
    Other(u8),
}

/// A symbol of the object.
#[derive(Debug, Clone)]
pub struct Symbol {
    /// Its name (for section symbols: the section's name).
    pub name: String,
    /// Kind.
    pub kind: SymKind,
    /// `STB_*`.
    pub bind: u8,
    /// Defining section; `None` for undefined, absolute and common symbols.
    pub section: Option<SectionId>,
    /// `st_shndx` as written (for SHN_ABS, SHN_UNDEF and friends).
    pub st_shndx: u16,
    /// Value (offset in its section).
    pub value: u64,
    /// Size.
    pub size: u64,
}

impl Symbol {
    /// `STB_LOCAL`.
    pub fn is_local(&self) -> bool {
        self.bind == elf::STB_LOCAL
    }

    /// Defined nowhere in this object.
    pub fn is_undefined(&self) -> bool {
        self.st_shndx == elf::SHN_UNDEF && self.kind != SymKind::File
    }
}

/// A parsed relocatable object.
#[derive(Debug, Clone)]
pub struct Object {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// Sections by ELF index (index 0 is the null section).
    pub sections: Vec<Section>,
    /// Symbols by ELF index (index 0 is the null symbol).
    pub symbols: Vec<Symbol>,
    /// The file's bytes, for the emit pass (which edits a copy).
    pub raw: Vec<u8>,
    /// Entry sizes of special sections known from outside the object (the
    /// kernel's BTF, or `--entry-size`), by section name: a table with a
    /// single entry, or whose last entry lacks its trailing padding, does
    /// not reveal its stride (see [`crate::special::entry_size`]).
    pub entry_sizes: BTreeMap<String, u64>,
}

impl Object {
    /// Reads and parses the object at `path`.
    pub fn read(path: &Path) -> Result<Object> {
        let data = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Object::parse(path, &data)
    }

    /// The section with `id`.
    pub fn section(&self, id: SectionId) -> &Section {
        &self.sections[id.0 as usize]
    }

    /// The symbol with `id`.
    pub fn symbol(&self, id: SymbolId) -> &Symbol {
        &self.symbols[id.0 as usize]
    }

    /// Sections with their ids.
    pub fn sections(&self) -> impl Iterator<Item = (SectionId, &Section)> {
        self.sections
            .iter()
            .enumerate()
            .map(|(i, s)| (SectionId(i as u32), s))
    }

    /// Symbols with their ids.
    pub fn symbols(&self) -> impl Iterator<Item = (SymbolId, &Symbol)> {
        self.symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (SymbolId(i as u32), s))
    }

    /// The first section named `name`.
    pub fn section_by_name(&self, name: &str) -> Option<SectionId> {
        self.sections()
            .find(|(_, s)| s.name == name)
            .map(|(id, _)| id)
    }

    /// The function or object symbol that a section was made for with
    /// `-ffunction-sections`/`-fdata-sections`: the one at offset 0 that
    /// covers the section (largest size wins).
    pub fn primary_symbol(&self, id: SectionId) -> Option<SymbolId> {
        self.section(id)
            .symbols
            .iter()
            .copied()
            .filter(|s| self.symbol(*s).value == 0)
            .max_by_key(|s| self.symbol(*s).size)
    }

    /// Parses `data`; `path` only names the object in errors. The header
    /// is checked, then sections, symbols, relocations (attached to the
    /// section they patch) and groups are read, each bounded so that no
    /// later pass meets an offset outside its section.
    pub fn parse(path: &Path, data: &[u8]) -> Result<Object> {
        let header = check_header(path, data)?;
        let e = LE;
        let table = header
            .sections(e, data)
            .map_err(|err| malformed(path, format!("section table: {err}")))?;
        let mut sections = read_sections(path, data, &table)?;
        let symbols = read_symbols(path, data, &table, &sections)?;
        read_relocations(path, data, &table, &mut sections, &symbols)?;
        read_groups(path, &table, &mut sections)?;
        attach_symbols(&mut sections, &symbols);
        Ok(Object {
            path: path.to_path_buf(),
            sections,
            symbols,
            raw: data.to_vec(),
            entry_sizes: BTreeMap::new(),
        })
    }
}

/// The object's section table, as `object` reads it.
type Table<'data> = object::read::elf::SectionTable<'data, elf::FileHeader64<LE>>;

fn malformed(path: &Path, what: String) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        what,
    }
}

/// A 64-bit little-endian x86-64 relocatable object, or why not.
fn check_header<'data>(path: &Path, data: &'data [u8]) -> Result<&'data elf::FileHeader64<LE>> {
    let bad = |what: String| malformed(path, what);
    if data.starts_with(b"BC\xc0\xde") || data.starts_with(&[0xde, 0xc0, 0x17, 0x0b]) {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            what: "LLVM bitcode, not machine code (an LTO build): compile without -flto".into(),
        });
    }
    let header = elf::FileHeader64::<LE>::parse(data)
        .map_err(|e| bad(format!("not a 64-bit little-endian ELF file: {e}")))?;
    let e = LE;
    if header.e_machine(e) != elf::EM_X86_64 {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            what: format!("machine {} (only x86-64 is supported)", header.e_machine(e)),
        });
    }
    if header.e_type(e) != elf::ET_REL {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            what: format!(
                "ELF type {} (only relocatable objects, ET_REL, are compared)",
                header.e_type(e)
            ),
        });
    }
    Ok(header)
}

/// Every section with its bytes (none for NOBITS), sizes bounded.
fn read_sections(path: &Path, data: &[u8], table: &Table) -> Result<Vec<Section>> {
    let bad = |what: String| malformed(path, what);
    let e = LE;
    let mut sections = Vec::with_capacity(table.len());
    for (i, sh) in table.iter().enumerate() {
        let name = table
            .section_name(e, sh)
            .map_err(|err| bad(format!("name of section {i}: {err}")))?;
        let name = String::from_utf8_lossy(name).into_owned();
        let sh_type = sh.sh_type(e);
        if sh.sh_size(e) > MAX_EXTENT || sh.sh_entsize(e) > MAX_EXTENT {
            return Err(bad(format!(
                "section {i} ({name}) claims {} bytes in entries of {}, more than x86-64 can map",
                sh.sh_size(e),
                sh.sh_entsize(e)
            )));
        }
        let data = if sh_type == elf::SHT_NOBITS || sh_type == elf::SHT_NULL {
            Vec::new()
        } else {
            sh.data(e, data)
                .map_err(|_| bad(format!("section {i} ({name}) lies outside the file")))?
                .to_vec()
        };
        sections.push(Section {
            name,
            sh_type,
            sh_flags: sh.sh_flags(e),
            sh_addralign: sh.sh_addralign(e),
            sh_entsize: sh.sh_entsize(e),
            sh_link: sh.sh_link(e),
            sh_info: sh.sh_info(e),
            size: sh.sh_size(e),
            data,
            relocs: Vec::new(),
            rela_section: None,
            section_symbol: None,
            symbols: Vec::new(),
            group: None,
        });
    }

    Ok(sections)
}

/// Every symbol, each inside the section it names.
fn read_symbols(
    path: &Path,
    data: &[u8],
    table: &Table,
    sections: &[Section],
) -> Result<Vec<Symbol>> {
    let bad = |what: String| malformed(path, what);
    let e = LE;
    let symtab = table
        .symbols(e, data, elf::SHT_SYMTAB)
        .map_err(|err| bad(format!("symbol table: {err}")))?;
    let mut symbols = Vec::with_capacity(symtab.len());
    for (i, sym) in symtab.iter().enumerate() {
        let st_type = sym.st_type();
        let st_shndx = sym.st_shndx(e);
        let section = match symtab.symbol_section(e, sym, object::SymbolIndex(i)) {
            Ok(Some(idx)) if idx.0 < sections.len() => Some(SectionId(idx.0 as u32)),
            Ok(Some(idx)) => {
                return Err(bad(format!(
                    "symbol {i} refers to section {} of {}",
                    idx.0,
                    sections.len()
                )))
            }
            Ok(None) => None,
            Err(err) => return Err(bad(format!("symbol {i}: {err}"))),
        };
        let kind = match st_type {
            elf::STT_NOTYPE => SymKind::NoType,
            elf::STT_OBJECT => SymKind::Object,
            elf::STT_FUNC => SymKind::Func,
            elf::STT_SECTION => SymKind::Section,
            elf::STT_FILE => SymKind::File,
            other => SymKind::Other(other),
        };
        let name = if kind == SymKind::Section {
            section
                .map(|s| sections[s.0 as usize].name.clone())
                .unwrap_or_default()
        } else {
            let raw = sym
                .name(e, symtab.strings())
                .map_err(|err| bad(format!("name of symbol {i}: {err}")))?;
            String::from_utf8_lossy(raw).into_owned()
        };
        let (value, size) = (sym.st_value(e), sym.st_size(e));
        if let Some(sec) = section {
            let s = &sections[sec.0 as usize];
            if value.checked_add(size).is_none_or(|end| end > s.size) {
                return Err(bad(format!(
                    "symbol {i} ({name}) at {value:#x} size {size} lies outside section {} ({}, {} bytes)",
                    sec.0, s.name, s.size
                )));
            }
        }
        symbols.push(Symbol {
            name,
            kind,
            bind: sym.st_bind(),
            section,
            st_shndx,
            value,
            size,
        });
    }

    Ok(symbols)
}

/// Relocations, attached to the section they patch, sorted by offset,
/// each inside that section and naming a symbol that exists.
fn read_relocations(
    path: &Path,
    data: &[u8],
    table: &Table,
    sections: &mut [Section],
    symbols: &[Symbol],
) -> Result<()> {
    let bad = |what: String| malformed(path, what);
    let e = LE;
    // Relocations, attached to the section they patch.
    for (i, sh) in table.iter().enumerate() {
        let is_rela = match sh.sh_type(e) {
            elf::SHT_RELA => true,
            // x86-64 objects use RELA, but LLVM writes REL for its
            // call-graph profile (`.rel.llvm.call-graph-profile`): the
            // addend is then read from the patched bytes.
            elf::SHT_REL => false,
            _ => continue,
        };
        let target = sh.sh_info(e) as usize;
        if target == 0 || target >= sections.len() {
            return Err(bad(format!(
                "relocation section {} targets section {target}",
                sections[i].name
            )));
        }
        if matches!(sections[target].sh_type, elf::SHT_NOBITS | elf::SHT_NULL) {
            return Err(bad(format!(
                "relocation section {} patches section {target} ({}), which has no bytes (type {})",
                sections[i].name, sections[target].name, sections[target].sh_type
            )));
        }
        let raw_relocs: Vec<(u64, u32, u32, Option<i64>)> = if is_rela {
            let (relas, _link) = sh
                .rela(e, data)
                .map_err(|err| bad(format!("relocation section {}: {err}", sections[i].name)))?
                .ok_or_else(|| bad(format!("relocation section {} is empty", sections[i].name)))?;
            relas
                .iter()
                .map(|r| {
                    (
                        r.r_offset(e),
                        r.r_type(e, false),
                        r.r_sym(e, false),
                        Some(r.r_addend(e)),
                    )
                })
                .collect()
        } else {
            let (rels, _link) = sh
                .rel(e, data)
                .map_err(|err| bad(format!("relocation section {}: {err}", sections[i].name)))?
                .ok_or_else(|| bad(format!("relocation section {} is empty", sections[i].name)))?;
            rels.iter()
                .map(|r| (r.r_offset.get(e), r.r_type(e), r.r_sym(e), None))
                .collect()
        };
        let size = sections[target].size;
        let mut relocs = Vec::with_capacity(raw_relocs.len());
        for (r_offset, r_type, r_sym, r_addend) in raw_relocs {
            let sym = r_sym as usize;
            if sym >= symbols.len() {
                return Err(bad(format!(
                    "relocation in {} refers to symbol {sym} of {}",
                    sections[i].name,
                    symbols.len()
                )));
            }
            let mut reloc = Reloc {
                offset: r_offset,
                r_type,
                symbol: SymbolId(sym as u32),
                addend: r_addend.unwrap_or(0),
                tail: None,
            };
            if r_addend.is_none() {
                reloc.addend =
                    implicit_addend(&sections[target].data, &reloc).ok_or_else(|| {
                        bad(format!(
                            "REL relocation at {:#x} in {} (type {}) has no readable addend",
                            reloc.offset, sections[i].name, reloc.r_type
                        ))
                    })?;
            }
            if reloc.addend.unsigned_abs() > MAX_EXTENT {
                return Err(bad(format!(
                    "relocation at {:#x} in {} has addend {:#x}, beyond any x86-64 address",
                    reloc.offset, sections[i].name, reloc.addend
                )));
            }
            let end = reloc.offset.checked_add(reloc.width().unwrap_or(0));
            if end.is_none_or(|end| end > size) {
                return Err(bad(format!(
                    "relocation at {:#x} in {} runs past the section's {size} bytes",
                    reloc.offset, sections[i].name
                )));
            }
            relocs.push(reloc);
        }
        relocs.sort_by_key(|r| r.offset);
        if sections[target].is_text() {
            for r in &mut relocs {
                if matches!(r.r_type, elf::R_X86_64_PC32 | elf::R_X86_64_PLT32) {
                    r.tail = usize::try_from(r.offset)
                        .ok()
                        .and_then(|f| crate::insn::rip_field_tail(&sections[target].data, f));
                }
            }
        }
        sections[target].relocs = relocs;
        sections[target].rela_section = Some(SectionId(i as u32));
    }

    Ok(())
}

/// Groups (COMDAT and friends): each member knows its group.
fn read_groups(path: &Path, table: &Table, sections: &mut [Section]) -> Result<()> {
    let bad = |what: String| malformed(path, what);
    let e = LE;
    // Groups (COMDAT and friends).
    for (i, sh) in table.iter().enumerate() {
        if sh.sh_type(e) != elf::SHT_GROUP {
            continue;
        }
        let body = sections[i].data.clone();
        for chunk in body.chunks_exact(4).skip(1) {
            let member = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as usize;
            if member >= sections.len() {
                return Err(bad(format!(
                    "group {} lists section {member}",
                    sections[i].name
                )));
            }
            sections[member].group = Some(SectionId(i as u32));
        }
    }

    Ok(())
}

/// Each section's symbols (by address) and section symbol.
fn attach_symbols(sections: &mut [Section], symbols: &[Symbol]) {
    for (i, s) in symbols.iter().enumerate() {
        if let Some(sec) = s.section {
            let sec = &mut sections[sec.0 as usize];
            match s.kind {
                SymKind::Section => {
                    sec.section_symbol.get_or_insert(SymbolId(i as u32));
                }
                SymKind::Func | SymKind::Object | SymKind::NoType | SymKind::Other(_) => {
                    sec.symbols.push(SymbolId(i as u32));
                }
                SymKind::File => {}
            }
        }
    }
    for sec in sections.iter_mut() {
        sec.symbols
            .sort_by_key(|s| (symbols[s.0 as usize].value, s.0));
    }
}

/// The addend a REL relocation keeps in the bytes it patches: the field's
/// little-endian value, sign-extended. `None` for a type whose width is
/// unknown or a field outside the section.
fn implicit_addend(data: &[u8], r: &Reloc) -> Option<i64> {
    let at = usize::try_from(r.offset).ok()?;
    match r.width()? {
        0 => Some(0),
        4 => Some(i64::from(i32::from_le_bytes(
            data.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))),
        8 => Some(i64::from_le_bytes(
            data.get(at..at.checked_add(8)?)?.try_into().ok()?,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(offset: u64, r_type: u32) -> Reloc {
        Reloc {
            offset,
            r_type,
            symbol: SymbolId(0),
            addend: 0,
            tail: None,
        }
    }

    #[test]
    fn rel_addends_come_from_the_patched_bytes() {
        let data = [0xfc, 0xff, 0xff, 0xff, 8, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            implicit_addend(&data, &rel(0, elf::R_X86_64_PC32)),
            Some(-4)
        );
        assert_eq!(implicit_addend(&data, &rel(4, elf::R_X86_64_64)), Some(8));
        assert_eq!(implicit_addend(&data, &rel(9, elf::R_X86_64_NONE)), Some(0));
        // Outside the section, or a type of unknown width: no addend.
        assert_eq!(implicit_addend(&data, &rel(10, elf::R_X86_64_32)), None);
        assert_eq!(
            implicit_addend(&data, &rel(u64::MAX, elf::R_X86_64_64)),
            None
        );
        assert_eq!(implicit_addend(&data, &rel(0, elf::R_X86_64_TPOFF32)), None);
    }

    #[test]
    fn other_toolchains_section_types_are_known_to_be_unreadable_by_the_builder() {
        assert!(builder_cannot_read(0x6fff_4c03)); // SHT_LLVM_ADDRSIG
        assert!(builder_cannot_read(0x6fff_4c08)); // SHT_LLVM_BB_ADDR_MAP
        assert!(builder_cannot_read(0x6fff_4c09)); // SHT_LLVM_CALL_GRAPH_PROFILE
        assert!(!builder_cannot_read(elf::SHT_PROGBITS));
        assert!(!builder_cannot_read(elf::SHT_LLVM_DEPENDENT_LIBRARIES));
        assert!(!builder_cannot_read(elf::SHT_GROUP));
    }
}
