//! Kernel modules of a kernel's unpacked `lib/modules/<release>` tree:
//! found by name (`-` and `_` alike, compressed or not), decompressed once
//! beside the tree, ordered with their dependencies first; and what a
//! module's `.modinfo` says. The factory (which modules a patch targets
//! and needs) and the lab (what a guest loads) both use it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::Error;

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
    pub fn new(modules_dir: &Path) -> Result<ModuleIndex, Error> {
        let mut by_name = BTreeMap::new();
        let mut stack = vec![modules_dir.to_path_buf()];
        let ours = modules_dir.join(UNCOMPRESSED_DIR);
        while let Some(dir) = stack.pop() {
            if dir == ours {
                continue;
            }
            let rd = std::fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))?;
            for entry in rd {
                let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
                let p = entry.path();
                let ft = entry.file_type().map_err(|e| Error::io("stat", &p, e))?;
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
    pub fn path(&self, name: &str) -> Result<Option<PathBuf>, Error> {
        self.by_name
            .get(&module_key(name))
            .map(|f| self.uncompressed(f))
            .transpose()
    }

    /// `file` itself when it is a plain `.ko`, else its decompressed copy
    /// (made atomically: a partial file is renamed into place).
    fn uncompressed(&self, file: &Path) -> Result<PathBuf, Error> {
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
        let bad = |reason: String| Error::Module {
            name: file.display().to_string(),
            reason,
        };
        let input = std::fs::File::open(file).map_err(|e| Error::io("open", file, e))?;
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
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let partial = out.with_extension(format!("ko.partial{}", std::process::id()));
        std::fs::write(&partial, &data).map_err(|e| Error::io("write", &partial, e))?;
        std::fs::rename(&partial, &out).map_err(|e| Error::io("move", &partial, e))?;
        Ok(out)
    }

    /// `names` and everything they depend on, dependencies first.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<PathBuf>, Error> {
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
    ) -> Result<(), Error> {
        if done.contains(key) {
            return Ok(());
        }
        if path.iter().any(|p| p == key) {
            return Err(Error::Module {
                name: key.to_string(),
                reason: format!("circular dependency {} -> {key}", path.join(" -> ")),
            });
        }
        let file = self.by_name.get(key).ok_or_else(|| Error::Module {
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
pub fn modinfo(ko: &Path) -> Result<Vec<(String, String)>, Error> {
    use object::{Object, ObjectSection};
    let data = std::fs::read(ko).map_err(|e| Error::io("read", ko, e))?;
    let file = object::File::parse(&*data).map_err(|e| Error::Module {
        name: ko.display().to_string(),
        reason: format!("not an ELF module: {e}"),
    })?;
    let Some(section) = file.section_by_name(".modinfo") else {
        return Ok(Vec::new());
    };
    let bytes = section.data().map_err(|e| Error::Module {
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
pub fn module_depends(ko: &Path) -> Result<Vec<String>, Error> {
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
}
