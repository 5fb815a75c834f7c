//! The kernel's source tree in a workspace: the distribution's source
//! tarball unpacked once, configured with the image's own config and the
//! release string frozen to the image's, `make prepare` done once; then
//! single objects compiled with exactly the kernel's flags plus whatever a
//! caller adds (`-ffunction-sections -fdata-sections` for diffing). The
//! whole kernel is never built.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::archive::Archive;
use crate::buildroot::Toolchain;
use crate::cache::{ensure_space, Cache};
use crate::evict::InUse;
use crate::workspace::Workspace;
use crate::{Error, Result};

/// A configured, prepared source tree.
#[derive(Debug, Clone)]
pub struct SourceTree {
    dir: PathBuf,
    release: String,
    cc: String,
    cache: Cache,
    /// The name of a scratch copy (its own lock).
    scratch: Option<String>,
    /// Make variables that make this host's toolchain probe like the
    /// kernel's build did (see [`make_overrides`]).
    overrides: Vec<String>,
    /// Where make, the compiler and objtool run.
    toolchain: Toolchain,
    /// The workspace directory the tree is in.
    workspace: PathBuf,
    /// Keeps the workspace from eviction while the tree is used, even
    /// after the workspace value is gone.
    in_use: InUse,
}

/// Where a compile with replaced files keeps the originals until they are
/// restored; a leftover one (a killed process) is restored on next use.
const BACKUP_DIR: &str = ".noreboot-originals";

/// The host tools `make prepare` builds in the tree with their own build
/// systems; scratch copies use the tree's through symlinks.
const HOST_TOOLS: [&str; 2] = ["tools/objtool", "tools/bpf/resolve_btfids"];

/// Beside the tree: original objects compiled with noreboot's flags, kept
/// for the next build (see [`SourceTree::compile_objects`]).
pub const ORIGINALS_DIR: &str = "original-objects";

/// Keeps `built` (object `object`, compiled by `command`) under `kept`:
/// written under temporary names and renamed, command last, so a reader
/// never takes a half-written copy (it needs both files).
fn keep_object(kept: &Path, object: &str, built: &Path, command: &str) -> std::io::Result<()> {
    let dest = kept.join(object);
    if let Some(d) = dest.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = kept.join(format!("{object}.tmp"));
    std::fs::copy(built, &tmp)?;
    std::fs::rename(&tmp, &dest)?;
    let cmd_tmp = kept.join(format!("{object}.cmd.tmp"));
    std::fs::write(&cmd_tmp, command)?;
    std::fs::rename(&cmd_tmp, kept.join(format!("{object}.cmd")))
}

/// Flags noreboot adds to the kernel's own when compiling objects to diff.
pub const DIFF_CFLAGS: &str = "-ffunction-sections -fdata-sections";

impl Workspace {
    /// The prepared source tree, unpacked and prepared on first use (about a
    /// minute and 1.5 GB).
    pub fn source_tree(&self, cache: &Cache, _archive: &dyn Archive) -> Result<SourceTree> {
        let root = self.dir().join("source");
        let series = self.release().series().to_string();
        let dir = root.join(format!("linux-source-{series}"));
        let (cc, _) = self.kernel_compiler()?;
        let toolchain = self.toolchain()?;
        let config_text = std::fs::read_to_string(self.config())
            .map_err(|e| Error::io("read", self.config(), e))?;
        let tree = SourceTree {
            dir: dir.clone(),
            release: self.release().to_string(),
            cc,
            cache: cache.clone(),
            scratch: None,
            overrides: make_overrides(
                &config_text,
                &dir.join("tools/objtool/objtool"),
                self.dir(),
            )?,
            toolchain,
            workspace: self.dir().to_path_buf(),
            in_use: self.in_use().clone(),
        };
        let done = root.join(".prepared");
        if done.exists() {
            let _lock = tree.lock()?;
            tree.restore_originals()?;
            tree.heal_host_tools(&self.source_tarball())?;
            return Ok(tree);
        }
        let _lock = cache.lock(&format!("{}-source", self.release()))?;
        if done.exists() {
            return Ok(tree);
        }
        let started = Instant::now();
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| Error::io("create", &root, e))?;
        // The unpacked, prepared tree is about as big again as the rest
        // of the workspace (1.7 GB for 6.12): room is made under the cap
        // as for a fetch.
        crate::evict::make_room(cache, self.release(), 2 << 30)?;
        ensure_space(&root, 2 << 30)?;
        tracing::info!(tarball = %self.source_tarball().display(), "unpacking the kernel source");
        let mut tar = Command::new("tar");
        tar.arg("-xf")
            .arg(self.source_tarball())
            .arg("-C")
            .arg(&root);
        run(tar, "tar", &root)?;
        if !dir.is_dir() {
            return Err(Error::CorruptWorkspace {
                path: dir,
                reason: "the source tarball did not unpack into this directory".into(),
            });
        }
        let config = dir.join(".config");
        std::fs::copy(self.config(), &config)
            .map_err(|e| Error::io("copy the config to", &config, e))?;
        tracing::info!("make olddefconfig prepare");
        run(tree.make(&["olddefconfig"]), "make", &dir)?;
        // olddefconfig must not have changed anything that matters: the
        // config has to be the image's own.
        let want = std::fs::read_to_string(self.config())
            .map_err(|e| Error::io("read", self.config(), e))?;
        let got = std::fs::read_to_string(&config).map_err(|e| Error::io("read", &config, e))?;
        let settings = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with("CONFIG_"))
                .map(str::to_string)
                .collect()
        };
        let (w, g) = (settings(&want), settings(&got));
        if let Some(diff) = w.iter().find(|l| !g.contains(l)) {
            return Err(Error::Inconsistent {
                release: self.release().to_string(),
                what: "image config and the config the source accepts".into(),
                expected: diff.clone(),
                found: "missing after make olddefconfig".into(),
            });
        }
        let jobs = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        run(tree.make(&[&format!("-j{jobs}"), "prepare"]), "make", &dir)?;
        std::fs::write(&done, "").map_err(|e| Error::io("write", &done, e))?;
        self.grew()?;
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            "kernel source prepared"
        );
        Ok(tree)
    }
}

