//! Run-pre matching (the idea of Ksplice): before a patch is trusted, each
//! function it replaces, as compiled from the original source, must be the
//! code the kernel runs — byte for byte, with the fields relocations fill
//! in masked. A wrong source version, configuration or compiler shows up
//! here as a named function that differs, instead of as a patch that
//! replaces code it was never compiled against.

use std::path::Path;

use anyhow::{bail, Context};
use elfdiff::read::{Object, SymKind};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, ReadCache, ReadRef};

/// The result of matching one function.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Matched {
    /// Function name.
    pub function: String,
    /// Bytes compared.
    pub bytes: u64,
    /// Bytes masked because relocations fill them.
    pub masked: u64,
}

/// Bytes of a function with relocated fields marked.
struct Code {
    bytes: Vec<u8>,
    mask: Vec<bool>,
}

/// A compiled function of `obj`: its bytes, and which bytes relocations
/// fill in. `value`, when given, picks among same-named functions (a
/// module links several objects' statics: btrfs.ko has two
/// `fill_inode_item`), the one at that symbol value.
fn compiled(obj: &Object, name: &str, value: Option<u64>) -> anyhow::Result<Code> {
    let mut candidates = obj.symbols.iter().filter(|s| {
        s.name == name
            && s.kind == SymKind::Func
            && s.section.is_some()
            && value.is_none_or(|v| s.value == v)
    });
    let sym = candidates.next().with_context(|| match value {
        Some(v) => format!("{name} at {v:#x} is not defined in {}", obj.path.display()),
        None => format!("{name} is not defined in {}", obj.path.display()),
    })?;
    if value.is_some() && candidates.next().is_some() {
        bail!(
            "{}: several functions {name} at {:#x}: cannot tell which one the patch replaces",
            obj.path.display(),
            sym.value
        );
    }
    let sec = obj.section(sym.section.expect("checked"));
    let start = sym.value as usize;
    let size = if sym.size > 0 {
        sym.size as usize
    } else {
        sec.data.len() - start
    };
    let bytes = sec
        .data
        .get(start..start + size)
        .with_context(|| format!("{name}: symbol outside its section"))?
        .to_vec();
    let mut mask = vec![false; size];
    for r in &sec.relocs {
        let w = r.width().unwrap_or(4) as usize;
        for k in 0..w {
            let at = r.offset as usize + k;
            if at >= start && at < start + size {
                mask[at - start] = true;
            }
        }
    }
    Ok(Code { bytes, mask })
}

/// Compares two codes; returns the first differing offset.
fn first_difference(a: &Code, b: &Code) -> Option<usize> {
    if a.bytes.len() != b.bytes.len() {
        return Some(a.bytes.len().min(b.bytes.len()));
    }
    (0..a.bytes.len()).find(|&i| !a.mask[i] && !b.mask[i] && a.bytes[i] != b.bytes[i])
}

fn matched(name: &str, code: &Code) -> Matched {
    Matched {
        function: name.to_string(),
        bytes: code.bytes.len() as u64,
        masked: code.mask.iter().filter(|m| **m).count() as u64,
    }
}

/// Reads code at link-time addresses from an unstripped vmlinux without
/// loading the whole file.
pub struct Vmlinux<'a> {
    data: ReadCache<std::fs::File>,
    /// (vaddr, file offset, file size) of each PT_LOAD.
    loads: Vec<(u64, u64, u64)>,
    path: &'a Path,
}

impl<'a> Vmlinux<'a> {
    /// Opens a vmlinux.
    pub fn open(path: &'a Path) -> anyhow::Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let data = ReadCache::new(file);
        let loads = {
            let elf = ElfFile64::<Endianness, _>::parse(&data)
                .with_context(|| format!("{}: not an ELF64 file", path.display()))?;
            let e = elf.endian();
            elf.elf_header()
                .program_headers(e, &data)?
                .iter()
                .filter(|p| p.p_type(e) == object::elf::PT_LOAD)
                .map(|p| (p.p_vaddr(e), p.p_offset(e), p.p_filesz(e)))
                .collect()
        };
        Ok(Vmlinux { data, loads, path })
    }

    fn read(&self, address: u64, len: u64) -> anyhow::Result<&[u8]> {
        let (vaddr, off, _) = self
            .loads
            .iter()
            .find(|(v, _, sz)| address >= *v && address + len <= v + sz)
            .with_context(|| format!("{}: no segment holds {address:#x}", self.path.display()))?;
        self.data
            .read_bytes_at(off + (address - vaddr), len)
            .map_err(|()| anyhow::anyhow!("{}: short read at {address:#x}", self.path.display()))
    }
}

/// Matches functions of `orig` against vmlinux, at the addresses the
/// kernel's symbol table gives: (name, address).
pub fn match_vmlinux(
    orig: &Object,
    functions: &[(String, u64)],
    vmlinux: &Vmlinux,
) -> anyhow::Result<Vec<Matched>> {
    let mut out = Vec::new();
    for (f, addr) in functions {
        let (f, addr) = (f.as_str(), *addr);
        let ours = compiled(orig, f, None)?;
        let theirs = Code {
            bytes: vmlinux.read(addr, ours.bytes.len() as u64)?.to_vec(),
            mask: vec![false; ours.bytes.len()],
        };
        if let Some(at) = first_difference(&ours, &theirs) {
            bail!(
                "{f} compiled from this source differs from the running kernel's at +{at:#x} \
                 (of {} bytes): wrong source version, configuration or compiler; refusing to build",
                ours.bytes.len()
            );
        }
        out.push(matched(f, &ours));
    }
    Ok(out)
}

/// Matches functions of `orig` against the module as the distribution
/// shipped it (relocated fields masked on both sides), each at the symbol
/// value the module's symbol table gives: (name, value).
pub fn match_module(
    orig: &Object,
    functions: &[(String, u64)],
    ko: &Object,
) -> anyhow::Result<Vec<Matched>> {
    let mut out = Vec::new();
    for (f, value) in functions {
        let ours = compiled(orig, f, None)?;
        let theirs = compiled(ko, f, Some(*value))?;
        if let Some(at) = first_difference(&ours, &theirs) {
            bail!(
                "{f} compiled from this source differs from {}'s at +{at:#x}: wrong source \
                 version, configuration or compiler; refusing to build",
                ko.path.display()
            );
        }
        out.push(matched(f, &ours));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_only_relocated_bytes() {
        let a = Code {
            bytes: vec![0xe8, 1, 2, 3, 4, 0xc3],
            mask: vec![false, true, true, true, true, false],
        };
        let mut b = Code {
            bytes: vec![0xe8, 9, 9, 9, 9, 0xc3],
            mask: vec![false; 6],
        };
        assert_eq!(first_difference(&a, &b), None);
        b.bytes[5] = 0xcc;
        assert_eq!(first_difference(&a, &b), Some(5));
        b.bytes.push(0);
        b.mask.push(false);
        assert_eq!(first_difference(&a, &b), Some(6));
    }
}
