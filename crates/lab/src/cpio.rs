//! A writer for the "newc" cpio format, the one the kernel unpacks as an
//! initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
//! Entries are written in the order given; callers put directories first.

use std::io::{self, Write};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with its contents.
    File(Vec<u8>),
    /// A symbolic link to the target.
    Symlink(String),
}

/// Writes newc entries to `out`.
pub struct Writer<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

impl<W: Write> Writer<W> {
    /// A writer over `out`.
    pub fn new(out: W) -> Self {
        Writer {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    /// Appends one entry. `name` is relative to the archive root (no
    /// leading `/`); `perm` holds the permission bits.
    pub fn entry(&mut self, name: &str, perm: u32, kind: &Kind) -> io::Result<()> {
        let (mode, data): (u32, &[u8]) = match kind {
            Kind::Dir => (S_IFDIR | perm, &[]),
            Kind::File(d) => (S_IFREG | perm, d),
            Kind::Symlink(t) => (S_IFLNK | 0o777, t.as_bytes()),
        };
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: larger than 4 GiB"),
            )
        })?;
        let nlink = if matches!(kind, Kind::Dir) { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.ino += 1;
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.ino = 0;
        let trailer = format!(
            "070701{:08x}{:08x}{}{:08x}{:08x}",
            0,
            0,
            "00000000".repeat(9),
            11,
            0
        );
        self.put(trailer.as_bytes())?;
        self.put(b"TRAILER!!!\0")?;
        self.pad()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout_is_aligned_and_readable() {
        let mut w = Writer::new(Vec::new());
        w.entry("bin", 0o755, &Kind::Dir).unwrap();
        w.entry("bin/hello", 0o644, &Kind::File(b"hi!\n!".to_vec()))
            .unwrap();
        w.entry("bin/sh", 0, &Kind::Symlink("busybox".into()))
            .unwrap();
        let buf = w.finish().unwrap();
        assert_eq!(buf.len() % 4, 0);
        // Walk the archive as the kernel does.
        let mut off = 0;
        let mut names = Vec::new();
        loop {
            assert_eq!(&buf[off..off + 6], b"070701", "magic at {off}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&buf[off + 6 + i * 8..off + 14 + i * 8]).unwrap();
                usize::from_str_radix(s, 16).unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6), field(11));
            let name = std::str::from_utf8(&buf[off + 110..off + 110 + namesize - 1])
                .unwrap()
                .to_string();
            let data_start = (off + 110 + namesize + 3) & !3;
            let data = &buf[data_start..data_start + size];
            if name == "TRAILER!!!" {
                break;
            }
            if name == "bin/hello" {
                assert_eq!(data, b"hi!\n!");
                assert_eq!(mode, 0o100644);
            }
            if name == "bin/sh" {
                assert_eq!(data, b"busybox");
                assert_eq!(mode & 0o170000, 0o120000);
            }
            names.push(name);
            off = (data_start + size + 3) & !3;
        }
        assert_eq!(names, ["bin", "bin/hello", "bin/sh"]);
    }
}
