//! A real Debian 12 host in the lab: a minimal bookworm root with systemd
//! and openssh-server, built once per kernel from Debian packages
//! (`mmdebstrap`, recipe in `debian-image.sh`) into a cached ext4 disk
//! image, booted with the kernel workspace's image and the initramfs
//! Debian's initramfs-tools made for it. Tests drive it over SSH on a
//! forwarded loopback port and read its serial console; each boot writes
//! to a throw-away overlay (QEMU's snapshot mode, which also holds across
//! a reboot of the guest), so the cached image is never changed.
//!
//! ```no_run
//! # fn main() -> Result<(), lab::LabError> {
//! # let (cache, ws): (kernel_tree::Cache, kernel_tree::Workspace) = todo!();
//! let image = lab::DebianImage::ensure(&cache, &ws)?;
//! let guest = lab::DebianGuest::boot(&image)?;
//! println!("{}", guest.ssh_ok("systemctl is-system-running --wait || true")?);
//! # Ok(()) }
//! ```

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::{console_tail, LabError};
use crate::guest::{accelerator, ExecResult};
use kernel_tree::{Cache, Workspace};

/// The image recipe: its hash names the cached image, so a changed recipe
/// builds a new one.
const RECIPE: &str = include_str!("debian-image.sh");

/// The cached image of one kernel release.
#[derive(Debug, Clone)]
pub struct DebianImage {
    /// The ext4 root filesystem (`/dev/vda` in the guest).
    pub disk: PathBuf,
    /// The initramfs initramfs-tools built in the image.
    pub initrd: PathBuf,
    /// The kernel image to boot.
    pub kernel: PathBuf,
    /// The kernel release.
    pub release: String,
    /// root's SSH key (private; `.pub` beside it).
    pub key: PathBuf,
    /// How long building the image took, when this call built it.
    pub built_in: Option<Duration>,
}

impl DebianImage {
    /// The image for `ws`'s kernel, built first if the cache has none
    /// (about a minute: mmdebstrap from the Debian mirror apt uses).
    /// Concurrent callers wait for one build.
    pub fn ensure(cache: &Cache, ws: &Workspace) -> Result<DebianImage, LabError> {
        let release = ws.release().to_string();
        let recipe = hex(&Sha256::digest(RECIPE.as_bytes())[..8]);
        let dir = cache
            .root()
            .join("guests")
            .join(format!("debian12-{recipe}-{release}"));
        let image = DebianImage {
            disk: dir.join("disk.raw"),
            initrd: dir.join("initrd.img"),
            kernel: ws.vmlinuz(),
            release: release.clone(),
            key: dir.join("id_ed25519"),
            built_in: None,
        };
        if !image.kernel.is_file() {
            return Err(LabError::MissingKernel { path: image.kernel });
        }
        if dir.join("complete").is_file() {
            return Ok(image);
        }
        let _lock = cache.lock(&format!("debian12-{release}"))?;
        if dir.join("complete").is_file() {
            return Ok(image);
        }
        let started = Instant::now();
        build(&dir, &ws.root(), &release)?;
        Ok(DebianImage {
            built_in: Some(started.elapsed()),
            ..image
        })
    }
}

/// Builds the image into a fresh sibling of `dir` and renames it into
/// place, so an interrupted build leaves no half image behind the name.
fn build(dir: &Path, kroot: &Path, release: &str) -> Result<(), LabError> {
    for (tool, package) in [
        ("mmdebstrap", "mmdebstrap"),
        ("mkfs.ext4", "e2fsprogs"),
        ("ssh-keygen", "openssh-client"),
    ] {
        require(tool, package)?;
    }
    let parent = dir.parent().expect("the image directory has a parent");
    std::fs::create_dir_all(parent).map_err(|e| LabError::io("create", parent, e))?;
    let work = tempfile::Builder::new()
        .prefix(".building-")
        .tempdir_in(parent)
        .map_err(|e| LabError::io("create a temporary directory in", parent, e))?;
    let key = work.path().join("id_ed25519");
    run_tool(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "noreboot-lab", "-f"])
            .arg(&key),
        "ssh-keygen",
    )?;
    let script = work.path().join("debian-image.sh");
    std::fs::write(&script, RECIPE).map_err(|e| LabError::io("write", &script, e))?;
    run_tool(
        Command::new("sh")
            .arg(&script)
            .env("OUT", work.path())
            .env("KROOT", kroot)
            .env("RELEASE", release)
            .env("PUBKEY", key.with_extension("pub")),
        "the Debian image recipe (mmdebstrap)",
    )?;
    let done = work.path().join("complete");
    std::fs::write(&done, release).map_err(|e| LabError::io("write", &done, e))?;
    let built = work.keep();
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| LabError::io("remove", dir, e))?;
    }
    std::fs::rename(&built, dir).map_err(|e| LabError::io("rename into place", &built, e))
}

