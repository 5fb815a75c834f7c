//! Resolution of a patch's outside references against one kernel: exported
//! symbols (Module.symvers) stay ordinary undefined symbols; everything
//! else becomes a livepatch relocation whose `sympos` comes from the
//! kernel's symbol table, statics located through the object file they
//! were compiled from.

use elfdiff::emit::{Outside, Resolver};
use elfdiff::read::{Object, SymKind};

use crate::symbols::BlockId;
use crate::{Error, KernelSymbols, Result, Symvers};

/// Resolves against a kernel's symbols and exports.
pub struct KernelResolver {
    syms: KernelSymbols,
    symvers: Symvers,
    object: String,
    block: Option<BlockId>,
}

impl KernelResolver {
    /// A resolver for patches to `object` (`vmlinux`), whose statics are
    /// those of the object file `orig` was compiled from.
    pub fn new(syms: KernelSymbols, symvers: Symvers, object: &str, orig: &Object) -> Result<Self> {
        crate::names::check_objname(object)?;
        if object != "vmlinux" {
            return Err(Error::Malformed {
                path: object.into(),
                what: format!("patching loadable module {object} needs that module's symbol table, which is not supported yet"),
            });
        }
        let file = orig
            .symbols
            .iter()
            .find(|s| s.kind == SymKind::File)
            .map(|s| s.name.rsplit('/').next().unwrap_or(&s.name).to_string());
        let locals = statics(orig);
        // An object without statics or without a file symbol needs no block.
        let block = match file {
            Some(f) if !locals.is_empty() => match syms.find_object(&f, &locals) {
                Ok(b) => Some(b),
                Err(Error::NoSuchObject { .. }) => None,
                Err(e) => return Err(e),
            },
            _ => None,
        };
        Ok(KernelResolver {
            syms,
            symvers,
            object: object.to_string(),
            block,
        })
    }
}

/// The static functions and objects an object file defines: what finds
/// its block in the kernel's symbol table.
pub fn statics(obj: &Object) -> Vec<&str> {
    obj.symbols
        .iter()
        .filter(|s| {
            s.is_local() && matches!(s.kind, SymKind::Func | SymKind::Object) && s.section.is_some()
        })
        .map(|s| s.name.as_str())
        .collect()
}

impl Resolver for KernelResolver {
    fn resolve(&self, name: &str, local: bool) -> Result<Outside, String> {
        if !local && self.symvers.get(name).is_some() {
            return Ok(Outside::Export);
        }
        let block = if local { self.block } else { None };
        if local && block.is_none() {
            return Err(
                "the kernel's symbol table has no object file with this object's statics".into(),
            );
        }
        self.syms
            .sympos(name, block)
            .map(|sympos| Outside::Livepatch {
                object: self.object.clone(),
                sympos,
            })
            .map_err(|e| e.to_string())
    }
}