/// Make variables for every kbuild run against this kernel (its source
/// tree or its headers), from its config; `objtool` is the kernel's own
/// objtool and `scratch` a directory for the wrapper described below.
///
/// - Kconfig (6.12 on) records what it probes of the toolchain as config
///   values (`CONFIG_RUSTC_VERSION`). A kernel built where no Rust
///   compiler was found says 0; on a host that has one (every noreboot
///   build host: it is written in Rust), `olddefconfig` would record the
///   host's version, so the config would no longer be the image's.
///   Pointing kbuild at a compiler that does not exist makes the probe
///   answer 0 again. A kernel built with Rust keeps the host's rustc.
/// - With IBT (`CONFIG_X86_KERNEL_IBT`, 6.12's Debian kernels), kbuild
///   runs objtool once over vmlinux.o and over each linked module instead
///   of over each object, so a single object compiled for diffing would
///   lack what objtool adds (ORC, return and call sites, nops for
///   default-off jump labels), and a patch module's link would run
///   objtool over the already-complete patch parts. Clearing
///   `delay-objtool` restores the per-object runs non-IBT kernels use,
///   with the kernel's own objtool flags except `--ibt`, which objtool
///   only accepts on linked objects: a wrapper drops it. (It would only
///   add seal records, which let the kernel turn unused ENDBRs into nops;
///   a patch keeps its ENDBRs.)
pub(crate) fn make_overrides(config: &str, objtool: &Path, scratch: &Path) -> Result<Vec<String>> {
    let set = |name: &str| config.lines().any(|l| l == name);
    let mut vars = Vec::new();
    if set("CONFIG_RUSTC_VERSION=0") {
        vars.push("RUSTC=noreboot-kernel-built-without-rustc".into());
    }
    if set("CONFIG_X86_KERNEL_IBT=y") && !set("CONFIG_LTO_CLANG=y") {
        let wrapper = scratch.join("noreboot-objtool");
        let script = format!(
            "#!/bin/sh\n# noreboot: the kernel's objtool on single objects, without --ibt\n# (see make_overrides in noreboot's kernel-tree crate).\nfor a do\n\tshift\n\t[ \"$a\" = --ibt ] || set -- \"$@\" \"$a\"\ndone\nexec '{}' \"$@\"\n",
            objtool.display()
        );
        if std::fs::read_to_string(&wrapper).ok().as_deref() != Some(script.as_str()) {
            std::fs::create_dir_all(scratch).map_err(|e| Error::io("create", scratch, e))?;
            let partial = scratch.join(".noreboot-objtool.partial");
            std::fs::write(&partial, &script).map_err(|e| Error::io("write", &partial, e))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io("chmod", &partial, e))?;
            std::fs::rename(&partial, &wrapper).map_err(|e| Error::io("move", &partial, e))?;
        }
        vars.push("delay-objtool=".into());
        vars.push(format!("objtool={}", wrapper.display()));
    }
    Ok(vars)
}

fn run(mut cmd: Command, package: &str, dir: &Path) -> Result<()> {
    let out = cmd.output().map_err(|e| Error::spawn(&cmd, package, e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No space left on device") {
            return Err(Error::DiskFull {
                path: dir.to_path_buf(),
                needed: 0,
                available: crate::cache::free_space(dir).unwrap_or(0),
            });
        }
        return Err(Error::Command {
            command: format!("{cmd:?}"),
            status: out.status.to_string(),
            stderr: stderr_excerpt(&stderr),
        });
    }
    Ok(())
}

