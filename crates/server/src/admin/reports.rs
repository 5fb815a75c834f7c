//! Host reports, as read: what each host said it did (applied, reverted,
//! refused a level, and why), newest first. Hosts write them (`fleet`);
//! the compliance reports computed over the whole fleet are `report`'s.

use crate::context::Context;
use crate::error::{DbContext, Error};
use crate::model::Report;

impl Context {
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
