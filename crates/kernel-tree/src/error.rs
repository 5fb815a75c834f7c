//! Errors of kernel workspaces. Each variant names the operation and the
//! release, package or path involved, so a message alone tells a user what
//! to fix; no variant is a bare I/O error.

use std::path::PathBuf;

/// Everything that can go wrong while finding, fetching or using a kernel
/// workspace.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The release name is malformed.
    #[error("invalid kernel release {release:?}: {reason}")]
    BadRelease {
        /// What was given.
        release: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The archive has no image package for this release.
    #[error("unknown kernel release {release}: the package archive ({searched}) has no {package}{}", fmt_available(.available))]
    UnknownRelease {
        /// The release asked for.
        release: String,
        /// The sources searched (suites, or "the host's apt sources").
        searched: String,
        /// The package looked for.
        package: String,
        /// Releases of the same flavour the archive does offer.
        available: Vec<String>,
    },
    /// A package of the set is not available in the version of the image.
    #[error("version mismatch for kernel {release}: {package} {wanted} is needed ({reason}), the archive has {}", if .available.is_empty() { "none".to_string() } else { .available.join(", ") })]
    VersionMismatch {
        /// The release.
        release: String,
        /// The package whose version does not fit.
        package: String,
        /// The version (or relation) it must have.
        wanted: String,
        /// Why that version is needed.
        reason: String,
        /// Versions the archive holds.
        available: Vec<String>,
    },
    /// apt has no package lists at all.
    #[error("apt knows no packages: {remedy}")]
    AptListsEmpty {
        /// What makes the lists: the host's `apt-get update`, or a refresh
        /// of noreboot's private view.
        remedy: String,
    },
    /// The package archive could not be reached.
    #[error("cannot reach the package archive ({command}): {detail}")]
    ArchiveUnreachable {
        /// The command that failed.
        command: String,
        /// apt's own words.
        detail: String,
    },
    /// Not enough free space where the cache lives.
    #[error("disk full: {path} has {} free, {} needed", mib(*.available), mib(*.needed))]
    DiskFull {
        /// Directory that ran out of space.
        path: PathBuf,
        /// Bytes needed (0 when only the OS's ENOSPC is known).
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// A file system operation failed.
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
    /// A required host tool is missing.
    #[error("{tool} not found: install the Debian package {package}")]
    ToolMissing {
        /// The program.
        tool: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// An external command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// The tail of what it printed.
        stderr: String,
    },
    /// A source file does not compile (with a fix applied, typically: the
    /// fix needs changes from other files). The compiler's first
    /// diagnostics come first; the command line is kept for `--verbose`.
    #[error("{object} does not compile:\n{diagnostics}")]
    CompileFailed {
        /// The object that was being built.
        object: String,
        /// The compiler's first error lines.
        diagnostics: String,
        /// The full command line.
        command: String,
    },
    /// A kernel module cannot be found, read or ordered.
    #[error("kernel module {name}: {reason}")]
    Module {
        /// The module.
        name: String,
        /// Why.
        reason: String,
    },
    /// The kernel image cannot be read.
    #[error("cannot read kernel image {path}: {reason}")]
    BadImage {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Two things that must agree about a kernel do not.
    #[error("kernel {release}: {what} disagree: {expected} vs {found}")]
    Inconsistent {
        /// The release.
        release: String,
        /// Which facts disagree.
        what: String,
        /// One side.
        expected: String,
        /// The other side.
        found: String,
    },
    /// No build root can provide the compiler a kernel was built with.
    #[error("no build root provides the kernel's compiler {compiler:?}: {reason}")]
    NoBuildRoot {
        /// The kernel's CONFIG_CC_VERSION_TEXT.
        compiler: String,
        /// Why not.
        reason: String,
    },
    /// A build root's compiler is of the right family but not the exact
    /// version (the archive has moved on since the kernel was built).
    #[error("the {suite} build root's {program} is {found:?} but the kernel was built with {kernel:?}: the archive no longer ships that compiler, so no build root can reproduce this kernel's objects")]
    BuildRootCompiler {
        /// The build root's suite.
        suite: String,
        /// The compiler program.
        program: String,
        /// The kernel's CONFIG_CC_VERSION_TEXT.
        kernel: String,
        /// What the root's compiler reports.
        found: String,
    },
    /// Creating or entering a build root failed.
    #[error("{suite} build root: `{command}` failed ({status}): {stderr}")]
    BuildRoot {
        /// The suite.
        suite: String,
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// The tail of what it printed.
        stderr: String,
    },
    /// kbuild could not build an external module.
    #[error("building the module in {dir} against {release} failed:\n{output}")]
    Kbuild {
        /// The module directory.
        dir: PathBuf,
        /// The release.
        release: String,
        /// Compiler and make output.
        output: String,
    },
    /// The cache holds something this version cannot read.
    #[error("corrupt kernel workspace {path}: {reason} (delete the directory to fetch it again)")]
    CorruptWorkspace {
        /// The manifest or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No release of the wanted kind is in the archive.
    #[error("the package archive offers no complete {flavour} kernel of series {series} (image, headers, kbuild and source of one version)")]
    NoReleases {
        /// Flavour looked for.
        flavour: String,
        /// Series looked for.
        series: String,
    },
    /// A size (a cache cap) that cannot be read.
    #[error("invalid {what} {value:?}: {reason}")]
    BadSize {
        /// Where it came from: the variable or flag.
        what: String,
        /// What was given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The cache directory cannot be determined.
    #[error("no cache directory: set NOREBOOT_CACHE, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
}

fn fmt_available(v: &[String]) -> String {
    if v.is_empty() {
        String::new()
    } else {
        format!(" (available: {})", v.join(", "))
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl Error {
    /// A command that could not be started: a missing program becomes
    /// [`Error::ToolMissing`] naming the Debian `package` that provides it.
    pub fn spawn(cmd: &std::process::Command, package: &str, source: std::io::Error) -> Error {
        let tool = cmd.get_program().to_string_lossy().into_owned();
        if source.kind() == std::io::ErrorKind::NotFound {
            return Error::ToolMissing {
                tool,
                package: package.to_string(),
            };
        }
        Error::Command {
            command: tool,
            status: "not started".into(),
            stderr: source.to_string(),
        }
    }

    /// An I/O error on `path`; running out of space becomes [`Error::DiskFull`]
    /// so that the one cause a user can fix is named as such.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::StorageFull {
            let available = crate::cache::free_space(&path).unwrap_or(0);
            return Error::DiskFull {
                path,
                needed: 0,
                available,
            };
        }
        Error::Io { op, path, source }
    }
}
