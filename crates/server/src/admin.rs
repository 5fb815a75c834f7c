//! Admin actions, shared by the CLI and the admin API: publishing signed
//! bundles, feeds, promotion, pins and holds, rollbacks, registration keys
//! and API tokens, and the read-only views of all of it. Every change
//! writes its audit entry in the same transaction as the change itself, so
//! there is no action without a record and no record without an action.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::json;
use sqlx::Row;

use crate::blobs::sha256_hex;
use crate::context::Context;
use crate::error::{conflict, not_found, DbContext, Error};
use crate::model::{
    AdminToken, AuditEntry, Cve, Feed, Host, Kernel, Level, RegistrationKey, Report, ReportedBuild,
    Role,
};
use crate::secrets;
use crate::store::{self, audit};
use crate::validate;

/// Who is acting, as the audit trail names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// A token name, or `cli:<user>`.
    pub name: String,
    /// What they may do.
    pub role: Role,
}

/// A level just published.
#[derive(Debug, Clone, Serialize)]
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

/// The outcome of a promotion.
#[derive(Debug, Clone, Serialize)]
pub struct Promoted {
    /// Kernel build-id.
    pub build_id: String,
    /// The level.
    pub level: i64,
    /// The feed.
    pub feed: String,
    /// Whether it was already released there.
    pub already: bool,
}

/// A feed's state for one kernel after a pin, hold or unpin.
#[derive(Debug, Clone, Serialize)]
pub struct FeedState {
    /// The feed.
    pub feed: String,
    /// Kernel build-id.
    pub build_id: String,
    /// `pin`, `hold` or none.
    pub mode: Option<String>,
    /// The pinned or held level.
    pub level: Option<i64>,
    /// The level the feed serves now.
    pub serving: Option<i64>,
}

/// The outcome of a rollback.
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    /// The feed.
    pub feed: String,
    /// Kernel build-id.
    pub build_id: String,
    /// The level served before.
    pub from: i64,
    /// Levels withdrawn from the feed (the one served and any newer).
    pub withdrawn: Vec<i64>,
    /// The level served now (hosts move to it at their next check-in;
    /// `None`: none, and hosts keep what they have).
    pub to: Option<i64>,
}

/// Which of the builds hosts run [`Context::reported_builds`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Every build.
    All,
    /// Only builds with no published level: what no release covers.
    Uncovered,
}

/// A new registration key; the secret is shown this once.
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    /// The key's id (for revoking).
    pub id: String,
    /// The feed it registers hosts to.
    pub feed: String,
    /// The secret hosts register with.
    pub secret: String,
}

/// A new admin token; the secret is shown this once.
#[derive(Debug, Clone, Serialize)]
pub struct NewToken {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The bearer token.
    pub token: String,
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
        let m = verified.manifest;
        let level = i64::from(m.level);
        let size = bytes.len() as i64;
        let now = self.clock.now();

        let mut tx = self.db.begin_write().await?;
        for f in feeds {
            store::feed_delay(&mut tx, f).await?;
        }
        let known: Option<String> = sqlx::query("SELECT release FROM kernels WHERE build_id = $1")
            .bind(&m.kernel.build_id)
            .fetch_optional(&mut *tx)
            .await
            .ctx("look up the kernel")?
            .map(|r| r.try_get(0))
            .transpose()
            .ctx("look up the kernel")?;
        match &known {
            Some(release) if *release != m.kernel.release => {
                return Err(conflict(format!(
                    "kernel build-id {} is registered as release {release}, but the bundle says {}",
                    m.kernel.build_id, m.kernel.release
                )))
            }
            Some(_) => {}
            None => {
                sqlx::query("INSERT INTO kernels (build_id, release, version, first_published_at) VALUES ($1, $2, $3, $4)")
                    .bind(&m.kernel.build_id)
                    .bind(&m.kernel.release)
                    .bind(&m.kernel.version)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .ctx("register the kernel")?;
            }
        }
        let newest: Option<i64> = sqlx::query("SELECT MAX(level) FROM levels WHERE build_id = $1")
            .bind(&m.kernel.build_id)
            .fetch_one(&mut *tx)
            .await
            .ctx("find the newest level")?
            .try_get(0)
            .ctx("find the newest level")?;
        if let Some(newest) = newest.filter(|&n| n >= level) {
            return Err(conflict(format!(
                "level {level} is not newer than level {newest}, already published for kernel {} ({}); levels are cumulative and only move forward",
                m.kernel.release, m.kernel.build_id
            )));
        }
        // Before the row that names it commits: a level never points at a
        // missing file (an orphaned file after a failed commit is harmless).
        let blobs = self.blobs.clone();
        let key = sha256.clone();
        tokio::task::spawn_blocking(move || blobs.put(&key, &bytes))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;

