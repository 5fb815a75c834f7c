//! The fix catalog: a directory, made for git, with one entry per fix
//! (`fixes/<id>/fix.toml` beside the fix's patches, check scripts and
//! author hooks) and an optional `catalog.toml` that names the catalog and
//! declares which Debian versions it completes. Loading validates every
//! entry; an error names the file, the field and what is wrong with it.
//! The format is documented in docs/catalog.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What is wrong with a catalog, and where.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{reason}", path.display(), if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct CatalogError {
    /// The file (or directory) at fault.
    pub path: PathBuf,
    /// The field, e.g. `cves[1]`; empty for the file as a whole.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn err(path: &Path, field: impl Into<String>, reason: impl Into<String>) -> CatalogError {
    CatalogError {
        path: path.to_path_buf(),
        field: field.into(),
        reason: reason.into(),
    }
}

/// A loaded, validated catalog.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Catalog {
    /// Its directory.
    pub dir: PathBuf,
    /// Its name, from `catalog.toml`.
    pub name: Option<String>,
    /// The fixes, by id.
    pub fixes: Vec<CatalogFix>,
    /// The Debian versions the catalog completes.
    pub completes: Vec<Completion>,
}

/// One fix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CatalogFix {
    /// Its directory's name.
    pub id: String,
    /// Its directory.
    pub dir: PathBuf,
    /// CVE ids it fixes (none for a fix of a regression).
    pub cves: Vec<String>,
    /// What it fixes.
    pub description: String,
    /// The Debian version that first contains it, when known.
    pub fixed_in: Option<String>,
    /// Where the fix's unified diff comes from.
    pub patch: PatchSource,
    /// Scripts that fail on the unpatched kernel and pass with the fix.
    pub checks: Vec<PathBuf>,
    /// Author hooks: C appended to a source file after the fix.
    pub appends: Vec<Append>,
}

/// Where a fix's unified diff comes from.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchSource {
    /// Patch files of the entry, applied in order.
    Files(Vec<PathBuf>),
    /// Files as they differ between two Debian source packages of the
    /// kernel series, made into a diff when the catalog is used.
    Debian {
        /// The version without the fix.
        from: String,
        /// The version with it.
        to: String,
        /// Paths in the kernel tree.
        files: Vec<String>,
    },
}

/// C appended to a source file of the kernel after the fix is applied:
/// callbacks, shadow variables, markers (NOREBOOT_*, kpatch's macros).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Append {
    /// The source file, relative to the kernel tree.
    pub file: String,
    /// The entry's file holding the C text.
    pub source: PathBuf,
}

/// A declaration that a set of fixes completes a Debian version: a build
/// of at least `builds_from` that has every one of `fixes` (applied or
/// contained) carries everything `version` fixed, and its bundle may say
/// so as its effective version. Nothing else may claim one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Completion {
    /// The version completed, e.g. `6.1.192-3`.
    pub version: String,
    /// The oldest build version the declaration holds for.
    pub builds_from: String,
    /// The fixes it takes, by id.
    pub fixes: Vec<String>,
}

/// Largest text file of an entry read (patches, scripts, hooks).
const MAX_FILE: u64 = 16 << 20;
/// Largest description.
const MAX_DESCRIPTION: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    name: Option<String>,
    #[serde(default)]
    completes: Vec<RawCompletion>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompletion {
    version: String,
    builds_from: String,
    fixes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFix {
    #[serde(default)]
    cves: Vec<String>,
    description: String,
    fixed_in: Option<String>,
    patches: Option<Vec<String>>,
    source: Option<RawSource>,
    #[serde(default)]
    checks: Vec<String>,
    #[serde(default)]
    append: Vec<RawAppend>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    from: String,
    to: String,
    files: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppend {
    file: String,
    source: String,
}

/// Reads a TOML file into `T`; a syntax or shape error names its line.
fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CatalogError> {
    let text = read_text(path, "")?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        err(
            path,
            line.map(|l| format!("line {l}")).unwrap_or_default(),
            e.message().trim().to_string(),
        )
    })
}

