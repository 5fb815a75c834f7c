//! Reading a kernel's identity out of its bzImage: the release string from
//! the boot protocol header, and — after decompressing the payload — the
//! GNU build-id from the vmlinux's notes and the compiler from the Linux
//! banner. The build-id read here is the one `/sys/kernel/notes` shows on a
//! host running this image, which is what the agent matches patches on.

use std::io::Read;
use std::path::Path;

use kernel::BuildId;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::Endianness;

use crate::{Error, Result};

/// What a kernel image says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageIdentity {
    /// Release (`uname -r`).
    pub release: String,
    /// GNU build-id of the vmlinux inside.
    pub build_id: BuildId,
    /// `uname -v`, e.g. `#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3 (2026-05-08)`.
    pub uname_version: String,
    /// Compiler, e.g. `gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0`.
    pub compiler: String,
    /// Linker, e.g. `GNU ld (GNU Binutils for Debian) 2.40`.
    pub linker: String,
    /// Debian package version named in the banner, when there is one.
    pub debian_version: Option<String>,
    /// Payload compression (`lz4`, `gzip`, `xz`, `zstd`).
    pub compression: String,
}

/// Decompressed vmlinux larger than this is refused (bomb guard; real
/// x86-64 kernels are well below 100 MiB).
const MAX_VMLINUX: usize = 512 << 20;

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadImage {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads the identity of the bzImage at `path`.
pub fn read_identity(path: &Path) -> Result<ImageIdentity> {
    let data = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    identity_from_bytes(path, &data)
}

/// Like [`read_identity`] on bytes already in memory (`path` only names
/// them in errors).
pub fn identity_from_bytes(path: &Path, data: &[u8]) -> Result<ImageIdentity> {
    let header = parse_header(path, data)?;
    let (compression, vmlinux) = decompress(path, header.payload)?;
    let notes = elf_notes(path, &vmlinux[..])?;
    let build_id =
        kernel::notes::build_id(&notes).map_err(|e| bad(path, format!("vmlinux notes: {e}")))?;
    let banners = find_banners(&vmlinux, &header.release);
    let all: Vec<Banner> = banners.iter().filter_map(|b| parse_banner(b)).collect();
    // Prefer the banner that agrees with the header's `uname -v`.
    let chosen = all
        .iter()
        .position(|b| Some(&b.uname_version) == header.uname_version.as_ref())
        .unwrap_or(0);
    let mut parsed = all.into_iter().nth(chosen).ok_or_else(|| {
        bad(
            path,
            format!(
                "no parsable \"Linux version {} (\" banner in the vmlinux (found {banners:?})",
                header.release
            ),
        )
    })?;
    if let Some(v) = header.uname_version {
        parsed.debian_version = debian_version_of(&v);
        parsed.uname_version = v;
    }
    Ok(ImageIdentity {
        release: header.release,
        build_id,
        uname_version: parsed.uname_version,
        compiler: parsed.compiler,
        linker: parsed.linker,
        debian_version: parsed.debian_version,
        compression: compression.to_string(),
    })
}

struct Header<'a> {
    release: String,
    /// `uname -v` as the header states it (the vmlinux may also hold an
    /// earlier banner whose build number is a placeholder).
    uname_version: Option<String>,
    payload: &'a [u8],
}

