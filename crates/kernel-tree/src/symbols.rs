//! The kernel's full symbol table. Debian's `/boot/System.map` is a stub;
//! the real one, and the unstripped vmlinux whose symbol table also groups
//! local symbols by source file, ship in `linux-image-<release>-dbg`. Only
//! those two files are extracted (they lead the package's tar stream, so
//! the rest of the ~280 MB package is never decompressed), and the
//! vmlinux's build-id must equal the image's before the table is trusted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use object::ReadCache;

use crate::archive::Archive;
use crate::cache::{ensure_space, Cache};
use crate::plan::plan;
use crate::workspace::Workspace;
use crate::{Error, Result};

/// Paths of the full symbol table of a workspace's kernel.
#[derive(Debug, Clone)]
pub struct SymbolTable {
    /// The real System.map (address, type, name; address order).
    pub system_map: PathBuf,
    /// The unstripped vmlinux (symbols with STT_FILE grouping, DWARF).
    pub vmlinux: PathBuf,
}

pub use kernel::kallsyms::MapSymbol;

/// Parses System.map / kallsyms text (`ADDR TYPE NAME [\[module\]]`):
/// [`kernel::kallsyms::parse`].
pub fn parse_system_map(text: &str) -> std::result::Result<Vec<MapSymbol>, String> {
    kernel::kallsyms::parse(text)
}

impl Workspace {
    /// The full symbol table, extracted from the `-dbg` package on first
    /// use and cached in the workspace.
    pub fn symbols(&self, cache: &Cache, archive: &dyn Archive) -> Result<SymbolTable> {
        let dir = self.symbols_dir();
        let table = SymbolTable {
            system_map: dir.join("System.map"),
            vmlinux: dir.join("vmlinux"),
        };
        let done = dir.join("verified");
        if done.exists() {
            return Ok(table);
        }
        let _lock = cache.lock(&format!("{}-symbols", self.release()))?;
        if done.exists() {
            return Ok(table);
        }
        let dbg = self.dbg_package(archive)?;
        let partial = self.dir().join(".symbols.partial");
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).map_err(|e| Error::io("create", &partial, e))?;
        // The deb plus the two extracted files (the vmlinux is about twice
        // the package's size).
        crate::evict::make_room(cache, self.release(), dbg.size * 4)?;
        ensure_space(&partial, dbg.size * 4)?;
        tracing::info!(package = %dbg.package, size = dbg.size, "downloading debug symbols");
        let deb = archive.download(&dbg.package, &dbg.version, &partial)?;
        let release = self.release().as_str();
        // Debian 12's and 13's -dbg packages keep both under
        // usr/lib/debug/boot; the backports from 6.19 on keep them under
        // usr/lib/debug/lib/modules/<release>/ (boot/ holds only a link).
        let boot = [
            format!("./usr/lib/debug/boot/System.map-{release}"),
            format!("./usr/lib/debug/boot/vmlinux-{release}"),
        ];
        let modules = [
            format!("./usr/lib/debug/lib/modules/{release}/System.map"),
            format!("./usr/lib/debug/lib/modules/{release}/vmlinux"),
        ];
        // Each failed guess reads the whole package, so the likelier layout
        // goes first: split images (linux-base/binary/modules) came with
        // the new one.
        let split = self
            .manifest()
            .packages
            .iter()
            .any(|p| p.role == crate::plan::Role::ImagePart);
        let (first, second) = if split {
            (modules, boot)
        } else {
            (boot, modules)
        };
        let members = match extract_members(&deb, &partial, &first) {
            Ok(()) if partial.join(&first[1][2..]).is_file() => first,
            Ok(()) | Err(Error::Command { .. }) => {
                extract_members(&deb, &partial, &second)?;
                second
            }
            Err(e) => return Err(e),
        };
        let map = partial.join(&members[0][2..]);
        let vmlinux = partial.join(&members[1][2..]);
        let id = vmlinux_build_id(&vmlinux)?;
        if id != self.identity().build_id {
            return Err(Error::Inconsistent {
                release: release.to_string(),
                what: "build-ids of the image and the -dbg vmlinux".into(),
                expected: self.identity().build_id.to_string(),
                found: id.to_string(),
            });
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        std::fs::rename(&map, &table.system_map).map_err(|e| Error::io("move", &map, e))?;
        std::fs::rename(&vmlinux, &table.vmlinux).map_err(|e| Error::io("move", &vmlinux, e))?;
        // Kept (about 280 MB): the debug copies of modules are taken from
        // it when a patch targets one (see `module_debug_file`).
        let kept = dir.join(DBG_DEB);
        std::fs::rename(&deb, &kept).map_err(|e| Error::io("move", &deb, e))?;
        std::fs::write(&done, id.to_string()).map_err(|e| Error::io("write", &done, e))?;
        let _ = std::fs::remove_dir_all(&partial);
        self.grew()?;
        Ok(table)
    }
}

