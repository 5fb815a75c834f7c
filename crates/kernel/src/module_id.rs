//! Which module a loaded module is. A module's name says nothing (anyone
//! can build or load a module of any name), so a module is identified by
//! its identity notes: the ELF note sections the kernel keeps for a loaded
//! module and shows under `/sys/module/<name>/notes/<section>`, byte for
//! byte as they are in the module file. Two notes count: noreboot-build's
//! marker (`.note.noreboot`, owner `noreboot`: the patch, the kernel and a
//! digest of what the module carries) and kbuild's GNU build-id
//! (`.note.gnu.build-id`, the linker's hash of the module), which modules
//! built before the marker existed carry too.
//!
//! ```
//! use kernel::module_id::{Marker, ModuleNotes};
//! let m: Marker = "patch=fix_1 kernel=0a1b build=99ff".parse().unwrap();
//! assert_eq!(m.patch, "fix_1");
//! // A module file with neither note has no identity to compare.
//! assert!(ModuleNotes::from_module(b"\x7fELF").is_err());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::notes;

/// The section of noreboot-build's marker note (the kernel names the
/// sysfs file after it).
pub const MARKER_SECTION: &str = ".note.noreboot";
/// The marker note's owner name.
pub const MARKER_OWNER: &str = "noreboot";
/// The marker note's type.
pub const NT_NOREBOOT_MARKER: u32 = 1;
/// The modinfo key that repeats the marker for `modinfo` on the file (the
/// kernel does not show modinfo of a loaded module, so it is not compared).
pub const MARKER_MODINFO: &str = "noreboot";
/// kbuild's build-id note section.
pub const BUILD_ID_SECTION: &str = ".note.gnu.build-id";
/// The note sections that identify a module, in the order they are checked.
pub const IDENTITY_SECTIONS: [&str; 2] = [MARKER_SECTION, BUILD_ID_SECTION];

/// Larger notes than this are no identity notes (ours is ~150 bytes).
const MAX_NOTE: u64 = 4096;

const SHT_NOTE: u32 = 7;
const SHF_ALLOC: u64 = 0x2;
const SHN_XINDEX: u16 = 0xffff;
const SHDR_SIZE: usize = 64;

/// Why a module's identity notes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ModuleIdError {
    /// The module file is not an ELF object this parser reads.
    #[error("module file: {0}")]
    NotElf(String),
    /// A sysfs file could not be read.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A note larger than any identity note.
    #[error("{what} is larger than {MAX_NOTE} bytes")]
    TooLarge {
        /// The section or file.
        what: String,
    },
    /// A name that cannot be a module's.
    #[error("invalid module name {0:?}")]
    BadName(String),
    /// The marker note or its text is malformed.
    #[error("noreboot marker: {0}")]
    BadMarker(String),
}

/// noreboot-build's marker, as the note's descriptor holds it:
/// `patch=<name> kernel=<build-id> build=<sha256>`, words separated by
/// spaces (words of other keys are skipped, so later builders may add
/// some).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Marker {
    /// The patch (module) name it was built as.
    pub patch: String,
    /// The GNU build-id of the kernel it was built for, hex.
    pub kernel: String,
    /// A digest of what the module carries, hex.
    pub build: String,
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "patch={} kernel={} build={}",
            self.patch, self.kernel, self.build
        )
    }
}

impl std::str::FromStr for Marker {
    type Err = ModuleIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mut patch, mut kernel, mut build) = (None, None, None);
        for word in s.split(' ').filter(|w| !w.is_empty()) {
            let Some((key, value)) = word.split_once('=') else {
                return Err(ModuleIdError::BadMarker(format!(
                    "{word:?} in {s:?} is not key=value"
                )));
            };
            let slot = match key {
                "patch" => &mut patch,
                "kernel" => &mut kernel,
                "build" => &mut build,
                _ => continue,
            };
            if value.is_empty() || slot.replace(value.to_string()).is_some() {
                return Err(ModuleIdError::BadMarker(format!(
                    "{key} is empty or given twice in {s:?}"
                )));
            }
        }
        match (patch, kernel, build) {
            (Some(patch), Some(kernel), Some(build)) => Ok(Marker {
                patch,
                kernel,
                build,
            }),
            _ => Err(ModuleIdError::BadMarker(format!(
                "{s:?} lacks one of patch=, kernel=, build="
            ))),
        }
    }
}

