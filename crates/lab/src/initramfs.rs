//! Builds the guest's initramfs on the fly: busybox-static with its applet
//! links, the lab's init, files given by the caller, host binaries together
//! with the shared libraries they load (found from their ELF dynamic
//! sections, as the dynamic loader would), and kernel modules (found by
//! `kernel_tree::modules`) with the
//! modules they depend on. Nothing is installed on the host.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::Endianness;

use crate::cpio::{self, Kind};
use crate::error::LabError;

/// Where Debian's busybox-static puts its binary.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// Library directories searched after an executable's own RUNPATH, in the
/// order Debian's loader uses for x86-64.
const LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

#[derive(Debug, Clone)]
struct Entry {
    perm: u32,
    kind: Kind,
}

/// An initramfs being assembled. Paths are absolute guest paths.
#[derive(Debug, Default, Clone)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

/// Normalises a guest path to archive form (no leading `/`, no `..`).
fn archive_name(guest: &str) -> Result<String, LabError> {
    let trimmed = guest.trim_start_matches('/');
    if trimmed.is_empty()
        || trimmed
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return Err(LabError::BadGuestPath(guest.to_string()));
    }
    Ok(trimmed.to_string())
}

impl Initramfs {
    /// An empty initramfs.
    pub fn new() -> Self {
        Self::default()
    }

    fn add_parents(&mut self, name: &str) {
        let mut acc = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            self.entries.entry(acc.clone()).or_insert(Entry {
                perm: 0o755,
                kind: Kind::Dir,
            });
        }
    }

    /// Adds a directory.
    pub fn dir(&mut self, guest: &str) -> Result<&mut Self, LabError> {
        let name = archive_name(guest)?;
        self.add_parents(&name);
        self.entries.insert(
            name,
            Entry {
                perm: 0o755,
                kind: Kind::Dir,
            },
        );
        Ok(self)
    }

    /// Adds a file with the given contents and permission bits.
    pub fn bytes(
        &mut self,
        guest: &str,
        data: impl Into<Vec<u8>>,
        perm: u32,
    ) -> Result<&mut Self, LabError> {
        let name = archive_name(guest)?;
        self.add_parents(&name);
        self.entries.insert(
            name,
            Entry {
                perm,
                kind: Kind::File(data.into()),
            },
        );
        Ok(self)
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, guest: &str, target: &str) -> Result<&mut Self, LabError> {
        let name = archive_name(guest)?;
        self.add_parents(&name);
        self.entries.insert(
            name,
            Entry {
                perm: 0o777,
                kind: Kind::Symlink(target.to_string()),
            },
        );
        Ok(self)
    }

    /// Copies a host file into the guest, keeping its permission bits.
    pub fn file(&mut self, host: &Path, guest: &str) -> Result<&mut Self, LabError> {
        use std::os::unix::fs::PermissionsExt;
        let data = std::fs::read(host).map_err(|e| LabError::io("read", host, e))?;
        let perm = std::fs::metadata(host)
            .map_err(|e| LabError::io("stat", host, e))?
            .permissions()
            .mode()
            & 0o7777;
        self.bytes(guest, data, perm)
    }

    /// Adds busybox at `/bin/busybox`; the guest init installs its applet
    /// links at boot (`busybox --install -s`).
    pub fn busybox(&mut self, host: &Path) -> Result<&mut Self, LabError> {
        if !host.exists() {
            return Err(LabError::ToolMissing {
                tool: host.display().to_string(),
                package: "busybox-static".into(),
            });
        }
        if !shared_libraries(host)?.is_empty() {
            return Err(LabError::BadBinary {
                path: host.to_path_buf(),
                reason: "busybox must be statically linked (install busybox-static)".into(),
            });
        }
        self.file(host, "/bin/busybox")?;
        self.symlink("/bin/sh", "busybox")
    }

    /// Copies a host executable to `guest` together with its ELF
    /// interpreter and every shared library it needs, each at its host path.
    pub fn binary(&mut self, host: &Path, guest: &str) -> Result<&mut Self, LabError> {
        self.file(host, guest)?;
        for lib in shared_libraries(host)? {
            let lib_str = lib.to_string_lossy().into_owned();
            if !self.entries.contains_key(lib_str.trim_start_matches('/')) {
                self.file(&lib, &lib_str)?;
            }
        }
        Ok(self)
    }

    /// Whether `guest` is present.
    pub fn contains(&self, guest: &str) -> bool {
        self.entries.contains_key(guest.trim_start_matches('/'))
    }

    /// Writes the archive (uncompressed: the kernel unpacks it fastest, and
    /// the file only lives for one boot).
    pub fn write_to(&self, path: &Path) -> Result<(), LabError> {
        let file = std::fs::File::create(path).map_err(|e| LabError::io("create", path, e))?;
        let mut w = cpio::Writer::new(std::io::BufWriter::new(file));
        // BTreeMap order puts every directory before its contents.
        for (name, e) in &self.entries {
            w.entry(name, e.perm, &e.kind)
                .map_err(|err| LabError::io("write", path, err))?;
        }
        w.finish().map_err(|err| LabError::io("write", path, err))?;
        Ok(())
    }
}

