//! The running kernel's symbols, for `sympos`. The kernel numbers
//! same-named symbols by their order in kallsyms (address order for
//! vmlinux), 1-based, with 0 meaning "unique". Which of several static
//! functions a patch means is decided by the object file it was compiled
//! from: the unstripped vmlinux's symbol table groups local symbols after
//! an `STT_FILE` symbol per object, and the block whose locals match the
//! compiled object's locals is that object (a basename alone is ambiguous:
//! the kernel has dozens of `core.c`).

use std::collections::HashMap;
use std::path::Path;

use object::read::elf::{ElfFile64, FileHeader, SectionHeader, Sym};
use object::{Endianness, ReadCache};

use crate::{Error, Result};

/// Index of an object-file block in [`KernelSymbols`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockId(pub u32);

/// One kernel symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSymbol {
    /// Name.
    pub name: String,
    /// Link-time address.
    pub address: u64,
    /// Local to its object file.
    pub local: bool,
    /// The object-file block of a local symbol (vmlinux tables only).
    pub block: Option<BlockId>,
}

/// The symbols of a kernel, address-ordered.
#[derive(Debug, Clone, Default)]
pub struct KernelSymbols {
    syms: Vec<KernelSymbol>,
    by_name: HashMap<String, Vec<u32>>,
    /// (source basename, indices of its local symbols).
    blocks: Vec<(String, Vec<u32>)>,
}

impl KernelSymbols {
    fn index(
        mut sorted: Vec<KernelSymbol>,
        blocks_names: Vec<String>,
        address_order: bool,
    ) -> KernelSymbols {
        // Stable: symbols at one address keep their table order. Sorting
        // (address, index) keys and moving each symbol once is several
        // times cheaper than a stable sort of the symbols themselves.
        if address_order {
            let mut keys: Vec<(u64, u32)> = sorted
                .iter()
                .enumerate()
                .map(|(i, s)| (s.address, i as u32))
                .collect();
            keys.sort_unstable();
            let mut slots: Vec<Option<KernelSymbol>> = sorted.into_iter().map(Some).collect();
            sorted = keys
                .iter()
                .filter_map(|&(_, i)| slots[i as usize].take())
                .collect();
        }
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::with_capacity(sorted.len());
        let mut blocks: Vec<(String, Vec<u32>)> =
            blocks_names.into_iter().map(|n| (n, Vec::new())).collect();
        for (i, s) in sorted.iter().enumerate() {
            by_name.entry(s.name.clone()).or_default().push(i as u32);
            if let Some(b) = s.block {
                blocks[b.0 as usize].1.push(i as u32);
            }
        }
        KernelSymbols {
            syms: sorted,
            by_name,
            blocks,
        }
    }

    /// Reads a System.map or `/proc/kallsyms` text (no object-file blocks:
    /// duplicates of a name cannot be told apart).
    pub fn from_system_map(path: &Path, text: &str) -> Result<KernelSymbols> {
        let syms = kernel::kallsyms::parse(text)
            .map_err(|what| Error::Malformed {
                path: path.to_path_buf(),
                what,
            })?
            .into_iter()
            // `[module]` entries of kallsyms: not vmlinux.
            .filter(|s| s.module.is_none())
            .map(|s| KernelSymbol {
                local: s.is_local(),
                name: s.name,
                address: s.address,
                block: None,
            })
            .collect();
        Ok(Self::index(syms, Vec::new(), true))
    }

    /// Reads the symbol table of an unstripped vmlinux (the `-dbg`
    /// package's), keeping function, object and untyped symbols and the
    /// object-file grouping of locals.
    pub fn from_vmlinux(path: &Path) -> Result<KernelSymbols> {
        Self::from_elf(path, true)
    }

    /// Reads the symbol table of a loadable module (`.ko`). A module's
    /// kallsyms keep its symbol table's order, so `sympos` counts in that
    /// order; addresses are section offsets.
    pub fn from_module(path: &Path) -> Result<KernelSymbols> {
        Self::from_elf(path, false)
    }

    /// The symbol `sympos` selects — the only one of that name, or the
    /// one `block` defines — with its `sympos`.
    pub fn find(&self, name: &str, block: Option<BlockId>) -> Result<(u32, &KernelSymbol)> {
        let pos = self.sympos(name, block)?;
        let list = &self.by_name[name];
        let i = if pos == 0 { 0 } else { pos as usize - 1 };
        Ok((pos, &self.syms[list[i] as usize]))
    }

