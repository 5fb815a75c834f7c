//! Export and import of published levels, for sites this server cannot
//! reach (air-gapped networks). `export` copies every published level's
//! bundle file, byte for byte, into a directory with an `index.json` that
//! describes them; `import` checks such a directory against its index and
//! publishes what is new through [`Context::publish`] (the same signature
//! check against the importing server's trusted keys), then releases it to
//! the feeds the index names. The bundles sit at the directory's top level
//! as `<sha256>.nrb`, so the directory is also an agent's
//! `update.directory` mirror as it stands.
//!
//! `index.json` is written last, by rename: a directory without it is an
//! export that did not finish, and `import` refuses it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

use crate::blobs::{is_sha256, sha256_hex, BlobError};
use crate::clock::rfc3339;
use crate::context::Context;
use crate::error::{conflict, invalid, not_found, DbContext, Error};
use crate::store;
use crate::validate;

/// The index's file name in an export directory.
pub const INDEX: &str = "index.json";
/// The index's `format`.
pub const FORMAT: &str = "noreboot-export";
/// The index's `version`.
pub const VERSION: u32 = 1;
/// The largest `index.json` an import reads.
pub const MAX_INDEX: u64 = 64 << 20;

/// `index.json`: what an export directory holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// When the export was made (RFC 3339).
    pub exported_at: String,
    /// One entry per bundle file, by kernel build-id and level.
    pub bundles: Vec<IndexEntry>,
}

/// One bundle file of an export: one published level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Its file name in the directory (`<sha256>.nrb`).
    pub file: String,
    /// sha256 of the file.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// The kernel build it patches.
    pub kernel: IndexKernel,
    /// The level.
    pub level: u32,
    /// Patch name.
    pub name: String,
    /// CVE ids it fixes.
    pub cves: Vec<String>,
    /// The minisign key id that signed it.
    pub signer: String,
    /// When it was published on the exporting server (RFC 3339).
    pub published_at: String,
    /// Feeds it is released to there (not withdrawn).
    pub feeds: Vec<String>,
}

/// A kernel build, as the index names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexKernel {
    /// GNU build-id.
    pub build_id: String,
    /// `uname -r`.
    pub release: String,
    /// Distribution package version.
    pub version: Option<String>,
}

/// A finished export.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    /// The directory.
    pub dir: String,
    /// What it holds, as `index.json` says.
    pub bundles: Vec<IndexEntry>,
    /// Bundle files of a previous export there that were removed (`--force`).
    pub removed: Vec<String>,
}

/// What an import did with one bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Published here now.
    Published,
    /// Published here already with the same sha256.
    Present,
    /// Not published: a newer level of its kernel is published here
    /// already (levels are cumulative and only move forward).
    Superseded,
}

/// One level of an import.
#[derive(Debug, Clone, Serialize)]
pub struct ImportedLevel {
    /// The bundle file.
    pub file: String,
    /// Kernel build-id.
    pub build_id: String,
    /// Kernel release.
    pub release: String,
    /// The level.
    pub level: i64,
    /// sha256 of the bundle.
    pub sha256: String,
    /// Published now, or there already.
    pub outcome: Outcome,
    /// Feeds it was released to by this import.
    pub released: Vec<String>,
}

/// A finished import.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    /// The directory.
    pub dir: String,
    /// Every level of the index, in the order they were imported.
    pub levels: Vec<ImportedLevel>,
    /// Feeds the index releases to that do not exist here (nothing was
    /// released to them; create them and `promote`).
    pub feeds_missing: Vec<String>,
}

