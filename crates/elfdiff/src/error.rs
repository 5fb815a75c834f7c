//! Errors of elfdiff. A refusal (a change that cannot be live-patched) is
//! not an error: it is part of the [`crate::Report`]. Errors are for input
//! that cannot be compared at all, and they name the object and the place.

use std::path::PathBuf;

/// Result type of elfdiff.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why two objects could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("failed to read {path}: {source}")]
    Io {
        /// The object.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a well-formed ELF object.
    #[error("{path}: malformed ELF: {what}")]
    Malformed {
        /// The object.
        path: PathBuf,
        /// What is wrong, and where.
        what: String,
    },
    /// A well-formed file of a kind elfdiff does not handle.
    #[error("{path}: unsupported: {what}")]
    Unsupported {
        /// The object.
        path: PathBuf,
        /// What is unsupported.
        what: String,
    },
}
