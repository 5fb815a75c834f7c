//! The kernel's livepatch conventions, independent of how objects were
//! built: where a symbol sits among same-named symbols of the running
//! kernel (`sympos`, counted the way `klp_find_object_symbol` walks
//! kallsyms), which symbols the kernel exports to modules (Module.symvers),
//! and the names of livepatch relocation sections and symbols.
//!
//! ```no_run
//! let syms = klp::symbols::KernelSymbols::from_vmlinux("vmlinux".as_ref())?;
//! // The second of several static `s_start` functions, from kallsyms.o:
//! let block = syms.find_object("kallsyms.c", &["s_start", "s_next", "s_stop", "s_show"])?;
//! let pos = syms.sympos("s_start", Some(block))?;
//! # Ok::<(), klp::Error>(())
//! ```

pub mod module;
pub mod names;
pub mod resolve;
pub mod symbols;
pub mod symvers;

pub use resolve::KernelResolver;
pub use symbols::KernelSymbols;
pub use symvers::Symvers;

/// Errors of livepatch symbol resolution.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("failed to read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A symbol table or Module.symvers is malformed.
    #[error("{path}: {what}")]
    Malformed {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong and where.
        what: String,
    },
    /// The kernel has no symbol of that name.
    #[error("the kernel has no symbol {0}")]
    NoSuchSymbol(String),
    /// Several symbols share the name and nothing says which is meant.
    #[error(
        "{name} is ambiguous: {count} symbols of that name and no object file to tell them apart"
    )]
    Ambiguous {
        /// The name.
        name: String,
        /// How many there are.
        count: usize,
    },
    /// No object file in the kernel matches the compiled one.
    #[error("no object file {file} in the kernel's symbol table holds the locals {locals}")]
    NoSuchObject {
        /// Basename of the source file.
        file: String,
        /// The locals looked for.
        locals: String,
    },
    /// The object file block does not define that symbol.
    #[error("{name} is not defined by {file} in the running kernel")]
    NotInObject {
        /// The symbol.
        name: String,
        /// The object file.
        file: String,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
