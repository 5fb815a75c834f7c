//! Queries more than one operation needs: the level a feed serves, and
//! lookups that turn a missing row into a [`not_found`] naming what is
//! missing. (The audit record each admin change writes is `admin::audit`'s.)

use sqlx::{AnyConnection, Row};

use crate::error::{not_found, DbContext, Error};
use crate::target::{self, Override, Release};

/// A feed's delay, or not found.
pub async fn feed_delay(conn: &mut AnyConnection, feed: &str) -> Result<i64, Error> {
    sqlx::query("SELECT delay_hours FROM feeds WHERE name = $1")
        .bind(feed)
        .fetch_optional(conn)
        .await
        .ctx("look up a feed")?
        .map(|r| r.try_get::<i64, _>(0))
        .transpose()
        .ctx("read a feed")?
        .ok_or_else(|| not_found(format!("no feed named {feed:?}")))
}

/// Fails unless the kernel build has published levels.
pub async fn kernel_exists(conn: &mut AnyConnection, build_id: &str) -> Result<(), Error> {
    let found = sqlx::query("SELECT 1 FROM kernels WHERE build_id = $1")
        .bind(build_id)
        .fetch_optional(conn)
        .await
        .ctx("look up a kernel")?;
    match found {
        Some(_) => Ok(()),
        None => Err(not_found(format!(
            "no kernel with build-id {build_id} (publish a level for it first)"
        ))),
    }
}

/// Fails unless the level is published.
pub async fn level_exists(
    conn: &mut AnyConnection,
    build_id: &str,
    level: i64,
) -> Result<(), Error> {
    let found = sqlx::query("SELECT 1 FROM levels WHERE build_id = $1 AND level = $2")
        .bind(build_id)
        .bind(level)
        .fetch_optional(conn)
        .await
        .ctx("look up a level")?;
    match found {
        Some(_) => Ok(()),
        None => Err(not_found(format!(
            "no level {level} published for kernel {build_id}"
        ))),
    }
}

/// The level `feed` serves for `build_id` at `now` (see [`target`]).
pub async fn served_level(
    conn: &mut AnyConnection,
    feed: &str,
    build_id: &str,
    now: i64,
) -> Result<Option<i64>, Error> {
    let delay = feed_delay(&mut *conn, feed).await?;
    let over =
        sqlx::query("SELECT mode, level FROM feed_kernel_state WHERE feed = $1 AND build_id = $2")
            .bind(feed)
            .bind(build_id)
            .fetch_optional(&mut *conn)
            .await
            .ctx("read pins and holds")?;
    let over = match over {
        None => None,
        Some(row) => {
            let mode: String = row.try_get(0).ctx("read pins and holds")?;
            let level: Option<i64> = row.try_get(1).ctx("read pins and holds")?;
            match (mode.as_str(), level) {
                ("pin", Some(l)) => Some(Override::Pin(l)),
                _ => Some(Override::Hold(level)),
            }
        }
    };
    let rows = sqlx::query(
        "SELECT r.level, l.published_at, r.released_at, r.withdrawn_at \
         FROM releases r JOIN levels l ON l.build_id = r.build_id AND l.level = r.level \
         WHERE r.feed = $1 AND r.build_id = $2",
    )
    .bind(feed)
    .bind(build_id)
    .fetch_all(&mut *conn)
    .await
    .ctx("read releases")?;
    let mut releases = Vec::with_capacity(rows.len());
    for row in rows {
        releases.push(Release {
            level: row.try_get(0).ctx("read releases")?,
            published_at: row.try_get(1).ctx("read releases")?,
            released_at: row.try_get(2).ctx("read releases")?,
            withdrawn: row
                .try_get::<Option<i64>, _>(3)
                .ctx("read releases")?
                .is_some(),
        });
    }
    Ok(target::resolve(&releases, over, delay, now))
}