        sqlx::query(
            "INSERT INTO levels (build_id, level, name, sha256, size, effective_version, description, signer, created, published_at, published_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&m.kernel.build_id)
        .bind(level)
        .bind(&m.name)
        .bind(&sha256)
        .bind(size)
        .bind(&m.effective_version)
        .bind(&m.description)
        .bind(verified.signer.to_string())
        .bind(&m.created)
        .bind(now)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .ctx("record the level")?;
        let cves: BTreeMap<&str, &str> = m
            .cves
            .iter()
            .map(|c| (c.id.as_str(), c.description.as_str()))
            .collect();
        for (id, description) in &cves {
            sqlx::query("INSERT INTO level_cves (build_id, level, cve, description) VALUES ($1, $2, $3, $4)")
                .bind(&m.kernel.build_id)
                .bind(level)
                .bind(*id)
                .bind(*description)
                .execute(&mut *tx)
                .await
                .ctx("record the level's CVEs")?;
        }
        let feeds: Vec<String> = feeds
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for f in &feeds {
            sqlx::query("INSERT INTO releases (feed, build_id, level, released_at, released_by) VALUES ($1, $2, $3, $4, $5)")
                .bind(f)
                .bind(&m.kernel.build_id)
                .bind(level)
                .bind(now)
                .bind(actor)
                .execute(&mut *tx)
                .await
                .ctx("release the level")?;
        }
        let out = Published {
            build_id: m.kernel.build_id.clone(),
            release: m.kernel.release.clone(),
            level,
            name: m.name.clone(),
            sha256,
            size,
            cves: cves.keys().map(|c| c.to_string()).collect(),
            feeds,
            new_kernel: known.is_none(),
        };
        audit(
            &mut tx,
            now,
            actor,
            "publish",
            &format!("{} level {level}", m.kernel.build_id),
            json!({"release": out.release, "name": out.name, "sha256": out.sha256,
                   "size": size, "cves": out.cves, "feeds": out.feeds,
                   "signer": verified.signer.to_string()}),
        )
        .await?;
        tx.commit().await.ctx("commit the publication")?;
        Ok(out)
    }