    /// Whether the table has a symbol of that name.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn from_elf(path: &Path, address_order: bool) -> Result<KernelSymbols> {
        let bad = |what: String| Error::Malformed {
            path: path.to_path_buf(),
            what,
        };
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let data = ReadCache::new(file);
        let elf =
            ElfFile64::<Endianness, _>::parse(&data).map_err(|e| bad(format!("not ELF64: {e}")))?;
        let e = elf.endian();
        let sections = elf
            .elf_header()
            .sections(e, &data)
            .map_err(|err| bad(err.to_string()))?;
        let symtab = sections
            .symbols(e, &data, object::elf::SHT_SYMTAB)
            .map_err(|err| bad(err.to_string()))?;
        if symtab.is_empty() {
            return Err(bad("no symbol table (a stripped vmlinux?)".into()));
        }
        // The string table in one read: names looked up through the file
        // cache one by one cost a search and an allocation each.
        let strtab = sections
            .section(symtab.string_section())
            .and_then(|s| s.data(e, &data))
            .map_err(|err| bad(format!("string table: {err}")))?;
        let strings = object::StringTable::new(strtab, 0, strtab.len() as u64);
        let mut syms = Vec::with_capacity(symtab.len());
        let mut blocks = Vec::new();
        let mut current: Option<BlockId> = None;
        for sym in symtab.iter() {
            let kind = sym.st_type();
            let name = sym.name(e, strings).map_err(|err| bad(err.to_string()))?;
            let name = String::from_utf8_lossy(name).into_owned();
            if kind == object::elf::STT_FILE {
                let base = name.rsplit('/').next().unwrap_or(&name).to_string();
                current = Some(BlockId(blocks.len() as u32));
                blocks.push(base);
                continue;
            }
            if !matches!(
                kind,
                object::elf::STT_FUNC | object::elf::STT_OBJECT | object::elf::STT_NOTYPE
            ) || sym.st_shndx(e) == object::elf::SHN_UNDEF
                || name.is_empty()
            {
                continue;
            }
            let local = sym.st_bind() == object::elf::STB_LOCAL;
            syms.push(KernelSymbol {
                name,
                address: sym.st_value(e),
                local,
                block: if local { current } else { None },
            });
        }
        Ok(Self::index(syms, blocks, address_order))
    }

    /// Whether the table groups locals by object file (`STT_FILE`
    /// symbols): a stripped module's does not.
    pub fn has_object_blocks(&self) -> bool {
        !self.blocks.is_empty()
    }

    /// Whether `other` holds the same symbols in the same order (names,
    /// addresses, binding): a module's debug copy and the module itself,
    /// so that positions and `sympos` counted in one hold in the other.
    pub fn same_symbols(&self, other: &KernelSymbols) -> bool {
        self.syms.len() == other.syms.len()
            && self
                .syms
                .iter()
                .zip(&other.syms)
                .all(|(a, b)| a.name == b.name && a.address == b.address && a.local == b.local)
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// All symbols named `name`, in kallsyms order.
    pub fn named(&self, name: &str) -> impl Iterator<Item = &KernelSymbol> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| &self.syms[i as usize])
    }

    /// The object-file block compiled from a source file with basename
    /// `file` whose locals include `locals` (the compiled object's local
    /// functions and objects).
    pub fn find_object(&self, file: &str, locals: &[&str]) -> Result<BlockId> {
        let mut best: Vec<(usize, BlockId)> = Vec::new();
        for (i, (name, members)) in self.blocks.iter().enumerate() {
            if name != file {
                continue;
            }
            let have: std::collections::HashSet<&str> = members
                .iter()
                .map(|&m| self.syms[m as usize].name.as_str())
                .collect();
            let score = locals.iter().filter(|l| have.contains(*l)).count();
            best.push((score, BlockId(i as u32)));
        }
        best.sort_by_key(|b| std::cmp::Reverse(b.0));
        match best.as_slice() {
            [(s, id), rest @ ..] if *s > 0 && rest.first().is_none_or(|(t, _)| t < s) => Ok(*id),
            [(s, _), (t, _), ..] if s == t && *s > 0 => Err(Error::Ambiguous {
                name: file.to_string(),
                count: best.iter().filter(|(x, _)| x == s).count(),
            }),
            _ => Err(Error::NoSuchObject {
                file: file.to_string(),
                locals: locals.join(", "),
            }),
        }
    }

    /// A copy of a table without `STT_FILE` symbols (a stripped module)
    /// in which the locals of the object compiled from `file` with the
    /// statics `locals` form a block, found by where they sit: `ld -r`
    /// writes each input object's locals together, in link order, and
    /// stripping keeps that order. The block is the longest run of
    /// consecutive locals that are all among `locals`, without a name twice
    /// (a namesake belongs to a neighbouring object); it must hold more
    /// than half of them and be unrivalled (no other run as long), or the
    /// object is not told apart and nothing is guessed.
    pub fn with_object_block(&self, file: &str, locals: &[&str]) -> Result<KernelSymbols> {
        let want: std::collections::HashSet<&str> = locals.iter().copied().collect();
        // The candidates: within each run of consecutive locals that are
        // all among `locals`, the longest windows in which no name
        // repeats. One object defines a name once, so a repeated name is
        // a neighbouring object's static of the same name (a `__func__.2`
        // just before, a one-shot flag that several objects have): the
        // window drops it. Assembler labels a module keeps (`.LC16`, a
        // string constant some inline asm named) sit among an object's
        // statics but are no static of the C file: they neither join nor
        // end a run, and do not count.
        let mut runs: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        let mut window: std::collections::VecDeque<(usize, &str)> = Default::default();
        let close = |window: &std::collections::VecDeque<(usize, &str)>,
                     runs: &mut Vec<(usize, std::ops::Range<usize>)>| {
            if let (Some(first), Some(last)) = (window.front(), window.back()) {
                runs.push((window.len(), first.0..last.0 + 1));
            }
        };
        for (i, s) in self.syms.iter().enumerate() {
            if s.local && s.name.starts_with('.') {
                continue;
            }
            let member = s.local && want.contains(s.name.as_str());
            if !member {
                close(&window, &mut runs);
                window.clear();
                continue;
            }
            if window.iter().any(|(_, n)| *n == s.name.as_str()) {
                // The window as it stands is one candidate; the next one
                // starts after the earlier namesake.
                close(&window, &mut runs);
                while let Some((_, n)) = window.pop_front() {
                    if n == s.name.as_str() {
                        break;
                    }
                }
            }
            window.push_back((i, s.name.as_str()));
        }
        close(&window, &mut runs);
        runs.sort_by_key(|r| std::cmp::Reverse(r.0));
        let not_found = || Error::NoSuchObject {
            file: file.to_string(),
            locals: locals.join(", "),
        };
        let range = match runs.as_slice() {
            [(b, _), ..] if b * 2 <= want.len() => return Err(not_found()),
            [(b, r), rest @ ..] if rest.first().is_none_or(|(t, _)| t < b) => r.clone(),
            [(b, _), ..] => {
                return Err(Error::Ambiguous {
                    name: file.to_string(),
                    count: runs.iter().filter(|(x, _)| x == b).count(),
                })
            }
            [] => return Err(not_found()),
        };
        let mut out = self.clone();
        let id = BlockId(out.blocks.len() as u32);
        out.blocks
            .push((file.to_string(), range.clone().map(|i| i as u32).collect()));
        for s in &mut out.syms[range] {
            s.block = Some(id);
        }
        Ok(out)
    }

    /// The source basename of a block.
    pub fn block_file(&self, b: BlockId) -> &str {
        &self.blocks[b.0 as usize].0
    }

    /// `sympos` of `name`: 0 when the kernel has one symbol of that name,
    /// else its 1-based position among them, the one defined by `block`.
    pub fn sympos(&self, name: &str, block: Option<BlockId>) -> Result<u32> {
        let list = self
            .by_name
            .get(name)
            .ok_or_else(|| Error::NoSuchSymbol(name.to_string()))?;
        if list.len() == 1 {
            let s = &self.syms[list[0] as usize];
            if let (Some(b), true) = (block, s.local) {
                if s.block != Some(b) {
                    return Err(Error::NotInObject {
                        name: name.to_string(),
                        file: self.block_file(b).to_string(),
                    });
                }
            }
            return Ok(0);
        }
        let Some(b) = block else {
            return Err(Error::Ambiguous {
                name: name.to_string(),
                count: list.len(),
            });
        };
        list.iter()
            .position(|&i| self.syms[i as usize].block == Some(b))
            .map(|p| p as u32 + 1)
            .ok_or_else(|| Error::NotInObject {
                name: name.to_string(),
                file: self.block_file(b).to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_map_positions() {
        let text = "ffffffff81000010 t dup\nffffffff81000000 T uniq\nffffffff81000020 t dup\nffffffffc0000000 t dup\t[mod]\n";
        let k = KernelSymbols::from_system_map(Path::new("m"), text).unwrap();
        assert_eq!(k.len(), 3);
        assert_eq!(k.sympos("uniq", None).unwrap(), 0);
        assert!(matches!(
            k.sympos("dup", None),
            Err(Error::Ambiguous { count: 2, .. })
        ));
        assert!(matches!(
            k.sympos("none", None),
            Err(Error::NoSuchSymbol(_))
        ));
        assert!(KernelSymbols::from_system_map(Path::new("m"), "zz t x\n").is_err());
    }

    #[test]
    fn an_assembler_label_inside_an_objects_statics_does_not_split_its_block() {
        // dm-mod.ko: dm-ioctl.o's statics with a `.LC16` among them, then
        // another object's `dup`; the object's own `dup` is the first.
        let text = "0 t dup\n1 t a\n2 t b\n3 r .LC16\n4 t c\n5 t d\n6 t e\n7 t x\n8 t dup\n";
        let k = KernelSymbols::from_system_map(Path::new("m"), text).unwrap();
        let with = k
            .with_object_block("f.c", &["dup", "a", "b", "c", "d", "e"])
            .unwrap();
        let b = with
            .find_object("f.c", &["dup", "a", "b", "c", "d", "e"])
            .unwrap();
        assert_eq!(with.sympos("dup", Some(b)).unwrap(), 1);
        assert_eq!(with.sympos("a", Some(b)).unwrap(), 0);
    }
}
