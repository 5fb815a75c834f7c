//! What hosts do, as `protocol` defines it: register with a registration
//! key, download their bundle and report what happened (check-ins, the
//! hot path, are batched in `checkin`). A host is known by its token alone, so every
//! operation here acts on the token's own host and nothing else.

use protocol::{Kernel, RegisterRequest, RegisterResponse, ReportRequest};
use sqlx::Row;

use crate::blobs::{is_sha256, BlobError, BlobReader};
use crate::clock::rfc3339;
use crate::context::Context;
use crate::error::{invalid, not_found, DbContext, Error};
use crate::secrets;
use crate::validate::{self, MAX_LIST};

/// The host a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAuth {
    /// Its id.
    pub id: String,
    /// Its feed.
    pub feed: String,
    /// The kernel build it ran at its last check-in.
    pub build_id: String,
}

/// Checks a host's kernel identity.
pub(crate) fn validate_kernel(k: &Kernel) -> Result<(), Error> {
    validate::line("kernel.release", &k.release, validate::MAX_RELEASE, true)?;
    validate::line("kernel.version", &k.version, validate::MAX_VERSION, false)?;
    validate::build_id("kernel.build_id", &k.build_id)
}

/// A list of levels as stored (JSON), bounded.
pub(crate) fn levels_json(field: &str, levels: &[u32]) -> Result<String, Error> {
    if levels.len() > MAX_LIST {
        return Err(invalid(format!(
            "field `{field}`: more than {MAX_LIST} entries"
        )));
    }
    Ok(serde_json::to_string(levels).unwrap_or_else(|_| "[]".into()))
}

impl Context {
    /// The id and feed of a registration key hosts may register with now;
    /// refused (unauthorized) when unknown or revoked.
    pub async fn registration_key(&self, secret: &str) -> Result<(String, String), Error> {
        validate::line("registration_key", secret, 256, true)?;
        let key = sqlx::query(
            "SELECT id, feed, revoked_at FROM registration_keys WHERE secret_hash = $1",
        )
        .bind(secrets::hash(secret))
        .fetch_optional(self.db.pool())
        .await
        .ctx("look up the registration key")?
        .ok_or_else(|| Error::Unauthorized("registration key not recognised".into()))?;
        let key_id: String = key.try_get(0).ctx("read the registration key")?;
        let feed: String = key.try_get(1).ctx("read the registration key")?;
        let revoked: Option<i64> = key.try_get(2).ctx("read the registration key")?;
        if revoked.is_some() {
            return Err(Error::Unauthorized(format!(
                "registration key {key_id} was revoked"
            )));
        }
        Ok((key_id, feed))
    }