/// The `-dbg` package kept in the symbols directory.
const DBG_DEB: &str = "dbg.deb";

impl Workspace {
    /// The `-dbg` package of exactly this build: symbols and debug copies
    /// from any other build would describe another kernel.
    fn dbg_package(&self, archive: &dyn Archive) -> Result<crate::archive::PackageInfo> {
        plan(archive, self.release())?
            .dbg
            .filter(|d| d.version.to_string() == self.version())
            .ok_or_else(|| Error::VersionMismatch {
                release: self.release().to_string(),
                package: self.release().dbg_package(),
                wanted: format!("= {}", self.version()),
                reason: "symbols and debug files must come from the same build".into(),
                available: Vec::new(),
            })
    }

    /// The debug copy of the installed module at `module` (a path under
    /// the workspace's modules directory, e.g.
    /// `kernel/fs/smb/client/cifs.ko`), from the `-dbg` package: unlike
    /// the installed module, stripped with `--strip-debug`, its symbol
    /// table keeps the `STT_FILE` symbols that tell which object file
    /// each static came from. On first use every module's copy is taken
    /// from the package in one pass (about 20 s: one `xz` stream, which
    /// a module at a time would decompress again for each), its DWARF
    /// removed (about the installed modules' size remains), and the
    /// package deleted. `None` when the package has no copy of that
    /// module.
    pub fn module_debug_file(
        &self,
        cache: &Cache,
        archive: &dyn Archive,
        module: &str,
    ) -> Result<Option<PathBuf>> {
        let module = module
            .trim_end_matches(".xz")
            .trim_end_matches(".zst")
            .trim_end_matches(".gz");
        if module.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(Error::Command {
                command: "module_debug_file".into(),
                status: "bad path".into(),
                stderr: format!("{module:?} is not a path under the modules directory"),
            });
        }
        self.symbols(cache, archive)?;
        let root = self.symbols_dir().join("modules");
        let done = root.join(".complete");
        if !done.exists() {
            let _lock = cache.lock(&format!("{}-symbols", self.release()))?;
            if !done.exists() {
                self.extract_module_symbols(cache, archive, &root)?;
            }
        }
        let dest = root.join(module);
        Ok(dest.is_file().then_some(dest))
    }

    /// Every module's debug copy, without its DWARF, into `root` (see
    /// `module_debug_file`); called under the symbols lock.
    fn extract_module_symbols(
        &self,
        cache: &Cache,
        archive: &dyn Archive,
        root: &Path,
    ) -> Result<()> {
        let dir = self.symbols_dir();
        let deb = dir.join(DBG_DEB);
        if !deb.is_file() {
            // A workspace made before the package was kept.
            let dbg = self.dbg_package(archive)?;
            let partial = dir.join(".dbg.partial");
            let _ = std::fs::remove_dir_all(&partial);
            std::fs::create_dir_all(&partial).map_err(|e| Error::io("create", &partial, e))?;
            crate::evict::make_room(cache, self.release(), dbg.size * 6)?;
            ensure_space(&partial, dbg.size * 6)?;
            let got = archive.download(&dbg.package, &dbg.version, &partial)?;
            std::fs::rename(&got, &deb).map_err(|e| Error::io("move", &got, e))?;
            let _ = std::fs::remove_dir_all(&partial);
        }
        let partial = dir.join(".modules.partial");
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).map_err(|e| Error::io("create", &partial, e))?;
        let member = format!("./usr/lib/debug/lib/modules/{}/kernel", self.release());
        // A package without module copies leaves nothing: every answer is
        // then "none".
        let _ = extract(&deb, &partial, std::slice::from_ref(&member), false);
        let tree = partial.join(&member[2..]);
        let mut kos = Vec::new();
        if tree.is_dir() {
            collect_kos(&tree, &mut kos)?;
        }
        for ko in &kos {
            // The symbol table is what is read; the DWARF is 90% of the
            // file.
            let out = Command::new("objcopy")
                .arg("--remove-section=.debug*")
                .arg(ko)
                .output()
                .map_err(|e| Error::io("run objcopy on", ko, e))?;
            if !out.status.success() {
                return Err(Error::Command {
                    command: format!("objcopy --remove-section=.debug* {}", ko.display()),
                    status: out.status.to_string(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
        }
        let _ = std::fs::remove_dir_all(root);
        std::fs::create_dir_all(root).map_err(|e| Error::io("create", root, e))?;
        if tree.is_dir() {
            let to = root.join("kernel");
            std::fs::rename(&tree, &to).map_err(|e| Error::io("move", &tree, e))?;
        }
        std::fs::write(root.join(".complete"), format!("{}\n", kos.len()))
            .map_err(|e| Error::io("write", root, e))?;
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::remove_file(&deb).map_err(|e| Error::io("remove", &deb, e))?;
        self.grew()?;
        Ok(())
    }
}

/// Every `.ko` under `dir`.
fn collect_kos(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))? {
        let e = e.map_err(|e| Error::io("read", dir, e))?;
        let p = e.path();
        let t = e.file_type().map_err(|err| Error::io("stat", &p, err))?;
        if t.is_dir() {
            collect_kos(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "ko") {
            out.push(p);
        }
    }
    Ok(())
}

/// Extracts `members` (files) from the data tarball of `deb` into `dest`,
/// stopping as soon as all were seen (`tar --occurrence`).
fn extract_members(deb: &Path, dest: &Path, members: &[String]) -> Result<()> {
    extract(deb, dest, members, true)
}

/// Extracts `members` — files, or directories with all they hold — from
/// the data tarball of `deb` into `dest`; with `first_only`, tar stops at
/// each member's first occurrence (right for files only: a directory's
/// contents come after its own entry).
fn extract(deb: &Path, dest: &Path, members: &[String], first_only: bool) -> Result<()> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io("run dpkg-deb on", deb, e))?;
    let stdout = dpkg.stdout.take().ok_or_else(|| Error::Command {
        command: "dpkg-deb --fsys-tarfile".into(),
        status: "no stdout".into(),
        stderr: String::new(),
    })?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dest)
        .args(first_only.then_some("--occurrence"))
        .args(members)
        .stdin(stdout)
        .output()
        .map_err(|e| Error::io("run tar into", dest, e))?;
    // dpkg-deb dies of SIGPIPE once tar stops reading; that is expected.
    let _ = dpkg.wait();
    if !tar.status.success() {
        let stderr = String::from_utf8_lossy(&tar.stderr).into_owned();
        if stderr.contains("No space left") {
            return Err(Error::DiskFull {
                path: dest.to_path_buf(),
                needed: 0,
                available: crate::cache::free_space(dest).unwrap_or(0),
            });
        }
        return Err(Error::Command {
            command: format!("tar -x {} from {}", members.join(" "), deb.display()),
            status: tar.status.to_string(),
            stderr,
        });
    }
    Ok(())
}

/// Build-id of an ELF vmlinux on disk, reading only its headers and notes.
pub fn vmlinux_build_id(path: &Path) -> Result<kernel::BuildId> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let data = ReadCache::new(file);
    let notes = crate::image::elf_notes(path, &data)?;
    kernel::notes::build_id(&notes).map_err(|e| Error::BadImage {
        path: path.to_path_buf(),
        reason: format!("notes: {e}"),
    })
}
