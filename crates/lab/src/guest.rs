//! One QEMU guest: a real kernel booted under TCG with the lab's initramfs,
//! its serial console captured, and a command channel on the second serial
//! port. Every wait has a deadline; on any failure the guest is killed and
//! the error carries the console tail. Dropping a [`Guest`] kills QEMU, so
//! no test can leave one running.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::error::{console_tail, LabError};
use crate::initramfs::{Initramfs, DEFAULT_BUSYBOX};
use kernel_tree::modules::ModuleIndex;

const INIT: &str = include_str!("init.sh");
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// How to boot a guest.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// The bzImage to boot.
    pub kernel: PathBuf,
    /// The release, naming `/lib/modules/<release>` in the guest.
    pub release: String,
    /// `lib/modules/<release>` on the host, where modules are found.
    pub modules_dir: Option<PathBuf>,
    /// Modules to load at boot, with their dependencies.
    pub modules: Vec<String>,
    /// Host files to copy in: (host path, guest path).
    pub files: Vec<(PathBuf, String)>,
    /// Host executables to copy in with their shared libraries.
    pub binaries: Vec<(PathBuf, String)>,
    /// Extra file contents: (guest path, bytes, permission bits).
    pub contents: Vec<(String, Vec<u8>, u32)>,
    /// User-mode networking: the guest is 10.0.2.15 and reaches the
    /// host's loopback at 10.0.2.2.
    pub network: bool,
    /// Raw disk images attached as virtio disks (`/dev/vda`, `/dev/vdb`,
    /// ...): state that survives a reboot of the guest.
    pub disks: Vec<PathBuf>,
    /// Shell script run at boot before the command channel opens.
    pub boot_script: Option<String>,
    /// Extra kernel command line words.
    pub cmdline: Vec<String>,
    /// Guest memory.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Deadline for the boot up to the command channel.
    pub boot_timeout: Duration,
    /// Default deadline for one command.
    pub command_timeout: Duration,
    /// The static busybox to use.
    pub busybox: PathBuf,
}

impl GuestConfig {
    /// A guest booting `kernel` with defaults: 512 MiB, one CPU, no network.
    pub fn new(kernel: impl Into<PathBuf>, release: impl Into<String>) -> Self {
        GuestConfig {
            kernel: kernel.into(),
            release: release.into(),
            modules_dir: None,
            modules: Vec::new(),
            files: Vec::new(),
            binaries: Vec::new(),
            contents: Vec::new(),
            network: false,
            disks: Vec::new(),
            boot_script: None,
            cmdline: Vec::new(),
            memory_mib: 512,
            cpus: 1,
            boot_timeout: Duration::from_secs(90),
            command_timeout: Duration::from_secs(120),
            busybox: PathBuf::from(DEFAULT_BUSYBOX),
        }
    }

    /// A guest booting a kernel workspace's image, with its modules.
    pub fn for_workspace(ws: &kernel_tree::Workspace) -> Self {
        let mut c = Self::new(ws.vmlinuz(), ws.release().as_str());
        c.modules_dir = Some(ws.modules_dir());
        c
    }

    /// Enables user-mode networking (loads virtio_pci and virtio_net).
    pub fn with_network(mut self) -> Self {
        self.network = true;
        self
    }

    /// Attaches a raw disk image as the next virtio disk (loads
    /// virtio_pci and virtio_blk).
    pub fn with_disk(mut self, image: impl Into<PathBuf>) -> Self {
        self.disks.push(image.into());
        self
    }

    /// Adds a host file at `guest`.
    pub fn with_file(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        self.files.push((host.into(), guest.into()));
        self
    }

    /// Adds a host executable (and its libraries) at `guest`. Call it by
    /// its path in scripts: Debian's busybox shell prefers its own applet
    /// over a `PATH` lookup when a bare name matches one.
    pub fn with_binary(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        self.binaries.push((host.into(), guest.into()));
        self
    }

