//! Admin API tokens and who they make their bearer: creating, revoking and
//! listing tokens, and authenticating one as an [`Actor`] with a role.
//! A token is shown once, at creation, and kept only as a hash; its name
//! is what the audit trail records, so names stay unique even after
//! revocation.

use serde::Serialize;
use serde_json::json;
use sqlx::Row;

use crate::context::Context;
use crate::error::{conflict, not_found, DbContext, Error};
use crate::model::{AdminToken, Role};
use crate::secrets;
use crate::validate;

/// Who is acting, as the audit trail names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// A token name, or `cli:<user>`.
    pub name: String,
    /// What they may do.
    pub role: Role,
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

impl Context {
    /// Creates an admin API token.
    pub async fn create_token(
        &self,
        actor: &str,
        name: &str,
        role: Role,
    ) -> Result<NewToken, Error> {
        validate::name("name", name)?;
        let token = secrets::new_secret(secrets::ADMIN_TOKEN)?;
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
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
        tx.commit(
            actor,
            "token-create",
            name,
            json!({"role": role.as_str()}),
            "commit the token",
        )
        .await?;
        Ok(NewToken {
            name: name.to_string(),
            role,
            token,
        })
    }

    /// Revokes an admin API token.
    pub async fn revoke_token(&self, actor: &str, name: &str) -> Result<(), Error> {
        validate::name("name", name)?;
        let mut tx = self.begin_audited().await?;
        let done = sqlx::query(
            "UPDATE admin_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
        )
        .bind(tx.now())
        .bind(name)
        .execute(&mut *tx)
        .await
        .ctx("revoke the token")?;
        if done.rows_affected() == 0 {
            return Err(not_found(format!("no active token named {name:?}")));
        }
        tx.commit(
            actor,
            "token-revoke",
            name,
            json!({}),
            "commit the revocation",
        )
        .await
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