/// A failed compile of `object` as the error a person can act on: the
/// compiler's first errors, not the command line (kept for `--verbose`)
/// nor what later steps of the command (objtool) said about the missing
/// output.
fn compile_failed(object: &str, e: Error) -> Error {
    let Error::Command {
        command, stderr, ..
    } = e
    else {
        return e;
    };
    Error::CompileFailed {
        object: object.to_string(),
        diagnostics: first_errors(&stderr, 12),
        command,
    }
}

/// A compiler's error line.
fn is_error_line(l: &str) -> bool {
    l.contains(": error:") || l.contains(": fatal error:")
}

/// Where the diagnostic of line `i` begins: with the "In function"/"In
/// file included from" lines that place it.
fn placed_from(lines: &[&str], i: usize) -> usize {
    let mut start = i;
    while start > 0
        && (lines[start - 1].contains(": In function")
            || lines[start - 1].starts_with("In file included from")
            || lines[start - 1].trim_start().starts_with("from "))
    {
        start -= 1;
    }
    start
}

/// What a failed command's error keeps of its stderr: the last 30 lines,
/// and before them, when it comes earlier, the first error with the lines
/// that place and follow it (up to 40). A compiler that warns at length
/// after its first error would otherwise leave only warnings, and
/// [`first_errors`] nothing to show.
pub(crate) fn stderr_excerpt(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let tail_from = lines.len().saturating_sub(30);
    let tail = lines[tail_from..].join("\n");
    match lines.iter().position(|l| is_error_line(l)) {
        Some(i) if i < tail_from => {
            let start = placed_from(&lines, i);
            let end = (start + 40).min(tail_from);
            let gap = if end < tail_from { "\n[...]" } else { "" };
            format!("{}{gap}\n{tail}", lines[start..end].join("\n"))
        }
        _ => tail,
    }
}

/// Up to `n` lines of compiler output from the first error on (with the
/// "In function"/"In file included from" lines that place it), or the
/// first lines when no line says `error:`.
pub(crate) fn first_errors(stderr: &str, n: usize) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let Some(first) = lines.iter().position(|l| is_error_line(l)) else {
        return lines.iter().take(n).copied().collect::<Vec<_>>().join("\n");
    };
    let start = placed_from(&lines, first);
    lines[start..]
        .iter()
        .take_while(|l| !l.starts_with("objtool") && !l.starts_with("make"))
        .take(n)
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

impl SourceTree {
    /// The tree's top directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Notes that the workspace grew, here by what this crate compiled or
    /// by a caller's own make run (`noreboot-lab make`): its recorded size
    /// is measured again by the next status or eviction ([`crate::evict`]).
    pub fn grew(&self) -> Result<()> {
        crate::evict::forget_size(&self.workspace)
    }

    pub(crate) fn make(&self, targets: &[&str]) -> Command {
        let mut cmd = self.command("make");
        cmd.arg(format!("CC={}", self.cc))
            .arg(format!("KERNELRELEASE={}", self.release))
            .args(&self.overrides)
            .args(targets)
            .env_remove("ARCH")
            .env_remove("CROSS_COMPILE")
            .env_remove("MAKEFLAGS");
        cmd
    }

    /// kbuild's make in this tree with `args`, as noreboot runs it: the
    /// kernel's compiler and release, noreboot's make variables (see
    /// [`make_overrides`]), in the tree's toolchain (host or build root).
    /// The tree is not locked here: a caller that builds objects holds
    /// [`SourceTree::lock`] meanwhile.
    pub fn make_command(&self, args: &[&str]) -> Command {
        self.make(args)
    }

    /// `program` run in the tree's directory with its toolchain; the cache
    /// (the tree, scratch copies, workspaces) is where it reads and writes.
    fn command(&self, program: &str) -> Command {
        self.toolchain
            .command(program, &self.dir, &[self.cache.root()])
    }

    /// Where this tree's make, compiler and objtool run.
    pub fn toolchain(&self) -> &Toolchain {
        &self.toolchain
    }

    /// The tree's lock, held while it is written (compiles, restores):
    /// the factory, the tests and `noreboot-lab make` take it in turn.
    /// Released when the returned file is dropped.
    pub fn lock(&self) -> Result<std::fs::File> {
        let name = match &self.scratch {
            Some(n) => format!("{}-scratch-{n}", self.release),
            None => format!("{}-source-build", self.release),
        };
        self.cache.lock(&name)
    }

