//! Sizes on disk: human sizes as people write them (`40G`, `1.5T`,
//! `500M`, plain bytes) parsed and printed, and the disk usage of a
//! directory tree as the file system counts it. Usage is blocks allocated
//! (`st_blocks` × 512, as `du` counts), not apparent length, so sparse
//! files and file system overhead are counted as they cost.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

const UNITS: [(&str, u32); 6] = [
    ("K", 10),
    ("M", 20),
    ("G", 30),
    ("T", 40),
    ("P", 50),
    ("E", 60),
];

/// Parses a size: a number of bytes (`1073741824`), or a number with a
/// binary unit `K`, `M`, `G`, `T`, `P` (also written `KiB`, `GiB`, …,
/// either case; powers of 1024, as `du -h` prints them), with an optional
/// fraction (`1.5T`). The result is rounded down to whole bytes. `GB` and
/// the other decimal spellings are refused rather than guessed at: tools
/// disagree on whether they mean 1000³ or 1024³.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty size".into());
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim_start();
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (number.contains('.') && !digits(fraction)) {
        return Err(format!("{t:?} does not start with a number"));
    }
    let shift = if unit.is_empty() || unit.eq_ignore_ascii_case("B") {
        0
    } else {
        let upper = unit.to_ascii_uppercase();
        let letter = upper.get(..1).unwrap_or_default();
        let rest = upper.get(1..).unwrap_or_default();
        let Some((_, shift)) = UNITS.iter().find(|(u, _)| *u == letter) else {
            return Err(format!(
                "unknown unit {unit:?} (use bytes, or K, M, G, T or P, e.g. 40G or 1.5T)"
            ));
        };
        match rest {
            "" | "IB" => *shift,
            "B" => {
                return Err(format!(
                    "{unit:?} is ambiguous (1000 or 1024?): write {letter} or {letter}iB, powers of 1024"
                ))
            }
            _ => {
                return Err(format!(
                    "unknown unit {unit:?} (use bytes, or K, M, G, T or P, e.g. 40G or 1.5T)"
                ))
            }
        }
    };
    if !fraction.is_empty() && shift == 0 {
        return Err("a number of bytes has no fraction".into());
    }
    let too_big = || format!("{t:?} is more than 2^64 bytes");
    let whole: u128 = whole.parse().map_err(|_| too_big())?;
    let unit = 1u128 << shift;
    let mut bytes = whole.checked_mul(unit).ok_or_else(too_big)?;
    // Fractions beyond what a unit of 2^60 can resolve do not change the
    // result; ignoring them keeps the arithmetic in range.
    let fraction = &fraction[..fraction.len().min(19)];
    if !fraction.is_empty() {
        let f: u128 = fraction.parse().map_err(|_| too_big())?;
        let scale = 10u128.pow(fraction.len() as u32);
        bytes += f * unit / scale;
    }
    u64::try_from(bytes).map_err(|_| too_big())
}

/// `bytes` for people: `6.2 GiB`, `512 MiB`, `900 B`.
pub fn format_size(bytes: u64) -> String {
    let Some((unit, shift)) = UNITS.iter().rev().find(|(_, s)| bytes >= 1u64 << s) else {
        return format!("{bytes} B");
    };
    let value = bytes as f64 / (1u64 << shift) as f64;
    if value >= 100.0 {
        format!("{value:.0} {unit}iB")
    } else {
        format!("{value:.1} {unit}iB")
    }
}

/// Disk usage of the tree at `path`: blocks allocated to every file,
/// directory and symlink in it (symlinks are not followed), each inode
/// counted once however many hard links it has in the tree (scratch
/// copies of a source tree are hard links to it). Entries that vanish
/// while the walk runs are skipped; a missing `path` uses nothing.
pub fn disk_usage(path: &Path) -> Result<u64> {
    let top = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("measure", path, e)),
    };
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut total = top.blocks().saturating_mul(512);
    if !top.is_dir() {
        return Ok(total);
    }
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("list", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("measure", entry.path(), e)),
            };
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            total = total.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_people_write_are_accepted() {
        for (text, bytes) in [
            ("0", 0),
            ("1073741824", 1 << 30),
            ("512B", 512),
            ("40G", 40 << 30),
            ("40g", 40 << 30),
            ("40GiB", 40 << 30),
            ("40 G", 40 << 30),
            (" 500M ", 500 << 20),
            ("1.5T", 3 << 39),
            ("1.5t", 3 << 39),
            ("0.5K", 512),
            ("2.25G", 9 << 28),
            ("1K", 1024),
            ("1.0000000000000000000000001G", 1 << 30),
            ("15E", 15 << 60),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text:?}");
        }
    }

    #[test]
    fn sizes_that_mean_nothing_or_too_much_are_refused() {
        for (text, why) in [
            ("", "empty"),
            ("  ", "empty"),
            ("G", "does not start with a number"),
            ("-1G", "does not start with a number"),
            ("1.G", "does not start with a number"),
            (".5G", "does not start with a number"),
            ("1.2.3G", "does not start with a number"),
            ("40X", "unknown unit"),
            ("40Gb", "ambiguous"),
            ("40GB", "ambiguous"),
            ("40Gibibytes", "unknown unit"),
            ("1.5", "no fraction"),
            ("16E", "more than 2^64"),
            (
                "99999999999999999999999999999999999999999",
                "more than 2^64",
            ),
            ("1e9", "unknown unit"),
            ("ten", "does not start with a number"),
        ] {
            let err = parse_size(text).expect_err(text);
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(40 << 30), "40.0 GiB");
        assert_eq!(format_size(500 << 20), "500 MiB");
        assert_eq!(
            parse_size(&format_size(3 << 39).replace(' ', "")),
            Ok(3 << 39)
        );
    }

    #[test]
    fn usage_counts_blocks_once_per_inode_and_does_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        let data = vec![7u8; 1 << 20];
        std::fs::write(tree.join("sub/a"), &data).unwrap();
        let one = disk_usage(&tree).unwrap();
        assert!(one >= 1 << 20, "{one}");
        // A hard link is the same blocks.
        std::fs::hard_link(tree.join("sub/a"), tree.join("b")).unwrap();
        assert_eq!(disk_usage(&tree).unwrap(), one);
        // A symlink to a big file outside costs the link, not the file.
        std::fs::write(dir.path().join("outside"), &data).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), tree.join("c")).unwrap();
        std::os::unix::fs::symlink(dir.path(), tree.join("d")).unwrap();
        let linked = disk_usage(&tree).unwrap();
        assert!(linked < one + (64 << 10), "{linked} vs {one}");
        // A sparse file costs its blocks, not its length.
        let sparse = std::fs::File::create(tree.join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        assert!(disk_usage(&tree).unwrap() < one + (1 << 20));
        assert_eq!(disk_usage(&dir.path().join("missing")).unwrap(), 0);
    }
}
