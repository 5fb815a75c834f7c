//! Host reports, as read: what each host said it did (applied, reverted,
//! refused a level, and why), newest first. Hosts write them (`fleet`);
//! the compliance reports computed over the whole fleet are `report`'s.

use crate::context::Context;
use crate::error::{DbContext, Error};
use crate::model::Report;
use crate::page::{Bind, Page, PageRequest, Sql};
use serde_json::json;

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

    /// One page of host reports (of one host, or all; with one result,
    /// or any), newest first, then by id descending.
    pub async fn report_page(
        &self,
        host_id: Option<&str>,
        result: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<Report>, Error> {
        let mut sql = Sql::new(
            "SELECT id, host_id, received_at, action, level, result, reason, stalled_tasks, \
             duration_ms, active_level FROM host_reports WHERE 1 = 1",
        );
        if let Some(h) = host_id {
            sql.push(" AND host_id = ").bind(Bind::Text(h.to_string()));
        }
        if let Some(r) = result {
            sql.push(" AND result = ").bind(Bind::Text(r.to_string()));
        }
        let back = page.backwards();
        if let Some(c) = &page.cursor {
            let (at, id) = (c.int(0)?, c.text(1)?.to_string());
            sql.push(if back {
                " AND (received_at, id) > ("
            } else {
                " AND (received_at, id) < ("
            })
            .bind(Bind::Int(at))
            .push(", ")
            .bind(Bind::Text(id))
            .push(")");
        }
        // Both keys descending, so one index serves either direction.
        sql.push(if back {
            " ORDER BY received_at, id LIMIT "
        } else {
            " ORDER BY received_at DESC, id DESC LIMIT "
        })
        .bind(Bind::Int(page.fetch()));
        let rows = sql
            .query_as::<Report>()
            .fetch_all(self.db.pool())
            .await
            .ctx("list reports")?;
        Ok(Page::from_rows(REPORTS_LIST, page, rows, |r| {
            vec![json!(r.received_at), json!(r.id)]
        }))
    }
}

/// The cursor name of the host reports' list.
pub const REPORTS_LIST: &str = "reports";
