//! Publishing: the check every bundle passes (signed by a trusted key, a
//! valid manifest, the module it pins) and the publication itself — the
//! bundle stored by hash, its kernel registered when new, the level
//! recorded with its CVEs and released to the feeds named. Levels only
//! move forward: each must be newer than every level of its kernel.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::json;
use sqlx::{AnyConnection, Row};

use super::releases::release;
use crate::blobs::sha256_hex;
use crate::context::Context;
use crate::error::{conflict, DbContext, Error};
use crate::store;
use crate::validate;

/// A level just published.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Published {
    /// Kernel build-id.
    pub build_id: String,
    /// Kernel release.
    pub release: String,
    /// The level.
    pub level: i64,
    /// Patch name.
    pub name: String,
    /// sha256 of the bundle file.
    pub sha256: String,
    /// Its size.
    pub size: i64,
    /// CVE ids fixed.
    pub cves: Vec<String>,
    /// Feeds it was released to.
    pub feeds: Vec<String>,
    /// Whether the kernel was new to the server.
    pub new_kernel: bool,
}

/// A bundle that passed [`Context::check_bundle`].
#[derive(Debug)]
pub struct Checked {
    /// What verification found: the signed manifest and its signer.
    pub verified: bundle::VerifiedBundle,
    /// The bundle file.
    pub bytes: Vec<u8>,
    /// Its sha256.
    pub sha256: String,
}

impl Context {
    /// The check every publication passes: the bundle is signed by one of
    /// the trusted keys, its manifest is valid and its module is the one
    /// the manifest pins. Records nothing.
    pub async fn check_bundle(&self, bytes: Vec<u8>) -> Result<Checked, Error> {
        self.check_trusted_keys().await?;
        if self.trusted.is_empty() {
            return Err(Error::BundleRefused(format!(
                "no trusted keys are configured: put the minisign public keys (*.pub) bundles are signed with in {}",
                self.trusted_dir.display()
            )));
        }
        let trusted = self.trusted.clone();
        // Hashing and verifying up to 64 MiB is CPU work.
        let (verified, bytes, sha256) = tokio::task::spawn_blocking(move || {
            let v = bundle::open(&bytes, &trusted);
            let sha = sha256_hex(&bytes);
            (v, bytes, sha)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?;
        let verified = verified.map_err(|e| Error::BundleRefused(e.to_string()))?;
        Ok(Checked {
            verified,
            bytes,
            sha256,
        })
    }

    /// Verifies a bundle against the trusted keys, stores it by hash and
    /// records the level (registering its kernel when new), released to
    /// `feeds`. The level must be newer than every level of that kernel.
    pub async fn publish(
        &self,
        actor: &str,
        bytes: Vec<u8>,
        feeds: &[String],
    ) -> Result<Published, Error> {
        for f in feeds {
            validate::name("feed", f)?;
        }
        let Checked {
            verified,
            bytes,
            sha256,
        } = self.check_bundle(bytes).await?;
        let m = &verified.manifest;
        let kernel = &m.kernel;
        let level = i64::from(m.level);
        let size = bytes.len() as i64;

        let mut tx = self.begin_audited().await?;
        let now = tx.now();
        for f in feeds {
            store::feed_delay(&mut tx, f).await?;
        }
        let new_kernel = register_kernel(&mut tx, kernel, now).await?;
        let newest: Option<i64> = sqlx::query("SELECT MAX(level) FROM levels WHERE build_id = $1")
            .bind(&kernel.build_id)
            .fetch_one(&mut *tx)
            .await
            .ctx("find the newest level")?
            .try_get(0)
            .ctx("find the newest level")?;
        if let Some(newest) = newest.filter(|&n| n >= level) {
            return Err(conflict(format!(
                "level {level} is not newer than level {newest}, already published for kernel {} ({}); levels are cumulative and only move forward",
                kernel.release, kernel.build_id
            )));
        }
        // Before the row that names it commits: a level never points at a
        // missing file (an orphaned file after a failed commit is harmless).
        self.blobs.put(&sha256, bytes).await?;

        let cves = record_level(&mut tx, &verified, &sha256, size, now, actor).await?;
        let feeds: Vec<String> = feeds
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for f in &feeds {
            release(&mut tx, f, &kernel.build_id, level, now, actor).await?;
        }
        let out = Published {
            build_id: kernel.build_id.clone(),
            release: kernel.release.clone(),
            level,
            name: m.name.clone(),
            sha256,
            size,
            cves,
            feeds,
            new_kernel,
        };
        tx.commit(
            actor,
            "publish",
            &format!("{} level {level}", kernel.build_id),
            json!({"release": out.release, "name": out.name, "sha256": out.sha256,
                   "size": size, "cves": out.cves, "feeds": out.feeds,
                   "signer": verified.signer.to_string()}),
            "commit the publication",
        )
        .await?;
        Ok(out)
    }
}

/// Records the level and the CVEs it fixes; answers their ids, sorted.
async fn record_level(
    conn: &mut AnyConnection,
    verified: &bundle::VerifiedBundle,
    sha256: &str,
    size: i64,
    now: i64,
    actor: &str,
) -> Result<Vec<String>, Error> {
    let m = &verified.manifest;
    let level = i64::from(m.level);
    sqlx::query(
        "INSERT INTO levels (build_id, level, name, sha256, size, effective_version, description, signer, created, published_at, published_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&m.kernel.build_id)
    .bind(level)
    .bind(&m.name)
    .bind(sha256)
    .bind(size)
    .bind(&m.effective_version)
    .bind(&m.description)
    .bind(verified.signer.to_string())
    .bind(&m.created)
    .bind(now)
    .bind(actor)
    .execute(&mut *conn)
    .await
    .ctx("record the level")?;
    let cves: BTreeMap<&str, &str> = m
        .cves
        .iter()
        .map(|c| (c.id.as_str(), c.description.as_str()))
        .collect();
    for (id, description) in &cves {
        sqlx::query(
            "INSERT INTO level_cves (build_id, level, cve, description) VALUES ($1, $2, $3, $4)",
        )
        .bind(&m.kernel.build_id)
        .bind(level)
        .bind(*id)
        .bind(*description)
        .execute(&mut *conn)
        .await
        .ctx("record the level's CVEs")?;
    }
    Ok(cves.keys().map(|c| c.to_string()).collect())
}

/// Registers the bundle's kernel unless known, and answers whether it was
/// new. A build-id names one build, so one already known under another
/// release is a conflict.
async fn register_kernel(
    conn: &mut AnyConnection,
    kernel: &bundle::manifest::Kernel,
    now: i64,
) -> Result<bool, Error> {
    let known: Option<String> = sqlx::query("SELECT release FROM kernels WHERE build_id = $1")
        .bind(&kernel.build_id)
        .fetch_optional(&mut *conn)
        .await
        .ctx("look up the kernel")?
        .map(|r| r.try_get(0))
        .transpose()
        .ctx("look up the kernel")?;
    match known {
        Some(release) if release != kernel.release => Err(conflict(format!(
            "kernel build-id {} is registered as release {release}, but the bundle says {}",
            kernel.build_id, kernel.release
        ))),
        Some(_) => Ok(false),
        None => {
            sqlx::query("INSERT INTO kernels (build_id, release, version, first_published_at) VALUES ($1, $2, $3, $4)")
                .bind(&kernel.build_id)
                .bind(&kernel.release)
                .bind(&kernel.version)
                .bind(now)
                .execute(conn)
                .await
                .ctx("register the kernel")?;
            Ok(true)
        }
    }
}
