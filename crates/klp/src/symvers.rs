//! Module.symvers: the symbols a kernel exports to modules. A reference to
//! one of these from a patch module is an ordinary undefined symbol the
//! module loader resolves; every other outside reference needs a livepatch
//! relocation.

use std::collections::HashMap;
use std::path::Path;

use crate::{Error, Result};

/// One exported symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// `vmlinux` or the exporting module's path.
    pub module: String,
    /// `EXPORT_SYMBOL` or `EXPORT_SYMBOL_GPL`.
    pub kind: String,
    /// Symbol namespace, if any.
    pub namespace: String,
}

/// A parsed Module.symvers (possibly empty).
#[derive(Debug, Clone, Default)]
pub struct Symvers {
    exports: HashMap<String, Export>,
}

impl Symvers {
    /// Reads Module.symvers.
    pub fn read(path: &Path) -> Result<Symvers> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses Module.symvers text (`crc\tname\tmodule\tkind[\tnamespace]`).
    pub fn parse(path: &Path, text: &str) -> Result<Symvers> {
        let mut exports = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 4 || !f[0].starts_with("0x") {
                return Err(Error::Malformed {
                    path: path.to_path_buf(),
                    what: format!(
                        "line {}: expected `crc<TAB>name<TAB>module<TAB>kind`, got {line:?}",
                        i + 1
                    ),
                });
            }
            exports.insert(
                f[1].to_string(),
                Export {
                    module: f[2].to_string(),
                    kind: f[3].to_string(),
                    namespace: f.get(4).unwrap_or(&"").to_string(),
                },
            );
        }
        Ok(Symvers { exports })
    }

    /// The export of `name`, if the kernel exports it.
    pub fn get(&self, name: &str) -> Option<&Export> {
        self.exports.get(name)
    }

    /// Whether `module` (`vmlinux` or a module path) exports `name`.
    pub fn exports(&self, name: &str, module: &str) -> bool {
        self.get(name).is_some_and(|e| e.module == module)
    }

    /// Number of exports.
    pub fn len(&self) -> usize {
        self.exports.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.exports.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let s = Symvers::parse(Path::new("M"), "0x1234abcd\tklp_enable_patch\tvmlinux\tEXPORT_SYMBOL_GPL\t\n0x0\tfoo\tdrivers/x\tEXPORT_SYMBOL\tNS\n").unwrap();
        assert!(s.exports("klp_enable_patch", "vmlinux"));
        assert_eq!(s.get("foo").unwrap().namespace, "NS");
        assert!(!s.exports("foo", "vmlinux"));
        let err = Symvers::parse(Path::new("M"), "garbage\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(Symvers::parse(Path::new("M"), "").unwrap().is_empty());
    }
}
