//! The lab: real distribution kernels booted in QEMU for noreboot's tests
//! and demo. The development machines' own kernel loads no modules, so
//! everything noreboot does to a kernel is shown here: a guest boots a
//! kernel workspace's image under TCG with an initramfs built on the fly
//! (busybox-static, given files, host binaries with their libraries,
//! modules), runs scripts over a command channel on its second serial port,
//! and reaches the host's loopback at 10.0.2.2 through user-mode networking.
//!
//! ```no_run
//! use lab::{Guest, GuestConfig};
//! let cfg = GuestConfig::new("/path/to/vmlinuz", "6.1.0-47-cloud-amd64");
//! let mut guest = Guest::boot(&cfg)?;
//! let out = guest.exec_ok("cat /proc/cmdline")?;
//! println!("{out}");
//! guest.shutdown()?;
//! # Ok::<(), lab::LabError>(())
//! ```

pub mod cpio;
pub mod debian;
pub mod error;
pub mod guest;
pub mod initramfs;
pub mod sample;

pub use debian::{DebianConfig, DebianGuest, DebianImage};
pub use error::LabError;
pub use guest::{dmesg_problems, run, ExecResult, Guest, GuestConfig, RunResult};
pub use initramfs::Initramfs;
