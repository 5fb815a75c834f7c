//! Registration keys: the secrets hosts register with, each tied to the
//! feed its hosts join. A key's secret is shown once, at creation, and
//! kept only as a hash; revoking a key stops new registrations with it
//! (hosts that registered keep their own tokens).

use serde::Serialize;
use serde_json::json;

use crate::context::Context;
use crate::error::{conflict, not_found, DbContext, Error};
use crate::model::RegistrationKey;
use crate::secrets;
use crate::store;
use crate::validate;

/// A new registration key; the secret is shown this once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NewKey {
    /// The key's id (for revoking).
    pub id: String,
    /// The feed it registers hosts to.
    pub feed: String,
    /// The secret hosts register with.
    pub secret: String,
}

impl Context {
    /// Creates a registration key for `feed`.
    pub async fn create_key(&self, actor: &str, feed: &str, note: &str) -> Result<NewKey, Error> {
        validate::name("feed", feed)?;
        validate::line("note", note, 1024, false)?;
        let id = secrets::random_hex(8)?;
        let secret = secrets::new_secret(secrets::REGISTRATION_KEY)?;
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
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
        tx.commit(
            actor,
            "key-create",
            &id,
            json!({"feed": feed, "note": note}),
            "commit the registration key",
        )
        .await?;
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
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
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
        tx.commit(
            actor,
            "key-revoke",
            id,
            json!({"feed": key.feed}),
            "commit the revocation",
        )
        .await?;
        Ok(RegistrationKey {
            revoked_at: Some(now),
            ..key
        })
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
}