    /// Builds the initramfs for this configuration at `out`.
    pub fn build_initramfs(&self, out: &Path) -> Result<(), LabError> {
        let mut i = Initramfs::new();
        i.busybox(&self.busybox)?;
        i.bytes("/init", INIT.as_bytes().to_vec(), 0o755)?;
        for d in ["/proc", "/sys", "/dev", "/tmp", "/run", "/root", "/lab"] {
            i.dir(d)?;
        }
        let mut modules = self.modules.clone();
        if !self.disks.is_empty() {
            for m in ["virtio_pci", "virtio_blk"] {
                if !modules.iter().any(|x| x == m) {
                    modules.push(m.to_string());
                }
            }
        }
        if self.network {
            for m in ["virtio_pci", "virtio_net"] {
                if !modules.iter().any(|x| x == m) {
                    modules.push(m.to_string());
                }
            }
            i.bytes("/lab/net", Vec::new(), 0o644)?;
        }
        if !modules.is_empty() {
            let dir = self.modules_dir.as_ref().ok_or_else(|| LabError::Module {
                name: modules.join(","),
                reason: "no modules directory configured for this guest".into(),
            })?;
            let index = ModuleIndex::new(dir)?;
            let mut list = String::new();
            for ko in index.resolve(&modules)? {
                let rel = ko.strip_prefix(dir).unwrap_or(&ko);
                let guest = format!("/lib/modules/{}/{}", self.release, rel.display());
                i.file(&ko, &guest)?;
                list.push_str(&guest);
                list.push('\n');
            }
            i.bytes("/lab/modules", list.into_bytes(), 0o644)?;
        }
        for (host, guest) in &self.files {
            i.file(host, guest)?;
        }
        for (host, guest) in &self.binaries {
            i.binary(host, guest)?;
        }
        for (guest, data, perm) in &self.contents {
            i.bytes(guest, data.clone(), *perm)?;
        }
        if let Some(s) = &self.boot_script {
            i.bytes("/lab/boot.sh", s.as_bytes().to_vec(), 0o755)?;
        }
        i.write_to(out)
    }
}

/// What one command in the guest did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExecResult {
    /// Exit status of the script.
    pub status: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// Round trip time.
    pub duration: Duration,
}

/// A running guest.
pub struct Guest {
    child: Child,
    chan: UnixStream,
    pending: Vec<u8>,
    console: Arc<Mutex<Vec<u8>>>,
    workdir: tempfile::TempDir,
    next_id: u64,
    command_timeout: Duration,
    boot_time: Duration,
}

/// A deadline with what it is for, for error messages.
#[derive(Clone, Copy)]
struct Wait<'a> {
    deadline: Instant,
    limit: Duration,
    context: &'a str,
}

impl<'a> Wait<'a> {
    fn new(start: Instant, limit: Duration, context: &'a str) -> Self {
        Wait {
            deadline: start + limit,
            limit,
            context,
        }
    }
}

