//! Entry sizes of special sections known from outside the object: the
//! kernel's own type information (the `.BTF` section of its vmlinux, which
//! names `struct paravirt_patch_site`, `struct bug_entry`, …) or the
//! command line (`--entry-size SECTION=N`). An object holding a single
//! entry of a table, or whose last entry lacks the trailing padding the
//! array stride has (the 4.x `.parainstructions`), cannot tell its stride;
//! the kernel it was built for can.

use std::collections::BTreeMap;
use std::path::Path;

use object::read::elf::{FileHeader, SectionHeader};
use object::{elf, LittleEndian as LE};

/// Special sections whose entries are one C structure of the kernel, and
/// that structure's name (BTF knows it by that name).
pub const TABLE_STRUCTS: &[(&str, &str)] = &[
    ("__bug_table", "bug_entry"),
    ("__ex_table", "exception_table_entry"),
    (".altinstructions", "alt_instr"),
    ("__jump_table", "jump_entry"),
    (".static_call_sites", "static_call_site"),
    (".parainstructions", "paravirt_patch_site"),
    ("__dyndbg", "_ddebug"),
    ("__verbose", "_ddebug"),
];

/// Why entry sizes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The file could not be read.
    #[error("failed to read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file or its `.BTF` section is not what it should be.
    #[error("{path}: {what}")]
    Malformed {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        what: String,
    },
    /// An `--entry-size` argument that is not `SECTION=N` with N > 0.
    #[error("entry size {0:?}: expected SECTION=BYTES, 1 to 4096, e.g. .parainstructions=16")]
    Argument(String),
}

/// Largest entry size taken from outside the object: no kernel table has
/// entries near it (`struct _ddebug`, the largest, is 56 bytes), and the
/// emit pass pads a short last entry up to it.
pub const MAX_ENTRY_SIZE: u64 = 4096;

/// Parses one `--entry-size` argument, `SECTION=N`.
pub fn parse_entry_size(arg: &str) -> Result<(String, u64), LayoutError> {
    let bad = || LayoutError::Argument(arg.to_string());
    let (name, n) = arg.split_once('=').ok_or_else(bad)?;
    let n: u64 = n.trim().parse().map_err(|_| bad())?;
    if name.is_empty() || n == 0 || n > MAX_ENTRY_SIZE {
        return Err(bad());
    }
    Ok((name.to_string(), n))
}

/// The sizes of the [`TABLE_STRUCTS`] in the `.BTF` section of the ELF file
/// at `path` (a kernel's vmlinux, or any object `pahole -J` encoded):
/// section name → size. Structures the BTF does not hold are left out; a
/// file without `.BTF` bytes gives an empty map. Only the section headers and
/// the `.BTF` section are read, not the (large) rest of the file.
pub fn from_btf_file(path: &Path) -> Result<BTreeMap<String, u64>, LayoutError> {
    let io = |source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bad = |what: String| LayoutError::Malformed {
        path: path.to_path_buf(),
        what,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let cache = object::ReadCache::new(file);
    let header = elf::FileHeader64::<LE>::parse(&cache)
        .map_err(|e| bad(format!("not a 64-bit little-endian ELF file: {e}")))?;
    let sections = header
        .sections(LE, &cache)
        .map_err(|e| bad(format!("section table: {e}")))?;
    // A debug-only copy of vmlinux (`objcopy --only-keep-debug`) keeps the
    // header of `.BTF` but not its bytes: nothing known then.
    let Some((_, btf)) = sections
        .section_by_name(LE, b".BTF")
        .filter(|(_, s)| s.sh_type(LE) != elf::SHT_NOBITS)
    else {
        return Ok(BTreeMap::new());
    };
    let data = btf
        .data(LE, &cache)
        .map_err(|e| bad(format!(".BTF: {e}")))?;
    let sizes = struct_sizes(data).map_err(|what| bad(format!(".BTF: {what}")))?;
    Ok(TABLE_STRUCTS
        .iter()
        .filter_map(|(section, st)| Some((section.to_string(), *sizes.get(*st)?)))
        .collect())
}

/// Sizes of the named structures of raw BTF data (`struct btf_header`,
/// then the type and string sections), for the names in
/// [`TABLE_STRUCTS`]. The first structure of a name wins.
pub fn struct_sizes(data: &[u8]) -> Result<BTreeMap<&'static str, u64>, String> {
    let u32_at = |at: usize| -> Result<u32, String> {
        data.get(at..at.saturating_add(4))
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("truncated at {at:#x}"))
    };
    let magic = data.get(..2).ok_or("truncated header")?;
    if magic != [0x9f, 0xeb] {
        return Err("not little-endian BTF (magic 0xeb9f)".into());
    }
    let hdr_len = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
    let section = |off: usize, len: usize| {
        let start = hdr_len.checked_add(off)?;
        data.get(start..start.checked_add(len)?)
    };
    let types = section(type_off, type_len).ok_or("type section outside the data")?;
    let strings = section(str_off, str_len).ok_or("string section outside the data")?;
    let name = |off: u32| -> &[u8] {
        let rest = strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    };
    let wanted: Vec<&'static str> = TABLE_STRUCTS.iter().map(|(_, s)| *s).collect();
    let mut out = BTreeMap::new();
    let mut at = 0usize;
    while at < types.len() {
        let word = |i: usize| -> Result<u32, String> {
            let p = at + 4 * i;
            types
                .get(p..p + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| format!("type at {at:#x} truncated"))
        };
        let (name_off, info, size) = (word(0)?, word(1)?, word(2)?);
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        // Bytes following the 12-byte `struct btf_type`, by kind.
        let extra = match kind {
            1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
            3 => 12,                      // ARRAY
            4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
            6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
            2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
            other => return Err(format!("type at {at:#x} has unknown kind {other}")),
        };
        if kind == 4 {
            let n = name(name_off);
            if let Some(w) = wanted.iter().find(|w| w.as_bytes() == n) {
                out.entry(*w).or_insert(u64::from(size));
            }
        }
        at = at
            .checked_add(12 + extra)
            .ok_or_else(|| format!("type at {at:#x} overflows"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_size_arguments() {
        assert_eq!(
            parse_entry_size(".parainstructions=16").unwrap(),
            (".parainstructions".to_string(), 16)
        );
        for bad in ["", "=16", ".x", ".x=0", ".x=-1", ".x=sixteen", ".x=4097"] {
            assert!(parse_entry_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn btf_that_is_not_btf_is_an_error_not_a_panic() {
        assert!(struct_sizes(&[]).is_err());
        assert!(struct_sizes(&[0x9f, 0xeb, 1, 0]).is_err());
        let mut h = vec![0x9f, 0xeb, 1, 0];
        for v in [24u32, 0, 12, 12, 4] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        // One STRUCT claiming 1000 members that are not there.
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&((4u32 << 24) | 1000).to_le_bytes());
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        assert!(struct_sizes(&h).is_ok());
    }
}