fn le16(d: &[u8], off: usize) -> Option<u16> {
    d.get(off..off + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn le32(d: &[u8], off: usize) -> Option<u32> {
    d.get(off..off + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The x86 boot protocol header (Documentation/arch/x86/boot.rst).
fn parse_header<'a>(path: &Path, d: &'a [u8]) -> Result<Header<'a>> {
    if d.get(0x202..0x206) != Some(b"HdrS") {
        return Err(bad(path, "not an x86 bzImage (no HdrS boot header)"));
    }
    let version = le16(d, 0x206).unwrap_or(0);
    if version < 0x208 {
        return Err(bad(
            path,
            format!("boot protocol {version:#x} predates payload fields (2.08)"),
        ));
    }
    let setup_sects = match d[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let pm_start = (setup_sects + 1) * 512;
    let kv = le16(d, 0x20e).unwrap_or(0) as usize + 0x200;
    let full = d
        .get(kv..)
        .and_then(|s| s.split(|&b| b == 0).next())
        .map(|s| String::from_utf8_lossy(&s[..s.len().min(256)]).into_owned())
        .unwrap_or_default();
    let release = full.split(' ').next().unwrap_or("").to_string();
    if release.is_empty() {
        return Err(bad(path, "kernel_version string missing"));
    }
    // "<release> (<builder>) <uname -v>"
    let uname_version = full
        .find(") ")
        .map(|i| full[i + 2..].trim().to_string())
        .filter(|v| !v.is_empty());
    let off = le32(d, 0x248).unwrap_or(0) as usize;
    let len = le32(d, 0x24c).unwrap_or(0) as usize;
    let start = pm_start
        .checked_add(off)
        .ok_or_else(|| bad(path, "payload offset overflows"))?;
    let payload = start
        .checked_add(len)
        .and_then(|end| d.get(start..end))
        .ok_or_else(|| {
            bad(
                path,
                format!(
                    "payload {start}+{len} lies outside the {} byte image",
                    d.len()
                ),
            )
        })?;
    Ok(Header {
        release,
        uname_version,
        payload,
    })
}

fn decompress(path: &Path, p: &[u8]) -> Result<(&'static str, Vec<u8>)> {
    let capped = |r: &mut dyn Read, what: &'static str| -> Result<(&'static str, Vec<u8>)> {
        let mut out = Vec::new();
        r.take(MAX_VMLINUX as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("{what} payload: {e}")))?;
        if out.len() > MAX_VMLINUX {
            return Err(bad(
                path,
                format!("{what} payload decompresses beyond {MAX_VMLINUX} bytes"),
            ));
        }
        Ok((what, out))
    };
    match p {
        [0x1f, 0x8b, ..] => capped(&mut flate2::read::GzDecoder::new(p), "gzip"),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => capped(&mut xz2::read::XzDecoder::new(p), "xz"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            let mut dec = ruzstd::decoding::StreamingDecoder::new(p)
                .map_err(|e| bad(path, format!("zstd payload: {e}")))?;
            capped(&mut dec, "zstd")
        }
        [0x02, 0x21, 0x4c, 0x18, ..] => Ok(("lz4", lz4_legacy(path, p)?)),
        _ => Err(bad(
            path,
            format!(
                "unknown payload compression (magic {:02x?})",
                &p[..p.len().min(6)]
            ),
        )),
    }
}

/// LZ4 "legacy" frames as written by `lz4 -l`, which the kernel's build
/// uses: a magic, then blocks of at most 8 MiB output, each prefixed by its
/// compressed size; the kernel appends the output size as a 4-byte footer.
fn lz4_legacy(path: &Path, p: &[u8]) -> Result<Vec<u8>> {
    const MAGIC: u32 = 0x184c_2102;
    const BLOCK: usize = 8 << 20;
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= p.len() {
        let word = le32(p, off).unwrap_or(0);
        if word == MAGIC {
            off += 4;
            continue;
        }
        let size = word as usize;
        let Some(block) = p.get(off + 4..off + 4 + size) else {
            // Not a block that fits: the size footer (or trailing padding).
            break;
        };
        let start = out.len();
        if start + BLOCK > MAX_VMLINUX {
            return Err(bad(
                path,
                format!("lz4 payload decompresses beyond {MAX_VMLINUX} bytes"),
            ));
        }
        out.resize(start + BLOCK, 0);
        let n = lz4_flex::block::decompress_into(block, &mut out[start..])
            .map_err(|e| bad(path, format!("lz4 block at payload offset {off}: {e}")))?;
        out.truncate(start + n);
        off += 4 + size;
    }
    if out.is_empty() {
        return Err(bad(path, "lz4 payload holds no block"));
    }
    Ok(out)
}

/// Concatenated PT_NOTE segments of an ELF64 vmlinux, in memory or read
/// lazily from disk (`&ReadCache<File>`).
pub fn elf_notes<'d, R: object::ReadRef<'d>>(path: &Path, vmlinux: R) -> Result<Vec<u8>> {
    let elf = ElfFile64::<Endianness, R>::parse(vmlinux)
        .map_err(|e| bad(path, format!("vmlinux is not ELF64: {e}")))?;
    let endian = elf.endian();
    let mut notes = Vec::new();
    for ph in elf.elf_program_headers() {
        if ph.p_type(endian) == object::elf::PT_NOTE {
            let seg = ph
                .data(endian, vmlinux)
                .map_err(|_| bad(path, "PT_NOTE segment outside the vmlinux"))?;
            notes.extend_from_slice(seg);
            while notes.len() % 4 != 0 {
                notes.push(0);
            }
        }
    }
    if notes.is_empty() {
        return Err(bad(path, "vmlinux has no PT_NOTE segment"));
    }
    Ok(notes)
}

fn find_banners(vmlinux: &[u8], release: &str) -> Vec<String> {
    let needle = format!("Linux version {release} (");
    let needle = needle.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = vmlinux[from..]
        .windows(needle.len())
        .position(|w| w == needle)
    {
        let rest = &vmlinux[from + pos..];
        let end = rest
            .iter()
            .take(512)
            .position(|&b| b == 0 || b == b'\n')
            .unwrap_or(rest.len().min(512));
        out.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        from += pos + needle.len();
    }
    out
}

fn debian_version_of(uname_version: &str) -> Option<String> {
    uname_version
        .split_whitespace()
        .skip_while(|w| *w != "Debian")
        .nth(1)
        .map(str::to_string)
}

/// The parts of a Linux banner.
#[derive(Debug, PartialEq, Eq)]
pub struct Banner {
    /// Compiler version string.
    pub compiler: String,
    /// Linker version string.
    pub linker: String,
    /// `uname -v`.
    pub uname_version: String,
    /// Debian package version, if the banner names one.
    pub debian_version: Option<String>,
}

/// Splits `Linux version R (builder) (compiler, linker) VERSION`.
pub fn parse_banner(banner: &str) -> Option<Banner> {
    // Returns the text inside the parenthesised group starting at `s[0]`
    // and the rest after it, honouring nesting.
    fn group(s: &str) -> Option<(&str, &str)> {
        if !s.starts_with('(') {
            return None;
        }
        let mut depth = 0;
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some((&s[1..i], &s[i + 1..]));
                    }
                }
                _ => {}
            }
        }
        None
    }
    let rest = banner.strip_prefix("Linux version ")?;
    let rest = &rest[rest.find(' ')? + 1..];
    let (_builder, rest) = group(rest)?;
    let (tools, rest) = group(rest.trim_start())?;
    // Split compiler and linker at the top-level ", ".
    let mut depth = 0;
    let mut split = None;
    for (i, c) in tools.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                split = Some(i);
                break;
            }
            _ => {}
        }
    }
    let (compiler, linker) = match split {
        Some(i) => (tools[..i].trim(), tools[i + 1..].trim()),
        None => (tools.trim(), ""),
    };
    let uname_version = rest.trim().to_string();
    let debian_version = debian_version_of(&uname_version);
    Some(Banner {
        compiler: compiler.to_string(),
        linker: linker.to_string(),
        uname_version,
        debian_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_banner() {
        let b = parse_banner("Linux version 6.1.0-47-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3 (2026-05-08)").unwrap();
        assert_eq!(b.compiler, "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0");
        assert_eq!(b.linker, "GNU ld (GNU Binutils for Debian) 2.40");
        assert_eq!(
            b.uname_version,
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3 (2026-05-08)"
        );
        assert_eq!(b.debian_version.as_deref(), Some("6.1.170-3"));
        assert!(parse_banner("Linux version x").is_none());
        assert!(parse_banner("Linux version 6.1 (a) (unterminated").is_none());
    }

    #[test]
    fn not_a_bzimage() {
        let p = Path::new("/x/vmlinuz");
        let err = identity_from_bytes(p, b"hello").unwrap_err();
        assert!(err.to_string().contains("/x/vmlinuz"), "{err}");
        assert!(err.to_string().contains("HdrS"), "{err}");
        let mut hdr = vec![0u8; 0x300];
        hdr[0x202..0x206].copy_from_slice(b"HdrS");
        hdr[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        hdr[0x248..0x24c].copy_from_slice(&0x1000u32.to_le_bytes());
        hdr[0x24c..0x250].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        hdr[0x20e..0x210].copy_from_slice(&0x60u16.to_le_bytes());
        hdr[0x260..0x26a].copy_from_slice(b"6.1.0-test");
        let err = identity_from_bytes(p, &hdr).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
    }

    #[test]
    fn lz4_legacy_round_trip_and_footer() {
        let plain: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let block = lz4_flex::block::compress(&plain);
        let mut framed = 0x184c_2102u32.to_le_bytes().to_vec();
        framed.extend((block.len() as u32).to_le_bytes());
        framed.extend(&block);
        framed.extend((plain.len() as u32).to_le_bytes());
        assert_eq!(lz4_legacy(Path::new("t"), &framed).unwrap(), plain);
        // A corrupt block is an error, not a panic.
        let mut broken = framed.clone();
        broken[10] ^= 0xff;
        broken[20] ^= 0xff;
        let _ = lz4_legacy(Path::new("t"), &broken);
    }
}