/// Which accelerator QEMU uses: TCG unless `NOREBOOT_LAB_ACCEL` says
/// otherwise (guests hang under KVM on the development machines).
pub fn accelerator() -> String {
    std::env::var("NOREBOOT_LAB_ACCEL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "tcg".to_string())
}

impl Guest {
    /// Boots a guest and waits until its command channel is ready.
    pub fn boot(cfg: &GuestConfig) -> Result<Guest, LabError> {
        let started = Instant::now();
        if !cfg.kernel.is_file() {
            return Err(LabError::MissingKernel {
                path: cfg.kernel.clone(),
            });
        }
        let workdir = tempfile::Builder::new()
            .prefix("noreboot-lab-")
            .tempdir()
            .map_err(|e| LabError::io("create temporary directory in", std::env::temp_dir(), e))?;
        let initrd = workdir.path().join("initramfs.cpio");
        cfg.build_initramfs(&initrd)?;
        let con_path = workdir.path().join("console.sock");
        let chan_path = workdir.path().join("channel.sock");
        let con_listener =
            UnixListener::bind(&con_path).map_err(|e| LabError::io("bind", &con_path, e))?;
        let chan_listener =
            UnixListener::bind(&chan_path).map_err(|e| LabError::io("bind", &chan_path, e))?;
        let stderr_path = workdir.path().join("qemu.stderr");
        let stderr_file = std::fs::File::create(&stderr_path)
            .map_err(|e| LabError::io("create", &stderr_path, e))?;

        let accel = accelerator();
        // The full kernel log goes to the console: it is what a failing
        // test shows. It costs no measurable boot time under TCG.
        // no_timer_check: the IO-APIC timer check counts ticks against
        // a busy-wait, and an emulated CPU on a loaded host misses it
        // ("IO-APIC + timer doesn't work!", a panic at boot, seen in
        // long benchmark runs); virtual machines skip it for that reason.
        let mut append = vec![
            "console=ttyS0".to_string(),
            "panic=-1".into(),
            "no_timer_check".into(),
        ];
        append.extend(cfg.cmdline.iter().cloned());
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", &accel])
            .args(["-m", &cfg.memory_mib.to_string()])
            .args(["-smp", &cfg.cpus.to_string()])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&cfg.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", &append.join(" ")])
            .arg("-chardev")
            .arg(format!("socket,id=con,path={}", con_path.display()))
            .args(["-serial", "chardev:con"])
            .arg("-chardev")
            .arg(format!("socket,id=chan,path={}", chan_path.display()))
            .args(["-serial", "chardev:chan"]);
        if accel == "kvm" {
            cmd.args(["-cpu", "host"]);
        }
        if cfg.network {
            cmd.args([
                "-netdev",
                "user,id=net0",
                "-device",
                "virtio-net-pci,netdev=net0",
            ]);
        }
        for d in &cfg.disks {
            cmd.arg("-drive").arg(format!(
                "file={},if=virtio,format=raw,cache=writeback",
                d.display()
            ));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file);
        tracing::debug!(?cmd, "starting QEMU");
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LabError::ToolMissing {
                tool: "qemu-system-x86_64".into(),
                package: "qemu-system-x86".into(),
            },
            _ => LabError::io("start qemu-system-x86_64 for", &cfg.kernel, e),
        })?;
        let console = Arc::new(Mutex::new(Vec::new()));
        let mut guest = Guest {
            child,
            chan: UnixStream::pair()
                .map_err(|e| LabError::io("create socket pair in", workdir.path(), e))?
                .0,
            pending: Vec::new(),
            console: console.clone(),
            workdir,
            next_id: 1,
            command_timeout: cfg.command_timeout,
            boot_time: Duration::ZERO,
        };
        let con = guest.accept(
            &con_listener,
            Wait::new(
                started,
                cfg.boot_timeout,
                "waiting for QEMU to open the console",
            ),
        )?;
        std::thread::spawn(move || pump_console(con, console));
        guest.chan = guest.accept(
            &chan_listener,
            Wait::new(
                started,
                cfg.boot_timeout,
                "waiting for QEMU to open the command channel",
            ),
        )?;
        let line = guest.read_line(Wait::new(
            started,
            cfg.boot_timeout,
            "booting to the command channel",
        ))?;
        if line != "READY" {
            return Err(guest.fail(LabError::Protocol(format!(
                "expected READY from the guest, got {line:?}"
            ))));
        }
        guest.boot_time = started.elapsed();
        Ok(guest)
    }

    fn accept(&mut self, listener: &UnixListener, wait: Wait) -> Result<UnixStream, LabError> {
        listener
            .set_nonblocking(true)
            .map_err(|e| LabError::io("configure", self.workdir.path(), e))?;
        loop {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false)
                        .map_err(|e| LabError::io("configure", self.workdir.path(), e))?;
                    return Ok(s);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.check_alive(wait)?;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(self.fail(LabError::io("accept on", self.workdir.path(), e))),
            }
        }
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        let c = self.console.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&c).into_owned()
    }

    /// Time from `boot` to the command channel being ready.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    fn qemu_stderr(&self) -> String {
        std::fs::read_to_string(self.workdir.path().join("qemu.stderr"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Kills QEMU and turns `err` into the error to report.
    fn fail(&mut self, err: LabError) -> LabError {
        let _ = self.child.kill();
        let _ = self.child.wait();
        err
    }

    /// Errors if QEMU has exited (panic or otherwise) or the deadline passed.
    fn check_alive(&mut self, wait: Wait) -> Result<(), LabError> {
        let context = wait.context;
        let console = self.console();
        if console.contains("Kernel panic - not syncing") {
            // Give the console a moment to receive the panic's stack.
            std::thread::sleep(Duration::from_millis(300));
            let console = console_tail(&self.console());
            return Err(self.fail(LabError::GuestPanic {
                context: context.to_string(),
                console,
            }));
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                // The console reader may still be draining the last bytes.
                std::thread::sleep(Duration::from_millis(100));
                let console = self.console();
                if console.contains("Kernel panic") {
                    return Err(LabError::GuestPanic {
                        context: context.to_string(),
                        console: console_tail(&console),
                    });
                }
                return Err(LabError::GuestExited {
                    context: context.to_string(),
                    status: status.to_string(),
                    qemu_stderr: self.qemu_stderr(),
                    console: console_tail(&console),
                });
            }
            Ok(None) => {}
            Err(e) => {
                return Err(self.fail(LabError::io("wait for QEMU in", self.workdir.path(), e)))
            }
        }
        if Instant::now() >= wait.deadline {
            let console = console_tail(&self.console());
            return Err(self.fail(LabError::Timeout {
                context: context.to_string(),
                after: wait.limit,
                console,
            }));
        }
        Ok(())
    }

    fn read_line(&mut self, wait: Wait) -> Result<String, LabError> {
        self.chan
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| LabError::io("configure", self.workdir.path(), e))?;
        let mut buf = [0u8; 65536];
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1])
                    .trim_end_matches('\r')
                    .to_string();
                return Ok(text);
            }
            match self.chan.read(&mut buf) {
                Ok(0) => {
                    // QEMU closed the channel: it is exiting.
                    std::thread::sleep(Duration::from_millis(200));
                    self.check_alive(wait)?;
                    let console = console_tail(&self.console());
                    return Err(self.fail(LabError::GuestExited {
                        context: wait.context.to_string(),
                        status: "command channel closed".into(),
                        qemu_stderr: self.qemu_stderr(),
                        console,
                    }));
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    self.check_alive(wait)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(self.fail(LabError::io(
                        "read the command channel in",
                        self.workdir.path(),
                        e,
                    )))
                }
            }
        }
    }

    /// Runs a shell script in the guest with the default deadline.
    pub fn exec(&mut self, script: &str) -> Result<ExecResult, LabError> {
        self.exec_timeout(script, self.command_timeout)
    }

    /// Runs a shell script in the guest; past `timeout` the guest is killed
    /// and a [`LabError::Timeout`] returned.
    pub fn exec_timeout(
        &mut self,
        script: &str,
        timeout: Duration,
    ) -> Result<ExecResult, LabError> {
        let started = Instant::now();
        let context = format!("running {:?}", first_line(script));
        let wait = Wait::new(started, timeout, &context);
        let id = self.next_id;
        self.next_id += 1;
        let request = format!("X {id} {}\n", B64.encode(script));
        if let Err(e) = self.chan.write_all(request.as_bytes()) {
            self.check_alive(wait)?;
            return Err(self.fail(LabError::io(
                "write the command channel in",
                self.workdir.path(),
                e,
            )));
        }
        loop {
            let line = self.read_line(wait)?;
            let mut parts = line.split(' ');
            if parts.next() != Some("R") {
                continue;
            }
            let (Some(rid), Some(st), Some(out), Some(err)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(self.fail(LabError::Protocol(format!("malformed reply {line:?}"))));
            };
            if rid != id.to_string() {
                continue;
            }
            let decode = |field: &str, tag: &str| -> Result<String, LabError> {
                let body = field.strip_prefix(tag).ok_or_else(|| {
                    LabError::Protocol(format!("reply field {field:?} lacks {tag}"))
                })?;
                let bytes = B64
                    .decode(body)
                    .map_err(|e| LabError::Protocol(format!("bad base64 in reply: {e}")))?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            };
            let status = st
                .parse::<i32>()
                .map_err(|_| LabError::Protocol(format!("bad status {st:?}")))?;
            return Ok(ExecResult {
                status,
                stdout: decode(out, "O")?,
                stderr: decode(err, "E")?,
                duration: started.elapsed(),
            });
        }
    }

    /// Waits in the guest until `cond` (a shell test) holds, polling every
    /// 50 ms, for at most `limit` of the guest's own clock. The deadline is
    /// kept in the guest (its uptime, read by shell builtins): a count of
    /// polls would stretch far past `limit` under emulation, where each
    /// `cond` costs more than the sleep, and the host would then give up on
    /// the guest itself.
    pub fn wait_until(&mut self, cond: &str, limit: Duration) -> Result<Duration, LabError> {
        let started = Instant::now();
        let secs = limit.as_secs().max(1);
        let script = format!(
            "read t _ </proc/uptime; end=$((${{t%.*}} + {secs})); until {cond}; do read t _ </proc/uptime; [ ${{t%.*}} -ge $end ] && exit 1; sleep 0.05; done"
        );
        let r = self.exec_timeout(&script, limit + Duration::from_secs(60))?;
        if r.status != 0 {
            return Err(LabError::CommandFailed {
                script: format!("wait until {cond} (for {:?})", limit),
                status: r.status,
                stdout: r.stdout,
                stderr: r.stderr,
            });
        }
        Ok(started.elapsed())
    }

    /// Runs a script that must succeed; returns its stdout.
    pub fn exec_ok(&mut self, script: &str) -> Result<String, LabError> {
        let r = self.exec(script)?;
        if r.status != 0 {
            return Err(LabError::CommandFailed {
                script: first_line(script).to_string(),
                status: r.status,
                stdout: r.stdout,
                stderr: r.stderr,
            });
        }
        Ok(r.stdout)
    }

    /// The guest kernel's log.
    pub fn dmesg(&mut self) -> Result<String, LabError> {
        self.exec_ok("dmesg")
    }

    /// Asks the guest to sync and power off; returns the whole console.
    pub fn shutdown(mut self) -> Result<String, LabError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        if self.chan.write_all(b"Q 0 -\n").is_ok() {
            loop {
                match self.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let console = console_tail(&self.console());
                        return Err(self.fail(LabError::Timeout {
                            context: "shutting down".into(),
                            after: Duration::from_secs(20),
                            console,
                        }));
                    }
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Let the console pump drain what QEMU wrote last.
        std::thread::sleep(Duration::from_millis(50));
        Ok(self.console())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn first_line(script: &str) -> &str {
    script.lines().next().unwrap_or("").trim()
}

fn pump_console(mut con: UnixStream, sink: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 8192];
    loop {
        match con.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => sink
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(&buf[..n]),
        }
    }
}

