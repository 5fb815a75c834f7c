//! Kernel fixes as unified diffs: which files each one touches (and each
//! file's own hunks, for line maps), and applying them to a scratch tree
//! with GNU patch after a dry run, so a fix that does not apply changes
//! nothing and says which hunk failed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// One file's part of a fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    /// Path relative to the tree (after stripping).
    pub path: String,
    /// The file is created by the fix.
    pub created: bool,
    /// The file is deleted by the fix.
    pub deleted: bool,
    /// This file's `---`/`+++` header and hunks.
    pub text: String,
}

/// A fix read from a file.
#[derive(Debug, Clone)]
pub struct Fix {
    /// Where it was read from.
    pub file: PathBuf,
    /// Its bytes (for the manifest's sha256).
    pub bytes: Vec<u8>,
    /// The `-p` strip level that fits the tree.
    pub strip: usize,
    /// Files touched, in order.
    pub files: Vec<FileDiff>,
}

/// A diff header's path (`a/fs/x.c`, maybe followed by a tab and a date)
/// with `n` leading components stripped; `None` for `/dev/null`.
pub fn strip_path(p: &str, n: usize) -> Option<String> {
    let p = p.split('\t').next().unwrap_or(p).trim();
    if p == "/dev/null" {
        return None;
    }
    let parts: Vec<&str> = p.split('/').collect();
    (parts.len() > n).then(|| parts[n..].join("/"))
}

/// (old lines, new lines) of `@@ -a[,b] +c[,d] @@`.
fn hunk_counts(header: &str) -> Option<(usize, usize)> {
    let mut parts = header.split_whitespace().skip(1);
    let count = |r: &str| -> Option<usize> {
        match r.split_once(',') {
            Some((_, n)) => n.parse().ok(),
            None => r.parse::<usize>().ok().map(|_| 1),
        }
    };
    let old = count(parts.next()?.strip_prefix('-')?)?;
    let new = count(parts.next()?.strip_prefix('+')?)?;
    Some((old, new))
}

/// The files of a unified diff: (old path, new path, that file's header
/// and hunks), in order; an error names `file` and the line at fault.
/// Hunk lengths are checked against their headers.
pub fn parse_files(file: &Path, text: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    // (old, new, text) per file.
    let mut raw: Vec<(String, String, String)> = Vec::new();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.starts_with("--- ") && i + 1 < lines.len() && lines[i + 1].starts_with("+++ ") {
            let old = l[4..].trim_end().to_string();
            let new = lines[i + 1][4..].trim_end().to_string();
            let mut body = String::from(l);
            body.push_str(lines[i + 1]);
            i += 2;
            // Hunks, counted by their headers: a removed line that
            // reads "--- x" is not the next file.
            while i < lines.len() && lines[i].starts_with("@@") {
                let (mut old_left, mut new_left) = hunk_counts(lines[i]).with_context(|| {
                    format!(
                        "{}: bad hunk header {:?}",
                        file.display(),
                        lines[i].trim_end()
                    )
                })?;
                body.push_str(lines[i]);
                i += 1;
                while i < lines.len() && (old_left > 0 || new_left > 0) {
                    let l = lines[i];
                    match l.as_bytes().first() {
                        Some(b' ') | Some(b'\n') | Some(b'\r') => {
                            old_left = old_left.saturating_sub(1);
                            new_left = new_left.saturating_sub(1);
                        }
                        Some(b'-') => old_left -= 1,
                        Some(b'+') => new_left -= 1,
                        Some(b'\\') => {}
                        _ => bail!(
                            "{}: line {} inside a hunk of {old} starts with neither ' ', '+' nor '-'",
                            file.display(),
                            i + 1
                        ),
                    }
                    body.push_str(l);
                    i += 1;
                }
                if old_left > 0 || new_left > 0 {
                    bail!("{}: the last hunk of {old} is truncated", file.display());
                }
                while i < lines.len() && lines[i].starts_with('\\') {
                    body.push_str(lines[i]);
                    i += 1;
                }
            }
            raw.push((old, new, body));
        } else {
            i += 1;
        }
    }
    if raw.is_empty() {
        bail!(
            "{}: no unified diff found (expected '--- a/FILE' and '+++ b/FILE' lines)",
            file.display()
        );
    }
    Ok(raw)
}

