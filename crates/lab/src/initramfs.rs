//! Builds the guest's initramfs on the fly: busybox-static with its applet
//! links, the lab's init, files given by the caller, host binaries together
//! with the shared libraries they load (found from their ELF dynamic
//! sections, as the dynamic loader would), and kernel modules with the
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

/// Kernel modules of an unpacked `lib/modules/<release>` tree, by name.
#[derive(Debug)]
pub struct ModuleIndex {
    root: PathBuf,
    by_name: BTreeMap<String, PathBuf>,
}

/// Module file endings: plain, and the compressions distributions use
/// (Debian's 6.12 modules are `.ko.xz`).
const MODULE_ENDINGS: &[&str] = &[".ko", ".ko.xz", ".ko.zst"];

/// Module names treat `-` and `_` alike.
fn module_key(name: &str) -> String {
    let stem = MODULE_ENDINGS
        .iter()
        .find_map(|e| name.strip_suffix(e))
        .unwrap_or(name);
    stem.replace('-', "_")
}

/// Where an uncompressed copy of compressed modules is kept, under the
/// modules directory.
const UNCOMPRESSED_DIR: &str = ".noreboot-uncompressed";

impl ModuleIndex {
    /// Indexes every `.ko` under `modules_dir`.
    pub fn new(modules_dir: &Path) -> Result<ModuleIndex, LabError> {
        let mut by_name = BTreeMap::new();
        let mut stack = vec![modules_dir.to_path_buf()];
        let ours = modules_dir.join(UNCOMPRESSED_DIR);
        while let Some(dir) = stack.pop() {
            if dir == ours {
                continue;
            }
            let rd = std::fs::read_dir(&dir).map_err(|e| LabError::io("list", &dir, e))?;
            for entry in rd {
                let entry = entry.map_err(|e| LabError::io("list", &dir, e))?;
                let p = entry.path();
                let ft = entry.file_type().map_err(|e| LabError::io("stat", &p, e))?;
                if ft.is_dir() {
                    stack.push(p);
                } else if let Some(name) = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .filter(|n| MODULE_ENDINGS.iter().any(|e| n.ends_with(e)))
                {
                    by_name.insert(module_key(name), p);
                }
            }
        }
        Ok(ModuleIndex {
            root: modules_dir.to_path_buf(),
            by_name,
        })
    }

    /// The `.ko` of a module (`-` and `_` alike), uncompressed: a
    /// compressed module is decompressed once, beside the index's tree.
    pub fn path(&self, name: &str) -> Result<Option<PathBuf>, LabError> {
        self.by_name
            .get(&module_key(name))
            .map(|f| self.uncompressed(f))
            .transpose()
    }

    /// `file` itself when it is a plain `.ko`, else its decompressed copy
    /// (made atomically: a partial file is renamed into place).
    fn uncompressed(&self, file: &Path) -> Result<PathBuf, LabError> {
        let name = file.to_string_lossy();
        let Some((stem, ending)) = [".ko.xz", ".ko.zst"]
            .iter()
            .find_map(|e| name.strip_suffix(e).map(|s| (s.to_string(), *e)))
        else {
            return Ok(file.to_path_buf());
        };
        let rel = Path::new(&stem)
            .strip_prefix(&self.root)
            .unwrap_or(Path::new(&stem));
        let out = self
            .root
            .join(UNCOMPRESSED_DIR)
            .join(format!("{}.ko", rel.display()));
        if out.exists() {
            return Ok(out);
        }
        let bad = |reason: String| LabError::Module {
            name: file.display().to_string(),
            reason,
        };
        let input = std::fs::File::open(file).map_err(|e| LabError::io("open", file, e))?;
        // Far above any real module (the largest are tens of MiB): a
        // corrupt stream must not fill the disk.
        const LIMIT: u64 = 1 << 30;
        let mut data = Vec::new();
        let read = match ending {
            ".ko.xz" => std::io::Read::read_to_end(
                &mut std::io::Read::take(xz2::read::XzDecoder::new(input), LIMIT + 1),
                &mut data,
            ),
            _ => ruzstd::decoding::StreamingDecoder::new(input)
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|d| {
                    std::io::Read::read_to_end(&mut std::io::Read::take(d, LIMIT + 1), &mut data)
                }),
        };
        read.map_err(|e| bad(format!("cannot decompress {ending}: {e}")))?;
        if data.len() as u64 > LIMIT {
            return Err(bad(format!("decompresses to more than {LIMIT} bytes")));
        }
        let dir = out.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| LabError::io("create", dir, e))?;
        let partial = out.with_extension(format!("ko.partial{}", std::process::id()));
        std::fs::write(&partial, &data).map_err(|e| LabError::io("write", &partial, e))?;
        std::fs::rename(&partial, &out).map_err(|e| LabError::io("move", &partial, e))?;
        Ok(out)
    }

    /// `names` and everything they depend on, dependencies first.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<PathBuf>, LabError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for n in names {
            self.visit(&module_key(n), &mut done, &mut Vec::new(), &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        key: &str,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
        order: &mut Vec<PathBuf>,
    ) -> Result<(), LabError> {
        if done.contains(key) {
            return Ok(());
        }
        if path.iter().any(|p| p == key) {
            return Err(LabError::Module {
                name: key.to_string(),
                reason: format!("circular dependency {} -> {key}", path.join(" -> ")),
            });
        }
        let file = self.by_name.get(key).ok_or_else(|| LabError::Module {
            name: key.to_string(),
            reason: format!("no such module under {}", self.root.display()),
        })?;
        let file = self.uncompressed(file)?;
        path.push(key.to_string());
        for dep in module_depends(&file)? {
            self.visit(&module_key(&dep), done, path, order)?;
        }
        path.pop();
        done.insert(key.to_string());
        order.push(file);
        Ok(())
    }
}

