//! Names the kernel's livepatch ELF format gives relocation sections and
//! symbols (Documentation/livepatch/module-elf-format.rst):
//! `.klp.rela.<objname>.<section>` and `.klp.sym.<objname>.<symbol>,<sympos>`.

use crate::{Error, Result};

/// `SHF_RELA_LIVEPATCH` section flag.
pub const SHF_RELA_LIVEPATCH: u64 = 0x0010_0000;
/// `SHN_LIVEPATCH` section index of livepatch symbols.
pub const SHN_LIVEPATCH: u16 = 0xff20;
/// Longest object name the kernel accepts in these names.
pub const MAX_OBJNAME: usize = 55;

/// Checks a target object name: `vmlinux` or a module name, no dots, at
/// most 55 characters.
pub fn check_objname(obj: &str) -> Result<()> {
    if obj.is_empty() || obj.len() > MAX_OBJNAME || obj.contains('.') || obj.contains(',') {
        return Err(Error::Malformed {
            path: obj.into(),
            what: format!("livepatch object name {obj:?} must be 1 to {MAX_OBJNAME} characters without '.' or ','"),
        });
    }
    Ok(())
}

/// `.klp.rela.<obj>.<section>`.
pub fn rela_section(obj: &str, section: &str) -> Result<String> {
    check_objname(obj)?;
    Ok(format!(".klp.rela.{obj}.{section}"))
}

/// `.klp.sym.<obj>.<name>,<sympos>`.
pub fn symbol(obj: &str, name: &str, sympos: u32) -> Result<String> {
    check_objname(obj)?;
    Ok(format!(".klp.sym.{obj}.{name},{sympos}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn livepatch_names() {
        assert_eq!(
            rela_section("vmlinux", ".text.foo").unwrap(),
            ".klp.rela.vmlinux..text.foo"
        );
        assert_eq!(
            symbol("ext4", "ext4_search_dir", 0).unwrap(),
            ".klp.sym.ext4.ext4_search_dir,0"
        );
        assert!(symbol("a.b", "x", 0).is_err());
        assert!(rela_section(&"x".repeat(56), ".text").is_err());
    }
}
