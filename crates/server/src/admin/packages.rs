//! Agent packages: the `.deb` files the server's APT repository (`apt`)
//! serves to the fleet. An upload is read for its control data (`deb`),
//! refused unless it is the agent's package for the repository's
//! architecture, stored by hash like bundles and listed; several versions
//! are kept, and removing one takes it out of the repository. Both are
//! audited, and both move the repository's `Date` forward so APT clients
//! take the new index.

use serde::Serialize;
use serde_json::json;
use sqlx::{AnyConnection, Row};

use crate::apt::{self, CHANGED_SETTING};
use crate::blobs::sha256_hex;
use crate::context::Context;
use crate::error::{conflict, invalid, not_found, DbContext, Error};

/// The package name the repository serves: the agent's.
pub const AGENT_PACKAGE: &str = "noreboot";

/// An agent package in the repository.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentPackage {
    /// `Package:` (always `noreboot`).
    pub package: String,
    /// `Version:`.
    pub version: String,
    /// `Architecture:` (`amd64` or `all`).
    pub architecture: String,
    /// sha256 of the .deb.
    pub sha256: String,
    /// Its size in bytes.
    pub size: i64,
    /// Its path under the repository (`/apt/<filename>`).
    pub filename: String,
    /// The control paragraph, as the package has it.
    #[serde(skip)]
    pub control: String,
    /// When it was uploaded (Unix seconds).
    pub uploaded_at: i64,
    /// Who uploaded it.
    pub uploaded_by: String,
}

const COLUMNS: &str =
    "package, version, architecture, sha256, size, filename, control, uploaded_at, uploaded_by";

fn from_row(r: &sqlx::any::AnyRow) -> Result<AgentPackage, sqlx::Error> {
    Ok(AgentPackage {
        package: r.try_get(0)?,
        version: r.try_get(1)?,
        architecture: r.try_get(2)?,
        sha256: r.try_get(3)?,
        size: r.try_get(4)?,
        filename: r.try_get(5)?,
        control: r.try_get(6)?,
        uploaded_at: r.try_get(7)?,
        uploaded_by: r.try_get(8)?,
    })
}

