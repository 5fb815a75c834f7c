//! The bundle's container: a POSIX ustar archive holding exactly
//! `manifest.json`, `manifest.json.minisig` and `module.ko`, in that order,
//! so that `tar -xf` is all a person needs to look inside. Writing is
//! deterministic (zero times, owners and devices, mode 0644); reading
//! accepts only that shape and checks every byte it does not hand on, so
//! nothing can hide in padding, trailing blocks or extra members.

use crate::{BundleError, MAX_BUNDLE, MAX_MANIFEST, MAX_MODULE, MAX_SIGNATURE};

/// The manifest member.
pub const MANIFEST: &str = "manifest.json";
/// The minisign signature of the manifest.
pub const SIGNATURE: &str = "manifest.json.minisig";
/// The livepatch module.
pub const MODULE: &str = "module.ko";

const BLOCK: usize = 512;

// Header field offsets and lengths (POSIX.1-1988 ustar).
const NAME: (usize, usize) = (0, 100);
const MODE: (usize, usize) = (100, 8);
const UID: (usize, usize) = (108, 8);
const GID: (usize, usize) = (116, 8);
const SIZE: (usize, usize) = (124, 12);
const MTIME: (usize, usize) = (136, 12);
const CHKSUM: (usize, usize) = (148, 8);
const TYPEFLAG: usize = 156;
const LINKNAME: (usize, usize) = (157, 100);
const MAGIC: (usize, usize) = (257, 6);
const VERSION: (usize, usize) = (263, 2);
const DEVMAJOR: (usize, usize) = (329, 8);
const DEVMINOR: (usize, usize) = (337, 8);
const PREFIX: (usize, usize) = (345, 155);

/// The members of a bundle, borrowed from its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Members<'a> {
    /// `manifest.json`.
    pub manifest: &'a [u8],
    /// `manifest.json.minisig`; `None` when the archive has no such member
    /// (an unsigned bundle: manifest then module).
    pub signature: Option<&'a [u8]>,
    /// `module.ko`.
    pub module: &'a [u8],
}

