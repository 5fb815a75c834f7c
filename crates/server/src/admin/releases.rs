//! What each feed serves of a kernel's published levels: promoting a level
//! to a feed (again, after a rollback), pinning a feed to one level,
//! holding it where it is, unpinning it, and rolling it back. The level a
//! feed serves is derived from these rows by `target`; these actions only
//! change the rows, each audited.

use serde::Serialize;
use serde_json::json;
use sqlx::{AnyConnection, Row};

use super::feeds::{feed_state, FeedState};
use crate::context::Context;
use crate::error::{conflict, not_found, DbContext, Error};
use crate::store;
use crate::validate;

/// The outcome of a promotion.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// The outcome of a rollback.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// A level's release to a feed: never released, released, or withdrawn by
/// a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReleaseState {
    NotReleased,
    Released,
    Withdrawn,
}

impl Context {
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
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
        store::feed_delay(&mut tx, feed).await?;
        store::level_exists(&mut tx, build_id, level).await?;
        let existing = release_state(&mut tx, feed, build_id, level).await?;
        let already = existing == ReleaseState::Released;
        match existing {
            ReleaseState::Released => {}
            ReleaseState::Withdrawn => {
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
            ReleaseState::NotReleased => {
                release(&mut tx, feed, build_id, level, now, actor).await?
            }
        }
        tx.commit(
            actor,
            "promote",
            &format!("{build_id} level {level}"),
            json!({"feed": feed, "already": already}),
            "commit the promotion",
        )
        .await?;
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
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
        store::feed_delay(&mut tx, feed).await?;
        store::level_exists(&mut tx, build_id, level).await?;
        match release_state(&mut tx, feed, build_id, level).await? {
            ReleaseState::NotReleased => {
                return Err(conflict(format!(
                    "level {level} of kernel {build_id} is not released to feed {feed}: promote it first"
                )))
            }
            ReleaseState::Withdrawn => {
                return Err(conflict(format!(
                    "level {level} of kernel {build_id} was withdrawn from feed {feed} by a rollback: promote it again first"
                )))
            }
            ReleaseState::Released => {}
        }
        set_override(&mut tx, feed, build_id, "pin", Some(level), now, actor).await?;
        let state = feed_state(&mut tx, feed, build_id, now).await?;
        tx.commit(
            actor,
            "pin",
            &format!("{feed} {build_id}"),
            json!({"level": level}),
            "commit the pin",
        )
        .await?;
        Ok(state)
    }

    /// Holds a feed at the level it serves now for one kernel: no newer
    /// level reaches its hosts until `unpin`.
    pub async fn hold(&self, actor: &str, feed: &str, build_id: &str) -> Result<FeedState, Error> {
        validate::build_id("kernel", build_id)?;
        validate::name("feed", feed)?;
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
        store::kernel_exists(&mut tx, build_id).await?;
        let serving = store::served_level(&mut tx, feed, build_id, now).await?;
        set_override(&mut tx, feed, build_id, "hold", serving, now, actor).await?;
        let state = feed_state(&mut tx, feed, build_id, now).await?;
        tx.commit(
            actor,
            "hold",
            &format!("{feed} {build_id}"),
            json!({"level": serving}),
            "commit the hold",
        )
        .await?;
        Ok(state)
    }

    /// Removes a pin or hold.
    pub async fn unpin(&self, actor: &str, feed: &str, build_id: &str) -> Result<FeedState, Error> {
        validate::build_id("kernel", build_id)?;
        validate::name("feed", feed)?;
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
        store::feed_delay(&mut tx, feed).await?;
        if remove_override(&mut tx, feed, build_id).await? == 0 {
            return Err(not_found(format!(
                "feed {feed} has no pin or hold for kernel {build_id}"
            )));
        }
        let state = feed_state(&mut tx, feed, build_id, now).await?;
        tx.commit(
            actor,
            "unpin",
            &format!("{feed} {build_id}"),
            json!({}),
            "commit the unpin",
        )
        .await?;
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
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
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
        remove_override(&mut tx, feed, build_id).await?;
        let to = store::served_level(&mut tx, feed, build_id, now).await?;
        tx.commit(
            actor,
            "rollback",
            &format!("{feed} {build_id}"),
            json!({"from": from, "to": to, "withdrawn": withdrawn}),
            "commit the rollback",
        )
        .await?;
        Ok(Rollback {
            feed: feed.to_string(),
            build_id: build_id.to_string(),
            from,
            withdrawn,
            to,
        })
    }
}

/// Releases a level to a feed for the first time (publish, promote).
pub(super) async fn release(
    conn: &mut AnyConnection,
    feed: &str,
    build_id: &str,
    level: i64,
    now: i64,
    actor: &str,
) -> Result<(), Error> {
    sqlx::query("INSERT INTO releases (feed, build_id, level, released_at, released_by) VALUES ($1, $2, $3, $4, $5)")
        .bind(feed)
        .bind(build_id)
        .bind(level)
        .bind(now)
        .bind(actor)
        .execute(conn)
        .await
        .ctx("release the level")?;
    Ok(())
}

/// Whether the level was ever released to the feed, and whether a
/// rollback withdrew it since.
async fn release_state(
    conn: &mut AnyConnection,
    feed: &str,
    build_id: &str,
    level: i64,
) -> Result<ReleaseState, Error> {
    let withdrawn_at: Option<Option<i64>> = sqlx::query(
        "SELECT withdrawn_at FROM releases WHERE feed = $1 AND build_id = $2 AND level = $3",
    )
    .bind(feed)
    .bind(build_id)
    .bind(level)
    .fetch_optional(conn)
    .await
    .ctx("look up the release")?
    .map(|r| r.try_get(0))
    .transpose()
    .ctx("look up the release")?;
    Ok(match withdrawn_at {
        None => ReleaseState::NotReleased,
        Some(None) => ReleaseState::Released,
        Some(Some(_)) => ReleaseState::Withdrawn,
    })
}

/// Sets the feed's pin or hold for the kernel, replacing any.
async fn set_override(
    conn: &mut AnyConnection,
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

/// Removes the feed's pin or hold for the kernel; answers how many rows
/// went (0: there was none).
async fn remove_override(
    conn: &mut AnyConnection,
    feed: &str,
    build_id: &str,
) -> Result<u64, Error> {
    let done = sqlx::query("DELETE FROM feed_kernel_state WHERE feed = $1 AND build_id = $2")
        .bind(feed)
        .bind(build_id)
        .execute(conn)
        .await
        .ctx("remove the pin")?;
    Ok(done.rows_affected())
}