impl Context {
    /// The agent packages uploaded, oldest upload first.
    pub async fn agent_packages(&self) -> Result<Vec<AgentPackage>, Error> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM agent_packages ORDER BY uploaded_at, sha256"
        ))
        .fetch_all(self.db.pool())
        .await
        .ctx("list the agent packages")?
        .iter()
        .map(from_row)
        .collect::<Result<_, _>>()
        .ctx("read the agent packages")
    }

    /// Adds a `.deb` to the repository: it must be the agent's package
    /// (`noreboot`) for amd64 (or `all`), of a version not uploaded yet.
    pub async fn upload_agent_package(
        &self,
        actor: &str,
        bytes: Vec<u8>,
    ) -> Result<AgentPackage, Error> {
        let (control, bytes, sha256) = tokio::task::spawn_blocking(move || {
            let c = crate::deb::read(&bytes);
            let sha = sha256_hex(&bytes);
            (c, bytes, sha)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?;
        let control = control.map_err(|e| invalid(format!("package refused: {e}")))?;
        if control.package != AGENT_PACKAGE {
            return Err(invalid(format!(
                "package refused: it is {:?}, not the agent's package {AGENT_PACKAGE:?} (build it with scripts/package-agent)",
                control.package
            )));
        }
        if control.architecture != apt::ARCH && control.architecture != "all" {
            return Err(invalid(format!(
                "package refused: architecture {:?}; the repository serves {} (and all)",
                control.architecture,
                apt::ARCH
            )));
        }
        let filename = apt::pool_path(&control.package, &control.version, &control.architecture);
        let size = bytes.len() as i64;
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
        let existing = sqlx::query(
            "SELECT sha256 FROM agent_packages WHERE filename = $1 \
             OR (package = $2 AND version = $3 AND architecture = $4)",
        )
        .bind(&filename)
        .bind(&control.package)
        .bind(&control.version)
        .bind(&control.architecture)
        .fetch_optional(&mut *tx)
        .await
        .ctx("look up the package version")?;
        if let Some(row) = existing {
            let old: String = row.try_get(0).ctx("look up the package version")?;
            let same = if old == sha256 {
                "this same file"
            } else {
                "a different file; remove that one first"
            };
            return Err(conflict(format!(
                "{} {} ({}) is already in the repository: {same}",
                control.package, control.version, control.architecture
            )));
        }
        // Before the row that names it commits (as for bundles).
        self.blobs.put(&sha256, bytes).await?;
        let p = AgentPackage {
            package: control.package,
            version: control.version,
            architecture: control.architecture,
            sha256,
            size,
            filename,
            control: control.paragraph,
            uploaded_at: now,
            uploaded_by: actor.to_string(),
        };
        sqlx::query(&format!(
            "INSERT INTO agent_packages ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&p.package)
        .bind(&p.version)
        .bind(&p.architecture)
        .bind(&p.sha256)
        .bind(p.size)
        .bind(&p.filename)
        .bind(&p.control)
        .bind(p.uploaded_at)
        .bind(&p.uploaded_by)
        .execute(&mut *tx)
        .await
        .ctx("record the agent package")?;
        mark_changed(&mut tx, now, actor).await?;
        tx.commit(
            actor,
            "package-upload",
            &format!("{} {} {}", p.package, p.version, p.architecture),
            json!({"sha256": p.sha256, "size": p.size, "filename": p.filename}),
            "commit the agent package",
        )
        .await?;
        Ok(p)
    }

    /// Takes a version of the agent package out of the repository (every
    /// architecture of it). Its file stays in the store.
    pub async fn remove_agent_package(
        &self,
        actor: &str,
        version: &str,
    ) -> Result<Vec<AgentPackage>, Error> {
        crate::validate::line("version", version, 256, true)?;
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
        let gone: Vec<AgentPackage> = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM agent_packages WHERE package = $1 AND version = $2 ORDER BY architecture"
        ))
        .bind(AGENT_PACKAGE)
        .bind(version)
        .fetch_all(&mut *tx)
        .await
        .ctx("look up the package version")?
        .iter()
        .map(from_row)
        .collect::<Result<_, _>>()
        .ctx("look up the package version")?;
        if gone.is_empty() {
            return Err(not_found(format!(
                "no {AGENT_PACKAGE} version {version:?} in the repository"
            )));
        }
        sqlx::query("DELETE FROM agent_packages WHERE package = $1 AND version = $2")
            .bind(AGENT_PACKAGE)
            .bind(version)
            .execute(&mut *tx)
            .await
            .ctx("remove the agent package")?;
        mark_changed(&mut tx, now, actor).await?;
        tx.commit(
            actor,
            "package-remove",
            &format!("{AGENT_PACKAGE} {version}"),
            json!({"sha256": gone.iter().map(|p| &p.sha256).collect::<Vec<_>>()}),
            "commit the package removal",
        )
        .await?;
        Ok(gone)
    }
}

/// Records that the package set changed at `now` (never earlier than the
/// last change, should clocks of two server processes disagree): the
/// Release file's `Date` must not go back, and must not be in the future
/// either, which APT refuses as "not valid yet".
async fn mark_changed(conn: &mut AnyConnection, now: i64, actor: &str) -> Result<(), Error> {
    let last: Option<i64> = sqlx::query("SELECT value FROM shared_settings WHERE name = $1")
        .bind(CHANGED_SETTING)
        .fetch_optional(&mut *conn)
        .await
        .ctx("read when the repository changed")?
        .map(|r| r.try_get::<String, _>(0))
        .transpose()
        .ctx("read when the repository changed")?
        .and_then(|v| v.parse().ok());
    let at = last.map_or(now, |l| now.max(l));
    sqlx::query(
        "INSERT INTO shared_settings (name, value, set_at, set_by) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET value = $2, set_at = $3, set_by = $4",
    )
    .bind(CHANGED_SETTING)
    .bind(at.to_string())
    .bind(now)
    .bind(actor)
    .execute(&mut *conn)
    .await
    .ctx("record that the repository changed")?;
    Ok(())
}
