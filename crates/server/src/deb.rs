//! Reading an uploaded Debian package's control data from the package
//! itself: the `ar` archive, its `debian-binary` format version, and the
//! `control` file inside `control.tar` (uncompressed, gzip, xz or zstd, as
//! `dpkg-deb` writes them). The APT repository lists a package by this
//! paragraph, so nothing an uploader types can disagree with the file.

use std::io::Read;

/// Largest decompressed `control.tar` read: control archives are a few
/// KiB; this bounds what a crafted one can make the server inflate.
const MAX_CONTROL_TAR: u64 = 16 << 20;
/// Largest `control` file.
const MAX_CONTROL: u64 = 1 << 20;

/// Why a file is not a Debian package the repository can list.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// Not an `ar` archive, or a damaged one.
    #[error("not a Debian package (.deb): {0}")]
    NotDeb(String),
    /// The package format version is not 2.x.
    #[error("unsupported .deb format version {0:?} in debian-binary (2.0 expected)")]
    Format(String),
    /// A member the format requires is missing.
    #[error("the .deb has no {0} member")]
    Missing(&'static str),
    /// `control.tar` is compressed in a way dpkg does not write.
    #[error("the .deb's control archive {0:?} is compressed in an unknown way (control.tar, .gz, .xz or .zst expected)")]
    Compression(String),
    /// Reading `control.tar` (or decompressing it) failed.
    #[error("the .deb's control archive {member}: {reason}")]
    ControlTar {
        /// Its name in the `ar` archive.
        member: String,
        /// What failed.
        reason: String,
    },
    /// The `control` file is not a valid control paragraph.
    #[error("the .deb's control file: {0}")]
    Control(String),
}

/// What the repository needs from a package's `control` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// `Package:`.
    pub package: String,
    /// `Version:`.
    pub version: String,
    /// `Architecture:`.
    pub architecture: String,
    /// The whole paragraph as the package has it, without trailing blank
    /// lines (the `Packages` index lists it with the fields APT adds).
    pub paragraph: String,
}

/// Reads the control data of the `.deb` in `bytes`.
pub fn read(bytes: &[u8]) -> Result<Control, DebError> {
    let mut archive = ar::Archive::new(bytes);
    let mut seen_binary = false;
    while let Some(entry) = archive.next_entry() {
        let mut entry = entry.map_err(|e| DebError::NotDeb(e.to_string()))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if name == "debian-binary" {
            let mut v = String::new();
            entry
                .by_ref()
                .take(64)
                .read_to_string(&mut v)
                .map_err(|e| DebError::NotDeb(format!("debian-binary: {e}")))?;
            let v = v.trim().to_string();
            if !v.starts_with("2.") {
                return Err(DebError::Format(v));
            }
            seen_binary = true;
            continue;
        }
        if let Some(suffix) = name.strip_prefix("control.tar") {
            if !seen_binary {
                return Err(DebError::Missing("debian-binary (first)"));
            }
            let tar = decompress(&name, suffix, entry)?;
            return parse_control(&find_control(&name, &tar)?);
        }
    }
    Err(if seen_binary {
        DebError::Missing("control.tar")
    } else {
        DebError::Missing("debian-binary")
    })
}

/// The `control.tar` member's bytes, decompressed by its suffix.
fn decompress(name: &str, suffix: &str, member: impl Read) -> Result<Vec<u8>, DebError> {
    let fail = |e: std::io::Error| DebError::ControlTar {
        member: name.to_string(),
        reason: e.to_string(),
    };
    let mut reader: Box<dyn Read + '_> = match suffix {
        "" => Box::new(member),
        ".gz" => Box::new(flate2::read::GzDecoder::new(member)),
        ".xz" => Box::new(xz2::read::XzDecoder::new(member)),
        ".zst" => Box::new(
            ruzstd::decoding::StreamingDecoder::new(member).map_err(|e| DebError::ControlTar {
                member: name.to_string(),
                reason: e.to_string(),
            })?,
        ),
        _ => return Err(DebError::Compression(name.to_string())),
    };
    let mut out = Vec::new();
    reader
        .by_ref()
        .take(MAX_CONTROL_TAR + 1)
        .read_to_end(&mut out)
        .map_err(fail)?;
    if out.len() as u64 > MAX_CONTROL_TAR {
        return Err(DebError::ControlTar {
            member: name.to_string(),
            reason: format!("larger than {MAX_CONTROL_TAR} bytes decompressed"),
        });
    }
    Ok(out)
}

