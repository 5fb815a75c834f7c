//! Published levels, as read: each with the CVEs it fixes and the feeds
//! it is released to. Levels are written by publishing and released by
//! `releases`.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::context::Context;
use crate::error::{DbContext, Error};
use crate::model::{Cve, Level};
use crate::validate;

impl Context {
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
}