    /// Creates a feed; `delay_hours` > 0 makes it a delayed feed.
    pub async fn create_feed(
        &self,
        actor: &str,
        name: &str,
        delay_hours: i64,
    ) -> Result<Feed, Error> {
        validate::name("feed", name)?;
        if !(0..=validate::MAX_DELAY_HOURS).contains(&delay_hours) {
            return Err(crate::error::invalid(format!(
                "field `delay_hours`: {delay_hours} is not between 0 and {}",
                validate::MAX_DELAY_HOURS
            )));
        }
        let now = self.clock.now();
        let mut tx = self.db.begin_write().await?;
        if store::feed_delay(&mut tx, name).await.is_ok() {
            return Err(conflict(format!("feed {name:?} exists already")));
        }
        sqlx::query("INSERT INTO feeds (name, delay_hours, created_at) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(delay_hours)
            .bind(now)
            .execute(&mut *tx)
            .await
            .ctx("create the feed")?;
        audit(
            &mut tx,
            now,
            actor,
            "feed-create",
            name,
            json!({"delay_hours": delay_hours}),
        )
        .await?;
        tx.commit().await.ctx("commit the feed")?;
        Ok(Feed {
            name: name.to_string(),
            delay_hours,
            created_at: now,
        })
    }

    /// Releases a published level to a feed (again, after a rollback).
    pub async fn promote(
        &self,
        actor: &str,
        build_id: &str,
        level: i64,
        feed: &str,
    ) -> Result<Promoted, Error> {
        validate::build_id("kernel", build_id)?;
        validate::name("feed", feed)?;
        let now = self.clock.now();
        let mut tx = self.db.begin_write().await?;
        store::feed_delay(&mut tx, feed).await?;
        store::level_exists(&mut tx, build_id, level).await?;
        let existing: Option<Option<i64>> = sqlx::query(
            "SELECT withdrawn_at FROM releases WHERE feed = $1 AND build_id = $2 AND level = $3",
        )
        .bind(feed)
        .bind(build_id)
        .bind(level)
        .fetch_optional(&mut *tx)
        .await
        .ctx("look up the release")?
        .map(|r| r.try_get(0))
        .transpose()
        .ctx("look up the release")?;
        let already = matches!(existing, Some(None));
        match existing {
            Some(None) => {}
            Some(Some(_)) => {
                sqlx::query(
                    "UPDATE releases SET released_at = $1, released_by = $2, withdrawn_at = NULL, withdrawn_by = NULL \
                     WHERE feed = $3 AND build_id = $4 AND level = $5",
                )
                .bind(now)
                .bind(actor)
                .bind(feed)
                .bind(build_id)
                .bind(level)
                .execute(&mut *tx)
                .await
                .ctx("release the level again")?;
            }
            None => {
                sqlx::query("INSERT INTO releases (feed, build_id, level, released_at, released_by) VALUES ($1, $2, $3, $4, $5)")
                    .bind(feed)
                    .bind(build_id)
                    .bind(level)
                    .bind(now)
                    .bind(actor)
                    .execute(&mut *tx)
                    .await
                    .ctx("release the level")?;
            }
        }
        audit(
            &mut tx,
            now,
            actor,
            "promote",
            &format!("{build_id} level {level}"),
            json!({"feed": feed, "already": already}),
        )
        .await?;
        tx.commit().await.ctx("commit the promotion")?;
        Ok(Promoted {
            build_id: build_id.to_string(),
            level,
            feed: feed.to_string(),
            already,
        })
    }

    /// Pins a feed to exactly `level` for one kernel: hosts move to it and
    /// stay there until `unpin`. The level must be released to the feed.
    pub async fn pin(
        &self,
        actor: &str,
        feed: &str,
        build_id: &str,
        level: i64,
    ) -> Result<FeedState, Error> {
        validate::build_id("kernel", build_id)?;
        validate::name("feed", feed)?;
        let now = self.clock.now();
        let mut tx = self.db.begin_write().await?;
        store::feed_delay(&mut tx, feed).await?;
        store::level_exists(&mut tx, build_id, level).await?;
        let released: Option<Option<i64>> = sqlx::query(
            "SELECT withdrawn_at FROM releases WHERE feed = $1 AND build_id = $2 AND level = $3",
        )
        .bind(feed)
        .bind(build_id)
        .bind(level)
        .fetch_optional(&mut *tx)
        .await
        .ctx("look up the release")?
        .map(|r| r.try_get(0))
        .transpose()
        .ctx("look up the release")?;
        match released {
            None => {
                return Err(conflict(format!(
                    "level {level} of kernel {build_id} is not released to feed {feed}: promote it first"
                )))
            }
            Some(Some(_)) => {
                return Err(conflict(format!(
                    "level {level} of kernel {build_id} was withdrawn from feed {feed} by a rollback: promote it again first"
                )))
            }
            Some(None) => {}
        }
        set_override(&mut tx, feed, build_id, "pin", Some(level), now, actor).await?;
        audit(
            &mut tx,
            now,
            actor,
            "pin",
            &format!("{feed} {build_id}"),
            json!({"level": level}),
        )
        .await?;
        let state = feed_state(&mut tx, feed, build_id, now).await?;
        tx.commit().await.ctx("commit the pin")?;
        Ok(state)
    }

    /// Holds a feed at the level it serves now for one kernel: no newer
    /// level reaches its hosts until `unpin`.
    pub async fn hold(&self, actor: &str, feed: &str, build_id: &str) -> Result<FeedState, Error> {
        validate::build_id("kernel", build_id)?;
        validate::name("feed", feed)?;
        let now = self.clock.now();
        let mut tx = self.db.begin_write().await?;
        store::kernel_exists(&mut tx, build_id).await?;
        let serving = store::served_level(&mut tx, feed, build_id, now).await?;
        set_override(&mut tx, feed, build_id, "hold", serving, now, actor).await?;
        audit(
            &mut tx,
            now,
            actor,
            "hold",
            &format!("{feed} {build_id}"),
            json!({"level": serving}),
        )
        .await?;
        let state = feed_state(&mut tx, feed, build_id, now).await?;
        tx.commit().await.ctx("commit the hold")?;
        Ok(state)
    }

    /// Removes a pin or hold.
    pub async fn unpin(&self, actor: &str, feed: &str, build_id: &str) -> Result<FeedState, Error> {
        validate::build_id("kernel", build_id)?;
        validate::name("feed", feed)?;
        let now = self.clock.now();
        let mut tx = self.db.begin_write().await?;
        store::feed_delay(&mut tx, feed).await?;
        let done = sqlx::query("DELETE FROM feed_kernel_state WHERE feed = $1 AND build_id = $2")
            .bind(feed)
            .bind(build_id)
            .execute(&mut *tx)
            .await
            .ctx("remove the pin")?;
        if done.rows_affected() == 0 {
            return Err(not_found(format!(
                "feed {feed} has no pin or hold for kernel {build_id}"
            )));
        }
        audit(
            &mut tx,
            now,
            actor,
            "unpin",
            &format!("{feed} {build_id}"),
            json!({}),
        )
        .await?;
        let state = feed_state(&mut tx, feed, build_id, now).await?;
        tx.commit().await.ctx("commit the unpin")?;
        Ok(state)
    }

    /// Rolls a feed back for one kernel: the level it serves, and any newer
    /// one released to it, are withdrawn (and a pin or hold removed), so
    /// hosts move to the previous level at their next check-in. Promoting
    /// a withdrawn level releases it again.
    pub async fn rollback(
        &self,
        actor: &str,
        feed: &str,
        build_id: &str,
    ) -> Result<Rollback, Error> {
        validate::build_id("kernel", build_id)?;
        validate::name("feed", feed)?;
        let now = self.clock.now();
        let mut tx = self.db.begin_write().await?;
        store::kernel_exists(&mut tx, build_id).await?;
        let from = store::served_level(&mut tx, feed, build_id, now)
            .await?
            .ok_or_else(|| {
                conflict(format!(
                    "feed {feed} serves no level for kernel {build_id}: nothing to roll back"
                ))
            })?;
        let rows = sqlx::query(
            "SELECT level FROM releases WHERE feed = $1 AND build_id = $2 AND level >= $3 AND withdrawn_at IS NULL ORDER BY level",
        )
        .bind(feed)
        .bind(build_id)
        .bind(from)
        .fetch_all(&mut *tx)
        .await
        .ctx("find the levels to withdraw")?;
        let withdrawn = rows
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<Vec<_>, _>>()
            .ctx("find the levels to withdraw")?;
        sqlx::query(
            "UPDATE releases SET withdrawn_at = $1, withdrawn_by = $2 \
             WHERE feed = $3 AND build_id = $4 AND level >= $5 AND withdrawn_at IS NULL",
        )
        .bind(now)
        .bind(actor)
        .bind(feed)
        .bind(build_id)
        .bind(from)
        .execute(&mut *tx)
        .await
        .ctx("withdraw the levels")?;
        sqlx::query("DELETE FROM feed_kernel_state WHERE feed = $1 AND build_id = $2")
            .bind(feed)
            .bind(build_id)
            .execute(&mut *tx)
            .await
            .ctx("remove the pin")?;
        let to = store::served_level(&mut tx, feed, build_id, now).await?;
        audit(
            &mut tx,
            now,
            actor,
            "rollback",
            &format!("{feed} {build_id}"),
            json!({"from": from, "to": to, "withdrawn": withdrawn}),
        )
        .await?;
        tx.commit().await.ctx("commit the rollback")?;
        Ok(Rollback {
            feed: feed.to_string(),
            build_id: build_id.to_string(),
            from,
            withdrawn,
            to,
        })
    }

    /// Creates a registration key for `feed`.
    pub async fn create_key(&self, actor: &str, feed: &str, note: &str) -> Result<NewKey, Error> {
        validate::name("feed", feed)?;
        validate::line("note", note, 1024, false)?;
        let id = secrets::random_hex(8)?;
        let secret = secrets::new_secret(secrets::REGISTRATION_KEY)?;
        let now = self.clock.now();
        let mut tx = self.db.begin_write().await?;
        store::feed_delay(&mut tx, feed).await?;
        sqlx::query(
            "INSERT INTO registration_keys (id, secret_hash, feed, note, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(secrets::hash(&secret))
        .bind(feed)
        .bind(note)
        .bind(now)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .ctx("create the registration key")?;
        audit(
            &mut tx,
            now,
            actor,
            "key-create",
            &id,
            json!({"feed": feed, "note": note}),
        )
        .await?;
        tx.commit().await.ctx("commit the registration key")?;
        Ok(NewKey {
            id,
            feed: feed.to_string(),
            secret,
        })
    }

    /// Revokes a registration key: no host registers with it any more
    /// (hosts that did keep their own tokens).
    pub async fn revoke_key(&self, actor: &str, id: &str) -> Result<RegistrationKey, Error> {
        validate::line("id", id, 64, true)?;
        let now = self.clock.now();
        let mut tx = self.db.begin_write().await?;
        let key = sqlx::query_as::<_, RegistrationKey>(
            "SELECT id, feed, note, created_at, created_by, revoked_at FROM registration_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .ctx("look up the registration key")?
        .ok_or_else(|| not_found(format!("no registration key {id:?}")))?;
        if key.revoked_at.is_some() {
            return Err(conflict(format!(
                "registration key {id} is revoked already"
            )));
        }
        sqlx::query("UPDATE registration_keys SET revoked_at = $1, revoked_by = $2 WHERE id = $3")
            .bind(now)
            .bind(actor)
            .bind(id)
            .execute(&mut *tx)
            .await
            .ctx("revoke the registration key")?;
        audit(
            &mut tx,
            now,
            actor,
            "key-revoke",
            id,
            json!({"feed": key.feed}),
        )
        .await?;
        tx.commit().await.ctx("commit the revocation")?;
        Ok(RegistrationKey {
            revoked_at: Some(now),
            ..key
        })
    }

    /// Creates an admin API token.
    pub async fn create_token(
        &self,
        actor: &str,
        name: &str,
        role: Role,
    ) -> Result<NewToken, Error> {
        validate::name("name", name)?;
        let token = secrets::new_secret(secrets::ADMIN_TOKEN)?;
        let now = self.clock.now();
        let mut tx = self.db.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM admin_tokens WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .ctx("look up the token")?;
        if exists.is_some() {
            return Err(conflict(format!(
                "a token named {name:?} exists already (names stay unique, revoked or not, so the audit trail is unambiguous)"
            )));
        }
        sqlx::query(
            "INSERT INTO admin_tokens (name, role, token_hash, created_at, created_by) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(secrets::hash(&token))
        .bind(now)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .ctx("create the token")?;
        audit(
            &mut tx,
            now,
            actor,
            "token-create",
            name,
            json!({"role": role.as_str()}),
        )
        .await?;
        tx.commit().await.ctx("commit the token")?;
        Ok(NewToken {
            name: name.to_string(),
            role,
            token,
        })
    }

    /// Revokes an admin API token.
    pub async fn revoke_token(&self, actor: &str, name: &str) -> Result<(), Error> {
        validate::name("name", name)?;
        let now = self.clock.now();
        let mut tx = self.db.begin_write().await?;
        let done = sqlx::query(
            "UPDATE admin_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(name)
        .execute(&mut *tx)
        .await
        .ctx("revoke the token")?;
        if done.rows_affected() == 0 {
            return Err(not_found(format!("no active token named {name:?}")));
        }
        audit(&mut tx, now, actor, "token-revoke", name, json!({})).await?;
        tx.commit().await.ctx("commit the revocation")?;
        Ok(())
    }

    /// The admin whose bearer token this is.
    pub async fn authenticate_admin(&self, token: &str) -> Result<Actor, Error> {
        let row =
            sqlx::query("SELECT name, role, revoked_at FROM admin_tokens WHERE token_hash = $1")
                .bind(secrets::hash(token))
                .fetch_optional(self.db.pool())
                .await
                .ctx("look up the admin token")?
                .ok_or_else(|| Error::Unauthorized("unknown admin token".into()))?;
        let name: String = row.try_get(0).ctx("read the admin token")?;
        let role: String = row.try_get(1).ctx("read the admin token")?;
        let revoked: Option<i64> = row.try_get(2).ctx("read the admin token")?;
        token_actor(name, &role, revoked.is_some())
    }

    /// Every host but the retired ones (see `hosts`), by hostname.
    pub async fn hosts(&self) -> Result<Vec<Host>, Error> {
        sqlx::query_as::<_, Host>(
            "SELECT id, hostname, feed, kernel_release, kernel_version, build_id, level, effective_version, \
             skipped, agent_version, tags, registration_key, registered_at, last_checkin \
             FROM hosts WHERE retired_at IS NULL ORDER BY hostname, id",
        )
        .fetch_all(self.db.pool())
        .await
        .ctx("list hosts")
    }

    /// Every kernel with published levels.
    pub async fn kernels(&self) -> Result<Vec<Kernel>, Error> {
        sqlx::query_as::<_, Kernel>(
            "SELECT k.build_id, k.release, k.version, k.first_published_at, \
             COUNT(l.level) AS levels, MAX(l.level) AS newest_level \
             FROM kernels k LEFT JOIN levels l ON l.build_id = k.build_id \
             GROUP BY k.build_id, k.release, k.version, k.first_published_at \
             ORDER BY k.release, k.build_id",
        )
        .fetch_all(self.db.pool())
        .await
        .ctx("list kernels")
    }

    /// The kernel builds active hosts run, one per (release, version,
    /// build-id) as the hosts report it, with how many hosts run it and
    /// the newest level published for its build-id; by release, then
    /// build-id. Grouped by all three rather than by build-id alone, so
    /// that hosts reporting one build-id under two releases show up as two
    /// rows instead of one release being picked for them.
    ///
    /// "Covered" means a level is published for the build-id, whether or
    /// not it is released to the feeds its hosts follow.
    pub async fn reported_builds(&self, which: Coverage) -> Result<Vec<ReportedBuild>, Error> {
        let mut builds = sqlx::query_as::<_, ReportedBuild>(
            "SELECT h.kernel_release AS release, h.kernel_version AS version, h.build_id, \
             COUNT(*) AS hosts, l.newest_level \
             FROM hosts h LEFT JOIN \
             (SELECT build_id, MAX(level) AS newest_level FROM levels GROUP BY build_id) l \
             ON l.build_id = h.build_id \
             WHERE h.retired_at IS NULL \
             GROUP BY h.kernel_release, h.kernel_version, h.build_id, l.newest_level \
             ORDER BY h.kernel_release, h.build_id, h.kernel_version",
        )
        .fetch_all(self.db.pool())
        .await
        .ctx("list the builds hosts run")?;
        if which == Coverage::Uncovered {
            builds.retain(|b| b.newest_level.is_none());
        }
        Ok(builds)
    }

    /// Published levels (of one kernel, or all), with CVEs and feeds.
    pub async fn levels(&self, build_id: Option<&str>) -> Result<Vec<Level>, Error> {
        if let Some(b) = build_id {
            validate::build_id("kernel", b)?;
        }
        // One filter for all three queries: `$1 IS NULL` matches every kernel.
        let filter = "($1 IS NULL OR build_id = $1)";
        let mut levels = sqlx::query_as::<_, Level>(&format!(
            "SELECT build_id, level, name, sha256, size, effective_version, description, signer, created, \
             published_at, published_by FROM levels WHERE {filter} ORDER BY build_id, level"
        ))
        .bind(build_id)
        .fetch_all(self.db.pool())
        .await
        .ctx("list levels")?;
        let mut cves: BTreeMap<(String, i64), Vec<Cve>> = BTreeMap::new();
        for row in sqlx::query(&format!(
            "SELECT build_id, level, cve, description FROM level_cves WHERE {filter} ORDER BY cve"
        ))
        .bind(build_id)
        .fetch_all(self.db.pool())
        .await
        .ctx("list CVEs")?
        {
            let key = (
                row.try_get(0).ctx("read CVEs")?,
                row.try_get(1).ctx("read CVEs")?,
            );
            cves.entry(key).or_default().push(Cve {
                cve: row.try_get(2).ctx("read CVEs")?,
                description: row.try_get(3).ctx("read CVEs")?,
            });
        }
        let mut feeds: BTreeMap<(String, i64), Vec<String>> = BTreeMap::new();
        for row in sqlx::query(&format!(
            "SELECT build_id, level, feed FROM releases WHERE {filter} AND withdrawn_at IS NULL ORDER BY feed"
        ))
        .bind(build_id)
        .fetch_all(self.db.pool())
        .await
        .ctx("list releases")?
        {
            let key = (row.try_get(0).ctx("read releases")?, row.try_get(1).ctx("read releases")?);
            feeds.entry(key).or_default().push(row.try_get(2).ctx("read releases")?);
        }
        for l in &mut levels {
            let key = (l.build_id.clone(), l.level);
            l.cves = cves.remove(&key).unwrap_or_default();
            l.feeds = feeds.remove(&key).unwrap_or_default();
        }
        Ok(levels)
    }

    /// Every feed.
    pub async fn feeds(&self) -> Result<Vec<Feed>, Error> {
        sqlx::query_as::<_, Feed>("SELECT name, delay_hours, created_at FROM feeds ORDER BY name")
            .fetch_all(self.db.pool())
            .await
            .ctx("list feeds")
    }

    /// What `feed` serves for `build_id` now, with its pin or hold.
    pub async fn feed_state(&self, feed: &str, build_id: &str) -> Result<FeedState, Error> {
        validate::build_id("kernel", build_id)?;
        validate::name("feed", feed)?;
        let mut conn = self.db.pool().acquire().await.ctx("connect")?;
        feed_state(&mut conn, feed, build_id, self.clock.now()).await
    }

    /// Every registration key (without secrets).
    pub async fn keys(&self) -> Result<Vec<RegistrationKey>, Error> {
        sqlx::query_as::<_, RegistrationKey>(
            "SELECT id, feed, note, created_at, created_by, revoked_at FROM registration_keys ORDER BY created_at, id",
        )
        .fetch_all(self.db.pool())
        .await
        .ctx("list registration keys")
    }

    /// Every admin token (without secrets).
    pub async fn tokens(&self) -> Result<Vec<AdminToken>, Error> {
        sqlx::query_as::<_, AdminToken>(
            "SELECT name, role, created_at, created_by, revoked_at FROM admin_tokens ORDER BY name",
        )
        .fetch_all(self.db.pool())
        .await
        .ctx("list tokens")
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, Error> {
        sqlx::query_as::<_, AuditEntry>(
            "SELECT id, at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT $1",
        )
        .bind(limit.clamp(1, 100_000))
        .fetch_all(self.db.pool())
        .await
        .ctx("read the audit trail")
    }

    /// The newest `limit` host reports (of one host, or all), newest first.
    pub async fn reports(&self, host_id: Option<&str>, limit: i64) -> Result<Vec<Report>, Error> {
        sqlx::query_as::<_, Report>(
            "SELECT id, host_id, received_at, action, level, result, reason, stalled_tasks, duration_ms, active_level \
             FROM host_reports WHERE ($1 IS NULL OR host_id = $1) ORDER BY received_at DESC, id LIMIT $2",
        )
        .bind(host_id)
        .bind(limit.clamp(1, 100_000))
        .fetch_all(self.db.pool())
        .await
        .ctx("list reports")
    }
}

async fn set_override(
    conn: &mut sqlx::AnyConnection,
    feed: &str,
    build_id: &str,
    mode: &str,
    level: Option<i64>,
    now: i64,
    actor: &str,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO feed_kernel_state (feed, build_id, mode, level, updated_at, updated_by) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (feed, build_id) DO UPDATE SET mode = excluded.mode, level = excluded.level, \
         updated_at = excluded.updated_at, updated_by = excluded.updated_by",
    )
    .bind(feed)
    .bind(build_id)
    .bind(mode)
    .bind(level)
    .bind(now)
    .bind(actor)
    .execute(conn)
    .await
    .ctx("set the pin or hold")?;
    Ok(())
}

async fn feed_state(
    conn: &mut sqlx::AnyConnection,
    feed: &str,
    build_id: &str,
    now: i64,
) -> Result<FeedState, Error> {
    let row =
        sqlx::query("SELECT mode, level FROM feed_kernel_state WHERE feed = $1 AND build_id = $2")
            .bind(feed)
            .bind(build_id)
            .fetch_optional(&mut *conn)
            .await
            .ctx("read the pin")?;
    let (mode, level) = match row {
        Some(r) => (
            Some(r.try_get::<String, _>(0).ctx("read the pin")?),
            r.try_get::<Option<i64>, _>(1).ctx("read the pin")?,
        ),
        None => (None, None),
    };
    let serving = store::served_level(conn, feed, build_id, now).await?;
    Ok(FeedState {
        feed: feed.to_string(),
        build_id: build_id.to_string(),
        mode,
        level,
        serving,
    })
}

/// The admin an admin token's row names, unless it was revoked or holds a
/// role this server does not know: what every way in (bearer token,
/// dashboard session) checks.
pub(crate) fn token_actor(name: String, role: &str, revoked: bool) -> Result<Actor, Error> {
    if revoked {
        return Err(Error::Unauthorized(format!(
            "admin token {name:?} was revoked"
        )));
    }
    let role = Role::parse(role)
        .ok_or_else(|| Error::Unauthorized(format!("admin token {name:?} has an unknown role")))?;
    Ok(Actor { name, role })
}