fn require(tool: &str, package: &str) -> Result<(), LabError> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(LabError::ToolMissing {
            tool: tool.into(),
            package: package.into(),
        })
    }
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<(), LabError> {
    let out = cmd
        .output()
        .map_err(|e| LabError::io("run", what.to_string(), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(LabError::CommandFailed {
        script: what.to_string(),
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How to boot a [`DebianGuest`].
#[derive(Debug, Clone)]
pub struct DebianConfig {
    /// Guest memory.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Deadline from QEMU's start until SSH answers.
    pub boot_timeout: Duration,
    /// Default deadline for one SSH command.
    pub command_timeout: Duration,
}

impl Default for DebianConfig {
    fn default() -> Self {
        DebianConfig {
            memory_mib: 1024,
            cpus: 1,
            boot_timeout: Duration::from_secs(240),
            command_timeout: Duration::from_secs(180),
        }
    }
}

/// A running Debian guest. Dropping it kills QEMU.
pub struct DebianGuest {
    child: Child,
    port: u16,
    key: PathBuf,
    console: PathBuf,
    stderr: PathBuf,
    cfg: DebianConfig,
    boot_time: Duration,
    _workdir: tempfile::TempDir,
}

impl DebianGuest {
    /// Boots `image` with the default configuration and waits for SSH.
    pub fn boot(image: &DebianImage) -> Result<DebianGuest, LabError> {
        Self::boot_with(image, DebianConfig::default())
    }

    /// Boots `image` and waits until root can log in over SSH.
    pub fn boot_with(image: &DebianImage, cfg: DebianConfig) -> Result<DebianGuest, LabError> {
        require("ssh", "openssh-client")?;
        let started = Instant::now();
        let workdir = tempfile::Builder::new()
            .prefix("noreboot-debian-")
            .tempdir()
            .map_err(|e| LabError::io("create temporary directory in", std::env::temp_dir(), e))?;
        let console = workdir.path().join("console.log");
        let stderr = workdir.path().join("qemu.stderr");
        let stderr_file =
            std::fs::File::create(&stderr).map_err(|e| LabError::io("create", &stderr, e))?;
        let port = free_port()?;
        let accel = accelerator();
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", &accel])
            .args(["-m", &cfg.memory_mib.to_string()])
            .args(["-smp", &cfg.cpus.to_string()])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            // no_timer_check: see guest.rs (a loaded host's emulated CPU
            // misses the IO-APIC timer check and panics); eth0 names the
            // one NIC as the image's network configuration expects.
            .args([
                "-append",
                "root=/dev/vda rw console=ttyS0 no_timer_check net.ifnames=0 panic=-1",
            ])
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=raw,snapshot=on",
                image.disk.display()
            ))
            .arg("-netdev")
            .arg(format!("user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22"))
            .args(["-device", "virtio-net-pci,netdev=net0"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file);
        if accel == "kvm" {
            cmd.args(["-cpu", "host"]);
        }
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                LabError::ToolMissing {
                    tool: "qemu-system-x86_64".into(),
                    package: "qemu-system-x86".into(),
                }
            } else {
                LabError::io("start", "qemu-system-x86_64", e)
            }
        })?;
        let mut guest = DebianGuest {
            child,
            port,
            key: image.key.clone(),
            console,
            stderr,
            cfg,
            boot_time: Duration::ZERO,
            _workdir: workdir,
        };
        guest.wait_for_ssh(started, "booting Debian up to SSH", None)?;
        guest.boot_time = started.elapsed();
        Ok(guest)
    }

    /// From QEMU's start until SSH answered.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        std::fs::read(&self.console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The host's loopback port forwarded to the guest's SSH.
    pub fn ssh_port(&self) -> u16 {
        self.port
    }

    /// root's private SSH key.
    pub fn ssh_key(&self) -> &Path {
        &self.key
    }

    /// Runs `script` as root through the guest's login shell.
    pub fn ssh(&mut self, script: &str) -> Result<ExecResult, LabError> {
        self.ssh_timeout(script, self.cfg.command_timeout)
    }

    /// Runs `script`; past `timeout` the guest is killed and a
    /// [`LabError::Timeout`] returned.
    pub fn ssh_timeout(&mut self, script: &str, timeout: Duration) -> Result<ExecResult, LabError> {
        self.ssh_input(script, None, timeout, true)
    }

    /// Runs `script`, which must succeed; returns its stdout.
    pub fn ssh_ok(&mut self, script: &str) -> Result<String, LabError> {
        let r = self.ssh(script)?;
        if r.status != 0 {
            return Err(LabError::CommandFailed {
                script: first_line(script),
                status: r.status,
                stdout: r.stdout,
                stderr: r.stderr,
            });
        }
        Ok(r.stdout)
    }

    /// Copies a host file to `guest` (mode 0644 unless it was executable).
    pub fn copy_in(&mut self, host: &Path, guest: &str) -> Result<(), LabError> {
        let data = std::fs::read(host).map_err(|e| LabError::io("read", host, e))?;
        let exec = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(host)
                .map(|m| m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        };
        let quoted = shell_quote(guest);
        let mode = if exec { "0755" } else { "0644" };
        let script = format!("cat > {quoted} && chmod {mode} {quoted}");
        let r = self.ssh_input(&script, Some(data), self.cfg.command_timeout, true)?;
        if r.status != 0 {
            return Err(LabError::CommandFailed {
                script,
                status: r.status,
                stdout: r.stdout,
                stderr: r.stderr,
            });
        }
        Ok(())
    }

    /// Polls `cond` (a shell condition) every half second until it holds;
    /// returns how long that took.
    pub fn wait_until(&mut self, cond: &str, limit: Duration) -> Result<Duration, LabError> {
        let started = Instant::now();
        let script = format!(
            "for i in $(seq 1 {}); do if {cond}; then exit 0; fi; sleep 0.5; done; exit 1",
            (limit.as_millis() / 500).max(1)
        );
        let r = self.ssh_timeout(&script, limit + Duration::from_secs(30))?;
        if r.status == 0 {
            return Ok(started.elapsed());
        }
        Err(LabError::Timeout {
            context: format!("waiting for {cond:?}"),
            after: limit,
            console: console_tail(&self.console()),
        })
    }

    /// Reboots the guest (`systemctl reboot`) and waits until SSH answers
    /// from the new boot; returns how long that took.
    pub fn reboot(&mut self) -> Result<Duration, LabError> {
        let before = self.ssh_ok("cat /proc/sys/kernel/random/boot_id")?;
        let started = Instant::now();
        // The connection may drop before ssh sees the command's status.
        let _ = self.ssh_timeout("systemctl reboot", Duration::from_secs(30));
        self.wait_for_ssh(started, "rebooting Debian up to SSH", Some(before.trim()))?;
        Ok(started.elapsed())
    }

    /// Powers the guest off and waits for QEMU to end; returns the console.
    pub fn poweroff(mut self) -> Result<String, LabError> {
        let _ = self.ssh_timeout("systemctl poweroff", Duration::from_secs(30));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(self.console());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(self.timeout("powering off", Duration::from_secs(60)))
    }

    fn wait_for_ssh(
        &mut self,
        started: Instant,
        context: &str,
        old_boot: Option<&str>,
    ) -> Result<(), LabError> {
        let limit = self.cfg.boot_timeout;
        loop {
            self.check_running(context)?;
            if started.elapsed() > limit {
                return Err(self.timeout(context, limit));
            }
            // A probe that hangs (sshd starting under load) is given up
            // and tried again; only the boot's deadline ends the guest.
            let r = self.ssh_input(
                "cat /proc/sys/kernel/random/boot_id",
                None,
                Duration::from_secs(20),
                false,
            );
            if let Ok(r) = r {
                let id = r.stdout.trim();
                if r.status == 0 && !id.is_empty() && Some(id) != old_boot {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn check_running(&mut self, context: &str) -> Result<(), LabError> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(LabError::GuestExited {
                context: context.to_string(),
                status: status.to_string(),
                qemu_stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
                console: console_tail(&self.console()),
            });
        }
        Ok(())
    }

    fn timeout(&mut self, context: &str, after: Duration) -> LabError {
        let _ = self.child.kill();
        let _ = self.child.wait();
        LabError::Timeout {
            context: context.to_string(),
            after,
            console: console_tail(&self.console()),
        }
    }

    fn ssh_input(
        &mut self,
        script: &str,
        input: Option<Vec<u8>>,
        timeout: Duration,
        kill_guest_on_timeout: bool,
    ) -> Result<ExecResult, LabError> {
        let started = Instant::now();
        let mut cmd = Command::new("ssh");
        cmd.args([
            "-q",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ServerAliveInterval=5",
            "-i",
        ])
        .arg(&self.key)
        .args(["-p", &self.port.to_string(), "root@127.0.0.1", "--", script])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| LabError::io("run", "ssh", e))?;
        let writer = input.map(|data| {
            let mut stdin = child.stdin.take().expect("piped stdin");
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = stdin.write_all(&data);
            })
        });
        let out = reader(child.stdout.take().expect("piped stdout"));
        let err = reader(child.stderr.take().expect("piped stderr"));
        let status = loop {
            if let Some(s) = child
                .try_wait()
                .map_err(|e| LabError::io("wait for", "ssh", e))?
            {
                break s;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                if !kill_guest_on_timeout {
                    return Ok(ExecResult {
                        status: -1,
                        stdout: String::new(),
                        stderr: format!("ssh timed out after {timeout:?}"),
                        duration: started.elapsed(),
                    });
                }
                return Err(self.timeout(&format!("running {:?}", first_line(script)), timeout));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        Ok(ExecResult {
            status: status.code().unwrap_or(-1),
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
            duration: started.elapsed(),
        })
    }
}

impl Drop for DebianGuest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A loopback port free now, for QEMU to forward (the kernel does not hand
/// it out again at once).
fn free_port() -> Result<u16, LabError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| LabError::io("bind", "127.0.0.1:0", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| LabError::io("read the address of", "127.0.0.1:0", e))
}

fn first_line(script: &str) -> String {
    script.lines().next().unwrap_or("").to_string()
}

/// `s` quoted for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