/// A text file of at most [`MAX_FILE`] bytes.
fn read_text(path: &Path, field: &str) -> Result<String, CatalogError> {
    let meta =
        std::fs::metadata(path).map_err(|e| err(path, field, format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(err(path, field, "not a file"));
    }
    if meta.len() > MAX_FILE {
        return Err(err(
            path,
            field,
            format!("{} bytes, more than {MAX_FILE}", meta.len()),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| err(path, field, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|_| err(path, field, "not UTF-8 text"))
}

/// A relative path that stays inside its directory (no `..`, not
/// absolute, not empty).
fn inside(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && Path::new(p)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

fn check_version(path: &Path, field: &str, v: &str) -> Result<(), CatalogError> {
    v.parse::<debversion::Version>()
        .map(|_| ())
        .map_err(|e| err(path, field, format!("{v:?} is not a Debian version: {e}")))
}

/// An entry id: what a directory under `fixes/` may be called.
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl Catalog {
    /// Loads and validates the catalog in `dir`.
    pub fn load(dir: &Path) -> Result<Catalog, CatalogError> {
        let fixes_dir = dir.join("fixes");
        if !fixes_dir.is_dir() {
            return Err(err(dir, "", "not a catalog: it has no fixes/ directory"));
        }
        let top = dir.join("catalog.toml");
        let raw = if top.exists() {
            read_toml::<RawCatalog>(&top)?
        } else {
            RawCatalog {
                name: None,
                completes: Vec::new(),
            }
        };
        let mut ids: Vec<String> = Vec::new();
        let entries = std::fs::read_dir(&fixes_dir)
            .map_err(|e| err(&fixes_dir, "", format!("cannot list: {e}")))?;
        for e in entries {
            let e = e.map_err(|e| err(&fixes_dir, "", format!("cannot list: {e}")))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if !e.path().is_dir() {
                return Err(err(&e.path(), "", "only fix directories belong in fixes/"));
            }
            if !valid_id(&name) {
                return Err(err(
                    &e.path(),
                    "",
                    "a fix's id (its directory name) is 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
                ));
            }
            ids.push(name);
        }
        ids.sort();
        let fixes = ids
            .iter()
            .map(|id| CatalogFix::load(id, &fixes_dir.join(id)))
            .collect::<Result<Vec<_>, _>>()?;
        let known: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let mut completes = Vec::new();
        for (i, c) in raw.completes.iter().enumerate() {
            let f = |x: &str| format!("completes[{i}].{x}");
            check_version(&top, &f("version"), &c.version)?;
            check_version(&top, &f("builds_from"), &c.builds_from)?;
            if c.fixes.is_empty() {
                return Err(err(
                    &top,
                    f("fixes"),
                    "empty: a completion names the fixes it takes",
                ));
            }
            for (j, id) in c.fixes.iter().enumerate() {
                if !known.contains(id.as_str()) {
                    return Err(err(
                        &top,
                        format!("completes[{i}].fixes[{j}]"),
                        format!("no fix {id:?} in fixes/"),
                    ));
                }
            }
            completes.push(Completion {
                version: c.version.clone(),
                builds_from: c.builds_from.clone(),
                fixes: c.fixes.clone(),
            });
        }
        if let Some(n) = &raw.name {
            if n.trim().is_empty() || n.len() > 200 || n.chars().any(char::is_control) {
                return Err(err(&top, "name", "one line of 1 to 200 characters"));
            }
        }
        Ok(Catalog {
            dir: dir.to_path_buf(),
            name: raw.name,
            fixes,
            completes,
        })
    }
}

impl CatalogFix {
    fn load(id: &str, dir: &Path) -> Result<CatalogFix, CatalogError> {
        let path = dir.join("fix.toml");
        if !path.is_file() {
            return Err(err(dir, "", "a fix directory needs its fix.toml"));
        }
        let raw: RawFix = read_toml(&path)?;
        check_text(&path, &raw)?;
        let patch = match (raw.patches, raw.source) {
            (Some(_), Some(_)) => {
                return Err(err(
                    &path,
                    "source",
                    "give either `patches` or `[source]`, not both",
                ))
            }
            (Some(names), None) => listed_patches(&path, dir, &names)?,
            (None, Some(s)) => debian_source(&path, s)?,
            (None, None) => patches_beside(&path, dir)?,
        };
        let checks = raw
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| fix_file(&path, dir, &format!("checks[{i}]"), c))
            .collect::<Result<Vec<_>, _>>()?;
        let mut appends = Vec::new();
        for (i, a) in raw.append.iter().enumerate() {
            if !inside(&a.file) {
                return Err(err(
                    &path,
                    format!("append[{i}].file"),
                    format!("{:?} is not a path in the kernel tree", a.file),
                ));
            }
            appends.push(Append {
                file: a.file.clone(),
                source: fix_file(&path, dir, &format!("append[{i}].source"), &a.source)?,
            });
        }
        Ok(CatalogFix {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            cves: raw.cves,
            description: raw.description,
            fixed_in: raw.fixed_in,
            patch,
            checks,
            appends,
        })
    }
}

/// The CVE ids (well formed, each once), the description (present, not
/// too long) and `fixed_in` (a Debian version).
fn check_text(path: &Path, raw: &RawFix) -> Result<(), CatalogError> {
    let mut seen = BTreeSet::new();
    for (i, c) in raw.cves.iter().enumerate() {
        if !bundle::manifest::is_cve_id(c) {
            return Err(err(
                path,
                format!("cves[{i}]"),
                format!("{c:?} is not CVE-YYYY-NNNN"),
            ));
        }
        if !seen.insert(c) {
            return Err(err(
                path,
                format!("cves[{i}]"),
                format!("{c} is listed twice"),
            ));
        }
    }
    if raw.description.trim().is_empty() {
        return Err(err(path, "description", "empty: say what the fix fixes"));
    }
    if raw.description.len() > MAX_DESCRIPTION {
        return Err(err(
            path,
            "description",
            format!("more than {MAX_DESCRIPTION} bytes"),
        ));
    }
    if let Some(v) = &raw.fixed_in {
        check_version(path, "fixed_in", v)?;
    }
    Ok(())
}

/// A file the entry names (field `field` of `toml`): inside the fix's
/// directory, and readable text.
fn fix_file(toml: &Path, dir: &Path, field: &str, name: &str) -> Result<PathBuf, CatalogError> {
    if !inside(name) {
        return Err(err(
            toml,
            field,
            format!("{name:?} is not a path inside the fix's directory"),
        ));
    }
    let p = dir.join(name);
    read_text(&p, field).map_err(|e| err(toml, field, e.to_string()))?;
    Ok(p)
}

/// `patches = [...]`: each a unified diff inside the fix's directory.
fn listed_patches(toml: &Path, dir: &Path, names: &[String]) -> Result<PatchSource, CatalogError> {
    if names.is_empty() {
        return Err(err(toml, "patches", "empty"));
    }
    let mut files = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let field = format!("patches[{i}]");
        let p = fix_file(toml, dir, &field, n)?;
        check_patch(toml, &field, &p)?;
        files.push(p);
    }
    Ok(PatchSource::Files(files))
}

/// `[source]`: files of the tree between two Debian source versions.
fn debian_source(toml: &Path, s: RawSource) -> Result<PatchSource, CatalogError> {
    check_version(toml, "source.from", &s.from)?;
    check_version(toml, "source.to", &s.to)?;
    let (from, to): (debversion::Version, debversion::Version) = (
        s.from
            .parse()
            .map_err(|_| err(toml, "source.from", "bad version"))?,
        s.to.parse()
            .map_err(|_| err(toml, "source.to", "bad version"))?,
    );
    if from >= to {
        return Err(err(
            toml,
            "source.to",
            format!("{} is not newer than {}", s.to, s.from),
        ));
    }
    if s.files.is_empty() {
        return Err(err(
            toml,
            "source.files",
            "empty: name the files of the fix",
        ));
    }
    for (i, f) in s.files.iter().enumerate() {
        if !inside(f) {
            return Err(err(
                toml,
                format!("source.files[{i}]"),
                format!("{f:?} is not a path in the kernel tree"),
            ));
        }
    }
    Ok(PatchSource::Debian {
        from: s.from,
        to: s.to,
        files: s.files,
    })
}

/// Neither: the entry's *.patch files, in name order.
fn patches_beside(toml: &Path, dir: &Path) -> Result<PatchSource, CatalogError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err(dir, "", format!("cannot list: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(err(
            toml,
            "patches",
            "no patch: list `patches`, give `[source]`, or put *.patch files beside fix.toml",
        ));
    }
    for p in &found {
        read_text(p, "").and_then(|_| check_patch(p, "", p))?;
    }
    Ok(PatchSource::Files(found))
}

/// A patch file must be a unified diff whose paths stay in the tree.
fn check_patch(toml: &Path, field: &str, p: &Path) -> Result<(), CatalogError> {
    let text = read_text(p, field)?;
    let files =
        crate::patch::parse_files(p, &text).map_err(|e| err(toml, field, format!("{e:#}")))?;
    for (old, new, _) in &files {
        for name in [old, new] {
            let name = name.split('\t').next().unwrap_or(name).trim();
            if name != "/dev/null" && !inside(name) {
                return Err(err(
                    toml,
                    field,
                    format!("{}: path {name:?} leaves the tree", p.display()),
                ));
            }
        }
    }
    Ok(())
}

/// One line per fix, for people: id, CVEs, where the patch comes from.
pub fn table(c: &Catalog) -> String {
    let mut rows: BTreeMap<&str, String> = BTreeMap::new();
    for f in &c.fixes {
        let cves = if f.cves.is_empty() {
            "-".to_string()
        } else {
            f.cves.join(",")
        };
        let source = match &f.patch {
            PatchSource::Files(p) => format!("{} patch file(s)", p.len()),
            PatchSource::Debian { from, to, files } => {
                format!("{from} -> {to}: {}", files.join(" "))
            }
        };
        let extra = match (f.checks.len(), f.appends.len()) {
            (0, 0) => String::new(),
            (c, a) => format!(" [{c} check(s), {a} hook(s)]"),
        };
        rows.insert(
            &f.id,
            format!("{:<32} {:<20} {}{extra}", f.id, cves, source),
        );
    }
    let mut out = format!(
        "{}: {} fix(es)\n",
        c.name.as_deref().unwrap_or("catalog"),
        c.fixes.len()
    );
    for r in rows.values() {
        out.push_str(r);
        out.push('\n');
    }
    for comp in &c.completes {
        out.push_str(&format!(
            "completes {} for builds from {}: {}\n",
            comp.version,
            comp.builds_from,
            comp.fixes.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const PATCH: &str = "--- a/fs/x.c\n+++ b/fs/x.c\n@@ -1,1 +1,1 @@\n-a\n+b\n";

    fn good(dir: &Path) {
        write(dir, "catalog.toml", "name = \"t\"\n[[completes]]\nversion = \"6.1.192-3\"\nbuilds_from = \"6.1.192-1\"\nfixes = [\"a\", \"b\"]\n");
        write(dir, "fixes/a/fix.toml", "cves = [\"CVE-2026-99362\"]\ndescription = \"nfsd\"\n[source]\nfrom = \"6.1.192-2\"\nto = \"6.1.192-3\"\nfiles = [\"fs/nfsd/nfs4state.c\"]\n");
        write(dir, "fixes/b/fix.toml", "description = \"ext4\"\nfixed_in = \"6.1.192-2\"\nchecks = [\"check.sh\"]\n[[append]]\nfile = \"fs/x.c\"\nsource = \"hook.c\"\n");
        write(dir, "fixes/b/0001.patch", PATCH);
        write(dir, "fixes/b/check.sh", "exit 0\n");
        write(dir, "fixes/b/hook.c", "/* hook */\n");
    }

    #[test]
    fn a_good_catalog_loads() {
        let t = tempfile::tempdir().unwrap();
        good(t.path());
        let c = Catalog::load(t.path()).unwrap();
        assert_eq!(c.fixes.len(), 2);
        let (a, b) = (&c.fixes[0], &c.fixes[1]);
        assert_eq!((a.id.as_str(), b.id.as_str()), ("a", "b"));
        assert!(
            matches!(&a.patch, PatchSource::Debian { files, .. } if files == &["fs/nfsd/nfs4state.c"])
        );
        assert!(matches!(&b.patch, PatchSource::Files(p) if p.len() == 1));
        assert_eq!(b.checks.len(), 1);
        assert_eq!(b.appends[0].file, "fs/x.c");
        assert_eq!(c.completes[0].fixes, ["a", "b"]);
        assert!(table(&c).contains("completes 6.1.192-3 for builds from 6.1.192-1: a, b"));
    }

    /// Each broken variant is refused naming the file and the field.
    #[test]
    fn errors_name_the_entry_and_the_field() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("fixes/a/fix.toml", "cves = [\"CVE-26-1\"]\ndescription = \"d\"\n[source]\nfrom = \"1-1\"\nto = \"1-2\"\nfiles = [\"x.c\"]\n", "cves[0]", "not CVE-YYYY-NNNN"),
            ("fixes/a/fix.toml", "description = \"d\"\ncve = []\n", "line 2", "unknown field `cve`"),
            ("fixes/a/fix.toml", "description = \" \"\n[source]\nfrom = \"1-1\"\nto = \"1-2\"\nfiles = [\"x.c\"]\n", "description", "empty"),
            ("fixes/a/fix.toml", "description = \"d\"\nfixed_in = \"6.1 192\"\n[source]\nfrom = \"1-1\"\nto = \"1-2\"\nfiles = [\"x.c\"]\n", "fixed_in", "not a Debian version"),
            ("fixes/a/fix.toml", "description = \"d\"\n[source]\nfrom = \"1-2\"\nto = \"1-1\"\nfiles = [\"x.c\"]\n", "source.to", "not newer"),
            ("fixes/a/fix.toml", "description = \"d\"\n[source]\nfrom = \"1-1\"\nto = \"1-2\"\nfiles = [\"../x.c\"]\n", "source.files[0]", "not a path in the kernel tree"),
            ("fixes/a/fix.toml", "description = \"d\"\npatches = [\"none.patch\"]\n", "patches[0]", "cannot read"),
            ("fixes/a/fix.toml", "description = \"d\"\n", "patches", "no patch"),
            ("fixes/a/fix.toml", "description = \"d\"\nchecks = [\"/etc/passwd\"]\n[source]\nfrom = \"1-1\"\nto = \"1-2\"\nfiles = [\"x.c\"]\n", "checks[0]", "not a path inside"),
            ("catalog.toml", "[[completes]]\nversion = \"6.1.192-3\"\nbuilds_from = \"6.1.192-1\"\nfixes = [\"zz\"]\n", "completes[0].fixes[0]", "no fix \"zz\""),
        ];
        for (file, text, field, reason) in cases {
            let t = tempfile::tempdir().unwrap();
            good(t.path());
            write(t.path(), file, text);
            let e = Catalog::load(t.path()).unwrap_err();
            assert_eq!(e.path, t.path().join(file), "{e}");
            assert_eq!(&e.field, field, "{e}");
            assert!(e.reason.contains(reason), "{e}");
        }
        // A patch file that is no diff, and a directory that is no id.
        let t = tempfile::tempdir().unwrap();
        good(t.path());
        write(t.path(), "fixes/b/0001.patch", "hello\n");
        let e = Catalog::load(t.path()).unwrap_err();
        assert!(e.to_string().contains("no unified diff found"), "{e}");
        let t = tempfile::tempdir().unwrap();
        good(t.path());
        write(t.path(), "fixes/Bad Name/fix.toml", "description = \"d\"\n");
        assert!(Catalog::load(t.path())
            .unwrap_err()
            .reason
            .contains("a fix's id"));
    }
}