/// An import that failed, with what it had imported before (each level
/// is its own transaction: those stay, and the database is consistent).
#[derive(Debug)]
pub struct ImportError {
    /// Levels imported before the failure.
    pub done: Vec<ImportedLevel>,
    /// The failure.
    pub error: Error,
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        if self.done.is_empty() {
            return write!(f, " (nothing was imported)");
        }
        let done: Vec<String> = self
            .done
            .iter()
            .map(|l| {
                format!(
                    "{} level {} ({})",
                    l.build_id,
                    l.level,
                    match l.outcome {
                        Outcome::Published => "published",
                        Outcome::Present => "present already",
                        Outcome::Superseded => "superseded",
                    }
                )
            })
            .collect();
        write!(f, " (imported before the failure: {})", done.join(", "))
    }
}

/// No `source`: the message includes the failure already (and `{:#}`
/// would print it twice).
impl std::error::Error for ImportError {}

/// What to do with one index entry.
enum Step {
    Publish,
    Present,
    Superseded,
}

impl Context {
    /// Writes the published levels (of `kernels`, or all; released to one
    /// of `feeds`, or all) into `out` with their `index.json`. `out` must
    /// be missing or empty unless `force`, which replaces the export in it.
    pub async fn export(
        &self,
        actor: &str,
        out: &Path,
        kernels: &[String],
        feeds: &[String],
        force: bool,
    ) -> Result<Exported, Error> {
        for k in kernels {
            validate::build_id("kernel", k)?;
        }
        for f in feeds {
            validate::name("feed", f)?;
        }
        {
            let mut conn = self.db.pool().acquire().await.ctx("connect")?;
            for f in feeds {
                store::feed_delay(&mut conn, f).await?;
            }
            for k in kernels {
                store::kernel_exists(&mut conn, k).await?;
            }
        }
        let only_kernels: BTreeSet<&str> = kernels.iter().map(String::as_str).collect();
        let only_feeds: BTreeSet<&str> = feeds.iter().map(String::as_str).collect();
        // Levels first: a level's kernel is registered before it, and never removed.
        let levels = self.levels(None).await?;
        let known: BTreeMap<String, crate::model::Kernel> = self
            .kernels()
            .await?
            .into_iter()
            .map(|k| (k.build_id.clone(), k))
            .collect();
        let mut bundles = Vec::new();
        for l in levels {
            if !only_kernels.is_empty() && !only_kernels.contains(l.build_id.as_str()) {
                continue;
            }
            let released: Vec<String> = l
                .feeds
                .iter()
                .filter(|f| only_feeds.is_empty() || only_feeds.contains(f.as_str()))
                .cloned()
                .collect();
            if !only_feeds.is_empty() && released.is_empty() {
                continue;
            }
            let k = known.get(&l.build_id).ok_or_else(|| {
                not_found(format!(
                    "kernel {} of level {} vanished",
                    l.build_id, l.level
                ))
            })?;
            let level = u32::try_from(l.level).map_err(|_| {
                invalid(format!(
                    "level {} of kernel {} is out of range",
                    l.level, l.build_id
                ))
            })?;
            bundles.push(IndexEntry {
                file: format!("{}.nrb", l.sha256),
                sha256: l.sha256,
                size: l.size as u64,
                kernel: IndexKernel {
                    build_id: l.build_id,
                    release: k.release.clone(),
                    version: k.version.clone(),
                },
                level,
                name: l.name,
                cves: l.cves.into_iter().map(|c| c.cve).collect(),
                signer: l.signer,
                published_at: rfc3339(l.published_at),
                feeds: released,
            });
        }
        let index = Index {
            format: FORMAT.into(),
            version: VERSION,
            exported_at: rfc3339(self.clock.now()),
            bundles,
        };
        let blobs = self.blobs.clone();
        let dir = out.to_path_buf();
        let rt = tokio::runtime::Handle::current();
        let (index, removed) = tokio::task::spawn_blocking(move || {
            // Files are written here, off the runtime; each bundle is read
            // from the store (possibly the database) through the runtime.
            let get = |sha256: &str| rt.block_on(blobs.get(sha256));
            let removed = write_export(&get, &dir, &index, force)?;
            Ok::<_, Error>((index, removed))
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        self.audit_now(
            actor,
            "export",
            &out.display().to_string(),
            json!({"bundles": index.bundles.len(), "kernels": kernels, "feeds": feeds,
                   "force": force, "removed": removed}),
        )
        .await?;
        Ok(Exported {
            dir: out.display().to_string(),
            bundles: index.bundles,
            removed,
        })
    }

    /// Imports an export directory: every file is checked against
    /// `index.json` (size, sha256) and verified like a publication before
    /// anything is recorded; then the levels are published in ascending
    /// order per kernel and released to the feeds the index names that
    /// exist here (only to those of `feeds`, when given). A level published
    /// here already with the same sha256 is skipped (with a different one
    /// the import is refused), as is a level older than one published
    /// here. A level is released to a feed only if it never was here: a
    /// local rollback is not undone. Each level is published in its own
    /// transaction; the import is audited, also when it fails.
    pub async fn import(
        &self,
        actor: &str,
        dir: &Path,
        feeds: &[String],
    ) -> Result<Imported, ImportError> {
        let mut done = Vec::new();
        let mut missing = BTreeSet::new();
        let r = self
            .import_steps(actor, dir, feeds, &mut done, &mut missing)
            .await;
        let published: Vec<String> = done
            .iter()
            .filter(|l| l.outcome == Outcome::Published)
            .map(|l| format!("{} level {}", l.build_id, l.level))
            .collect();
        let released: Vec<String> = done
            .iter()
            .filter(|l| l.outcome == Outcome::Present && !l.released.is_empty())
            .map(|l| {
                format!(
                    "{} level {} to {}",
                    l.build_id,
                    l.level,
                    l.released.join(" ")
                )
            })
            .collect();
        let count = |o: Outcome| done.iter().filter(|l| l.outcome == o).count();
        let (present, superseded) = (count(Outcome::Present), count(Outcome::Superseded));
        let logged = self
            .audit_now(
                actor,
                "import",
                &dir.display().to_string(),
                json!({"published": published, "present": present, "superseded": superseded,
                       "released": released,
                       "feeds_missing": missing, "only_feeds": feeds,
                       "error": r.as_ref().err().map(|e| e.to_string())}),
            )
            .await;
        match r.and(logged) {
            Ok(()) => Ok(Imported {
                dir: dir.display().to_string(),
                levels: done,
                feeds_missing: missing.into_iter().collect(),
            }),
            Err(error) => Err(ImportError { done, error }),
        }
    }

    async fn import_steps(
        &self,
        actor: &str,
        dir: &Path,
        only: &[String],
        done: &mut Vec<ImportedLevel>,
        missing: &mut BTreeSet<String>,
    ) -> Result<(), Error> {
        for f in only {
            validate::name("feed", f)?;
        }
        let here: BTreeSet<String> = self.feeds().await?.into_iter().map(|f| f.name).collect();
        if let Some(f) = only.iter().find(|f| !here.contains(*f)) {
            return Err(not_found(format!("no feed named {f:?}")));
        }
        let d = dir.to_path_buf();
        let index = tokio::task::spawn_blocking(move || read_index(&d))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;

        // Every file, before anything is recorded: the index's size and
        // sha256, then the check every publication passes.
        for e in &index.bundles {
            let bytes = read_listed(dir, e).await?;
            let checked = self
                .check_bundle(bytes)
                .await
                .map_err(|err| name_file(&e.file, err))?;
            agrees(e, &checked.verified.manifest)?;
        }

        // Then the plan against what is published here, so a conflict
        // refuses the whole import rather than half of it.
        let mut entries = index.bundles;
        entries.sort_by(|a, b| (&a.kernel.build_id, a.level).cmp(&(&b.kernel.build_id, b.level)));
        let mut here_levels: BTreeMap<String, (Option<String>, BTreeMap<i64, String>)> =
            BTreeMap::new();
        let mut plan = Vec::with_capacity(entries.len());
        for e in entries {
            let b = &e.kernel.build_id;
            if !here_levels.contains_key(b) {
                here_levels.insert(b.clone(), self.published_here(b).await?);
            }
            let (release, levels) = &here_levels[b];
            let level = i64::from(e.level);
            let step = match levels.get(&level) {
                Some(sha) if *sha == e.sha256 => Step::Present,
                Some(sha) => {
                    return Err(conflict(format!(
                        "{}: level {level} of kernel {} ({b}) is published here already as a different bundle (sha256 {sha}); refusing to import another level {level}",
                        e.file, e.kernel.release
                    )))
                }
                None => {
                    if let Some(r) = release.as_ref().filter(|r| **r != e.kernel.release) {
                        return Err(conflict(format!(
                            "{}: kernel build-id {b} is registered here as release {r}, but the bundle says {}",
                            e.file, e.kernel.release
                        )));
                    }
                    match levels.last_key_value() {
                        Some((newest, _)) if *newest > level => Step::Superseded,
                        _ => Step::Publish,
                    }
                }
            };
            let mut to = Vec::new();
            for f in e.feeds.iter().filter(|_| !matches!(step, Step::Superseded)) {
                if !only.is_empty() && !only.contains(f) {
                    continue;
                }
                if here.contains(f) {
                    to.push(f.clone());
                } else {
                    missing.insert(f.clone());
                }
            }
            plan.push((e, step, to));
        }

        for (e, step, to) in plan {
            let level = i64::from(e.level);
            let released = match step {
                Step::Publish => {
                    // Read again: the file may have changed since it was checked.
                    let bytes = read_listed(dir, &e).await?;
                    self.publish(actor, bytes, &to)
                        .await
                        .map_err(|err| name_file(&e.file, err))?
                        .feeds
                }
                Step::Present => {
                    let mut released = Vec::new();
                    for f in &to {
                        if !self.ever_released(f, &e.kernel.build_id, level).await? {
                            self.promote(actor, &e.kernel.build_id, level, f).await?;
                            released.push(f.clone());
                        }
                    }
                    released
                }
                Step::Superseded => Vec::new(),
            };
            done.push(ImportedLevel {
                file: e.file,
                build_id: e.kernel.build_id,
                release: e.kernel.release,
                level,
                sha256: e.sha256,
                outcome: match step {
                    Step::Publish => Outcome::Published,
                    Step::Present => Outcome::Present,
                    Step::Superseded => Outcome::Superseded,
                },
                released,
            });
        }
        Ok(())
    }

    /// A kernel's release here (if registered) and its levels' sha256s.
    async fn published_here(
        &self,
        build_id: &str,
    ) -> Result<(Option<String>, BTreeMap<i64, String>), Error> {
        let release = sqlx::query("SELECT release FROM kernels WHERE build_id = $1")
            .bind(build_id)
            .fetch_optional(self.db.pool())
            .await
            .ctx("look up the kernel")?
            .map(|r| r.try_get::<String, _>(0))
            .transpose()
            .ctx("look up the kernel")?;
        let mut levels = BTreeMap::new();
        for r in sqlx::query("SELECT level, sha256 FROM levels WHERE build_id = $1")
            .bind(build_id)
            .fetch_all(self.db.pool())
            .await
            .ctx("list levels")?
        {
            levels.insert(
                r.try_get::<i64, _>(0).ctx("read levels")?,
                r.try_get::<String, _>(1).ctx("read levels")?,
            );
        }
        Ok((release, levels))
    }

    /// Whether the level was ever released to the feed here (withdrawn or not).
    async fn ever_released(&self, feed: &str, build_id: &str, level: i64) -> Result<bool, Error> {
        Ok(
            sqlx::query("SELECT 1 FROM releases WHERE feed = $1 AND build_id = $2 AND level = $3")
                .bind(feed)
                .bind(build_id)
                .bind(level)
                .fetch_optional(self.db.pool())
                .await
                .ctx("look up the release")?
                .is_some(),
        )
    }

    /// An audit entry in a transaction of its own.
    async fn audit_now(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), Error> {
        let tx = self.begin_audited().await?;
        tx.commit(actor, action, target, detail, "commit the audit entry")
            .await
    }
}

/// Reads a bundle file of an export, refusing it unless it has the size
/// and sha256 the index gives.
async fn read_listed(dir: &Path, e: &IndexEntry) -> Result<Vec<u8>, Error> {
    let path = dir.join(&e.file);
    let (file, sha256, size) = (e.file.clone(), e.sha256.clone(), e.size);
    tokio::task::spawn_blocking(move || {
        let bytes = bundle::read_file(&path).map_err(|err| match err {
            bundle::BundleError::Io { .. } => invalid(err.to_string()),
            other => Error::BundleRefused(format!("{file}: {other}")),
        })?;
        if bytes.len() as u64 != size {
            return Err(Error::BundleRefused(format!(
                "{file}: {} bytes, but {INDEX} says {size}: the file was changed or damaged",
                bytes.len()
            )));
        }
        let actual = sha256_hex(&bytes);
        if actual != sha256 {
            return Err(Error::BundleRefused(format!(
                "{file}: sha256 {actual}, but {INDEX} says {sha256}: the file was changed or damaged"
            )));
        }
        Ok(bytes)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

/// Puts the file's name in front of a refusal's message.
fn name_file(file: &str, e: Error) -> Error {
    match e {
        Error::BundleRefused(m) => Error::BundleRefused(format!("{file}: {m}")),
        Error::Conflict(m) => Error::Conflict(format!("{file}: {m}")),
        Error::Invalid(m) => Error::Invalid(format!("{file}: {m}")),
        Error::NotFound(m) => Error::NotFound(format!("{file}: {m}")),
        other => other,
    }
}

/// Fails unless the signed manifest says what the index says.
fn agrees(e: &IndexEntry, m: &bundle::manifest::Manifest) -> Result<(), Error> {
    let mut diffs = Vec::new();
    if m.kernel.build_id != e.kernel.build_id {
        diffs.push(format!(
            "kernel build-id {} ({INDEX}: {})",
            m.kernel.build_id, e.kernel.build_id
        ));
    }
    if m.kernel.release != e.kernel.release {
        diffs.push(format!(
            "kernel release {} ({INDEX}: {})",
            m.kernel.release, e.kernel.release
        ));
    }
    if m.level != e.level {
        diffs.push(format!("level {} ({INDEX}: {})", m.level, e.level));
    }
    if m.name != e.name {
        diffs.push(format!("name {} ({INDEX}: {})", m.name, e.name));
    }
    let signed: BTreeSet<&str> = m.cves.iter().map(|c| c.id.as_str()).collect();
    let listed: BTreeSet<&str> = e.cves.iter().map(String::as_str).collect();
    if signed != listed {
        diffs.push(format!("CVEs {signed:?} ({INDEX}: {listed:?})"));
    }
    if diffs.is_empty() {
        return Ok(());
    }
    Err(invalid(format!(
        "{}: {INDEX} does not describe this bundle: the signed manifest says {}",
        e.file,
        diffs.join(", ")
    )))
}

/// Whether `name` is a plain bundle file name: no directory, not hidden.
fn plain_bundle_name(name: &str) -> bool {
    name.len() <= 255
        && name.len() > ".nrb".len()
        && name.ends_with(".nrb")
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
}

/// Reads and checks `index.json` and that the directory holds exactly
/// the bundle files it names (other files, not `*.nrb`, are ignored).
fn read_index(dir: &Path) -> Result<Index, Error> {
    let path = dir.join(INDEX);
    let io = |e: std::io::Error| invalid(format!("{}: {e}", path.display()));
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !dir.is_dir() {
                return Err(not_found(format!("{}: no such directory", dir.display())));
            }
            return Err(not_found(format!(
                "{} has no {INDEX}: it is not an export, or an export that did not finish",
                dir.display()
            )));
        }
        Err(e) => return Err(io(e)),
    };
    if meta.len() > MAX_INDEX {
        return Err(invalid(format!(
            "{}: {} bytes, more than the limit of {MAX_INDEX}",
            path.display(),
            meta.len()
        )));
    }
    let text = std::fs::read(&path).map_err(io)?;
    let index: Index =
        serde_json::from_slice(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    if index.format != FORMAT || index.version != VERSION {
        return Err(invalid(format!(
            "{}: format {:?} version {}, but this server reads {FORMAT:?} version {VERSION}",
            path.display(),
            index.format,
            index.version
        )));
    }
    let mut files = BTreeSet::new();
    let mut hashes = BTreeSet::new();
    let mut levels = BTreeSet::new();
    for e in &index.bundles {
        if !plain_bundle_name(&e.file) {
            return Err(invalid(format!(
                "{INDEX}: {:?} is not a plain *.nrb file name in the export directory",
                e.file
            )));
        }
        let bad = |m: String| invalid(format!("{INDEX}: {}: {m}", e.file));
        if !is_sha256(&e.sha256) {
            return Err(bad(format!("{:?} is not a sha256", e.sha256)));
        }
        validate::build_id("kernel.build_id", &e.kernel.build_id)
            .and_then(|()| {
                validate::line(
                    "kernel.release",
                    &e.kernel.release,
                    validate::MAX_RELEASE,
                    true,
                )
            })
            .and_then(|()| validate::level("level", e.level).map(|_| ()))
            .and_then(|()| e.feeds.iter().try_for_each(|f| validate::name("feeds", f)))
            .map_err(|err| bad(err.to_string()))?;
        if !files.insert(e.file.as_str()) {
            return Err(bad("listed twice".into()));
        }
        if !hashes.insert(e.sha256.as_str()) {
            return Err(bad(format!("sha256 {} listed twice", e.sha256)));
        }
        if !levels.insert((e.kernel.build_id.as_str(), e.level)) {
            return Err(bad(format!(
                "level {} of kernel {} listed twice",
                e.level, e.kernel.build_id
            )));
        }
    }
    let mut present = BTreeSet::new();
    let mut extra = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| invalid(format!("{}: {e}", dir.display())))? {
        let entry = entry.map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !name.ends_with(".nrb") {
            continue;
        }
        if files.contains(name.as_str()) && entry.path().is_file() {
            present.insert(name);
        } else {
            extra.push(name);
        }
    }
    extra.sort();
    let missing: Vec<&str> = files
        .iter()
        .copied()
        .filter(|f| !present.contains(*f))
        .collect();
    let extra_msg = if extra.is_empty() {
        String::new()
    } else {
        format!(
            "; not in {INDEX}: {} (agents using the directory as a mirror would take them)",
            extra.join(", ")
        )
    };
    if !missing.is_empty() {
        return Err(not_found(format!(
            "{}: named in {INDEX} but missing: {}{extra_msg}",
            dir.display(),
            missing.join(", ")
        )));
    }
    if !extra.is_empty() {
        return Err(invalid(format!(
            "{}: bundle files {}",
            dir.display(),
            extra_msg.trim_start_matches("; ")
        )));
    }
    Ok(index)
}

/// Reads a bundle from the store, from a blocking thread.
type ReadBlob<'a> = dyn Fn(&str) -> Result<Option<Vec<u8>>, BlobError> + 'a;

/// Writes an export: the bundle files, then `index.json` last (each via a
/// synced temporary file and a rename), removing the previous index first
/// and, after, bundle files the new index does not name.
fn write_export(
    get: &ReadBlob<'_>,
    out: &Path,
    index: &Index,
    force: bool,
) -> Result<Vec<String>, Error> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        invalid(format!("export: {what} {}: {e}", p.display()))
    };
    match std::fs::metadata(out) {
        Ok(m) if !m.is_dir() => {
            return Err(invalid(format!(
                "{} exists and is not a directory",
                out.display()
            )))
        }
        Ok(_) => {
            let mut rd = std::fs::read_dir(out).map_err(|e| io("read", out, e))?;
            if rd.next().is_some() && !force {
                return Err(conflict(format!(
                    "{} is not empty: export into a new or empty directory, or pass --force to replace the export in it",
                    out.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(out).map_err(|e| io("create", out, e))?;
        }
        Err(e) => return Err(io("read", out, e)),
    }
    // From here until the new index is in place, the directory is not an
    // export: never half the old one and half the new one.
    let old_index = out.join(INDEX);
    match std::fs::remove_file(&old_index) {
        Ok(()) => sync_dir(out).map_err(|e| io("sync", out, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove", &old_index, e)),
    }
    let wanted: BTreeSet<&str> = index.bundles.iter().map(|e| e.file.as_str()).collect();
    for e in &index.bundles {
        let bytes = get(&e.sha256)?.ok_or_else(|| BlobError::Missing(e.sha256.clone()))?;
        // The disk store checks the hash on read; check it (and the size)
        // here too, whatever the store.
        if bytes.len() as u64 != e.size || sha256_hex(&bytes) != e.sha256 {
            return Err(BlobError::Corrupt {
                path: PathBuf::from(&e.sha256),
                sha256: e.sha256.clone(),
            }
            .into());
        }
        write_atomic(out, &e.file, &bytes).map_err(|err| io("write", &out.join(&e.file), err))?;
    }
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(out).map_err(|e| io("read", out, e))? {
        let entry = entry.map_err(|e| io("read", out, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.ends_with(".nrb") && !wanted.contains(name.as_str()) && entry.path().is_file() {
            std::fs::remove_file(entry.path()).map_err(|e| io("remove", &entry.path(), e))?;
            removed.push(name);
        }
    }
    removed.sort();
    sync_dir(out).map_err(|e| io("sync", out, e))?;
    let mut text = serde_json::to_vec_pretty(index).map_err(|e| invalid(e.to_string()))?;
    text.push(b'\n');
    write_atomic(out, INDEX, &text).map_err(|e| io("write", &old_index, e))?;
    sync_dir(out).map_err(|e| io("sync", out, e))?;
    Ok(removed)
}

/// Writes `dir/name` through a synced temporary file (hidden, not `*.nrb`:
/// neither an import nor an agent takes it) and a rename.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut tmp = tempfile::Builder::new()
        .prefix(".export-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    // Signed, not secret: readable by whoever carries or serves the directory.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_names_stay_in_the_directory() {
        assert!(plain_bundle_name(&format!("{}.nrb", "a".repeat(64))));
        assert!(plain_bundle_name("fix-1.nrb"));
        for bad in [
            ".nrb",
            ".hidden.nrb",
            "../x.nrb",
            "a/b.nrb",
            "x.nrb.tmp",
            "index.json",
            "",
        ] {
            assert!(!plain_bundle_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn import_error_says_what_was_imported() {
        let e = ImportError {
            done: vec![],
            error: conflict("no"),
        };
        assert_eq!(e.to_string(), "no (nothing was imported)");
        let e = ImportError {
            done: vec![ImportedLevel {
                file: "f.nrb".into(),
                build_id: "ab".into(),
                release: "r".into(),
                level: 1,
                sha256: "s".into(),
                outcome: Outcome::Published,
                released: vec![],
            }],
            error: conflict("no"),
        };
        assert_eq!(
            e.to_string(),
            "no (imported before the failure: ab level 1 (published))"
        );
    }
}
