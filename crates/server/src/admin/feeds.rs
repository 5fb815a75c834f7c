//! Feeds: creating them, listing them, and what one serves for a kernel
//! now with its pin or hold. A feed is a release channel hosts follow; a
//! delayed feed serves a level only some hours after its publication.

use serde::Serialize;
use serde_json::json;
use sqlx::{AnyConnection, Row};

use crate::context::Context;
use crate::error::{conflict, invalid, DbContext, Error};
use crate::model::Feed;
use crate::store;
use crate::validate;

/// A feed's state for one kernel after a pin, hold or unpin.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

impl Context {
    /// Creates a feed; `delay_hours` > 0 makes it a delayed feed.
    pub async fn create_feed(
        &self,
        actor: &str,
        name: &str,
        delay_hours: i64,
    ) -> Result<Feed, Error> {
        validate::name("feed", name)?;
        if !(0..=validate::MAX_DELAY_HOURS).contains(&delay_hours) {
            return Err(invalid(format!(
                "field `delay_hours`: {delay_hours} is not between 0 and {}",
                validate::MAX_DELAY_HOURS
            )));
        }
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
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
        tx.commit(
            actor,
            "feed-create",
            name,
            json!({"delay_hours": delay_hours}),
            "commit the feed",
        )
        .await?;
        Ok(Feed {
            name: name.to_string(),
            delay_hours,
            created_at: now,
        })
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
}

/// What `feed` serves for `build_id` at `now`, read on `conn` (inside a
/// change's transaction, it sees the change).
pub(super) async fn feed_state(
    conn: &mut AnyConnection,
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