    /// A copy of this tree to build patched sources in: hard links to
    /// every file (about a second for the whole tree), on the same file
    /// system, removed when the returned tree is dropped. Files are only
    /// ever replaced in it (unlinked first), so the original tree never
    /// changes through a shared link.
    pub fn scratch_copy(&self, label: &str) -> Result<ScratchTree> {
        let _lock = self.lock()?;
        self.restore_originals()?;
        let parent = self.dir.parent().unwrap_or(&self.dir).join("scratch");
        std::fs::create_dir_all(&parent).map_err(|e| Error::io("create", &parent, e))?;
        // Copies left by killed builds (their process is gone) go first.
        if let Ok(entries) = std::fs::read_dir(&parent) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let pid = n.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let name = format!("{label}-{}", std::process::id());
        let dir = parent.join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let mut entries = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(|e| Error::io("list", &self.dir, e))? {
            let e = e.map_err(|e| Error::io("list", &self.dir, e))?;
            entries.push(e.path());
        }
        let mut cp = Command::new("cp");
        cp.arg("-al").args(&entries).arg(&dir);
        run(cp, "coreutils", &parent)?;
        // The host tools kbuild builds during `prepare` (objtool,
        // resolve_btfids) are made by their own build system with absolute
        // paths, so a copy would rebuild them, writing in place through
        // the shared links into the original tree while it builds too.
        // They do not depend on the sources a fix changes: the copy uses
        // the original's through a symlink and never rebuilds them. The
        // rest of tools/ is linked like any file (a fix may change a file
        // the kernel compiles from there, tools/lib/bpf/relo_core.c).
        for t in HOST_TOOLS {
            let copy = dir.join(t);
            if copy.exists() {
                std::fs::remove_dir_all(&copy).map_err(|e| Error::io("remove", &copy, e))?;
                std::os::unix::fs::symlink(self.dir.join(t), &copy)
                    .map_err(|e| Error::io("link", &copy, e))?;
            }
        }
        Ok(ScratchTree(SourceTree {
            dir,
            release: self.release.clone(),
            cc: self.cc.clone(),
            cache: self.cache.clone(),
            scratch: Some(name),
            overrides: self.overrides.clone(),
            toolchain: self.toolchain.clone(),
            workspace: self.workspace.clone(),
            in_use: self.in_use.clone(),
        }))
    }

    /// Replaces a file of the tree with new contents as a new inode, so a
    /// tree sharing the old one through a hard link keeps it.
    pub fn replace_file(&self, rel: &str, contents: &[u8]) -> Result<()> {
        let file = self.dir.join(rel);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        let _ = std::fs::remove_file(&file);
        std::fs::write(&file, contents).map_err(|e| Error::io("write", &file, e))
    }

    /// Compiles several objects in one kbuild run (`-j` as many as the
    /// machine has cores) with the kernel's flags plus `extra_cflags`, and
    /// copies each to `out/<object with / as _>`. Returns those paths and
    /// the command kbuild ran for each, read while this tree is still
    /// locked: another build may recompile the same object (and rewrite
    /// its `.cmd`) the moment the lock is released.
    ///
    /// The tree's sources never change, so each object compiled with the
    /// same flags is the same every time: it is kept, with its command,
    /// beside the tree ([`ORIGINALS_DIR`]) and the next build that needs it
    /// takes the copy instead of starting kbuild (seconds of make walking
    /// the tree, for every fix).
    pub fn compile_objects(
        &self,
        objects: &[&str],
        extra_cflags: &str,
        jobs: usize,
        out: &Path,
    ) -> Result<Compiled> {
        let _lock = self.lock()?;
        self.restore_originals()?;
        std::fs::create_dir_all(out).map_err(|e| Error::io("create", out, e))?;
        let paths: Vec<PathBuf> = objects
            .iter()
            .map(|o| out.join(o.replace('/', "_")))
            .collect();
        let kept = self.kept_objects(extra_cflags);
        let mut commands: Vec<Option<String>> = vec![None; objects.len()];
        if let Some(kept) = &kept {
            for (i, o) in objects.iter().enumerate() {
                let (obj, cmd) = (kept.join(o), kept.join(format!("{o}.cmd")));
                if let (Ok(command), true) = (std::fs::read_to_string(&cmd), obj.is_file()) {
                    if std::fs::copy(&obj, &paths[i]).is_ok() {
                        commands[i] = Some(command);
                    }
                }
            }
        }
        let missing: Vec<(&str, &Path)> = objects
            .iter()
            .zip(&paths)
            .zip(&commands)
            .filter(|(_, c)| c.is_none())
            .map(|((o, p), _)| (*o, p.as_path()))
            .collect();
        if !missing.is_empty() {
            self.make_objects(&missing, extra_cflags, jobs)?;
            // The objects stay in the tree and are kept beside it.
            self.grew()?;
        }
        let mut out_commands = Vec::with_capacity(objects.len());
        for (i, o) in objects.iter().enumerate() {
            let command = match commands[i].take() {
                Some(c) => c,
                None => {
                    let c = self.saved_command(o)?;
                    if let Some(kept) = &kept {
                        // A copy that cannot be kept only costs a compile.
                        let _ = keep_object(kept, o, &paths[i], &c);
                    }
                    c
                }
            };
            out_commands.push(command);
        }
        Ok(Compiled {
            paths,
            commands: out_commands,
        })
    }

