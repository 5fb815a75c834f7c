//! ELF note parsing for the kernel's notes: `/sys/kernel/notes` of a running
//! kernel and the `.notes` section of a vmlinux share one format. Only the
//! GNU build-id is interpreted; every other note is skipped by its declared
//! sizes, and any size that points outside the buffer is an error rather
//! than a panic, since the bytes may come from an untrusted image.

use std::fmt;

/// `NT_GNU_BUILD_ID` from elf.h.
const NT_GNU_BUILD_ID: u32 = 3;

/// A GNU build-id: the linker's hash over the final image. Two kernels
/// with the same release string but different code have different ids.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BuildId(Vec<u8>);

impl BuildId {
    /// Wraps raw build-id bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        BuildId(bytes.to_vec())
    }

    /// The raw bytes (usually 20, a SHA-1).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BuildId({self})")
    }
}

impl std::str::FromStr for BuildId {
    type Err = NoteError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s.trim()).map_err(|_| NoteError::BadHex(s.to_string()))?;
        if bytes.is_empty() {
            return Err(NoteError::BadHex(s.to_string()));
        }
        Ok(BuildId(bytes))
    }
}

impl TryFrom<String> for BuildId {
    type Error = NoteError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<BuildId> for String {
    fn from(id: BuildId) -> String {
        id.to_string()
    }
}

/// Why a notes buffer could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    /// A note header or body runs past the end of the buffer.
    #[error("truncated ELF note at offset {offset}: needs {needed} bytes, {available} left")]
    Truncated {
        /// Offset of the note that is cut short.
        offset: usize,
        /// Bytes the note declares.
        needed: usize,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// The notes parse, but none is a GNU build-id.
    #[error("no GNU build-id note among {count} notes")]
    NoBuildId {
        /// How many notes were seen.
        count: usize,
    },
    /// A textual build-id is not hexadecimal.
    #[error("build-id {0:?} is not a hexadecimal string")]
    BadHex(String),
}

/// One ELF note, borrowed from the buffer it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note<'a> {
    /// Owner name without its terminating NUL (`GNU`, `Linux`, `Xen`).
    pub name: &'a [u8],
    /// Note type, meaningful per owner.
    pub n_type: u32,
    /// Descriptor bytes.
    pub desc: &'a [u8],
}

/// Iterates the notes of a buffer of 4-byte aligned little-endian ELF notes
/// (the layout of x86-64 kernels' notes).
pub fn parse(buf: &[u8]) -> Result<Vec<Note<'_>>, NoteError> {
    let mut notes = Vec::new();
    let mut off = 0usize;
    let align4 = |n: usize| n.checked_add(3).map(|v| v & !3);
    while off < buf.len() {
        let rest = &buf[off..];
        // Trailing padding shorter than a header is tolerated: sections are
        // often padded to their alignment.
        if rest.len() < 12 {
            if rest.iter().all(|&b| b == 0) {
                break;
            }
            return Err(NoteError::Truncated {
                offset: off,
                needed: 12,
                available: rest.len(),
            });
        }
        let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        let namesz = word(0) as usize;
        let descsz = word(4) as usize;
        let n_type = word(8);
        let name_len = align4(namesz);
        let desc_len = align4(descsz);
        let total = match (name_len, desc_len) {
            (Some(n), Some(d)) => 12usize.checked_add(n).and_then(|v| v.checked_add(d)),
            _ => None,
        };
        let total = match total {
            Some(t) if t <= rest.len() => t,
            _ => {
                return Err(NoteError::Truncated {
                    offset: off,
                    needed: total.unwrap_or(usize::MAX),
                    available: rest.len(),
                })
            }
        };
        let name_all = &rest[12..12 + namesz];
        let name = name_all.strip_suffix(b"\0").unwrap_or(name_all);
        let desc_start = 12 + name_len.unwrap_or(0);
        let desc = &rest[desc_start..desc_start + descsz];
        notes.push(Note { name, n_type, desc });
        off += total;
    }
    Ok(notes)
}

/// Finds the GNU build-id among the notes of `buf`.
pub fn build_id(buf: &[u8]) -> Result<BuildId, NoteError> {
    let notes = parse(buf)?;
    notes
        .iter()
        .find(|n| n.name == b"GNU" && n.n_type == NT_GNU_BUILD_ID && !n.desc.is_empty())
        .map(|n| BuildId::from_bytes(n.desc))
        .ok_or(NoteError::NoBuildId { count: notes.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], n_type: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let namesz = name.len() + 1;
        v.extend_from_slice(&(namesz as u32).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&n_type.to_le_bytes());
        v.extend_from_slice(name);
        v.push(0);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v.extend_from_slice(desc);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn finds_build_id_after_other_notes() {
        let mut buf = note(b"Xen", 6, b"linux\0");
        buf.extend(note(b"Linux", 0x100, &[1, 2, 3]));
        let id: Vec<u8> = (0u8..20).collect();
        buf.extend(note(b"GNU", 3, &id));
        buf.extend([0u8; 4]);
        assert_eq!(build_id(&buf).unwrap().as_bytes(), &id[..]);
        assert_eq!(parse(&buf).unwrap().len(), 3);
    }

    #[test]
    fn missing_build_id_is_an_error() {
        let buf = note(b"Linux", 1, b"x");
        assert_eq!(build_id(&buf), Err(NoteError::NoBuildId { count: 1 }));
    }

    #[test]
    fn truncated_notes_are_errors_not_panics() {
        let id = [7u8; 20];
        let buf = note(b"GNU", 3, &id);
        for cut in 1..buf.len() {
            let r = parse(&buf[..cut]);
            if buf[..cut].iter().all(|&b| b == 0) {
                continue;
            }
            assert!(
                matches!(r, Err(NoteError::Truncated { .. })),
                "cut {cut}: {r:?}"
            );
        }
        // Sizes that overflow usize arithmetic.
        let mut evil = vec![0xff; 12];
        evil[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert!(parse(&evil).is_err());
    }

    #[test]
    fn build_id_text_round_trip() {
        let id: BuildId = "0123abCD".parse().unwrap();
        assert_eq!(id.to_string(), "0123abcd");
        assert!("xyz".parse::<BuildId>().is_err());
        assert!("".parse::<BuildId>().is_err());
    }
}
