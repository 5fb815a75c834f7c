//! Dashboard sessions. Signing in to `/ui` with an admin or read-only API
//! token opens a session, and the browser's cookie carries the session's
//! random id, never the token: a cookie that leaks (a shared browser, a
//! proxy log) is worth one session, which ends at its expiry or at
//! sign-out, while the token stays usable only by whoever holds it.
//!
//! Sessions are rows of the database (`dashboard_sessions`: a hash of the
//! id, the token's name, the expiry), not state of one server process, so
//! every server on one database honours a sign-in and a sign-out made
//! through any of them. The role is the token's, read at every request,
//! and revoking the token ends its sessions. Sign-ins, sign-outs and
//! failed sign-ins are audited (the target is the client's address).

use serde_json::json;
use sqlx::Row;

use crate::admin::Actor;
use crate::clock::rfc3339;
use crate::context::Context;
use crate::error::{DbContext, Error};
use crate::secrets;

/// Who the audit trail names for a failed sign-in: the token presented
/// named no one (or a revoked someone).
pub const ANONYMOUS: &str = "anonymous";

/// Longest token a sign-in looks up; ours are 68 characters.
const MAX_TOKEN: usize = 256;

/// A session just opened.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Its id: the cookie's value, handed out once (only its hash is kept).
    pub id: String,
    /// Whose session it is.
    pub actor: Actor,
    /// When it ends (Unix seconds) unless signed out before.
    pub expires_at: i64,
}

impl Context {
    /// Opens a dashboard session for the admin or read-only `token`, for
    /// `lifetime` seconds, signed in from `from` (the client's address).
    /// A token that is malformed, unknown or revoked is refused with
    /// [`Error::Unauthorized`] and the refusal is audited, without the
    /// token.
    pub async fn sign_in(
        &self,
        token: &str,
        from: &str,
        lifetime: i64,
    ) -> Result<NewSession, Error> {
        let checked = if token.is_empty() || token.len() > MAX_TOKEN {
            Err(Error::Unauthorized("that is not an admin token".into()))
        } else {
            self.authenticate_admin(token).await
        };
        let actor = match checked {
            Ok(a) => a,
            Err(Error::Unauthorized(why)) => {
                self.audit_failed_sign_in(from, &why).await?;
                return Err(Error::Unauthorized(why));
            }
            Err(e) => return Err(e),
        };
        let id = secrets::new_secret(secrets::SESSION)?;
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
        let expires_at = now.saturating_add(lifetime);
        // Rows that can no longer open anything go here rather than in a
        // background task: sign-ins are rare, and every server process
        // does its share without coordination.
        sqlx::query(
            "DELETE FROM dashboard_sessions WHERE expires_at <= $1 OR revoked_at IS NOT NULL",
        )
        .bind(now)
        .execute(&mut *tx)
        .await
        .ctx("drop ended dashboard sessions")?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (id_hash, token_name, address, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(secrets::hash(&id))
        .bind(&actor.name)
        .bind(from)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .ctx("open a dashboard session")?;
        tx.commit(
            &actor.name,
            "dashboard-sign-in",
            from,
            json!({"expires_at": rfc3339(expires_at)}),
            "commit the dashboard session",
        )
        .await?;
        Ok(NewSession {
            id,
            actor,
            expires_at,
        })
    }

    /// Audits a refused sign-in from `from`, in its own transaction.
    async fn audit_failed_sign_in(&self, from: &str, why: &str) -> Result<(), Error> {
        let tx = self.begin_audited().await?;
        tx.commit(
            ANONYMOUS,
            "dashboard-sign-in-failed",
            from,
            json!({"reason": why}),
            "commit the audit entry",
        )
        .await
    }

    /// The admin whose open session `id` is; [`Error::Unauthorized`] for
    /// an id that is malformed, unknown, expired or signed out, or whose
    /// token was revoked.
    pub async fn session(&self, id: &str) -> Result<Actor, Error> {
        let unauthorized = |m: &str| Error::Unauthorized(m.to_string());
        if !secrets::is_well_formed(secrets::SESSION, id) {
            return Err(unauthorized("not a dashboard session"));
        }
        let row = sqlx::query(
            "SELECT t.name, t.role, t.revoked_at, s.expires_at, s.revoked_at \
             FROM dashboard_sessions s JOIN admin_tokens t ON t.name = s.token_name \
             WHERE s.id_hash = $1",
        )
        .bind(secrets::hash(id))
        .fetch_optional(self.db.pool())
        .await
        .ctx("look up the dashboard session")?
        .ok_or_else(|| unauthorized("unknown dashboard session"))?;
        let name: String = row.try_get(0).ctx("read the dashboard session")?;
        let role: String = row.try_get(1).ctx("read the dashboard session")?;
        let token_revoked: Option<i64> = row.try_get(2).ctx("read the dashboard session")?;
        let expires_at: i64 = row.try_get(3).ctx("read the dashboard session")?;
        let signed_out: Option<i64> = row.try_get(4).ctx("read the dashboard session")?;
        if signed_out.is_some() {
            return Err(unauthorized("the dashboard session was signed out"));
        }
        if expires_at <= self.clock.now() {
            return Err(unauthorized("the dashboard session expired"));
        }
        crate::admin::token_actor(name, &role, token_revoked.is_some())
    }

    /// Ends the open session `id` (signed out from `from`); answers whose
    /// it was, or `None` when there was no open session with that id.
    pub async fn sign_out(&self, id: &str, from: &str) -> Result<Option<String>, Error> {
        if !secrets::is_well_formed(secrets::SESSION, id) {
            return Ok(None);
        }
        let hash = secrets::hash(id);
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
        let name: Option<String> = sqlx::query(
            "SELECT token_name FROM dashboard_sessions \
             WHERE id_hash = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(&hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .ctx("look up the dashboard session")?
        .map(|r| r.try_get(0))
        .transpose()
        .ctx("read the dashboard session")?;
        let Some(name) = name else {
            return Ok(None);
        };
        sqlx::query("UPDATE dashboard_sessions SET revoked_at = $1 WHERE id_hash = $2")
            .bind(now)
            .bind(&hash)
            .execute(&mut *tx)
            .await
            .ctx("end the dashboard session")?;
        tx.commit(
            &name,
            "dashboard-sign-out",
            from,
            json!({}),
            "commit the sign-out",
        )
        .await?;
        Ok(Some(name))
    }
}