    /// Where objects of this (original, not scratch) tree compiled with
    /// `extra_cflags` are kept: one directory per set of flags and
    /// noreboot version.
    fn kept_objects(&self, extra_cflags: &str) -> Option<PathBuf> {
        if self.scratch.is_some() {
            return None;
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            extra_cflags,
            env!("CARGO_PKG_VERSION"),
            &self.cc,
            &self.overrides,
            self.toolchain.to_string(),
        )
            .hash(&mut h);
        Some(
            self.dir
                .parent()
                .unwrap_or(&self.dir)
                .join(ORIGINALS_DIR)
                .join(format!("{:016x}", h.finish())),
        )
    }

    /// Host tools that a scratch copy of an earlier noreboot version rebuilt
    /// through shared hard links (their kbuild `.cmd` files name the
    /// scratch tree, and may be half-written) are reset to the tarball's
    /// files, so kbuild rebuilds them here once.
    fn heal_host_tools(&self, tarball: &Path) -> Result<()> {
        let mut files = Vec::new();
        let mut polluted = false;
        let mut stack: Vec<PathBuf> = HOST_TOOLS.iter().map(|d| self.dir.join(d)).collect();
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p);
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                if !polluted && name.starts_with('.') && name.ends_with(".cmd") {
                    polluted = std::fs::read_to_string(&p).is_ok_and(|t| t.contains("/scratch/"));
                }
                files.push(p);
            }
        }
        if !polluted {
            return Ok(());
        }
        tracing::warn!("resetting host tools an older scratch build wrote into");
        let mut tar = Command::new("tar");
        tar.arg("-tf").arg(tarball);
        let out = tar.output().map_err(|e| Error::spawn(&tar, "tar", e))?;
        let shipped: std::collections::HashSet<PathBuf> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('/').map(|(_, rel)| self.dir.join(rel)))
            .collect();
        for f in files.into_iter().filter(|f| !shipped.contains(f)) {
            let _ = std::fs::remove_file(f);
        }
        // Rebuilt now, alone: two compiles at once (original and scratch
        // tree, which shares these tools) must not both rebuild them.
        let jobs = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        run(
            self.make(&[&format!("-j{jobs}"), "prepare"]),
            "make",
            &self.dir,
        )
    }

    /// Compiles `objects` in this tree with exactly the commands kbuild
    /// used for them in `reference` (the compiler and objtool, with
    /// whatever flags that compile had), run directly, `jobs` at a time;
    /// copies each to `out/<object with / as _>`. Without make, nothing
    /// else in this tree is built or refreshed: for a scratch copy
    /// compiled after its original.
    pub fn compile_like(
        &self,
        reference: &Compiled,
        objects: &[&str],
        jobs: usize,
        out: &Path,
    ) -> Result<Vec<PathBuf>> {
        let _lock = self.lock()?;
        std::fs::create_dir_all(out).map_err(|e| Error::io("create", out, e))?;
        if reference.commands.len() != objects.len() {
            return Err(Error::CorruptWorkspace {
                path: self.dir.clone(),
                reason: format!(
                    "{} object(s) to compile but {} saved command(s)",
                    objects.len(),
                    reference.commands.len()
                ),
            });
        }
        let commands: Vec<(&str, &String)> =
            objects.iter().copied().zip(&reference.commands).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..jobs.clamp(1, commands.len().max(1)))
                .map(|_| {
                    s.spawn(|| loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((object, command)) = commands.get(i) else {
                            return Ok(());
                        };
                        unlink_outputs(&self.dir, object);
                        let mut sh = self.command("sh");
                        sh.arg("-c").arg(command);
                        run(sh, "sh", &self.dir).map_err(|e| compile_failed(object, e))?;
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("compile worker"))
                .collect()
        });
        results.into_iter().collect::<Result<()>>()?;
        let mut paths = Vec::new();
        for object in objects {
            let built = self.dir.join(object);
            let dest = out.join(object.replace('/', "_"));
            std::fs::copy(&built, &dest).map_err(|e| Error::io("copy", &built, e))?;
            paths.push(dest);
        }
        Ok(paths)
    }

    /// The command kbuild saved for `object` (`cmd_<object> := ...`, the
    /// first line of its `.cmd` file).
    fn saved_command(&self, object: &str) -> Result<String> {
        let path = self.dir.join(object);
        let cmd_file = match (path.parent(), path.file_name()) {
            (Some(d), Some(n)) => d.join(format!(".{}.cmd", n.to_string_lossy())),
            _ => self.dir.join(object),
        };
        let text =
            std::fs::read_to_string(&cmd_file).map_err(|e| Error::io("read", &cmd_file, e))?;
        text.lines()
            .next()
            .and_then(|l| {
                l.strip_prefix(&format!("cmd_{object} := "))
                    .or_else(|| l.strip_prefix(&format!("savedcmd_{object} := ")))
            })
            .map(str::to_string)
            .ok_or_else(|| Error::CorruptWorkspace {
                path: cmd_file.clone(),
                reason: format!("no saved command for {object}"),
            })
    }

    /// Puts back files a compile with replacements left replaced.
    fn restore_originals(&self) -> Result<()> {
        let backup = self.dir.join(BACKUP_DIR);
        if !backup.exists() {
            return Ok(());
        }
        let mut stack = vec![backup.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).map_err(|e| Error::io("list", &d, e))? {
                let p = e.map_err(|e| Error::io("list", &d, e))?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&backup) {
                    let dest = self.dir.join(rel);
                    std::fs::rename(&p, &dest).map_err(|e| Error::io("restore", &dest, e))?;
                }
            }
        }
        std::fs::remove_dir_all(&backup).map_err(|e| Error::io("remove", &backup, e))
    }

    /// Compiles `object` (a path relative to the tree such as
    /// `kernel/sys.o`) with the kernel's flags plus `extra_cflags`, and
    /// copies the result to `out`.
    pub fn compile(&self, object: &str, extra_cflags: &str, out: &Path) -> Result<()> {
        self.compile_with(object, &[], extra_cflags, out)
    }

    /// Like [`SourceTree::compile`] with some source files replaced by
    /// other contents for this one compile (the tree is restored after,
    /// also after a failure, and on next use after a crash).
    pub fn compile_with(
        &self,
        object: &str,
        replace: &[(&str, &[u8])],
        extra_cflags: &str,
        out: &Path,
    ) -> Result<()> {
        let _lock = self.lock()?;
        let backup = self.dir.join(BACKUP_DIR);
        for (rel, contents) in replace {
            let file = self.dir.join(rel);
            let saved = backup.join(rel);
            if let Some(parent) = saved.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
            }
            // Moved, not copied and overwritten: the original inode stays
            // intact for scratch copies that link to it.
            std::fs::rename(&file, &saved).map_err(|e| Error::io("back up", &file, e))?;
            std::fs::write(&file, contents).map_err(|e| Error::io("write", &file, e))?;
        }
        let result = self.make_objects(&[(object, out)], extra_cflags, 1);
        let restored = self.restore_originals();
        if !replace.is_empty() {
            // The object now reflects the replaced sources: drop it so no
            // later build mistakes it for the original.
            let _ = std::fs::remove_file(self.dir.join(object));
        }
        result.and(restored)
    }

    /// Runs kbuild for `(object, copy to)` pairs under the caller's lock:
    /// the objects' old outputs unlinked first, one make for all, each
    /// result copied out.
    fn make_objects(
        &self,
        objects: &[(&str, &Path)],
        extra_cflags: &str,
        jobs: usize,
    ) -> Result<()> {
        for (object, _) in objects {
            unlink_outputs(&self.dir, object);
        }
        let mut cmd = self.make(&[&format!("-j{}", jobs.max(1))]);
        cmd.args(objects.iter().map(|(o, _)| o))
            .arg(format!("KCFLAGS={extra_cflags}"));
        run(cmd, "make", &self.dir)?;
        for (object, out) in objects {
            let built = self.dir.join(object);
            std::fs::copy(&built, out).map_err(|e| Error::io("copy", &built, e))?;
        }
        Ok(())
    }
}