impl Fix {
    /// Reads a unified diff and finds the strip level at which its paths
    /// exist in `tree`.
    pub fn read(file: &Path, tree: &Path) -> anyhow::Result<Fix> {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        // GNU patch runs in the tree (-d): the fix's path must not be relative.
        let file =
            &std::path::absolute(file).with_context(|| format!("locating {}", file.display()))?;
        let raw = parse_files(file, &String::from_utf8_lossy(&bytes))?;
        let fits = |n: usize| {
            raw.iter().all(
                |(old, new, _)| match (strip_path(old, n), strip_path(new, n)) {
                    (Some(o), _) => tree.join(o).is_file(),
                    (None, Some(_)) => true,
                    (None, None) => false,
                },
            )
        };
        let Some(strip) = [1, 0, 2].into_iter().find(|&n| fits(n)) else {
            let (old, _, _) = &raw[0];
            bail!(
                "{}: {old} is not a file of the kernel source (tried -p1, -p0 and -p2)",
                file.display()
            );
        };
        let files = raw
            .into_iter()
            .map(|(old, new, text)| {
                let o = strip_path(&old, strip);
                let n = strip_path(&new, strip);
                FileDiff {
                    path: n.clone().or(o.clone()).unwrap_or_default(),
                    created: o.is_none(),
                    deleted: n.is_none(),
                    text,
                }
            })
            .collect();
        Ok(Fix {
            file: file.to_path_buf(),
            bytes,
            strip,
            files,
        })
    }

    /// Applies the fix to `dir` with GNU patch: a dry run first, so a
    /// fix that does not apply leaves the tree as it was.
    pub fn apply(&self, dir: &Path) -> anyhow::Result<()> {
        for dry in [true, false] {
            let mut cmd = Command::new("patch");
            cmd.arg(format!("-p{}", self.strip))
                .args(["--batch", "--forward", "--no-backup-if-mismatch", "-r", "-"])
                .arg("-d")
                .arg(dir)
                .arg("-i")
                .arg(&self.file);
            if dry {
                cmd.arg("--dry-run");
            }
            let out = cmd
                .output()
                .context("running GNU patch (apt-get install patch)")?;
            if !out.status.success() {
                bail!(
                    "{} does not apply to this kernel's source:\n{}{}",
                    self.file.display(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hunks_and_strip_level() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("kernel")).unwrap();
        std::fs::write(dir.path().join("kernel/sys.c"), "a\nb\nc\n").unwrap();
        std::fs::write(dir.path().join("kernel/x.h"), "x\n").unwrap();
        let p = dir.path().join("fix.patch");
        std::fs::write(
            &p,
            "From: someone\nSubject: fix\n\ndiff --git a/kernel/sys.c b/kernel/sys.c\nindex 1..2 100644\n--- a/kernel/sys.c\n+++ b/kernel/sys.c\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\ndiff --git a/kernel/x.h b/kernel/x.h\n--- a/kernel/x.h\n+++ b/kernel/x.h\n@@ -1 +1 @@\n-x\n+y\n--- /dev/null\n+++ b/kernel/new.c\n@@ -0,0 +1 @@\n+int n;\n-- \n2.39\n",
        )
        .unwrap();
        let f = Fix::read(&p, dir.path()).unwrap();
        assert_eq!(f.strip, 1);
        let paths: Vec<&str> = f.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["kernel/sys.c", "kernel/x.h", "kernel/new.c"]);
        assert!(f.files[2].created);
        assert!(f.files[0].text.contains("+B\n"));
        assert!(!f.files[0].text.contains("x.h"));
        f.apply(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("kernel/sys.c")).unwrap(),
            "a\nB\nc\n"
        );
        // Applying again fails (already applied) and says so.
        let err = f.apply(dir.path()).unwrap_err().to_string();
        assert!(err.contains("does not apply"), "{err}");

        std::fs::write(&p, "just words\n").unwrap();
        assert!(Fix::read(&p, dir.path())
            .unwrap_err()
            .to_string()
            .contains("no unified diff"));
        std::fs::write(&p, "--- a/nope.c\n+++ b/nope.c\n@@ -1 +1 @@\n-a\n+b\n").unwrap();
        assert!(Fix::read(&p, dir.path())
            .unwrap_err()
            .to_string()
            .contains("not a file of the kernel source"));
    }
}