/// The interpreter and shared libraries `exe` needs, transitively, as host
/// paths. Empty for static executables.
pub fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>, LabError> {
    let mut out: BTreeSet<PathBuf> = BTreeSet::new();
    let mut queue = vec![exe.to_path_buf()];
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let info = dynamic_info(&path)?;
        if let Some(interp) = info.interp {
            out.insert(PathBuf::from(interp));
        }
        let origin = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut dirs: Vec<PathBuf> = info
            .runpath
            .iter()
            .flat_map(|r| r.split(':'))
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d.replace("$ORIGIN", &origin.to_string_lossy())))
            .collect();
        dirs.extend(LIB_DIRS.iter().map(PathBuf::from));
        for needed in info.needed {
            let found = dirs
                .iter()
                .map(|d| d.join(&needed))
                .find(|p| p.exists())
                .ok_or_else(|| LabError::BadBinary {
                    path: path.clone(),
                    reason: format!(
                        "needs {needed}, which is in none of {}",
                        dirs.iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
            out.insert(found.clone());
            queue.push(found);
        }
    }
    Ok(out.into_iter().collect())
}

struct DynamicInfo {
    interp: Option<String>,
    needed: Vec<String>,
    runpath: Option<String>,
}

fn dynamic_info(path: &Path) -> Result<DynamicInfo, LabError> {
    let data = std::fs::read(path).map_err(|e| LabError::io("read", path, e))?;
    let bad = |reason: String| LabError::BadBinary {
        path: path.to_path_buf(),
        reason,
    };
    let header = object::elf::FileHeader64::<Endianness>::parse(&*data)
        .map_err(|e| bad(format!("not an x86-64 ELF executable: {e}")))?;
    let endian = header.endian().map_err(|e| bad(e.to_string()))?;
    if header.e_machine(endian) != object::elf::EM_X86_64 {
        return Err(bad("not an x86-64 executable".into()));
    }
    let phdrs = header
        .program_headers(endian, &*data)
        .map_err(|e| bad(e.to_string()))?;
    let mut interp = None;
    for ph in phdrs {
        if ph.p_type(endian) == object::elf::PT_INTERP {
            let raw = ph
                .data(endian, &*data)
                .map_err(|_| bad("bad PT_INTERP".into()))?;
            interp = Some(
                String::from_utf8_lossy(raw.split(|&b| b == 0).next().unwrap_or(raw)).into_owned(),
            );
        }
    }
    let mut needed = Vec::new();
    let mut runpath = None;
    let sections = header
        .sections(endian, &*data)
        .map_err(|e| bad(e.to_string()))?;
    if let Some((dynamic, link)) = sections
        .dynamic(endian, &*data)
        .map_err(|e| bad(e.to_string()))?
    {
        let strings = sections
            .strings(endian, &*data, link)
            .map_err(|e| bad(e.to_string()))?;
        for d in dynamic {
            let tag = d.d_tag(endian) as u32;
            if tag == object::elf::DT_NEEDED
                || tag == object::elf::DT_RUNPATH
                || tag == object::elf::DT_RPATH
            {
                let s = d.string(endian, strings).map_err(|e| bad(e.to_string()))?;
                let s = String::from_utf8_lossy(s).into_owned();
                if tag == object::elf::DT_NEEDED {
                    needed.push(s);
                } else {
                    runpath = Some(s);
                }
            }
        }
    }
    Ok(DynamicInfo {
        interp,
        needed,
        runpath,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_first_and_bad_paths_are_refused() {
        let mut i = Initramfs::new();
        i.bytes("/a/b/c.txt", b"x".to_vec(), 0o644).unwrap();
        i.symlink("/bin/sh", "busybox").unwrap();
        let names: Vec<&String> = i.entries.keys().collect();
        assert_eq!(names, ["a", "a/b", "a/b/c.txt", "bin", "bin/sh"]);
        for bad in ["/", "/a/../etc", "a//b", "./x"] {
            assert!(
                matches!(
                    i.bytes(bad, Vec::new(), 0o644),
                    Err(LabError::BadGuestPath(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn dynamic_binary_brings_its_libraries() {
        // xz links liblzma besides libc: a non-trivial closure that every
        // lab host has (xz-utils is a setup requirement).
        let libs = shared_libraries(Path::new("/usr/bin/xz")).unwrap();
        let names: Vec<String> = libs
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().any(|n| n.starts_with("liblzma.so")),
            "{names:?}"
        );
        assert!(names.iter().any(|n| n.starts_with("libc.so")), "{names:?}");
        assert!(
            names.iter().any(|n| n.starts_with("ld-linux-x86-64")),
            "{names:?}"
        );
        let mut i = Initramfs::new();
        i.binary(Path::new("/usr/bin/xz"), "/usr/bin/xz").unwrap();
        for l in &libs {
            assert!(i.contains(&l.to_string_lossy()), "{l:?}");
        }
    }

    #[test]
    fn static_busybox_has_no_libraries_and_non_elf_is_refused() {
        assert!(shared_libraries(Path::new(DEFAULT_BUSYBOX))
            .unwrap()
            .is_empty());
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let err = shared_libraries(&script).unwrap_err();
        assert!(err.to_string().contains("s.sh"), "{err}");
        let mut i = Initramfs::new();
        let err = i.busybox(Path::new("/usr/bin/xz")).unwrap_err();
        assert!(err.to_string().contains("statically linked"), "{err}");
    }

    #[test]
    fn written_archive_is_accepted_by_cpio() {
        let dir = tempfile::tempdir().unwrap();
        let mut i = Initramfs::new();
        i.bytes("/etc/motd", b"hello\n".to_vec(), 0o644).unwrap();
        i.symlink("/etc/link", "motd").unwrap();
        let out = dir.path().join("i.cpio");
        i.write_to(&out).unwrap();
        let listing = std::process::Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(std::fs::File::open(&out).unwrap())
            .output()
            .expect("cpio is a setup requirement");
        assert!(listing.status.success());
        assert_eq!(
            String::from_utf8_lossy(&listing.stdout),
            "etc\netc/link\netc/motd\n"
        );
    }
}
