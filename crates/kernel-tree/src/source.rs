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
use crate::cache::{ensure_space, Cache};
use crate::workspace::Workspace;
use crate::{Error, Result};

/// A configured, prepared source tree.
#[derive(Debug, Clone)]
pub struct SourceTree {
    dir: PathBuf,
    release: String,
    cc: String,
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
        let tree = SourceTree {
            dir: dir.clone(),
            release: self.release().to_string(),
            cc,
        };
        let done = root.join(".prepared");
        if done.exists() {
            return Ok(tree);
        }
        let _lock = cache.lock(&format!("{}-source", self.release()))?;
        if done.exists() {
            return Ok(tree);
        }
        self.check_compiler()?;
        let started = Instant::now();
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| Error::io("create", &root, e))?;
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
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            "kernel source prepared"
        );
        Ok(tree)
    }
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
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(Error::Command {
            command: format!("{cmd:?}"),
            status: out.status.to_string(),
            stderr: tail.join("\n"),
        });
    }
    Ok(())
}

impl SourceTree {
    /// The tree's top directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn make(&self, targets: &[&str]) -> Command {
        let mut cmd = Command::new("make");
        cmd.current_dir(&self.dir)
            .arg(format!("CC={}", self.cc))
            .arg(format!("KERNELRELEASE={}", self.release))
            .args(targets)
            .env_remove("ARCH")
            .env_remove("CROSS_COMPILE")
            .env_remove("MAKEFLAGS");
        cmd
    }

    /// Compiles `object` (a path relative to the tree such as
    /// `kernel/sys.o`) with the kernel's flags plus `extra_cflags`, and
    /// copies the result to `out`.
    pub fn compile(&self, object: &str, extra_cflags: &str, out: &Path) -> Result<()> {
        let built = self.dir.join(object);
        let _ = std::fs::remove_file(&built);
        let mut cmd = self.make(&[object]);
        cmd.arg(format!("KCFLAGS={extra_cflags}"));
        run(cmd, "make", &self.dir)?;
        std::fs::copy(&built, out).map_err(|e| Error::io("copy", &built, e))?;
        Ok(())
    }
}