    /// Registers a host with a registration key; answers its token.
    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, Error> {
        validate::line("registration_key", &req.registration_key, 256, true)?;
        validate::line("hostname", &req.hostname, validate::MAX_HOSTNAME, true)?;
        validate_kernel(&req.kernel)?;
        validate::line(
            "agent_version",
            &req.agent_version,
            validate::MAX_AGENT_VERSION,
            true,
        )?;
        validate::tags("tags", &req.tags)?;
        let (key_id, feed) = self.registration_key(&req.registration_key).await?;
        let id = secrets::random_hex(16)?;
        let token = secrets::new_secret(secrets::HOST_TOKEN)?;
        let tags = serde_json::to_string(&req.tags).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO hosts (id, hostname, feed, kernel_release, kernel_version, build_id, level, \
             effective_version, skipped, agent_version, tags, token_hash, registration_key, registered_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, '', '[]', $7, $8, $9, $10, $11)",
        )
        .bind(&id)
        .bind(&req.hostname)
        .bind(&feed)
        .bind(&req.kernel.release)
        .bind(&req.kernel.version)
        .bind(&req.kernel.build_id)
        .bind(&req.agent_version)
        .bind(tags)
        .bind(secrets::hash(&token))
        .bind(&key_id)
        .bind(self.clock.now())
        .execute(self.db.pool())
        .await
        .ctx("register the host")?;
        tracing::info!(host = %id, hostname = %req.hostname, feed = %feed, "host registered");
        Ok(RegisterResponse {
            host_id: id,
            token,
            feed,
        })
    }

    /// The host whose bearer token this is; a retired host's token is
    /// refused (see `admin::hosts`).
    pub async fn authenticate_host(&self, token: &str) -> Result<HostAuth, Error> {
        self.authenticate_token_hash(&secrets::hash(token)).await
    }

    /// [`Context::authenticate_host`] for a token already hashed.
    pub async fn authenticate_token_hash(&self, token_hash: &str) -> Result<HostAuth, Error> {
        let row =
            sqlx::query("SELECT id, feed, build_id, retired_at FROM hosts WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(self.db.pool())
                .await
                .ctx("look up the host token")?
                .ok_or_else(|| Error::Unauthorized("unknown host token".into()))?;
        let id: String = row.try_get(0).ctx("read the host")?;
        if let Some(at) = row.try_get::<Option<i64>, _>(3).ctx("read the host")? {
            return Err(Error::Unauthorized(format!(
                "host {id} was retired at {}: its token no longer works (register again to rejoin the fleet)",
                rfc3339(at)
            )));
        }
        Ok(HostAuth {
            id,
            feed: row.try_get(1).ctx("read the host")?,
            build_id: row.try_get(2).ctx("read the host")?,
        })
    }

    /// The bundle file `sha256`, if it is a level of the kernel the host
    /// runs (a host token opens no other bundle), as it is read.
    pub async fn host_bundle(&self, host: &HostAuth, sha256: &str) -> Result<BlobReader, Error> {
        if !is_sha256(sha256) {
            return Err(invalid(format!(
                "{sha256:.80?} is not a sha256 (64 lowercase hex digits)"
            )));
        }
        let found = sqlx::query("SELECT 1 FROM levels WHERE sha256 = $1 AND build_id = $2 LIMIT 1")
            .bind(sha256)
            .bind(&host.build_id)
            .fetch_optional(self.db.pool())
            .await
            .ctx("look up the bundle")?;
        if found.is_none() {
            return Err(not_found(format!(
                "no bundle {sha256} for this host's kernel (build-id {})",
                host.build_id
            )));
        }
        self.blobs
            .read(sha256)
            .await?
            .ok_or_else(|| Error::Blob(BlobError::Missing(sha256.to_string())))
    }

    /// Records a host's report, and its active level.
    pub async fn report(&self, host: &HostAuth, req: &ReportRequest) -> Result<(), Error> {
        validate::name("action", &req.action)?;
        validate::name("result", &req.result)?;
        validate::text("reason", &req.reason, validate::MAX_TEXT, false)?;
        if req.stalled_tasks.len() > MAX_LIST {
            return Err(invalid(format!(
                "field `stalled_tasks`: more than {MAX_LIST} entries"
            )));
        }
        for t in &req.stalled_tasks {
            validate::text("stalled_tasks", t, validate::MAX_TASK, false)?;
        }
        let duration = i64::try_from(req.duration_ms)
            .map_err(|_| invalid("field `duration_ms`: out of range"))?;
        let now = self.clock.now();
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO host_reports (id, host_id, received_at, action, level, result, reason, stalled_tasks, duration_ms, active_level) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(secrets::random_hex(16)?)
        .bind(&host.id)
        .bind(now)
        .bind(&req.action)
        .bind(i64::from(req.level))
        .bind(&req.result)
        .bind(&req.reason)
        .bind(serde_json::to_string(&req.stalled_tasks).unwrap_or_else(|_| "[]".into()))
        .bind(duration)
        .bind(i64::from(req.active_level))
        .execute(&mut *tx)
        .await
        .ctx("record the report")?;
        sqlx::query("UPDATE hosts SET level = $1 WHERE id = $2")
            .bind(i64::from(req.active_level))
            .bind(&host.id)
            .execute(&mut *tx)
            .await
            .ctx("record the active level")?;
        tx.commit().await.ctx("commit the report")?;
        Ok(())
    }
}
