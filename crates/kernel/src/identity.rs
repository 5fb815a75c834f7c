//! Identity of the kernel this process runs on: `uname` for the release and
//! version strings, `/sys/kernel/notes` for the GNU build-id. The agent trusts
//! the build-id, never the release name alone: distributions rebuild the same
//! release with different code.

use std::path::{Path, PathBuf};

use crate::notes::{self, BuildId, NoteError};

/// Where a running kernel exposes its ELF notes.
pub const SYS_KERNEL_NOTES: &str = "/sys/kernel/notes";

/// Who a kernel is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// `uname -r`, e.g. `6.1.0-47-cloud-amd64`.
    pub release: String,
    /// `uname -v`, e.g. `#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3 (2026-05-08)`.
    pub version: String,
    /// GNU build-id of the vmlinux.
    pub build_id: BuildId,
}

/// Why the running kernel's identity could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The notes file could not be read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The notes file does not hold a usable build-id.
    #[error("{path}: {source}")]
    Notes {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: NoteError,
    },
}

impl Identity {
    /// Reads the identity of the kernel this process runs on.
    pub fn running() -> Result<Identity, IdentityError> {
        Self::running_with_notes(Path::new(SYS_KERNEL_NOTES))
    }

    /// Like [`Identity::running`], with the notes read from `notes_path`
    /// (tests and chroots).
    pub fn running_with_notes(notes_path: &Path) -> Result<Identity, IdentityError> {
        let uname = rustix::system::uname();
        let bytes = std::fs::read(notes_path).map_err(|source| IdentityError::Read {
            path: notes_path.to_path_buf(),
            source,
        })?;
        let build_id = notes::build_id(&bytes).map_err(|source| IdentityError::Notes {
            path: notes_path.to_path_buf(),
            source,
        })?;
        Ok(Identity {
            release: uname.release().to_string_lossy().into_owned(),
            version: uname.version().to_string_lossy().into_owned(),
            build_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_notes_file_names_the_path() {
        let err = Identity::running_with_notes(Path::new("/nonexistent/notes")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/notes"), "{err}");
    }
}
