//! Kernels, as read: the kernels with published levels, and the kernel
//! builds active hosts run (all, or only those no level covers). Kernels
//! are written by publishing.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::context::Context;
use crate::error::{DbContext, Error};
use crate::model::{Kernel, ReportedBuild};

/// Which of the builds hosts run [`Context::reported_builds`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Every build.
    All,
    /// Only builds with no published level: what no release covers.
    Uncovered,
}

impl Context {
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
        Ok(self.counted_builds(which).await?.0)
    }

    /// [`Context::reported_builds`], with when the hosts were counted (the
    /// server clock's seconds; see [`crate::counts`]).
    pub async fn counted_builds(
        &self,
        which: Coverage,
    ) -> Result<(Vec<ReportedBuild>, i64), Error> {
        // The fleet's counts (see `crate::counts`), summed over levels.
        let counts = self.fleet_counts(self.counts.stale_hours()).await?;
        let mut hosts: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
        for g in &counts.groups {
            *hosts
                .entry((&g.release, &g.build_id, &g.version))
                .or_default() += g.hosts;
        }
        let newest: std::collections::HashMap<String, i64> =
            sqlx::query("SELECT build_id, MAX(level) FROM levels GROUP BY build_id")
                .fetch_all(self.db.pool())
                .await
                .ctx("list the builds hosts run")?
                .into_iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()
                .ctx("list the builds hosts run")?;
        // In (release, build-id, version) order, as the map keeps them.
        let mut builds: Vec<ReportedBuild> = hosts
            .into_iter()
            .map(|((release, build_id, version), n)| ReportedBuild {
                release: release.to_owned(),
                version: version.to_owned(),
                newest_level: newest.get(build_id).copied(),
                hosts: n,
                build_id: build_id.to_owned(),
            })
            .collect();
        if which == Coverage::Uncovered {
            builds.retain(|b| b.newest_level.is_none());
        }
        Ok((builds, counts.at))
    }
}
