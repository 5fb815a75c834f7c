//! Errors of the lab. A guest that panics, hangs or exits early is an
//! error carrying the tail of its serial console, so a failing test shows
//! what the kernel said without a rerun.

use std::path::PathBuf;
use std::time::Duration;

/// How many console lines a guest error carries.
pub const CONSOLE_TAIL_LINES: usize = 60;

/// Everything that can go wrong in the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The kernel image to boot does not exist.
    #[error("missing kernel: {path} does not exist (fetch the kernel workspace first: noreboot-lab fetch --kernel <release>)")]
    MissingKernel {
        /// The image path.
        path: PathBuf,
    },
    /// A host tool is missing.
    #[error("{tool} not found: install the Debian package {package}")]
    ToolMissing {
        /// The program.
        tool: String,
        /// Its Debian package.
        package: String,
    },
    /// The kernel panicked.
    #[error("guest kernel panicked ({context}); console tail:\n{console}")]
    GuestPanic {
        /// What the lab was doing.
        context: String,
        /// The last lines of the serial console.
        console: String,
    },
    /// A deadline passed; the guest was killed.
    #[error("guest timed out after {:.1}s while {context}; killed. Console tail:\n{console}", .after.as_secs_f64())]
    Timeout {
        /// What the lab was waiting for.
        context: String,
        /// The deadline that passed.
        after: Duration,
        /// The last lines of the serial console.
        console: String,
    },
    /// QEMU ended without a panic while the lab still expected answers.
    #[error("guest stopped unexpectedly ({status}) while {context}; QEMU said: {qemu_stderr}\nConsole tail:\n{console}")]
    GuestExited {
        /// What the lab was doing.
        context: String,
        /// QEMU's exit status.
        status: String,
        /// What QEMU printed on stderr.
        qemu_stderr: String,
        /// The last lines of the serial console.
        console: String,
    },
    /// A guest command that had to succeed failed.
    #[error("guest command {script:?} exited with status {status}\nstdout:\n{stdout}\nstderr:\n{stderr}")]
    CommandFailed {
        /// First line of the script.
        script: String,
        /// Its exit status.
        status: i32,
        /// Its stdout.
        stdout: String,
        /// Its stderr.
        stderr: String,
    },
    /// The command channel carried something the protocol does not allow.
    #[error("command channel protocol error: {0}")]
    Protocol(String),
    /// A guest path is not absolute and clean.
    #[error("invalid guest path {0:?}: must be absolute, without '.', '..' or empty components")]
    BadGuestPath(String),
    /// A host binary cannot be copied into the guest.
    #[error("cannot put {path} into the guest: {reason}")]
    BadBinary {
        /// The binary.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A kernel module cannot be resolved.
    #[error("kernel module {name}: {reason}")]
    Module {
        /// The module.
        name: String,
        /// Why.
        reason: String,
    },
    /// A host file operation failed.
    #[error("failed to {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel workspace could not be provided.
    #[error(transparent)]
    KernelTree(#[from] kernel_tree::Error),
}

impl LabError {
    /// A failed file operation `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> LabError {
        LabError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The last `CONSOLE_TAIL_LINES` lines of `console`.
pub fn console_tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    let start = lines.len().saturating_sub(CONSOLE_TAIL_LINES);
    lines[start..].join("\n")
}