/// Removes what compiling `object` writes (the object, kbuild's `.cmd`
/// and the compiler's `.d`): written in place, they would write through a
/// hard link shared with another tree.
fn unlink_outputs(dir: &Path, object: &str) {
    let path = dir.join(object);
    let _ = std::fs::remove_file(&path);
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        let name = name.to_string_lossy();
        let _ = std::fs::remove_file(parent.join(format!(".{name}.cmd")));
        let _ = std::fs::remove_file(parent.join(format!(".{name}.d")));
    }
}

/// Objects compiled through kbuild, in the order asked for.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Where each object was copied to.
    pub paths: Vec<PathBuf>,
    /// The shell command kbuild ran for each (from its `.cmd` file).
    pub commands: Vec<String>,
}

/// A hard-linked copy of a source tree, removed on drop.
#[derive(Debug)]
pub struct ScratchTree(SourceTree);

impl std::ops::Deref for ScratchTree {
    type Target = SourceTree;
    fn deref(&self) -> &SourceTree {
        &self.0
    }
}

impl Drop for ScratchTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0.dir);
    }
}

impl Workspace {
    /// The source tarball of another Debian version of this kernel's
    /// series (for the fixes between two versions), cached under
    /// `sources/`.
    pub fn other_source(
        &self,
        cache: &Cache,
        archive: &dyn Archive,
        version: &str,
    ) -> Result<PathBuf> {
        debian_source(cache, archive, self.release(), version)
    }
}

