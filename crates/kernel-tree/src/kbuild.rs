//! Building external modules against a workspace's headers with the
//! kernel's own kbuild, with exactly the compiler that built the kernel (a
//! different compiler produces code and struct layouts the running kernel
//! was not built with): the host's, or a build root's.

use std::path::{Path, PathBuf};

use crate::buildroot::{KernelTools, Toolchain};
use crate::workspace::Workspace;
use crate::{Error, Result};

impl Workspace {
    /// The compiler program the kernel was built with and its version text,
    /// from `CONFIG_CC_VERSION_TEXT` (e.g. `gcc-12`, `gcc-12 (Debian
    /// 12.2.0-14+deb12u1) 12.2.0`).
    pub fn kernel_compiler(&self) -> Result<(String, String)> {
        let text = self
            .config_value("CONFIG_CC_VERSION_TEXT")?
            .ok_or_else(|| Error::CorruptWorkspace {
                path: self.config(),
                reason: "CONFIG_CC_VERSION_TEXT is missing".into(),
            })?;
        let program = text.split_whitespace().next().unwrap_or("gcc").to_string();
        Ok((program, text))
    }

    /// Where this kernel's kbuild commands run: on the host when its
    /// compiler (and, for a kernel built with Rust, rustc and bindgen)
    /// reports exactly the version text the kernel was built with, else in
    /// a build root that does (created on first use; see
    /// [`crate::buildroot`]).
    pub fn toolchain(&self) -> Result<Toolchain> {
        let config = std::fs::read_to_string(self.config())
            .map_err(|e| Error::io("read", self.config(), e))?;
        let tools =
            KernelTools::from_config(&config).map_err(|reason| Error::CorruptWorkspace {
                path: self.config(),
                reason,
            })?;
        Toolchain::for_kernel(self.cache(), &tools)
    }

    /// Debian's 7.x headers packages name their own directory by its
    /// installed path (`KBUILD_OUTPUT=/usr/src/linux-headers-…` in the
    /// flavour's Makefile); unpacked into a workspace, that path does not
    /// exist. The same variable on make's command line, naming where the
    /// headers are, takes precedence. Older headers set nothing: no
    /// argument.
    fn headers_output_override(&self) -> Result<Option<String>> {
        let makefile = self.headers_dir().join("Makefile");
        let text =
            std::fs::read_to_string(&makefile).map_err(|e| Error::io("read", &makefile, e))?;
        Ok(text
            .lines()
            .any(|l| l.trim_start().starts_with("KBUILD_OUTPUT"))
            .then(|| format!("KBUILD_OUTPUT={}", self.headers_dir().display())))
    }

    /// Fails unless the kernel's exact compiler is available, on the host
    /// or in a build root.
    pub fn check_compiler(&self) -> Result<()> {
        self.toolchain().map(|_| ())
    }

    /// Builds the external module whose sources (a `Kbuild` or `Makefile`
    /// with `obj-m` and the C files) are in `src`, in the build directory
    /// `out` (created; `src` stays clean). Returns the `.ko` files built.
    pub fn build_module(&self, src: &Path, out: &Path) -> Result<Vec<PathBuf>> {
        let toolchain = self.toolchain()?;
        copy_tree(src, out)?;
        let jobs = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let config = std::fs::read_to_string(self.config())
            .map_err(|e| Error::io("read", self.config(), e))?;
        let mut cmd = toolchain.command("make", out, &[self.cache().root(), out]);
        cmd.arg("-C")
            .arg(self.headers_dir())
            .args(self.headers_output_override()?)
            .arg(format!("M={}", out.display()))
            .arg(format!("-j{jobs}"))
            .args(crate::source::make_overrides(
                &config,
                &self.headers_dir().join("tools/objtool/objtool"),
                out,
            )?)
            .arg("modules")
            // Variables from a calling make or a cross setup would change
            // what kbuild builds.
            .env_remove("ARCH")
            .env_remove("CROSS_COMPILE")
            .env_remove("MAKEFLAGS");
        let output = cmd.output().map_err(|e| Error::spawn(&cmd, "make", e))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() {
            return Err(Error::Kbuild {
                dir: out.to_path_buf(),
                release: self.release().to_string(),
                output: text,
            });
        }
        let mut kos: Vec<PathBuf> = std::fs::read_dir(out)
            .map_err(|e| Error::io("list", out, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ko"))
            .collect();
        kos.sort();
        if kos.is_empty() {
            return Err(Error::Kbuild {
                dir: out.to_path_buf(),
                release: self.release().to_string(),
                output: format!("make succeeded but built no .ko\n{text}"),
            });
        }
        Ok(kos)
    }
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(|e| Error::io("create", dst, e))?;
    for entry in std::fs::read_dir(src).map_err(|e| Error::io("list", src, e))? {
        let entry = entry.map_err(|e| Error::io("list", src, e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry.file_type().map_err(|e| Error::io("stat", &from, e))?;
        if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            std::fs::copy(&from, &to).map_err(|e| Error::io("copy", &from, e))?;
        }
    }
    Ok(())
}