/// The text of `./control` in the control archive.
fn find_control(name: &str, tar_bytes: &[u8]) -> Result<String, DebError> {
    let fail = |e: std::io::Error| DebError::ControlTar {
        member: name.to_string(),
        reason: e.to_string(),
    };
    let mut tar = tar::Archive::new(tar_bytes);
    for entry in tar.entries().map_err(fail)? {
        let entry = entry.map_err(fail)?;
        let path = entry.path().map_err(fail)?.into_owned();
        if path.as_os_str() != "./control" && path.as_os_str() != "control" {
            continue;
        }
        let mut text = String::new();
        entry
            .take(MAX_CONTROL + 1)
            .read_to_string(&mut text)
            .map_err(|e| DebError::Control(format!("not UTF-8 text: {e}")))?;
        if text.len() as u64 > MAX_CONTROL {
            return Err(DebError::Control(format!(
                "larger than {MAX_CONTROL} bytes"
            )));
        }
        return Ok(text);
    }
    Err(DebError::Missing("control file in control.tar"))
}

/// The fields the repository needs, from a control paragraph; refuses
/// what would break the `Packages` index (a blank line would start a new
/// paragraph there) or what APT would refuse to parse.
pub fn parse_control(text: &str) -> Result<Control, DebError> {
    let paragraph = text.trim_end_matches(['\n', '\r', ' ', '\t']).to_string();
    let bad = |m: String| Err(DebError::Control(m));
    let (mut package, mut version, mut architecture) = (None, None, None);
    for (n, line) in paragraph.lines().enumerate() {
        let n = n + 1;
        if line.trim().is_empty() {
            return bad(format!(
                "line {n} is blank: a package's control file is one paragraph"
            ));
        }
        if line.starts_with([' ', '\t']) {
            if n == 1 {
                return bad("line 1 is a continuation line".into());
            }
            continue;
        }
        let Some((field, value)) = line.split_once(':') else {
            return bad(format!("line {n} is not `Field: value`: {line:.80?}"));
        };
        let value = value.trim().to_string();
        match field {
            "Package" => package = Some(value),
            "Version" => version = Some(value),
            "Architecture" => architecture = Some(value),
            "Filename" | "Size" | "MD5sum" | "SHA1" | "SHA256" | "SHA512" => {
                return bad(format!(
                    "line {n}: {field} is a repository field, not a package's"
                ))
            }
            _ => {}
        }
    }
    let need = |v: Option<String>, f: &str| match v {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(DebError::Control(format!("no {f} field"))),
    };
    let package = need(package, "Package")?;
    let version = need(version, "Version")?;
    let architecture = need(architecture, "Architecture")?;
    if !package
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
    {
        return bad(format!("Package {package:?} is not a Debian package name"));
    }
    version
        .parse::<debversion::Version>()
        .map_err(|e| DebError::Control(format!("Version {version:?}: {e}")))?;
    // The version becomes part of a file name in the pool.
    if version.contains('/') || version.contains("..") {
        return bad(format!("Version {version:?} cannot name a file"));
    }
    Ok(Control {
        package,
        version,
        architecture,
        paragraph,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_fields() {
        let c = parse_control(
            "Package: noreboot\nVersion: 1:0.2.0-1\nArchitecture: amd64\nDescription: x\n more\n\n",
        )
        .unwrap();
        assert_eq!(
            (
                c.package.as_str(),
                c.version.as_str(),
                c.architecture.as_str()
            ),
            ("noreboot", "1:0.2.0-1", "amd64")
        );
        assert!(c.paragraph.ends_with(" more"));
    }

    #[test]
    fn control_refusals() {
        for (text, why) in [
            ("Package: a\nVersion: 1\n", "no Architecture"),
            ("Package: a\n\nVersion: 1\nArchitecture: all\n", "blank"),
            (
                "Package: A\nVersion: 1\nArchitecture: all\n",
                "not a Debian package name",
            ),
            (
                "Package: a\nVersion: 1\nArchitecture: all\nSHA256: x\n",
                "repository field",
            ),
            ("Package: a\nVersion: a/b\nArchitecture: all\n", "Version"),
            ("garbage\n", "not `Field: value`"),
        ] {
            let e = parse_control(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn not_a_deb() {
        let e = read(b"#!/bin/sh\necho hi\n").unwrap_err();
        assert!(matches!(e, DebError::NotDeb(_)), "{e}");
    }
}
