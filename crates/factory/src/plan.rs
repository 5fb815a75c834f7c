//! Release planning across kernel builds: for each build of a kernel set
//! and each fix of a catalog, whether the build's own Debian source already
//! contains the fix, whether the fix applies to it (cleanly, or with
//! offsets or fuzz, reported), conflicts (the hunks that fail), touches
//! files the build does not have, or belongs to another series. The plan
//! is what a release builds into each build's cumulative level;
//! `noreboot-build plan` prints it. Only the builds' source packages are
//! read (downloaded once into the cache's `sources/`), not whole
//! workspaces.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use kernel_tree::{AptArchive, Cache, Release};

use crate::catalog::{Catalog, CatalogFix, PatchSource};

/// What a fix is to one build.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Applicability {
    /// The build's source already has it (the fix applies in reverse).
    Contained,
    /// It applies; `adjusted` lists hunks GNU patch placed at an offset
    /// or with fuzz (each worth a look: the context moved).
    Applies { adjusted: Vec<String> },
    /// It does not apply: the hunks that fail.
    Conflict { hunks: Vec<String> },
    /// It changes files this build's source does not have.
    Absent { files: Vec<String> },
    /// Its Debian source versions are of another series than the build's.
    OtherSeries { series: String },
}

impl Applicability {
    /// One word for tables: `in`, `contained`, `conflict`, `absent`,
    /// `other-series`.
    pub fn word(&self) -> &'static str {
        match self {
            Applicability::Contained => "contained",
            Applicability::Applies { adjusted } if adjusted.is_empty() => "in",
            Applicability::Applies { .. } => "in*",
            Applicability::Conflict { .. } => "conflict",
            Applicability::Absent { .. } => "absent",
            Applicability::OtherSeries { .. } => "other-series",
        }
    }
}

/// The plan of one build.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildPlan {
    /// The kernel release.
    pub release: String,
    /// Its Debian version (its source package's).
    pub version: String,
    /// Each fix of the catalog, in catalog order: (id, what it is here).
    pub fixes: Vec<(String, Applicability)>,
    /// The fixes its cumulative level carries: those that apply.
    pub level: Vec<String>,
    /// Each fix's unified diff for this build's series (`None`: another
    /// series), in catalog order: what a release applies.
    #[serde(skip)]
    pub patches: Vec<Option<PathBuf>>,
    /// The build's own source files that the fixes and their hooks touch,
    /// as its Debian source package has them.
    #[serde(skip)]
    pub source: PathBuf,
}