/// Everything a one-shot guest run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    /// Exit status of the script.
    pub status: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// The guest kernel's log after the script.
    pub dmesg: String,
    /// The serial console from power-on to power-off.
    pub console: String,
    /// Power-on to command channel ready.
    pub boot: Duration,
    /// The script's own run time.
    pub exec: Duration,
    /// Power-on to power-off.
    pub total: Duration,
}

/// Boots a guest, runs `script`, collects dmesg and powers off.
pub fn run(cfg: &GuestConfig, script: &str) -> Result<RunResult, LabError> {
    let started = Instant::now();
    let mut guest = Guest::boot(cfg)?;
    let boot = guest.boot_time();
    let r = guest.exec(script)?;
    let dmesg = guest.dmesg()?;
    let console = guest.shutdown()?;
    Ok(RunResult {
        status: r.status,
        stdout: r.stdout,
        stderr: r.stderr,
        dmesg,
        console,
        boot,
        exec: r.duration,
        total: started.elapsed(),
    })
}

/// dmesg lines that mean the kernel hit an oops, BUG, WARN or similar.
pub fn dmesg_problems(dmesg: &str) -> Vec<String> {
    const MARKERS: &[&str] = &[
        "Oops",
        "BUG:",
        "kernel BUG",
        "WARNING:",
        "Call Trace",
        "general protection fault",
        "Kernel panic",
        "RIP:",
        "livepatch: failed",
    ];
    dmesg
        .lines()
        .filter(|l| MARKERS.iter().any(|m| l.contains(m)))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_oops_and_warn_lines_only() {
        let d = "[    1.0] livepatch: enabling patch 'x'\n[    2.0] WARNING: CPU: 0 PID: 1 at kernel/x.c:1 f+0x1/0x2\n[    3.0] BUG: kernel NULL pointer dereference\n[ 4.0] tsc: Refined TSC";
        let p = dmesg_problems(d);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(dmesg_problems("[ 1.0] livepatch: 'x': patching complete").is_empty());
    }
}
