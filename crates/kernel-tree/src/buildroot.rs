//! Build roots: the exact compiler that built a kernel, whatever the host
//! runs. From the kernel's `CONFIG_CC_VERSION_TEXT` this module decides
//! whether the host's compiler will do or which Debian suite ships that
//! compiler, creates a minimal root file system of that suite from Debian
//! packages (once, cached under `<cache>/buildroots/<suite>/`), and runs
//! kbuild's commands inside it with the cache bound at its own path, so
//! every absolute path kbuild wrote down stays valid. A kernel built with
//! Rust (`CONFIG_RUST=y`, Debian's 7.x kernels) also needs the exact rustc
//! and bindgen its configuration recorded: a root of the same suite with
//! them (`<suite>-rust`) provides those.
//!
//! Measured on the 2-core development machine (BENCHMARKS.md): creating a
//! root with mmdebstrap takes 25-40 s (network-bound) and 450-470 MB;
//! entering one with bubblewrap adds about 6 ms to a command, and kbuild
//! compiles as fast inside as on the host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::cache::{ensure_space, Cache};
use crate::{Error, Result};

/// A Debian suite and the `gcc-N` it ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    /// The suite's code name (`trixie`).
    pub name: &'static str,
    /// The major version of its `gcc-N` package.
    pub gcc: u32,
}

/// The suites a build root can be made of, one per gcc major version.
pub const SUITES: &[Suite] = &[
    Suite {
        name: "bookworm",
        gcc: 12,
    },
    Suite {
        name: "trixie",
        gcc: 14,
    },
];

/// The archive build roots are made from.
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// `NOREBOOT_BUILDROOT=always` builds in a build root even when the host's
/// compiler is the kernel's; `=chroot` does too, and enters it with chroot
/// even when bubblewrap is installed (as root; for hosts where bubblewrap
/// cannot make namespaces).
pub const ENV_OVERRIDE: &str = "NOREBOOT_BUILDROOT";

/// PATH inside a build root: the host's may name directories (`~/.cargo/bin`)
/// that are not there or hold host-only programs.
const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Written into a finished root: a root made for another package list (an
/// older noreboot) is made again.
const STAMP: &str = ".noreboot-buildroot";

/// Whether a root carries the Rust toolchain kbuild probes for a kernel
/// built with Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rust {
    /// Only the C toolchain (every kernel with `CONFIG_RUST` unset).
    Without,
    /// rustc, the Rust standard library's source and bindgen too: Kconfig
    /// enables `CONFIG_RUST` only when `scripts/rust_is_available.sh`
    /// finds all three, and records their versions in the configuration.
    With,
}

/// The Rust packages of a Rust root: `rust-src` is the library source
/// kbuild compiles `core` from; `bindgen` pulls in the libclang it loads.
const RUST_PACKAGES: [&str; 3] = ["rustc", "rust-src", "bindgen"];

/// What kbuild needs besides the compiler: the same list scripts/setup
/// installs on the host. `gcc` is the suite's default compiler, kbuild's
/// `HOSTCC` for the tools `make prepare` builds (fixdep, objtool).
fn packages(suite: &Suite, rust: Rust) -> Vec<String> {
    let mut list = vec![format!("gcc-{}", suite.gcc)];
    list.extend(
        [
            "gcc",
            "libc6-dev",
            "make",
            "bc",
            "bison",
            "flex",
            "libelf-dev",
            "libssl-dev",
            "dwarves",
            "python3",
            "perl",
            "kmod",
            "cpio",
            "xz-utils",
            "rsync",
            // Kconfig (7.x) probes `openssl list -key-managers` for
            // ML-DSA module signing keys.
            "openssl",
        ]
        .map(str::to_string),
    );
    if rust == Rust::With {
        list.extend(RUST_PACKAGES.map(str::to_string));
    }
    list
}

/// The directory name of a root under `<cache>/buildroots/`.
fn root_name(suite: &Suite, rust: Rust) -> String {
    match rust {
        Rust::Without => suite.name.to_string(),
        Rust::With => format!("{}-rust", suite.name),
    }
}

/// Where kbuild's commands for a kernel run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// On the host: its compiler is the kernel's.
    Native,
    /// In a build root of this suite.
    Root(Suite),
}