/// The `key=value` fields of a module's `.modinfo` section, in order.
pub fn modinfo(ko: &Path) -> Result<Vec<(String, String)>, LabError> {
    use object::{Object, ObjectSection};
    let data = std::fs::read(ko).map_err(|e| LabError::io("read", ko, e))?;
    let file = object::File::parse(&*data).map_err(|e| LabError::Module {
        name: ko.display().to_string(),
        reason: format!("not an ELF module: {e}"),
    })?;
    let Some(section) = file.section_by_name(".modinfo") else {
        return Ok(Vec::new());
    };
    let bytes = section.data().map_err(|e| LabError::Module {
        name: ko.display().to_string(),
        reason: format!(".modinfo: {e}"),
    })?;
    Ok(bytes
        .split(|&b| b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect())
}

/// The `depends=` list of a module's `.modinfo` section.
pub fn module_depends(ko: &Path) -> Result<Vec<String>, LabError> {
    Ok(modinfo(ko)?
        .into_iter()
        .filter(|(k, _)| k == "depends")
        .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module-shaped object: an ELF with a `.modinfo` naming its
    /// dependencies.
    fn fake_module(dir: &Path, name: &str, depends: &str) -> PathBuf {
        let src = dir.join(format!("{name}.c"));
        std::fs::write(
            &src,
            format!("__attribute__((section(\".modinfo\"), used)) static const char d[] = \"depends={depends}\";\n"),
        )
        .unwrap();
        let out = dir.join(format!("{name}.ko"));
        let st = std::process::Command::new("gcc")
            .args(["-c", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::remove_file(src).unwrap();
        out
    }

    #[test]
    fn compressed_modules_are_indexed_and_decompressed_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("kernel/drivers");
        std::fs::create_dir_all(&root).unwrap();
        let plain = fake_module(&root, "base-dep", "");
        let top = fake_module(&root, "top_mod", "base_dep");
        let original = std::fs::read(&top).unwrap();
        // top_mod.ko.xz, as Debian's 6.12 ships its modules.
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
        std::io::Write::write_all(&mut xz, &original).unwrap();
        std::fs::write(root.join("top_mod.ko.xz"), xz.finish().unwrap()).unwrap();
        std::fs::remove_file(&top).unwrap();

        let index = ModuleIndex::new(tmp.path()).unwrap();
        let got = index.path("top-mod").unwrap().unwrap();
        assert!(
            got.starts_with(tmp.path().join(UNCOMPRESSED_DIR)),
            "{got:?}"
        );
        assert_eq!(std::fs::read(&got).unwrap(), original);
        assert_eq!(index.path("base_dep").unwrap().unwrap(), plain);
        // Dependencies come first, read from the decompressed .modinfo.
        assert_eq!(
            index.resolve(&["top_mod".into()]).unwrap(),
            [plain, got.clone()]
        );
        // A second index does not pick up its own copies as modules.
        let again = ModuleIndex::new(tmp.path()).unwrap();
        assert_eq!(again.by_name.len(), 2);
        assert_eq!(again.path("top_mod").unwrap().unwrap(), got);
        // Corrupt data is an error naming the file.
        std::fs::write(root.join("broken.ko.xz"), b"not xz").unwrap();
        let err = ModuleIndex::new(tmp.path())
            .unwrap()
            .path("broken")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("broken.ko.xz") && err.contains("decompress"),
            "{err}"
        );
    }

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