impl Marker {
    /// The marker of a note section's bytes (as in the file or in sysfs).
    pub fn from_note_section(section: &[u8]) -> Result<Marker, ModuleIdError> {
        let all = notes::parse(section).map_err(|e| ModuleIdError::BadMarker(e.to_string()))?;
        let note = all
            .iter()
            .find(|n| n.name == MARKER_OWNER.as_bytes() && n.n_type == NT_NOREBOOT_MARKER)
            .ok_or_else(|| {
                ModuleIdError::BadMarker(format!(
                    "no {MARKER_OWNER} note of type {NT_NOREBOOT_MARKER}"
                ))
            })?;
        let desc = note.desc.strip_suffix(b"\0").unwrap_or(note.desc);
        let text = std::str::from_utf8(desc)
            .map_err(|_| ModuleIdError::BadMarker("the note is not UTF-8 text".into()))?;
        text.parse()
    }
}

/// The identity notes of one module: section name → the section's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleNotes {
    sections: BTreeMap<String, Vec<u8>>,
}

/// How a loaded module compares with a module file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    /// Every identity note of the file is in the loaded module, unchanged.
    Same,
    /// The loaded module lacks this note of the file.
    Missing(&'static str),
    /// The loaded module's note differs from the file's.
    Differs(&'static str),
    /// The file has no identity note: nothing to compare.
    NoIdentity,
}

impl ModuleNotes {
    /// The identity notes of a module file: its SHT_NOTE sections with
    /// SHF_ALLOC among [`IDENTITY_SECTIONS`] (the kernel shows exactly the
    /// allocated, non-empty note sections). Bounds are checked against the
    /// buffer; a malformed file is an error, never a panic.
    pub fn from_module(ko: &[u8]) -> Result<ModuleNotes, ModuleIdError> {
        let elf = Elf::parse(ko)?;
        let mut sections = BTreeMap::new();
        for i in 0..elf.shnum {
            let sh = elf.section(i)?;
            if sh.sh_type != SHT_NOTE || sh.sh_flags & SHF_ALLOC == 0 || sh.sh_size == 0 {
                continue;
            }
            let name = elf.section_name(&sh)?;
            let Some(known) = IDENTITY_SECTIONS.iter().find(|s| s.as_bytes() == name) else {
                continue;
            };
            if sh.sh_size > MAX_NOTE {
                return Err(ModuleIdError::TooLarge {
                    what: format!("section {known}"),
                });
            }
            let data = elf.range(sh.sh_offset, sh.sh_size, known)?;
            sections.insert(known.to_string(), data.to_vec());
        }
        Ok(ModuleNotes { sections })
    }

    /// The identity notes of the loaded module `module`, as the kernel
    /// shows them under `<sys_root>/module/<module>/notes/`. A module that
    /// is not loaded, or has no such notes, has none.
    pub fn loaded(sys_root: &Path, module: &str) -> Result<ModuleNotes, ModuleIdError> {
        if module.is_empty() || module.contains('/') || module.starts_with('.') {
            return Err(ModuleIdError::BadName(module.to_string()));
        }
        let dir = sys_root.join("module").join(module).join("notes");
        let mut sections = BTreeMap::new();
        for name in IDENTITY_SECTIONS {
            let path = dir.join(name);
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(ModuleIdError::Io {
                        op: "open",
                        path,
                        source,
                    })
                }
            };
            let mut data = Vec::new();
            file.take(MAX_NOTE + 1)
                .read_to_end(&mut data)
                .map_err(|source| ModuleIdError::Io {
                    op: "read",
                    path: path.clone(),
                    source,
                })?;
            if data.len() as u64 > MAX_NOTE {
                return Err(ModuleIdError::TooLarge {
                    what: path.display().to_string(),
                });
            }
            if !data.is_empty() {
                sections.insert(name.to_string(), data);
            }
        }
        Ok(ModuleNotes { sections })
    }

    /// Whether there is no identity note at all.
    pub fn is_empty(&self) -> bool {
        self.sections.is_empty()
    }

    /// The bytes of one identity note section, if present.
    pub fn section(&self, name: &str) -> Option<&[u8]> {
        self.sections.get(name).map(Vec::as_slice)
    }

    /// noreboot-build's marker: `None` when the module has none (built
    /// before markers, or not by noreboot-build).
    pub fn marker(&self) -> Option<Result<Marker, ModuleIdError>> {
        self.section(MARKER_SECTION).map(Marker::from_note_section)
    }

    /// The module's GNU build-id, if it has one.
    pub fn build_id(&self) -> Option<notes::BuildId> {
        self.section(BUILD_ID_SECTION)
            .and_then(|s| notes::build_id(s).ok())
    }

    /// Compares a loaded module (`self`) with a module file (`file`): the
    /// same module only when every identity note the file carries is in
    /// the loaded module with the same bytes. A note only the loaded
    /// module has does not count against it, and a file with no note at
    /// all cannot be recognised.
    pub fn compare_with_file(&self, file: &ModuleNotes) -> Comparison {
        if file.is_empty() {
            return Comparison::NoIdentity;
        }
        for name in IDENTITY_SECTIONS {
            let Some(want) = file.sections.get(name) else {
                continue;
            };
            match self.sections.get(name) {
                None => return Comparison::Missing(name),
                Some(have) if have != want => return Comparison::Differs(name),
                Some(_) => {}
            }
        }
        Comparison::Same
    }
}