/// The source tarball of `release`'s series at Debian version `version`
/// (`linux-source-6.1` at `6.1.192-3`), downloaded once into the cache's
/// `sources/` without fetching the rest of a workspace: what a release
/// plan reads to tell whether a build already has a fix.
pub fn debian_source(
    cache: &Cache,
    archive: &dyn Archive,
    release: &crate::Release,
    version: &str,
) -> Result<PathBuf> {
    let package = release.source_package();
    let dir = cache.root().join("sources");
    let tarball = dir.join(format!("{package}_{version}.tar.xz"));
    if tarball.exists() {
        return Ok(tarball);
    }
    let _lock = cache.lock(&format!("{package}_{version}"))?;
    if tarball.exists() {
        return Ok(tarball);
    }
    let infos = archive.show(std::slice::from_ref(&package))?;
    let info = infos
        .iter()
        .find(|i| i.version.to_string() == version)
        .ok_or_else(|| Error::VersionMismatch {
            release: release.to_string(),
            package: package.clone(),
            wanted: format!("= {version}"),
            reason: "requested explicitly".into(),
            available: infos.iter().map(|i| i.version.to_string()).collect(),
        })?;
    let partial = dir.join(format!(".{package}_{version}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| Error::io("create", &partial, e))?;
    ensure_space(&partial, info.size * 3)?;
    let deb = archive.download(&package, &info.version, &partial)?;
    crate::workspace::unpack_deb(&deb, &partial)?;
    let unpacked = partial.join(format!("usr/src/{package}.tar.xz"));
    std::fs::rename(&unpacked, &tarball).map_err(|e| Error::io("move", &unpacked, e))?;
    let _ = std::fs::remove_dir_all(&partial);
    Ok(tarball)
}

/// Extracts whichever of `files` (paths relative to the tree) `tarball`
/// holds into `dest`, the tarball's top directory stripped, and returns
/// those it does not hold (a file a fix touches that this version lacks).
pub fn extract_present(tarball: &Path, files: &[&str], dest: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dest).map_err(|e| Error::io("create", dest, e))?;
    let top = tarball_top(tarball);
    let mut tar = Command::new("tar");
    tar.arg("-xf")
        .arg(tarball)
        .arg("-C")
        .arg(dest)
        .arg("--strip-components=1")
        .args(files.iter().map(|f| format!("{top}/{f}")));
    // tar exits 2 when a member is missing, after extracting the others.
    let out = tar.output().map_err(|e| Error::spawn(&tar, "tar", e))?;
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !dest.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    if !out.status.success() && missing.is_empty() {
        return Err(Error::Command {
            command: format!("{tar:?}"),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(missing)
}

/// Files of a source tarball, extracted once into the cache
/// (`sources/files/<tarball>/`) and reused: a release plan reads the same
/// few files of the same source packages on every run. Returns the tree
/// and the files the tarball does not hold (remembered too, in `.absent`).
/// Each file is moved into place whole, so a killed extraction leaves no
/// partial file behind.
pub fn cached_files(
    cache: &Cache,
    tarball: &Path,
    files: &[&str],
) -> Result<(PathBuf, Vec<String>)> {
    let name = tarball
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.trim_end_matches(".tar.xz").to_string())
        .unwrap_or_default();
    let tree = cache.root().join("sources").join("files").join(&name);
    std::fs::create_dir_all(&tree).map_err(|e| Error::io("create", &tree, e))?;
    let _lock = cache.lock(&format!("files-{name}"))?;
    let absent_list = tree.join(".absent");
    let mut absent: std::collections::BTreeSet<String> = std::fs::read_to_string(&absent_list)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let wanted: Vec<&str> = files
        .iter()
        .copied()
        .filter(|f| !tree.join(f).is_file() && !absent.contains(*f))
        .collect();
    if !wanted.is_empty() {
        let tmp = cache
            .root()
            .join("sources")
            .join("files")
            .join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let missing = extract_present(tarball, &wanted, &tmp)?;
        for f in &wanted {
            if missing.iter().any(|m| m == f) {
                continue;
            }
            let to = tree.join(f);
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
            }
            let from = tmp.join(f);
            std::fs::rename(&from, &to).map_err(|e| Error::io("move", &from, e))?;
        }
        let _ = std::fs::remove_dir_all(&tmp);
        if !missing.is_empty() {
            absent.extend(missing);
            let text: String = absent.iter().map(|a| format!("{a}\n")).collect();
            std::fs::write(&absent_list, text).map_err(|e| Error::io("write", &absent_list, e))?;
        }
    }
    let missing = files
        .iter()
        .filter(|f| absent.contains(**f))
        .map(|f| f.to_string())
        .collect();
    Ok((tree, missing))
}

/// The top directory of a Debian source tarball (`linux-source-6.1`), from
/// its file name.
fn tarball_top(tarball: &Path) -> String {
    tarball
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('_').next())
        .map(|n| n.trim_end_matches(".tar.xz").to_string())
        .unwrap_or_default()
}

/// Extracts `files` (paths relative to the tree, e.g. `kernel/sys.c`) from a
/// source tarball into `dest` (as `dest/<path>`); the tarball's top
/// directory is stripped. Every file must be there.
pub fn extract_files(tarball: &Path, files: &[&str], dest: &Path) -> Result<()> {
    let missing = extract_present(tarball, files, dest)?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Command {
        command: format!("tar -xf {}", tarball.display()),
        status: "incomplete".into(),
        stderr: format!("not in the tarball: {}", missing.join(", ")),
    })
}

