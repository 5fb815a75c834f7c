//! Resolution of a patch's outside references against one kernel: exported
//! symbols (Module.symvers) stay ordinary undefined symbols; everything
//! else becomes a livepatch relocation whose `sympos` comes from the
//! kernel's symbol table, statics located through the object file they
//! were compiled from.

use std::borrow::Cow;

use elfdiff::emit::{Outside, Resolver};
use elfdiff::read::{Object, SymKind};

use crate::symbols::BlockId;
use crate::{Error, KernelSymbols, Result, Symvers};

/// Resolves against a kernel's symbols and exports (borrowed: one table
/// serves every object of a build).
pub struct KernelResolver<'k> {
    syms: &'k KernelSymbols,
    symvers: &'k Symvers,
    object: String,
    block: Option<BlockId>,
    /// For a loadable-module target: its symbols and the block of the
    /// compiled object among them (a copy with the block added when the
    /// module was stripped of its `STT_FILE` symbols).
    module: Option<(Cow<'k, KernelSymbols>, Option<BlockId>)>,
    /// For a loadable-module target: the modules it depends on (its
    /// `.modinfo` `depends=`), loaded before it whenever it loads.
    depends: Vec<String>,
}

/// The object-file block of `orig`'s statics in a symbol table, if it has
/// statics and the table has such a block.
fn block_of(syms: &KernelSymbols, orig: &Object) -> Result<Option<BlockId>> {
    let file = object_file(orig);
    let locals = statics(orig);
    match file {
        Some(f) if !locals.is_empty() => match syms.find_object(&f, &locals) {
            Ok(b) => Ok(Some(b)),
            Err(Error::NoSuchObject { .. }) => Ok(None),
            Err(e) => Err(e),
        },
        _ => Ok(None),
    }
}

/// The source basename an object was compiled from (its `STT_FILE`).
fn object_file(orig: &Object) -> Option<String> {
    orig.symbols
        .iter()
        .find(|s| s.kind == SymKind::File)
        .map(|s| s.name.rsplit('/').next().unwrap_or(&s.name).to_string())
}

impl<'k> KernelResolver<'k> {
    /// A resolver for patches to `object` (`vmlinux`), whose statics are
    /// those of the object file `orig` was compiled from.
    pub fn new(
        syms: &'k KernelSymbols,
        symvers: &'k Symvers,
        object: &str,
        orig: &Object,
    ) -> Result<Self> {
        crate::names::check_objname(object)?;
        if object != "vmlinux" {
            return Err(Error::Malformed {
                path: object.into(),
                what: format!(
                    "patching loadable module {object} needs that module's symbols: use KernelResolver::for_module"
                ),
            });
        }
        let block = block_of(syms, orig)?;
        Ok(KernelResolver {
            syms,
            symvers,
            object: object.to_string(),
            block,
            module: None,
            depends: Vec::new(),
        })
    }

    /// A resolver for patches to the loadable module `name`, whose own
    /// symbols (from its `.ko`) are `module_syms`: everything the module
    /// defines is reached through livepatch relocations applied when the
    /// module loads (so the patch loads before it too); vmlinux is
    /// reached as for vmlinux patches.
    pub fn for_module(
        vmlinux: &'k KernelSymbols,
        symvers: &'k Symvers,
        name: &str,
        module_syms: &'k KernelSymbols,
        orig: &Object,
    ) -> Result<Self> {
        crate::names::check_objname(name)?;
        let mut module_syms = Cow::Borrowed(module_syms);
        let mut module_block = block_of(&module_syms, orig)?;
        // A distribution strips its modules (`--strip-debug`), which
        // removes the STT_FILE symbols: the block is found by position.
        if let (None, Some(file)) = (module_block, object_file(orig)) {
            let locals = statics(orig);
            if !locals.is_empty() {
                match module_syms.with_object_block(&file, &locals) {
                    Ok(t) => {
                        module_syms = Cow::Owned(t);
                        module_block = block_of(&module_syms, orig)?;
                    }
                    // Without its place, a static the patch reaches is
                    // found only when its name is the module's only one;
                    // one with namesakes fails then, naming it (an object
                    // whose statics other objects also have, e.g. only a
                    // one-shot flag, is not refused for statics the patch
                    // never reaches).
                    Err(Error::NoSuchObject { .. } | Error::Ambiguous { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(KernelResolver {
            syms: vmlinux,
            symvers,
            object: name.to_string(),
            block: None,
            module: Some((module_syms, module_block)),
            depends: Vec::new(),
        })
    }

    /// The modules a module target depends on (its `.modinfo`
    /// `depends=`): their exports are reached through livepatch
    /// relocations applied with the target, not as symbols the patch
    /// module itself would need.
    pub fn with_depends(mut self, depends: Vec<String>) -> Self {
        self.depends = depends.into_iter().map(|d| d.replace('-', "_")).collect();
        self
    }

    /// The target object's name (`vmlinux` or a module).
    pub fn object(&self) -> &str {
        &self.object
    }

    /// A function the patch replaces, in its target's symbol table:
    /// its `old_sympos` and the symbol (a link-time address in vmlinux, a
    /// section offset in a module).
    pub fn replaced(&self, name: &str) -> Result<(u32, &crate::symbols::KernelSymbol)> {
        let (table, block) = match &self.module {
            Some((m, block)) => (&**m, *block),
            None => (self.syms, self.block),
        };
        table.find(name, block)
    }
}

/// The static functions and objects an object file defines: what finds
/// its block in the kernel's symbol table. Those in sections the link
/// throws away (`.discard.*`: the `__UNIQUE_ID___addressable_*` of every
/// export) are not in the kernel's table and would only dilute the match.
pub fn statics(obj: &Object) -> Vec<&str> {
    obj.symbols
        .iter()
        .filter(|s| {
            s.is_local()
                && matches!(s.kind, SymKind::Func | SymKind::Object)
                && s.section
                    .is_some_and(|sec| !obj.section(sec).name.starts_with(".discard"))
        })
        .map(|s| s.name.as_str())
        .collect()
}

impl Resolver for KernelResolver<'_> {
    fn resolve(&self, name: &str, local: bool) -> Result<Outside, String> {
        if let Some((m, block)) = &self.module {
            if m.contains(name) {
                return m
                    .sympos(name, if local { *block } else { None })
                    .map(|sympos| Outside::Livepatch {
                        object: self.object.clone(),
                        sympos,
                    })
                    .map_err(|e| format!("in module {}: {e}", self.object));
            }
            if local {
                return Err(format!("module {} defines no such symbol", self.object));
            }
            if let Some(e) = self.symvers.get(name) {
                // Another module's export: applied with the target, which
                // needs that module too; anything else (vmlinux's, or a
                // module the target did not need before the fix) stays a
                // symbol the patch module needs.
                let exporter = e
                    .module
                    .rsplit('/')
                    .next()
                    .unwrap_or(&e.module)
                    .replace('-', "_");
                if e.module != "vmlinux" && self.depends.contains(&exporter) {
                    return Ok(Outside::ModuleExport {
                        target: self.object.clone(),
                        module: exporter,
                    });
                }
                return Ok(Outside::Export);
            }
            return self
                .syms
                .sympos(name, None)
                .map(|sympos| Outside::Livepatch {
                    object: "vmlinux".into(),
                    sympos,
                })
                .map_err(|e| e.to_string());
        }
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