/// The series (`6.1`) of a Debian kernel version (`6.1.192-3`,
/// `6.12.118-1~deb12u1`).
fn series_of(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// Decides what `fix` (a unified diff at `patch`, `-p1` paths) is to the
/// source tree `tree` with GNU patch dry runs: reverse first (contained),
/// then forward.
pub fn applicability(patch: &Path, tree: &Path) -> anyhow::Result<Applicability> {
    let text =
        std::fs::read_to_string(patch).with_context(|| format!("reading {}", patch.display()))?;
    let files = crate::patch::parse_files(patch, &text)?;
    let absent: Vec<String> = files
        .iter()
        .filter_map(|(old, _, _)| crate::patch::strip_path(old, 1))
        .filter(|rel| !tree.join(rel).is_file())
        .collect();
    if !absent.is_empty() {
        return Ok(Applicability::Absent { files: absent });
    }
    let run = |reverse: bool| -> anyhow::Result<(bool, String)> {
        let mut cmd = Command::new("patch");
        cmd.args(["-p1", "--dry-run", "--batch", "--force", "-r", "-"])
            .arg("-d")
            .arg(tree)
            .arg("-i")
            .arg(std::path::absolute(patch)?);
        if reverse {
            cmd.arg("--reverse");
        } else {
            cmd.arg("--forward");
        }
        let out = cmd
            .output()
            .context("running GNU patch (apt-get install patch)")?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    };
    // Contained: every hunk reverses exactly (no offset, no fuzz), which a
    // tree without the fix cannot do.
    let (ok, out) = run(true)?;
    if ok && !out.contains("with fuzz") && !out.contains("offset") {
        return Ok(Applicability::Contained);
    }
    let (ok, out) = run(false)?;
    let mut file = String::new();
    let mut adjusted = Vec::new();
    let mut failed = Vec::new();
    for line in out.lines() {
        if let Some(f) = line.strip_prefix("checking file ") {
            file = f.trim().to_string();
        } else if line.starts_with("Hunk #") {
            let what = format!("{file}: {}", line.trim_end_matches('.'));
            if line.contains("FAILED") {
                failed.push(what);
            } else {
                adjusted.push(what);
            }
        }
    }
    if ok {
        Ok(Applicability::Applies { adjusted })
    } else if failed.is_empty() {
        // Not a hunk failure: GNU patch's own words.
        Ok(Applicability::Conflict {
            hunks: vec![out.lines().take(3).collect::<Vec<_>>().join(" ")],
        })
    } else {
        Ok(Applicability::Conflict { hunks: failed })
    }
}

/// The unified diff of `fix` for a build of series `series`, written into
/// `dir`; `None` when the fix's Debian sources are of another series.
fn fix_patch(
    cache: &Cache,
    archive: &AptArchive,
    release: &Release,
    fix: &CatalogFix,
    dir: &Path,
) -> anyhow::Result<Result<PathBuf, String>> {
    let out = dir.join(format!("{}.patch", fix.id));
    match &fix.patch {
        PatchSource::Files(files) => {
            let mut text = String::new();
            for f in files {
                text.push_str(
                    &std::fs::read_to_string(f)
                        .with_context(|| format!("reading {}", f.display()))?,
                );
            }
            std::fs::write(&out, text)?;
        }
        PatchSource::Debian { from, to, files } => {
            let series = series_of(from);
            if series != release.series() {
                return Ok(Err(series));
            }
            let names: Vec<&str> = files.iter().map(String::as_str).collect();
            let mut text = String::new();
            let mut trees = Vec::new();
            for version in [from, to] {
                let tarball = kernel_tree::source::debian_source(cache, archive, release, version)?;
                trees.push(kernel_tree::source::cached_files(cache, &tarball, &names)?.0);
            }
            for f in files {
                let (a, b) = (trees[0].join(f), trees[1].join(f));
                let diff = Command::new("diff")
                    .arg("-u")
                    .arg(format!("--label=a/{f}"))
                    .arg(format!("--label=b/{f}"))
                    .arg(if a.is_file() {
                        a
                    } else {
                        PathBuf::from("/dev/null")
                    })
                    .arg(if b.is_file() {
                        b
                    } else {
                        PathBuf::from("/dev/null")
                    })
                    .output()
                    .context("running diff")?;
                text.push_str(&String::from_utf8_lossy(&diff.stdout));
            }
            if text.is_empty() {
                bail!(
                    "fix {}: {} do not differ between {from} and {to}",
                    fix.id,
                    files.join(", ")
                );
            }
            std::fs::write(&out, text)?;
        }
    }
    Ok(Ok(out))
}

/// Whether the build's Debian `version` is at least the fix's `fixed_in`
/// of the same series.
fn contained_by_version(fix: &CatalogFix, release: &Release, version: &str) -> bool {
    let Some(fixed_in) = &fix.fixed_in else {
        return false;
    };
    if series_of(fixed_in) != release.series() {
        return false;
    }
    match (
        fixed_in.parse::<debversion::Version>(),
        version.parse::<debversion::Version>(),
    ) {
        (Ok(f), Ok(v)) => v >= f,
        _ => false,
    }
}

/// The plan of `catalog` for each of `builds` ((release, Debian version)),
/// working in `work` (patches and extracted files).
pub fn plan(
    cache: &Cache,
    archive: &AptArchive,
    catalog: &Catalog,
    builds: &[(Release, String)],
    work: &Path,
) -> anyhow::Result<Vec<BuildPlan>> {
    let mut plans = Vec::new();
    // A fix's diff is the same for every build of a series: made once.
    let mut made: std::collections::HashMap<(String, String), Result<PathBuf, String>> =
        std::collections::HashMap::new();
    for (release, version) in builds {
        let dir = work.join(release.as_str());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut patches = Vec::new();
        for fix in &catalog.fixes {
            let key = (fix.id.clone(), release.series().to_string());
            if !made.contains_key(&key) {
                let series_dir = work.join("fixes").join(release.series());
                std::fs::create_dir_all(&series_dir)?;
                let p = fix_patch(cache, archive, release, fix, &series_dir)?;
                made.insert(key.clone(), p);
            }
            patches.push(made[&key].clone());
        }
        // The build's own source: every file any fix touches, extracted
        // with one pass over the tarball.
        let mut touched: BTreeSet<String> = catalog
            .fixes
            .iter()
            .flat_map(|f| f.appends.iter().map(|a| a.file.clone()))
            .collect();
        for p in patches.iter().flatten() {
            let text = std::fs::read_to_string(p)?;
            for (old, new, _) in crate::patch::parse_files(p, &text)? {
                touched.extend(
                    [old, new]
                        .iter()
                        .filter_map(|p| crate::patch::strip_path(p, 1)),
                );
            }
        }
        let tree = dir.join("source");
        let tarball = kernel_tree::source::debian_source(cache, archive, release, version)
            .with_context(|| format!("{release}: its source package {version}"))?;
        let names: Vec<&str> = touched.iter().map(String::as_str).collect();
        // The build's copy of just these files: a release composes its
        // level on it.
        let (cached, missing) = kernel_tree::source::cached_files(cache, &tarball, &names)?;
        std::fs::create_dir_all(&tree)?;
        for f in names.iter().filter(|f| !missing.iter().any(|m| m == *f)) {
            let to = tree.join(f);
            if let Some(d) = to.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::copy(cached.join(f), &to)
                .with_context(|| format!("copying {f} of {version}"))?;
        }
        let mut fixes = Vec::new();
        for (fix, p) in catalog.fixes.iter().zip(&patches) {
            let a = match p {
                Err(series) => Applicability::OtherSeries {
                    series: series.clone(),
                },
                // Debian's own version says so: the build is at least the
                // version that first shipped the fix (same series only: a
                // 6.12 version is "newer" than any 6.1 one).
                Ok(_) if contained_by_version(fix, release, version) => Applicability::Contained,
                Ok(p) => applicability(p, &tree)?,
            };
            fixes.push((fix.id.clone(), a));
        }
        let level = fixes
            .iter()
            .filter(|(_, a)| matches!(a, Applicability::Applies { .. }))
            .map(|(id, _)| id.clone())
            .collect();
        plans.push(BuildPlan {
            release: release.to_string(),
            version: version.clone(),
            fixes,
            level,
            patches: patches.into_iter().map(Result::ok).collect(),
            source: tree,
        });
    }
    Ok(plans)
}

/// A table of builds by fixes: a row per build (release, version, the
/// level column `level` of `width`, one word per fix), a column per fix.
pub fn grid<'a>(
    catalog: &Catalog,
    level: &str,
    width: usize,
    rows: impl Iterator<Item = (&'a str, &'a str, String, Vec<&'a str>)> + Clone,
) -> String {
    let ids: Vec<&str> = catalog.fixes.iter().map(|f| f.id.as_str()).collect();
    let first = rows.clone().map(|r| r.0.len()).max().unwrap_or(6).max(6);
    let mut s = format!("{:first$}  {:22}  {level:width$}", "build", "version");
    for id in &ids {
        s.push_str(&format!("  {id}"));
    }
    s.push('\n');
    for (release, version, lvl, words) in rows {
        s.push_str(&format!("{release:first$}  {version:22}  {lvl:width$}"));
        for (id, w) in ids.iter().zip(&words) {
            s.push_str(&format!("  {w:width$}", width = id.len()));
        }
        s.push('\n');
    }
    s
}

/// The plan as a table: a row per build, a column per fix.
pub fn table(catalog: &Catalog, plans: &[BuildPlan]) -> String {
    let mut s = grid(
        catalog,
        "level",
        5,
        plans.iter().map(|p| {
            (
                p.release.as_str(),
                p.version.as_str(),
                p.level.len().to_string(),
                p.fixes.iter().map(|(_, a)| a.word()).collect(),
            )
        }),
    );
    let notes: Vec<String> = plans
        .iter()
        .flat_map(|p| {
            p.fixes.iter().filter_map(move |(id, a)| match a {
                Applicability::Applies { adjusted } if !adjusted.is_empty() => Some(format!(
                    "{} {id}: applies with {}",
                    p.release,
                    adjusted.join("; ")
                )),
                Applicability::Conflict { hunks } => Some(format!(
                    "{} {id}: conflict: {}",
                    p.release,
                    hunks.join("; ")
                )),
                Applicability::Absent { files } => Some(format!(
                    "{} {id}: the build has no {}",
                    p.release,
                    files.join(", ")
                )),
                _ => None,
            })
        })
        .collect();
    if !notes.is_empty() {
        s.push('\n');
        for n in notes {
            s.push_str(&n);
            s.push('\n');
        }
    }
    s.push_str("\nlevel: how many fixes the build's cumulative level carries; in: the fix applies and goes into it (in*: with offsets or fuzz, listed); contained: the build's source has it\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(file: &str, text: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        d
    }

    const FIX: &str =
        "--- a/fs/x.c\n+++ b/fs/x.c\n@@ -1,6 +1,7 @@\n a\n b\n c\n+check();\n d\n e\n f\n";

    fn decide(tree: &Path) -> Applicability {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fix.patch");
        std::fs::write(&p, FIX).unwrap();
        applicability(&p, tree).unwrap()
    }

    #[test]
    fn a_fix_is_contained_applies_or_conflicts() {
        let t = tree_with("fs/x.c", "a\nb\nc\nd\ne\nf\ng\n");
        assert_eq!(
            decide(t.path()),
            Applicability::Applies { adjusted: vec![] }
        );
        let t = tree_with("fs/x.c", "a\nb\nc\ncheck();\nd\ne\nf\ng\n");
        assert_eq!(decide(t.path()), Applicability::Contained);
        // Three lines later in the file: applies at an offset, reported.
        let t = tree_with("fs/x.c", "0\n1\n2\na\nb\nc\nd\ne\nf\ng\n");
        match decide(t.path()) {
            Applicability::Applies { adjusted } => {
                assert_eq!(adjusted.len(), 1, "{adjusted:?}");
                assert!(
                    adjusted[0].starts_with("fs/x.c: Hunk #1 succeeded at 4 (offset 3 lines)"),
                    "{adjusted:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        let t = tree_with("fs/x.c", "A\nB\nC\nD\nE\nF\nG\n");
        match decide(t.path()) {
            Applicability::Conflict { hunks } => {
                assert_eq!(hunks, ["fs/x.c: Hunk #1 FAILED at 1"]);
            }
            other => panic!("{other:?}"),
        }
        let t = tree_with("fs/y.c", "a\n");
        assert_eq!(
            decide(t.path()),
            Applicability::Absent {
                files: vec!["fs/x.c".into()]
            }
        );
    }

    #[test]
    fn series_of_debian_versions() {
        assert_eq!(series_of("6.1.192-3"), "6.1");
        assert_eq!(series_of("6.12.118-1~deb12u1"), "6.12");
        assert_eq!(series_of("7.2.12-1~bpo13+1"), "7.2");
    }
}