/// The parts of an ELF64 little-endian file's header this module reads.
struct Elf<'a> {
    bytes: &'a [u8],
    shoff: u64,
    shnum: u64,
    shstrndx: u64,
}

/// One section header.
struct Shdr {
    sh_name: u32,
    sh_type: u32,
    sh_flags: u64,
    sh_offset: u64,
    sh_size: u64,
}

fn not_elf(why: impl Into<String>) -> ModuleIdError {
    ModuleIdError::NotElf(why.into())
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl<'a> Elf<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Elf<'a>, ModuleIdError> {
        if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
            return Err(not_elf("no ELF header"));
        }
        // Modules are for the running kernel: x86-64, so ELF64 LE.
        if bytes[4] != 2 || bytes[5] != 1 {
            return Err(not_elf("not a 64-bit little-endian ELF file"));
        }
        let short = || not_elf("ELF header cut short");
        let shoff = u64_at(bytes, 0x28).ok_or_else(short)?;
        let shentsize = u16_at(bytes, 0x3a).ok_or_else(short)?;
        let shnum = u16_at(bytes, 0x3c).ok_or_else(short)?;
        let shstrndx = u16_at(bytes, 0x3e).ok_or_else(short)?;
        if shentsize as usize != SHDR_SIZE {
            return Err(not_elf(format!("section header size {shentsize}")));
        }
        let mut elf = Elf {
            bytes,
            shoff,
            shnum: u64::from(shnum),
            shstrndx: u64::from(shstrndx),
        };
        // Extended numbering: the real counts are in section 0's header.
        if shoff != 0 && (shnum == 0 || shstrndx == SHN_XINDEX) {
            let s0 = elf.header(0)?;
            if shnum == 0 {
                elf.shnum = u64_at(s0, 32).ok_or_else(short)?;
            }
            if shstrndx == SHN_XINDEX {
                elf.shstrndx = u64::from(u32_at(s0, 40).ok_or_else(short)?);
            }
        }
        if shoff == 0 {
            elf.shnum = 0;
        }
        Ok(elf)
    }

    fn header(&self, i: u64) -> Result<&'a [u8], ModuleIdError> {
        let start = i
            .checked_mul(SHDR_SIZE as u64)
            .and_then(|o| o.checked_add(self.shoff))
            .ok_or_else(|| not_elf(format!("section header {i} out of range")))?;
        self.range(start, SHDR_SIZE as u64, "a section header")
    }

    fn section(&self, i: u64) -> Result<Shdr, ModuleIdError> {
        let h = self.header(i)?;
        let short = || not_elf(format!("section header {i} cut short"));
        Ok(Shdr {
            sh_name: u32_at(h, 0).ok_or_else(short)?,
            sh_type: u32_at(h, 4).ok_or_else(short)?,
            sh_flags: u64_at(h, 8).ok_or_else(short)?,
            sh_offset: u64_at(h, 24).ok_or_else(short)?,
            sh_size: u64_at(h, 32).ok_or_else(short)?,
        })
    }

    fn range(&self, offset: u64, size: u64, what: &str) -> Result<&'a [u8], ModuleIdError> {
        let end = offset.checked_add(size);
        match end {
            Some(end) if end <= self.bytes.len() as u64 => {
                Ok(&self.bytes[offset as usize..end as usize])
            }
            _ => Err(not_elf(format!(
                "{what} at {offset}+{size} runs past the end of the file ({} bytes)",
                self.bytes.len()
            ))),
        }
    }

    fn section_name(&self, sh: &Shdr) -> Result<&'a [u8], ModuleIdError> {
        if self.shstrndx >= self.shnum {
            return Err(not_elf("no section name table"));
        }
        let strtab = self.section(self.shstrndx)?;
        let table = self.range(strtab.sh_offset, strtab.sh_size, "the section name table")?;
        let rest = table
            .get(sh.sh_name as usize..)
            .ok_or_else(|| not_elf(format!("section name offset {} out of range", sh.sh_name)))?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| not_elf("unterminated section name"))?;
        Ok(&rest[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], n_type: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&n_type.to_le_bytes());
        v.extend_from_slice(name);
        v.push(0);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v.extend_from_slice(desc);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    /// A relocatable ELF64 with the given (name, type, flags, data)
    /// sections after the null section and before `.shstrtab`.
    fn elf(sections: &[(&str, u32, u64, Vec<u8>)]) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut names = Vec::new();
        for (name, ..) in sections {
            names.push(strtab.len() as u32);
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
        }
        let shstr_name = strtab.len() as u32;
        strtab.extend_from_slice(b".shstrtab\0");
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        out[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
        out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        let mut headers = vec![[0u8; 64]];
        let mut add = |out: &mut Vec<u8>, name: u32, ty: u32, flags: u64, data: &[u8]| {
            while !out.len().is_multiple_of(8) {
                out.push(0);
            }
            let mut h = [0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&ty.to_le_bytes());
            h[8..16].copy_from_slice(&flags.to_le_bytes());
            h[24..32].copy_from_slice(&(out.len() as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(data);
            headers.push(h);
        };
        for ((_, ty, flags, data), name) in sections.iter().zip(&names) {
            add(&mut out, *name, *ty, *flags, data);
        }
        add(&mut out, shstr_name, 3, 0, &strtab);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len() as u64;
        for h in &headers {
            out.extend_from_slice(h);
        }
        out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        out[0x3c..0x3e].copy_from_slice(&(headers.len() as u16).to_le_bytes());
        out[0x3e..0x40].copy_from_slice(&((headers.len() - 1) as u16).to_le_bytes());
        out
    }

    const MARKER: &str = "patch=nrtest_l1 kernel=abcd build=0123";

    fn marker_note() -> Vec<u8> {
        let mut desc = MARKER.as_bytes().to_vec();
        desc.push(0);
        note(b"noreboot", NT_NOREBOOT_MARKER, &desc)
    }

    fn module() -> Vec<u8> {
        elf(&[
            (".text", 1, 0x6, vec![0xc3]),
            (
                BUILD_ID_SECTION,
                SHT_NOTE,
                SHF_ALLOC,
                note(b"GNU", 3, &[7; 20]),
            ),
            (".note.Linux", SHT_NOTE, SHF_ALLOC, note(b"Linux", 1, b"x")),
            (MARKER_SECTION, SHT_NOTE, SHF_ALLOC, marker_note()),
            // Not allocated: the kernel would not show it.
            (".note.GNU-stack", 1, 0, Vec::new()),
        ])
    }

    #[test]
    fn marker_text_round_trips_and_skips_unknown_keys() {
        let m: Marker = MARKER.parse().unwrap();
        assert_eq!(
            (m.patch.as_str(), m.kernel.as_str(), m.build.as_str()),
            ("nrtest_l1", "abcd", "0123")
        );
        assert_eq!(m.to_string(), MARKER);
        let later: Marker = "build=1 future=yes patch=p kernel=k".parse().unwrap();
        assert_eq!(later.build, "1");
        for bad in [
            "",
            "patch=p kernel=k",
            "patch=p kernel=k build=",
            "patch=p patch=q kernel=k build=b",
            "patch p",
        ] {
            assert!(bad.parse::<Marker>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn module_file_notes_are_the_allocated_identity_notes() {
        let ko = module();
        let n = ModuleNotes::from_module(&ko).unwrap();
        assert_eq!(
            n.sections.keys().collect::<Vec<_>>(),
            [BUILD_ID_SECTION, MARKER_SECTION]
        );
        assert_eq!(n.build_id().unwrap().as_bytes(), &[7; 20]);
        assert_eq!(n.marker().unwrap().unwrap().to_string(), MARKER);
        // A module without the marker (built before it existed).
        let old = elf(&[(
            BUILD_ID_SECTION,
            SHT_NOTE,
            SHF_ALLOC,
            note(b"GNU", 3, &[1; 20]),
        )]);
        let n = ModuleNotes::from_module(&old).unwrap();
        assert!(n.marker().is_none() && !n.is_empty());
        // A marker section that is not allocated does not count: the
        // kernel would not show it.
        let hidden = elf(&[(MARKER_SECTION, SHT_NOTE, 0, marker_note())]);
        assert!(ModuleNotes::from_module(&hidden).unwrap().is_empty());
    }

    #[test]
    fn malformed_module_files_are_errors_not_panics() {
        let ko = module();
        // The section headers come last, so every cut loses some.
        for cut in 0..ko.len() {
            let r = ModuleNotes::from_module(&ko[..cut]);
            assert!(r.is_err(), "cut at {cut}: {r:?}");
        }
        let mut flipped = ko.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = ModuleNotes::from_module(&flipped);
            flipped[i] ^= 0xff;
        }
        let mut huge = ko.clone();
        huge[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(ModuleNotes::from_module(&huge).is_err());
        // e_shnum 0: the count is in section 0's header (extended
        // numbering), here 0.
        let mut many = ko;
        many[0x3c..0x3e].copy_from_slice(&0u16.to_le_bytes());
        assert!(ModuleNotes::from_module(&many).unwrap().is_empty());
        assert!(ModuleNotes::from_module(b"not an elf").is_err());
    }

    #[test]
    fn loaded_notes_come_from_sysfs_and_compare_with_the_file() {
        let t = tempfile::tempdir().unwrap();
        let file = ModuleNotes::from_module(&module()).unwrap();
        let notes = t.path().join("module/nrtest_l1/notes");
        std::fs::create_dir_all(&notes).unwrap();
        // The kernel's notes of the same module.
        for (name, data) in &file.sections {
            std::fs::write(notes.join(name), data).unwrap();
        }
        std::fs::write(notes.join(".note.Linux"), b"other").unwrap();
        let loaded = ModuleNotes::loaded(t.path(), "nrtest_l1").unwrap();
        assert_eq!(loaded.compare_with_file(&file), Comparison::Same);
        // A module file from before markers: its GNU build-id decides.
        let old = ModuleNotes {
            sections: BTreeMap::from([(
                BUILD_ID_SECTION.to_string(),
                file.sections[BUILD_ID_SECTION].clone(),
            )]),
        };
        assert_eq!(loaded.compare_with_file(&old), Comparison::Same);
        let mut other = old.clone();
        other
            .sections
            .insert(BUILD_ID_SECTION.to_string(), note(b"GNU", 3, &[8; 20]));
        assert_eq!(
            loaded.compare_with_file(&other),
            Comparison::Differs(BUILD_ID_SECTION)
        );
        // Another module of the same name: another marker.
        let other = "patch=nrtest_l1 kernel=abcd build=ffff\0";
        std::fs::write(
            notes.join(MARKER_SECTION),
            note(b"noreboot", NT_NOREBOOT_MARKER, other.as_bytes()),
        )
        .unwrap();
        let loaded = ModuleNotes::loaded(t.path(), "nrtest_l1").unwrap();
        assert_eq!(
            loaded.compare_with_file(&file),
            Comparison::Differs(MARKER_SECTION)
        );
        // A module with no marker at all.
        std::fs::remove_file(notes.join(MARKER_SECTION)).unwrap();
        let loaded = ModuleNotes::loaded(t.path(), "nrtest_l1").unwrap();
        assert_eq!(
            loaded.compare_with_file(&file),
            Comparison::Missing(MARKER_SECTION)
        );
        // Not loaded: nothing; a file without notes: nothing to compare.
        let none = ModuleNotes::loaded(t.path(), "absent").unwrap();
        assert!(none.is_empty());
        assert_eq!(
            loaded.compare_with_file(&ModuleNotes::default()),
            Comparison::NoIdentity
        );
        assert!(ModuleNotes::loaded(t.path(), "../x").is_err());
        assert!(ModuleNotes::loaded(t.path(), "").is_err());
        // A sysfs file larger than any note.
        std::fs::write(notes.join(BUILD_ID_SECTION), vec![0u8; 5000]).unwrap();
        assert!(ModuleNotes::loaded(t.path(), "nrtest_l1").is_err());
    }
}