/// Writes a bundle's archive: the three members in their fixed order.
pub fn write(manifest: &[u8], signature: &[u8], module: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(manifest.len() + signature.len() + module.len() + 6 * BLOCK);
    for (name, data) in [
        (MANIFEST, manifest),
        (SIGNATURE, signature),
        (MODULE, module),
    ] {
        append(&mut out, name, data);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

/// Writes an archive of arbitrary members in the same deterministic form,
/// for tools and tests that need archives `read` must refuse. Names must
/// be ASCII and at most 100 bytes.
pub fn write_members(members: &[(&str, &[u8])]) -> Result<Vec<u8>, BundleError> {
    let mut out = Vec::new();
    for (name, data) in members {
        if name.len() > NAME.1 || !name.is_ascii() || name.is_empty() {
            return Err(BundleError::Malformed {
                offset: out.len() as u64,
                reason: format!("member name {name:?} is not 1 to 100 ASCII bytes"),
            });
        }
        append(&mut out, name, data);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    Ok(out)
}

fn append(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut h = [0u8; BLOCK];
    h[NAME.0..NAME.0 + name.len()].copy_from_slice(name.as_bytes());
    put(&mut h, MODE, b"0000644\0");
    put(&mut h, UID, b"0000000\0");
    put(&mut h, GID, b"0000000\0");
    put(&mut h, SIZE, format!("{:011o}\0", data.len()).as_bytes());
    put(&mut h, MTIME, b"00000000000\0");
    h[TYPEFLAG] = b'0';
    put(&mut h, MAGIC, b"ustar\0");
    put(&mut h, VERSION, b"00");
    put(&mut h, DEVMAJOR, b"0000000\0");
    put(&mut h, DEVMINOR, b"0000000\0");
    let sum = checksum(&h);
    put(&mut h, CHKSUM, format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(BLOCK), 0);
}

fn put(h: &mut [u8; BLOCK], (at, len): (usize, usize), value: &[u8]) {
    h[at..at + len.min(value.len())].copy_from_slice(&value[..len.min(value.len())]);
}

/// The header checksum: the unsigned byte sum with the checksum field
/// counted as spaces.
fn checksum(h: &[u8]) -> u32 {
    h.iter()
        .enumerate()
        .map(|(i, &b)| {
            if (CHKSUM.0..CHKSUM.0 + CHKSUM.1).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum()
}

/// Reads a bundle's archive strictly: three regular-file ustar members with
/// exactly the expected names in the expected order, sizes within their
/// limits, zero padding, and nothing but zero blocks after the last one.
/// A missing signature member is reported as such, not as a malformed
/// archive, since "unsigned" is what a person needs to hear.
pub fn read(bytes: &[u8]) -> Result<Members<'_>, BundleError> {
    if bytes.len() as u64 > MAX_BUNDLE {
        return Err(BundleError::TooLarge {
            what: "bundle".into(),
            size: bytes.len() as u64,
            limit: MAX_BUNDLE,
        });
    }
    let mut r = Reader { bytes, off: 0 };
    let manifest = r.member(1, MANIFEST, MAX_MANIFEST)?;
    let (signature, module) = match r.header(2, SIGNATURE)? {
        Some(h) if h.name == SIGNATURE => {
            let sig = r.data(&h, MAX_SIGNATURE)?;
            (Some(sig), r.member(3, MODULE, MAX_MODULE)?)
        }
        Some(h) if h.name == MODULE => (None, r.data(&h, MAX_MODULE)?),
        Some(h) => return Err(r.unexpected(&h, SIGNATURE)),
        None => return Err(r.early_end(2, SIGNATURE)),
    };
    r.end()?;
    Ok(Members {
        manifest,
        signature,
        module,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    off: usize,
}

struct Header {
    at: usize,
    name: String,
    size: u64,
}

impl<'a> Reader<'a> {
    fn member(&mut self, n: usize, name: &str, limit: u64) -> Result<&'a [u8], BundleError> {
        match self.header(n, name)? {
            Some(h) if h.name == name => self.data(&h, limit),
            Some(h) => Err(self.unexpected(&h, name)),
            None => Err(self.early_end(n, name)),
        }
    }

    fn malformed(&self, at: usize, reason: impl Into<String>) -> BundleError {
        BundleError::Malformed {
            offset: at as u64,
            reason: reason.into(),
        }
    }

    fn truncated(&self, inside: String, needed: usize) -> BundleError {
        BundleError::Truncated {
            len: self.bytes.len() as u64,
            inside,
            needed: needed as u64,
        }
    }

    fn unexpected(&self, h: &Header, expected: &str) -> BundleError {
        self.malformed(
            h.at,
            format!(
                "member `{}` where `{expected}` belongs (a bundle holds {MANIFEST}, {SIGNATURE}, {MODULE} in this order)",
                h.name.escape_debug()
            ),
        )
    }

    fn early_end(&self, n: usize, expected: &str) -> BundleError {
        self.malformed(
            self.off - BLOCK,
            format!(
                "the archive ends after {} member(s); member {n} should be `{expected}`",
                n - 1
            ),
        )
    }

    /// The next header, or `None` at an end-of-archive (zero) block.
    fn header(&mut self, n: usize, expected: &str) -> Result<Option<Header>, BundleError> {
        let at = self.off;
        let Some(h) = self.bytes.get(at..at + BLOCK) else {
            return Err(self.truncated(
                format!("the header of member {n} (`{expected}`)"),
                at + BLOCK,
            ));
        };
        self.off += BLOCK;
        if h.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let stored = checksum_field(&h[CHKSUM.0..CHKSUM.0 + CHKSUM.1]).ok_or_else(|| {
            self.malformed(
                at,
                "header checksum field is not 6 octal digits, NUL, space",
            )
        })?;
        let actual = checksum(h);
        if stored != actual {
            return Err(self.malformed(
                at,
                format!("header checksum is {stored:o}, but the header sums to {actual:o}"),
            ));
        }
        if &h[MAGIC.0..MAGIC.0 + MAGIC.1] != b"ustar\0"
            || &h[VERSION.0..VERSION.0 + VERSION.1] != b"00"
        {
            let what = if &h[MAGIC.0..MAGIC.0 + 8] == b"ustar  \0" {
                "GNU tar format (create with --format=ustar)"
            } else {
                "not a ustar header"
            };
            return Err(self.malformed(at, format!("not POSIX ustar: {what}")));
        }
        let name = field_str(&h[NAME.0..NAME.0 + NAME.1]).ok_or_else(|| {
            self.malformed(at, "member name is not ASCII, or has bytes after its NUL")
        })?;
        let name = name.to_string();
        if h[TYPEFLAG] != b'0' {
            return Err(self.malformed(
                at,
                format!(
                    "member `{}` is not a regular file (type {:?})",
                    name.escape_debug(),
                    char::from(h[TYPEFLAG])
                ),
            ));
        }
        if h[PREFIX.0..PREFIX.0 + PREFIX.1].iter().any(|&b| b != 0) {
            return Err(self.malformed(
                at,
                format!("member `{}` has a name prefix", name.escape_debug()),
            ));
        }
        if h[LINKNAME.0..LINKNAME.0 + LINKNAME.1]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(self.malformed(
                at,
                format!("member `{}` has a link name", name.escape_debug()),
            ));
        }
        // Metadata is ignored but must still be well-formed numbers, so a
        // header means one thing to every tar implementation.
        for (field, what) in [(MODE, "mode"), (UID, "uid"), (GID, "gid"), (MTIME, "mtime")] {
            if octal(&h[field.0..field.0 + field.1]).is_none() {
                return Err(self.malformed(
                    at,
                    format!(
                        "member `{}`: {what} is not an octal number",
                        name.escape_debug()
                    ),
                ));
            }
        }
        let size = octal(&h[SIZE.0..SIZE.0 + SIZE.1]).ok_or_else(|| {
            self.malformed(
                at,
                format!(
                    "member `{}`: size is not an octal number",
                    name.escape_debug()
                ),
            )
        })?;
        Ok(Some(Header { at, name, size }))
    }

    /// A member's data, its size checked against `limit` before use and its
    /// padding checked to be zero.
    fn data(&mut self, h: &Header, limit: u64) -> Result<&'a [u8], BundleError> {
        if h.size > limit {
            return Err(BundleError::TooLarge {
                what: h.name.clone(),
                size: h.size,
                limit,
            });
        }
        // `limit` is far below usize::MAX, so these cannot overflow.
        let size = h.size as usize;
        let padded = size.next_multiple_of(BLOCK);
        let start = self.off;
        let Some(block) = self.bytes.get(start..start + padded) else {
            return Err(self.truncated(format!("the data of `{}`", h.name), start + padded));
        };
        if let Some(i) = block[size..].iter().position(|&b| b != 0) {
            return Err(self.malformed(
                start + size + i,
                format!("non-zero byte in the padding after `{}`", h.name),
            ));
        }
        self.off += padded;
        Ok(&block[..size])
    }

    /// After the last member: the two-block end-of-archive marker, then
    /// only zero blocks (tar implementations pad to a record size).
    fn end(&mut self) -> Result<(), BundleError> {
        let rest = &self.bytes[self.off..];
        if let Some(i) = rest.iter().position(|&b| b != 0) {
            let at = self.off + i;
            return Err(if i < BLOCK {
                let name = rest
                    .get(NAME.0..NAME.0 + NAME.1)
                    .and_then(field_str)
                    .unwrap_or("?");
                self.malformed(
                    at,
                    format!("extra member `{}` after `{MODULE}`", name.escape_debug()),
                )
            } else {
                self.malformed(at, "data after the end-of-archive marker")
            });
        }
        if rest.len() < 2 * BLOCK {
            return Err(self.truncated("the end-of-archive marker".into(), self.off + 2 * BLOCK));
        }
        if !rest.len().is_multiple_of(BLOCK) {
            return Err(self.malformed(
                self.bytes.len() - rest.len() % BLOCK,
                "the archive does not end on a 512-byte block",
            ));
        }
        Ok(())
    }
}

/// A NUL-terminated (or full-width) ASCII field whose remaining bytes are
/// all NUL.
fn field_str(f: &[u8]) -> Option<&str> {
    let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
    if end == 0 || f[end..].iter().any(|&b| b != 0) || !f[..end].is_ascii() {
        return None;
    }
    std::str::from_utf8(&f[..end]).ok()
}

/// A numeric field: optional leading spaces, octal digits, then NUL or
/// space terminators only. Base-256 (GNU) numbers are refused.
fn octal(f: &[u8]) -> Option<u64> {
    let start = f.iter().position(|&b| b != b' ')?;
    let digits = f[start..]
        .iter()
        .take_while(|b| (b'0'..=b'7').contains(b))
        .count();
    if digits == 0 || digits > 21 {
        return None;
    }
    if f[start + digits..].iter().any(|&b| b != 0 && b != b' ') {
        return None;
    }
    f[start..start + digits].iter().try_fold(0u64, |n, &d| {
        n.checked_mul(8)?.checked_add(u64::from(d - b'0'))
    })
}

/// The checksum field exactly as POSIX tar writes it: six octal digits,
/// NUL, space. Anything looser would let a byte change without the
/// checksum noticing.
fn checksum_field(f: &[u8]) -> Option<u32> {
    if f.len() != 8 || f[6] != 0 || f[7] != b' ' {
        return None;
    }
    f[..6].iter().try_fold(0u32, |n, &d| {
        (b'0'..=b'7')
            .contains(&d)
            .then(|| n * 8 + u32::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let a = write(b"{}", b"sig", &[7u8; 1000]);
        assert_eq!(a.len(), 512 * (1 + 1 + 1 + 1 + 1 + 2 + 2));
        let m = read(&a).unwrap();
        assert_eq!(m.manifest, b"{}");
        assert_eq!(m.signature, Some(&b"sig"[..]));
        assert_eq!(m.module, &[7u8; 1000][..]);
    }

    #[test]
    fn octal_fields() {
        assert_eq!(octal(b"0000644\0"), Some(0o644));
        assert_eq!(octal(b"   644 \0"), Some(0o644));
        assert_eq!(octal(b"\0\0\0\0"), None);
        assert_eq!(octal(b"0008\0"), None);
        assert_eq!(octal(b"12 3"), None);
        assert_eq!(checksum_field(b"012345\0 "), Some(0o12345));
        assert_eq!(checksum_field(b"012345 \0"), None);
    }
}