/// Decides where to build for a kernel whose compiler is `kernel` (the
/// `CONFIG_CC_VERSION_TEXT`, e.g. `gcc-14 (Debian 14.2.0-19) 14.2.0`),
/// given the first line the host's compiler of that name prints for
/// `--version` (`None` when the host has none) and whether a build root is
/// forced ([`ENV_OVERRIDE`]).
pub fn choose(kernel: &str, host: Option<&str>, force_root: bool) -> Result<Choice> {
    choose_with(kernel, host, true, force_root)
}

/// [`choose`] for a kernel whose other recorded tools (rustc, bindgen) the
/// host has exactly (`host_has_rest`) or not: only a host with all of them
/// builds natively.
fn choose_with(
    kernel: &str,
    host: Option<&str>,
    host_has_rest: bool,
    force_root: bool,
) -> Result<Choice> {
    if !force_root && host_has_rest && host.is_some_and(|h| h.trim() == kernel.trim()) {
        return Ok(Choice::Native);
    }
    let program = kernel.split_whitespace().next().unwrap_or("");
    let no_root = |reason: String| Error::NoBuildRoot {
        compiler: kernel.to_string(),
        reason,
    };
    // Debian 13's kernels are built with the triplet-named compiler
    // (`x86_64-linux-gnu-gcc-14`, from gcc-14-for-host), which the same
    // suite's gcc-N package provides.
    let Some(major) = program
        .strip_prefix("x86_64-linux-gnu-")
        .unwrap_or(program)
        .strip_prefix("gcc-")
    else {
        return Err(no_root(format!(
            "build roots provide Debian's gcc-N compilers, the kernel names {program:?}{}",
            host.map(|h| format!(" and the host's is {h:?}"))
                .unwrap_or_default()
        )));
    };
    let major: u32 = major
        .parse()
        .map_err(|_| no_root(format!("{program:?} is not a gcc-N program name")))?;
    SUITES
        .iter()
        .find(|s| s.gcc == major)
        .map(|s| Choice::Root(*s))
        .ok_or_else(|| {
            no_root(format!(
                "no Debian suite a build root can be made of ships gcc-{major} (known: {})",
                SUITES
                    .iter()
                    .map(|s| format!("{} has gcc-{}", s.name, s.gcc))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// Whether [`ENV_OVERRIDE`] forces a build root.
pub fn forced() -> bool {
    std::env::var(ENV_OVERRIDE).is_ok_and(|v| v == "always" || v == "chroot")
}

/// The first line `program --version` prints on the host, `None` when
/// there is no such program.
pub fn host_version(program: &str) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().next().unwrap_or("").trim().to_string())
}

/// How commands enter a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// bubblewrap: a mount namespace with the root bound read-only at `/`.
    Bwrap,
    /// As root without bubblewrap: `unshare --mount`, the root bound
    /// read-only onto itself, bind mounts, chroot.
    Chroot,
}

/// A Debian root file system of one suite with a kernel build toolchain.
#[derive(Debug, Clone)]
pub struct BuildRoot {
    suite: Suite,
    rust: Rust,
    dir: PathBuf,
    entry: Entry,
}

impl BuildRoot {
    /// The root of `suite` (with or without Rust) in `cache`, created
    /// first if it is not there (25-40 s and about 0.5 GB from [`MIRROR`];
    /// with Rust about 1.3 GB more). Creation happens in a temporary
    /// directory under the cache's lock and is renamed into place only
    /// when complete.
    pub fn ensure(cache: &Cache, suite: Suite, rust: Rust) -> Result<BuildRoot> {
        let entry = entry()?;
        let parent = cache.root().join("buildroots");
        let name = root_name(&suite, rust);
        let dir = parent.join(&name);
        let stamp = stamp(&suite, rust);
        let current =
            |dir: &Path| std::fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s == stamp);
        let root = BuildRoot {
            suite,
            rust,
            dir,
            entry,
        };
        if current(&root.dir) {
            return Ok(root);
        }
        let _lock = cache.lock(&format!("buildroot-{name}"))?;
        if current(&root.dir) {
            return Ok(root);
        }
        std::fs::create_dir_all(&parent).map_err(|e| Error::io("create", &parent, e))?;
        let needed = match rust {
            Rust::Without => 1 << 30,
            Rust::With => 3 << 30,
        };
        ensure_space(&parent, needed)?;
        let partial = parent.join(format!(".{name}.partial"));
        remove_tree(&partial)?;
        let started = Instant::now();
        tracing::info!(suite = suite.name, dir = %root.dir.display(), "creating a build root");
        bootstrap(&suite, rust, &partial)?;
        let stamp_path = partial.join(STAMP);
        std::fs::write(&stamp_path, &stamp).map_err(|e| Error::io("write", &stamp_path, e))?;
        // A root of an older package list goes only now that its
        // replacement is complete.
        remove_tree(&root.dir)?;
        std::fs::rename(&partial, &root.dir)
            .map_err(|e| Error::io("rename into place", &partial, e))?;
        tracing::info!(
            suite = suite.name,
            seconds = started.elapsed().as_secs_f64(),
            "build root ready"
        );
        Ok(root)
    }

    /// How commands enter the root: `bwrap` or `chroot`.
    pub fn entered_with(&self) -> &'static str {
        match self.entry {
            Entry::Bwrap => "bwrap",
            Entry::Chroot => "chroot",
        }
    }

    /// The suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Whether the root has the Rust toolchain.
    pub fn rust(&self) -> Rust {
        self.rust
    }

    /// The root's name: the suite, `-rust` for a root with Rust.
    pub fn name(&self) -> String {
        root_name(&self.suite, self.rust)
    }

    /// The root's directory on the host.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A command running `program` inside the root in the directory `dir`,
    /// with `binds` (host directories, e.g. the cache) at the same absolute
    /// paths inside; the caller adds arguments and environment. `/tmp` is
    /// private to the command; `dir` must be inside one of `binds`.
    pub fn command(&self, program: &str, dir: &Path, binds: &[&Path]) -> Command {
        // Mount points for the binds, made on the host side: the root is
        // bound read-only.
        for b in binds {
            if let Ok(rel) = b.strip_prefix("/") {
                let _ = std::fs::create_dir_all(self.dir.join(rel));
            }
        }
        let mut cmd;
        match self.entry {
            Entry::Bwrap => {
                cmd = Command::new(find_program("bwrap").unwrap_or_else(|| "bwrap".into()));
                cmd.arg("--ro-bind")
                    .arg(&self.dir)
                    .arg("/")
                    .args(["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]);
                for b in binds {
                    cmd.arg("--bind").arg(b).arg(b);
                }
                cmd.arg("--chdir")
                    .arg(dir)
                    .args(["--setenv", "PATH", ROOT_PATH])
                    .args(["--unsetenv", "TMPDIR", "--die-with-parent", "--"])
                    .arg(program);
            }
            Entry::Chroot => {
                cmd = Command::new("unshare");
                cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
                    .arg(CHROOT_SCRIPT)
                    .arg("noreboot-chroot")
                    .arg(&self.dir)
                    .arg(dir)
                    .args(binds)
                    .arg("--")
                    .arg(program)
                    .env("PATH", ROOT_PATH)
                    .env_remove("TMPDIR");
            }
        }
        cmd
    }

    /// The first line `program --version` prints inside the root.
    pub fn version(&self, program: &str) -> Result<String> {
        let mut cmd = self.command(program, Path::new("/"), &[]);
        cmd.arg("--version");
        let out = cmd
            .output()
            .map_err(|e| Error::spawn(&cmd, self.entry.package(), e))?;
        if !out.status.success() {
            return Err(Error::BuildRoot {
                suite: self.suite.name.to_string(),
                command: format!("{cmd:?}"),
                status: out.status.to_string(),
                stderr: tail(&out.stderr, 30),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string())
    }
}

impl Entry {
    fn package(self) -> &'static str {
        match self {
            Entry::Bwrap => "bubblewrap",
            Entry::Chroot => "util-linux",
        }
    }
}

/// Arguments: root, directory, binds..., `--`, program and its arguments.
/// The private mount namespace ends with the command, so nothing stays
/// mounted on the host. The root is bound read-only onto itself first, as
/// with bubblewrap (the binds' mount points already exist: made by
/// [`BuildRoot::command`]).
const CHROOT_SCRIPT: &str = r#"set -e
root=$1 dir=$2
shift 2
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t tmpfs tmpfs "$root/tmp"
while [ "$1" != -- ]; do
	mkdir -p "$root$1"
	mount --rbind "$1" "$root$1"
	shift
done
shift
exec chroot "$root" /bin/sh -c 'cd "$0" && exec "$@"' "$dir" "$@"
"#;

/// bubblewrap when it is installed (and [`ENV_OVERRIDE`] does not ask for
/// chroot), else chroot when running as root.
fn entry() -> Result<Entry> {
    let want_chroot = std::env::var(ENV_OVERRIDE).is_ok_and(|v| v == "chroot");
    if !want_chroot && on_path("bwrap") {
        return Ok(Entry::Bwrap);
    }
    let root = rustix::process::geteuid().is_root();
    if root && on_path("unshare") && on_path("chroot") {
        return Ok(Entry::Chroot);
    }
    Err(Error::ToolMissing {
        tool: if want_chroot { "chroot" } else { "bwrap" }.into(),
        package: if want_chroot {
            "util-linux and coreutils, and to run as root (NOREBOOT_BUILDROOT=chroot)"
        } else {
            "bubblewrap (or run as root to enter build roots with chroot)"
        }
        .into(),
    })
}

/// The full path of `program` on PATH or in the standard directories (a
/// PATH from sudo or cron may lack `/usr/sbin`).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::env::split_paths(ROOT_PATH))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn on_path(program: &str) -> bool {
    find_program(program).is_some()
}

fn stamp(suite: &Suite, rust: Rust) -> String {
    format!(
        "suite = {:?}\nmirror = {MIRROR:?}\npackages = {:?}\n",
        suite.name,
        packages(suite, rust)
    )
}

/// Makes a minbase root of `suite` with kbuild's packages in `dir` (which
/// must not exist): mmdebstrap, else debootstrap.
fn bootstrap(suite: &Suite, rust: Rust, dir: &Path) -> Result<()> {
    let include = format!("--include={}", packages(suite, rust).join(","));
    let mut cmd = if on_path("mmdebstrap") {
        let mut c = Command::new("mmdebstrap");
        c.args(["--variant=minbase", "--quiet"]);
        c
    } else if on_path("debootstrap") {
        let mut c = Command::new("debootstrap");
        c.arg("--variant=minbase");
        c
    } else {
        return Err(Error::ToolMissing {
            tool: "mmdebstrap".into(),
            package: "mmdebstrap (or debootstrap)".into(),
        });
    };
    cmd.arg(include)
        .arg(suite.name)
        .arg(dir)
        .arg(MIRROR)
        .env("PATH", ROOT_PATH);
    let out = cmd
        .output()
        .map_err(|e| Error::spawn(&cmd, "mmdebstrap", e))?;
    if !out.status.success() {
        let _ = remove_tree(dir);
        let mut stderr = tail(&out.stderr, 30);
        if stderr.trim().is_empty() {
            stderr = tail(&out.stdout, 30);
        }
        if stderr.contains("No space left on device") {
            return Err(Error::DiskFull {
                path: dir.to_path_buf(),
                needed: 0,
                available: crate::cache::free_space(dir).unwrap_or(0),
            });
        }
        return Err(Error::BuildRoot {
            suite: suite.name.to_string(),
            command: format!("{cmd:?}"),
            status: out.status.to_string(),
            stderr,
        });
    }
    // debootstrap keeps the packages it installed (about 160 MB of a
    // trixie root); mmdebstrap already removed them.
    let debs = dir.join("var/cache/apt/archives");
    for e in std::fs::read_dir(&debs).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "deb") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Removes a root or a partial one. A bootstrap killed part way can leave
/// file systems mounted inside (debootstrap binds the host's `/dev` into
/// the target in containers, and mounts `/proc` and `/sys`): they are
/// unmounted first, never recursed into, or the removal refuses.
fn remove_tree(dir: &Path) -> Result<()> {
    let mounted = mounts_under(dir);
    if !mounted.is_empty() {
        for mp in mounted.iter().rev() {
            let _ = Command::new("umount")
                .args(["--recursive", "--lazy"])
                .arg(mp)
                .env("PATH", ROOT_PATH)
                .status();
        }
        let left = mounts_under(dir);
        if !left.is_empty() {
            return Err(Error::Io {
                op: "remove (file systems are mounted inside it: unmount them first)",
                path: dir.to_path_buf(),
                source: std::io::Error::other(
                    left.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            });
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", dir, e)),
    }
}

/// Mount points at or below `dir` (from `/proc/self/mountinfo`), in the
/// order they were mounted.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|mp| PathBuf::from(unescape_mount_point(mp)))
        .filter(|mp| mp.starts_with(&dir))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_point(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The last `n` lines of a command's output.
fn tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Where kbuild's commands for one kernel run: on the host or in a build
/// root. Every `make`, compiler and objtool run of a workspace goes
/// through [`Toolchain::command`].
#[derive(Debug, Clone)]
pub enum Toolchain {
    /// The host's own compiler is the kernel's.
    Native,
    /// A build root with the kernel's compiler.
    Root(BuildRoot),
}

/// The tools a kernel's configuration recorded its build with: the C
/// compiler's `CONFIG_CC_VERSION_TEXT` and, for a kernel built with Rust,
/// `CONFIG_RUSTC_VERSION_TEXT` and `CONFIG_BINDGEN_VERSION_TEXT`. Kconfig
/// probes these again whenever it runs, so a tree prepared with others
/// would not have the kernel's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTools {
    /// The C compiler's version text (`x86_64-linux-gnu-gcc-14 (Debian
    /// 14.2.0-19) 14.2.0`).
    pub cc: String,
    /// rustc's and bindgen's version texts, when `CONFIG_RUST=y`.
    pub rust: Option<RustTools>,
}

/// The Rust tools a kernel was built with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustTools {
    /// `rustc 1.85.1 (4eb161250 2025-03-15) (built from a source tarball)`.
    pub rustc: String,
    /// `bindgen 0.71.1`.
    pub bindgen: String,
}

impl KernelTools {
    /// The tools the configuration `config` (a `.config` file's text)
    /// records; an error names the setting that is missing.
    pub fn from_config(config: &str) -> std::result::Result<KernelTools, String> {
        let value = |name: &str| -> Option<String> {
            config.lines().find_map(|l| {
                let v = l.strip_prefix(name)?.strip_prefix('=')?;
                Some(v.trim_matches('"').to_string())
            })
        };
        let cc = value("CONFIG_CC_VERSION_TEXT")
            .ok_or_else(|| "CONFIG_CC_VERSION_TEXT is missing".to_string())?;
        let rust = if value("CONFIG_RUST").as_deref() == Some("y") {
            let need = |name: &str| {
                value(name)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("CONFIG_RUST=y but {name} is missing"))
            };
            Some(RustTools {
                rustc: need("CONFIG_RUSTC_VERSION_TEXT")?,
                bindgen: need("CONFIG_BINDGEN_VERSION_TEXT")?,
            })
        } else {
            None
        };
        Ok(KernelTools { cc, rust })
    }

    /// Each tool as (program, version text the kernel recorded).
    fn programs(&self) -> Vec<(&str, &str)> {
        let mut list = vec![(
            self.cc.split_whitespace().next().unwrap_or("gcc"),
            self.cc.as_str(),
        )];
        if let Some(r) = &self.rust {
            list.push(("rustc", r.rustc.as_str()));
            list.push(("bindgen", r.bindgen.as_str()));
        }
        list
    }
}

impl Toolchain {
    /// The toolchain for a kernel built with `kernel` (its
    /// `CONFIG_CC_VERSION_TEXT`) and no Rust; see [`Toolchain::for_kernel`].
    pub fn for_compiler(cache: &Cache, kernel: &str) -> Result<Toolchain> {
        Toolchain::for_kernel(
            cache,
            &KernelTools {
                cc: kernel.to_string(),
                rust: None,
            },
        )
    }

    /// The toolchain for a kernel built with `tools`: the host when each
    /// of its programs reports exactly the version text the kernel
    /// recorded (unless [`ENV_OVERRIDE`] says otherwise), else the build
    /// root of the suite that ships the compiler (with Rust when the
    /// kernel has it), created if needed and checked to report exactly
    /// those versions.
    pub fn for_kernel(cache: &Cache, tools: &KernelTools) -> Result<Toolchain> {
        let programs = tools.programs();
        let (program, cc) = programs[0];
        let host = host_version(program);
        let host_has_rest = programs[1..]
            .iter()
            .all(|(p, want)| host_version(p).is_some_and(|h| h == want.trim()));
        let suite = match choose_with(cc, host.as_deref(), host_has_rest, forced())? {
            Choice::Native => return Ok(Toolchain::Native),
            Choice::Root(s) => s,
        };
        let rust = if tools.rust.is_some() {
            Rust::With
        } else {
            Rust::Without
        };
        let root = BuildRoot::ensure(cache, suite, rust)?;
        for (program, want) in programs {
            let found = root.version(program)?;
            if found != want.trim() {
                return Err(Error::BuildRootCompiler {
                    suite: root.name(),
                    program: program.to_string(),
                    kernel: want.to_string(),
                    found,
                });
            }
        }
        Ok(Toolchain::Root(root))
    }

    /// A command running `program` in `dir` with this toolchain; `binds`
    /// are the host directories it reads and writes (in a build root they
    /// appear at the same paths, `dir` must be among them).
    pub fn command(&self, program: &str, dir: &Path, binds: &[&Path]) -> Command {
        match self {
            Toolchain::Native => {
                let mut cmd = Command::new(program);
                cmd.current_dir(dir);
                cmd
            }
            Toolchain::Root(root) => root.command(program, dir, binds),
        }
    }

    /// The build root, if commands run in one.
    pub fn build_root(&self) -> Option<&BuildRoot> {
        match self {
            Toolchain::Native => None,
            Toolchain::Root(r) => Some(r),
        }
    }
}

impl std::fmt::Display for Toolchain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Toolchain::Native => f.write_str("the host's compiler"),
            Toolchain::Root(r) => write!(f, "the {} build root", r.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCC12: &str = "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0";
    const GCC14: &str = "gcc-14 (Debian 14.2.0-19) 14.2.0";

    fn suite(name: &str) -> Choice {
        Choice::Root(*SUITES.iter().find(|s| s.name == name).unwrap())
    }

    #[test]
    fn triplet_named_compilers_of_debian_13_go_to_their_suite() {
        let kernel = "x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0";
        assert_eq!(choose(kernel, None, false).unwrap(), suite("trixie"));
        assert_eq!(choose(kernel, Some(kernel), false).unwrap(), Choice::Native);
        let err = choose(
            "aarch64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0",
            None,
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("aarch64"), "{err}");
    }

    #[test]
    fn the_hosts_exact_compiler_builds_natively() {
        assert_eq!(choose(GCC12, Some(GCC12), false).unwrap(), Choice::Native);
        // Forced, the same kernel goes to the suite that ships gcc-12.
        assert_eq!(choose(GCC12, Some(GCC12), true).unwrap(), suite("bookworm"));
    }

    #[test]
    fn another_compiler_goes_to_the_suite_that_ships_it() {
        // Debian 13's kernels on a Debian 12 host: no gcc-14 at all.
        assert_eq!(choose(GCC14, None, false).unwrap(), suite("trixie"));
        // A gcc-12 that differs only in the Debian revision is no match.
        assert_eq!(
            choose(GCC12, Some("gcc-12 (Debian 12.2.0-14) 12.2.0"), false).unwrap(),
            suite("bookworm")
        );
    }

    #[test]
    fn compilers_no_root_provides_are_refused_by_name() {
        for (kernel, host, words) in [
            ("gcc-99 (Debian 99.1.0-1) 99.1.0", None, "gcc-99"),
            (
                "Debian clang version 16.0.6 (15)",
                Some("Debian clang version 14.0.6"),
                "\"Debian\"",
            ),
            ("gcc (GCC) 13.2.1", None, "\"gcc\""),
            ("gcc-x (Debian) 1", None, "gcc-x"),
            ("", None, "\"\""),
        ] {
            let err = choose(kernel, host, false).unwrap_err();
            assert!(matches!(err, Error::NoBuildRoot { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(kernel), "{msg}");
            assert!(msg.contains(words), "{msg}");
            assert!(msg.contains("no build root provides"), "{msg}");
        }
        // clang that matches the host exactly needs no root.
        let clang = "Debian clang version 14.0.6";
        assert_eq!(choose(clang, Some(clang), false).unwrap(), Choice::Native);
    }

    #[test]
    fn mount_points_are_unescaped_and_found_below_a_directory() {
        assert_eq!(unescape_mount_point("/a\\040b/c\\134d"), "/a b/c\\d");
        assert_eq!(unescape_mount_point("/x\\9"), "/x\\9");
        // /proc is mounted on every Linux host; nothing is below a new
        // temporary directory.
        assert!(!mounts_under(Path::new("/")).is_empty());
        let dir = tempfile::tempdir().unwrap();
        assert!(mounts_under(dir.path()).is_empty());
        assert!(mounts_under(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn every_root_has_its_compiler_and_kbuilds_tools() {
        for s in SUITES {
            let p = packages(s, Rust::Without);
            assert_eq!(p[0], format!("gcc-{}", s.gcc));
            for tool in ["make", "bison", "flex", "libelf-dev", "dwarves", "rsync"] {
                assert!(p.iter().any(|x| x == tool), "{} lacks {tool}", s.name);
            }
            assert!(!p.iter().any(|x| x == "rustc"));
            assert!(stamp(s, Rust::Without).contains(s.name));
            let with = packages(s, Rust::With);
            for tool in RUST_PACKAGES {
                assert!(with.iter().any(|x| x == tool), "{} lacks {tool}", s.name);
            }
            // Two roots of one suite: the stamps and directories differ.
            assert_ne!(stamp(s, Rust::With), stamp(s, Rust::Without));
            assert_eq!(root_name(s, Rust::With), format!("{}-rust", s.name));
        }
    }

    #[test]
    fn a_kernels_tools_are_read_from_its_config() {
        let c = "CONFIG_CC_VERSION_TEXT=\"x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0\"\n\
                 CONFIG_RUSTC_VERSION_TEXT=\"rustc 1.85.1 (4eb161250 2025-03-15) (built from a source tarball)\"\n\
                 CONFIG_BINDGEN_VERSION_TEXT=\"bindgen 0.71.1\"\nCONFIG_RUST=y\n";
        let t = KernelTools::from_config(c).unwrap();
        assert_eq!(t.cc, "x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0");
        let r = t.rust.as_ref().unwrap();
        assert_eq!(r.bindgen, "bindgen 0.71.1");
        assert!(r.rustc.starts_with("rustc 1.85.1 "));
        assert_eq!(
            t.programs().iter().map(|p| p.0).collect::<Vec<_>>(),
            ["x86_64-linux-gnu-gcc-14", "rustc", "bindgen"]
        );
        // 6.12: Kconfig probed no rustc (version 0), CONFIG_RUST unset.
        let t = KernelTools::from_config(
            "CONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14) 12.2.0\"\nCONFIG_RUSTC_VERSION=0\n# CONFIG_RUST is not set\n",
        )
        .unwrap();
        assert_eq!(t.rust, None);
        // Missing settings are named.
        let e = KernelTools::from_config("CONFIG_RUST=y\n").unwrap_err();
        assert!(e.contains("CONFIG_CC_VERSION_TEXT"), "{e}");
        let e = KernelTools::from_config("CONFIG_CC_VERSION_TEXT=\"gcc-14\"\nCONFIG_RUST=y\n")
            .unwrap_err();
        assert!(e.contains("CONFIG_RUSTC_VERSION_TEXT"), "{e}");
    }

    #[test]
    fn a_host_without_the_kernels_rust_tools_builds_in_a_root() {
        let gcc14 = "x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0";
        assert_eq!(
            choose_with(gcc14, Some(gcc14), true, false).unwrap(),
            Choice::Native
        );
        assert_eq!(
            choose_with(gcc14, Some(gcc14), false, false).unwrap(),
            suite("trixie")
        );
    }
}