#[cfg(test)]
mod tests {
    use super::{first_errors, make_overrides, stderr_excerpt};

    #[test]
    fn the_first_error_survives_a_long_tail_of_warnings() {
        let mut stderr = String::from(
            "net/ipv6/udp.c: In function 'udp_sk_rx_dst_set':\nnet/ipv6/udp.c:979:55: error: implicit declaration of function 'dst_rt6_info'\n  979 |   rt6_get_cookie(dst_rt6_info(dst));\n",
        );
        for i in 0..100 {
            stderr.push_str(&format!(
                "net/ipv6/udp.c:{}:1: warning: something {i}\n",
                1000 + i
            ));
        }
        stderr.push_str("objtool: can't open net/ipv6/udp.o\n");
        let kept = stderr_excerpt(&stderr);
        assert!(kept.contains("objtool: can't open"), "the tail is kept");
        assert!(kept.contains("[...]"), "{kept}");
        assert!(
            first_errors(&kept, 12).starts_with(
                "net/ipv6/udp.c: In function 'udp_sk_rx_dst_set':\nnet/ipv6/udp.c:979:55: error: implicit declaration"
            ),
            "{kept}"
        );
        // Short output is kept whole, once.
        let short = "a: error: b\nc\n";
        assert_eq!(stderr_excerpt(short), "a: error: b\nc");
    }

    #[test]
    fn compile_errors_come_first_and_without_objtool() {
        let stderr = "net/x.c: In function 'f':\nnet/x.c:10:5: error: implicit declaration of function 'helper_new'\n   10 |     helper_new();\n      |     ^~~~~~~~~~\nnet/x.c:11:9: error: 'struct s' has no member named 'm'\nobjtool: can't open net/x.o: No such file or directory\n";
        assert_eq!(
            first_errors(stderr, 12),
            "net/x.c: In function 'f':\nnet/x.c:10:5: error: implicit declaration of function 'helper_new'\n   10 |     helper_new();\n      |     ^~~~~~~~~~\nnet/x.c:11:9: error: 'struct s' has no member named 'm'"
        );
        assert_eq!(first_errors(stderr, 2).lines().count(), 2);
        assert_eq!(first_errors("ld: odd\n\nmore\n", 12), "ld: odd\nmore");
    }

    #[test]
    fn overrides_follow_the_config() {
        let dir = std::env::temp_dir().join(format!("noreboot-overrides-{}", std::process::id()));
        let objtool = std::path::Path::new("/kernel/tools/objtool/objtool");
        // Debian 12's 6.12 kernels: built where no rustc was found, with IBT.
        let debian_6_12 = "CONFIG_CC_VERSION_TEXT=\"gcc-12\"\nCONFIG_RUSTC_VERSION=0\nCONFIG_RUSTC_LLVM_VERSION=0\nCONFIG_X86_KERNEL_IBT=y\n";
        let wrapper = dir.join("noreboot-objtool");
        assert_eq!(
            make_overrides(debian_6_12, objtool, &dir).unwrap(),
            [
                "RUSTC=noreboot-kernel-built-without-rustc".to_string(),
                "delay-objtool=".into(),
                format!("objtool={}", wrapper.display())
            ]
        );
        // The wrapper passes every argument but --ibt, in order.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sed 's|^exec .*|printf \"<%s>\" \"$@\"|' {} | sh -s -- --hacks=jump_label --ibt --orc 'a b'",
                wrapper.display()
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "<--hacks=jump_label><--orc><a b>"
        );
        // A kernel built with Rust needs the real compiler; 6.1 has no
        // probe and no IBT; Clang LTO objects are bitcode, objtool only
        // ever sees the link.
        let none = |c: &str| make_overrides(c, objtool, &dir).unwrap().is_empty();
        assert!(none("CONFIG_RUSTC_VERSION=108500\n"));
        assert!(none(
            "CONFIG_RUST_IS_AVAILABLE=y\n# CONFIG_X86_KERNEL_IBT is not set\n"
        ));
        assert!(none("CONFIG_X86_KERNEL_IBT=y\nCONFIG_LTO_CLANG=y\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
