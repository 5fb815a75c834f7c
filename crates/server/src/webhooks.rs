//! Webhooks: JSON POSTs to URLs an administrator registers, for the events
//! people act on — an apply that failed or was rolled back on a host, a
//! level the host's crash guard skipped, a host crossing the compliance
//! policy (and crossing back). Each webhook picks its events.
//!
//! An event becomes one row per subscribed webhook in `webhook_deliveries`
//! (the outbox), written in the transaction that learnt of it; a
//! background task delivers the rows, never a
//! request handler, so a slow or dead receiver costs the fleet nothing
//! and pending deliveries survive a restart ([`start`]). A delivery is claimed with a
//! lease (several processes may share a PostgreSQL database), POSTed with
//! its id and an HMAC-SHA256 signature of its body, and retried with
//! exponential backoff until delivered or given up; either end is written
//! to the audit trail with the delivery's row, in one transaction.
//!
//! Policy crossings are found by a sweep ([`Context::sweep_policy`]) that
//! the same task runs at an interval: the hosts breaching now, from the
//! fleet's counts, against `policy_breaches`, the hosts known to breach.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::{AnyConnection, Row};
use tokio::sync::Notify;

use crate::clock::rfc3339;
use crate::context::Context;
use crate::error::{invalid, not_found, DbContext, Error};
use crate::report::Policy;
use crate::secrets;

/// An apply or update that failed on a host (a report with result
/// `failed`).
pub const APPLY_FAILED: &str = "apply-failed";
/// A level the host took back after its checks failed (`rolled-back`).
pub const ROLLED_BACK: &str = "rolled-back";
/// A level the host's crash guard skipped at boot: the machine went down
/// while it was being applied (a new level in a check-in's `skipped`).
pub const CRASH_GUARD_SKIP: &str = "crash-guard-skip";
/// A host exposed to a fixed CVE for longer than the policy allows.
pub const POLICY_BREACH: &str = "policy-breach";
/// A host that breached the policy no longer does.
pub const POLICY_BREACH_RESOLVED: &str = "policy-breach-resolved";
/// Every event, as webhooks name them.
pub const EVENTS: [&str; 5] = [
    APPLY_FAILED,
    ROLLED_BACK,
    CRASH_GUARD_SKIP,
    POLICY_BREACH,
    POLICY_BREACH_RESOLVED,
];

/// Prefix of webhook secrets.
pub const SECRET_PREFIX: &str = "nrw_";
/// The audit trail's actor for what the server does by itself.
pub const SERVER_ACTOR: &str = "noreboot-server";

/// The headers a delivery carries besides `Content-Type: application/json`.
pub const EVENT_HEADER: &str = "X-Noreboot-Event";
/// The delivery's id: the same on every attempt (receivers deduplicate).
pub const DELIVERY_HEADER: &str = "X-Noreboot-Delivery";
/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the secret>`.
pub const SIGNATURE_HEADER: &str = "X-Noreboot-Signature";

/// A registered webhook (its secret only by its first characters).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    /// Its id.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// The events it takes.
    pub events: Vec<String>,
    /// The secret's first characters, to tell secrets apart.
    pub secret_hint: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// By whom.
    pub created_by: String,
}

/// A new webhook, with its secret: shown this once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NewWebhook {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The HMAC-SHA256 key its deliveries are signed with.
    pub secret: String,
}

/// How deliveries are made.
#[derive(Debug, Clone, Copy)]
pub struct DeliverySettings {
    /// Attempts before a delivery is given up.
    pub attempts: u32,
    /// The wait after the first failed attempt; doubled after each.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// One attempt's time limit (connecting included).
    pub timeout: Duration,
    /// How often the outbox is looked at for work another process (or
    /// an earlier run) left, and the policy swept.
    pub poll: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            attempts: 8,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            poll: Duration::from_secs(60),
        }
    }
}

impl DeliverySettings {
    /// The wait after failed attempt `n` (from 1).
    pub fn backoff_after(&self, n: u32) -> Duration {
        self.backoff
            .saturating_mul(1u32 << n.saturating_sub(1).min(20))
            .min(self.max_backoff)
    }

    /// How long a process holds a delivery for attempt `n`: the attempt
    /// and the wait after it, in whole seconds with a margin. A process
    /// that dies holds it no longer than that; another then takes over.
    fn hold_seconds(&self, n: u32) -> i64 {
        self.timeout.saturating_add(self.backoff_after(n)).as_secs() as i64 + 2
    }
}

/// `X-Noreboot-Signature` for `body` sent at `t` under `secret`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn hint(secret: &str) -> String {
    format!("{}…", &secret[..secret.len().min(SECRET_PREFIX.len() + 6)])
}

fn check_events(events: &[String]) -> Result<Vec<String>, Error> {
    if events.is_empty() {
        return Err(invalid(format!(
            "field `events`: name at least one of {}",
            EVENTS.join(", ")
        )));
    }
    let mut out = BTreeSet::new();
    for e in events {
        if !EVENTS.contains(&e.as_str()) {
            return Err(invalid(format!(
                "field `events`: {e:.64?} is no event (events: {})",
                EVENTS.join(", ")
            )));
        }
        out.insert(e.clone());
    }
    Ok(out.into_iter().collect())
}

fn check_url(url: &str) -> Result<(), Error> {
    let u = reqwest::Url::parse(url)
        .map_err(|e| invalid(format!("field `url`: {url:.200?} is not a URL: {e}")))?;
    if !matches!(u.scheme(), "https" | "http") || u.host_str().is_none() {
        return Err(invalid(format!(
            "field `url`: {url:.200?} must be an http:// or https:// URL with a host"
        )));
    }
    if url.len() > 2048 {
        return Err(invalid("field `url`: longer than 2048 bytes"));
    }
    Ok(())
}

impl Context {
    /// Registers a webhook for `events`; its secret is made here and
    /// answered once.
    pub async fn create_webhook(
        &self,
        actor: &str,
        url: &str,
        events: &[String],
    ) -> Result<NewWebhook, Error> {
        check_url(url)?;
        let events = check_events(events)?;
        let id = secrets::random_hex(8)?;
        let secret = secrets::new_secret(SECRET_PREFIX)?;
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
        sqlx::query(
            "INSERT INTO webhooks (id, url, secret, events, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(url)
        .bind(&secret)
        .bind(serde_json::to_string(&events).unwrap_or_default())
        .bind(now)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .ctx("create the webhook")?;
        tx.commit(
            actor,
            "webhook-create",
            &id,
            json!({"url": url, "events": events}),
            "commit the webhook",
        )
        .await?;
        Ok(NewWebhook {
            webhook: Webhook {
                id,
                url: url.into(),
                events,
                secret_hint: hint(&secret),
                created_at: rfc3339(now),
                created_by: actor.into(),
            },
            secret,
        })
    }

    /// The webhooks not deleted, oldest first.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>, Error> {
        let rows = sqlx::query(
            "SELECT id, url, secret, events, created_at, created_by FROM webhooks \
             WHERE deleted_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(self.db.pool())
        .await
        .ctx("list webhooks")?;
        rows.iter().map(webhook_row).collect()
    }

    /// Deletes a webhook; its deliveries not yet made are given up.
    pub async fn delete_webhook(&self, actor: &str, id: &str) -> Result<Webhook, Error> {
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
        let row = sqlx::query(
            "SELECT id, url, secret, events, created_at, created_by FROM webhooks \
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .ctx("look up the webhook")?
        .ok_or_else(|| not_found(format!("no webhook {id:.64?}")))?;
        let hook = webhook_row(&row)?;
        sqlx::query("UPDATE webhooks SET deleted_at = $1, deleted_by = $2 WHERE id = $3")
            .bind(now)
            .bind(actor)
            .bind(id)
            .execute(&mut *tx)
            .await
            .ctx("delete the webhook")?;
        let dropped = sqlx::query(
            "UPDATE webhook_deliveries SET failed_at = $1, last_error = 'the webhook was deleted' \
             WHERE webhook_id = $2 AND delivered_at IS NULL AND failed_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .ctx("drop the webhook's deliveries")?
        .rows_affected();
        tx.commit(
            actor,
            "webhook-delete",
            id,
            json!({"url": hook.url, "undelivered": dropped}),
            "commit the deletion",
        )
        .await?;
        Ok(hook)
    }
}

fn webhook_row(r: &sqlx::any::AnyRow) -> Result<Webhook, Error> {
    let secret: String = r.try_get(2).ctx("read a webhook")?;
    let events: String = r.try_get(3).ctx("read a webhook")?;
    Ok(Webhook {
        id: r.try_get(0).ctx("read a webhook")?,
        url: r.try_get(1).ctx("read a webhook")?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        secret_hint: hint(&secret),
        created_at: rfc3339(r.try_get(4).ctx("read a webhook")?),
        created_by: r.try_get(5).ctx("read a webhook")?,
    })
}

/// Queues `event` for every webhook that takes it, in the caller's
/// transaction: `payload`'s fields plus `event`, `delivery` (the row's id)
/// and `at`. Answers how many deliveries were queued.
pub(crate) async fn enqueue(
    conn: &mut AnyConnection,
    now: i64,
    event: &str,
    payload: Value,
) -> Result<usize, Error> {
    let hooks = sqlx::query("SELECT id, events FROM webhooks WHERE deleted_at IS NULL")
        .fetch_all(&mut *conn)
        .await
        .ctx("read the webhooks")?;
    let mut queued = 0;
    for h in hooks {
        let id: String = h.try_get(0).ctx("read the webhooks")?;
        let events: String = h.try_get(1).ctx("read the webhooks")?;
        let events: Vec<String> = serde_json::from_str(&events).unwrap_or_default();
        if !events.iter().any(|e| e == event) {
            continue;
        }
        let delivery = secrets::random_hex(16)?;
        let mut body = json!({"event": event, "delivery": delivery, "at": rfc3339(now)});
        if let (Some(b), Value::Object(p)) = (body.as_object_mut(), payload.clone()) {
            b.extend(p);
        }
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, event, body, created_at, attempts, last_error) \
             VALUES ($1, $2, $3, $4, $5, 0, '')",
        )
        .bind(&delivery)
        .bind(&id)
        .bind(event)
        .bind(body.to_string())
        .bind(now)
        .execute(&mut *conn)
        .await
        .ctx("queue a webhook delivery")?;
        queued += 1;
    }
    Ok(queued)
}

/// A host as events describe it.
pub(crate) fn host_json(
    id: &str,
    hostname: &str,
    feed: &str,
    release: &str,
    build_id: &str,
) -> Value {
    json!({"id": id, "hostname": hostname, "feed": feed, "kernel_release": release, "build_id": build_id})
}

impl Context {
    /// Queues `crash-guard-skip` for the levels of `skipped` that host
    /// `token_hash` had not reported before (read before its check-in is
    /// recorded: `before`).
    pub async fn notify_crash_guard(
        &self,
        before: &SkippedBefore,
        skipped: &[u32],
    ) -> Result<(), Error> {
        let new: Vec<u32> = skipped
            .iter()
            .copied()
            .filter(|l| !before.skipped.contains(l))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write().await?;
        let now = self.clock.now();
        let payload = json!({
            "host": host_json(&before.id, &before.hostname, &before.feed, &before.release, &before.build_id),
            "levels": new,
            "skipped": skipped,
        });
        enqueue(&mut tx, now, CRASH_GUARD_SKIP, payload).await?;
        tx.commit().await.ctx("queue the crash guard's event")?;
        self.webhook_wake.notify_one();
        Ok(())
    }

    /// What a host had reported as skipped before this check-in, for
    /// [`Context::notify_crash_guard`]; `None` for an unknown token.
    pub async fn skipped_before(&self, token: &str) -> Result<Option<SkippedBefore>, Error> {
        let row = sqlx::query(
            "SELECT id, hostname, feed, kernel_release, build_id, skipped FROM hosts \
             WHERE token_hash = $1 AND retired_at IS NULL",
        )
        .bind(secrets::hash(token))
        .fetch_optional(self.db.pool())
        .await
        .ctx("read the host's skipped levels")?;
        let Some(r) = row else { return Ok(None) };
        let skipped: String = r.try_get(5).ctx("read the host")?;
        Ok(Some(SkippedBefore {
            id: r.try_get(0).ctx("read the host")?,
            hostname: r.try_get(1).ctx("read the host")?,
            feed: r.try_get(2).ctx("read the host")?,
            release: r.try_get(3).ctx("read the host")?,
            build_id: r.try_get(4).ctx("read the host")?,
            skipped: serde_json::from_str(&skipped).unwrap_or_default(),
        }))
    }

    /// Compares the hosts breaching `policy` now with those known to, and
    /// queues `policy-breach` for each that crossed into breach and
    /// `policy-breach-resolved` for each that crossed back (a host that
    /// was retired meanwhile is forgotten quietly). Answers (crossed in,
    /// crossed back).
    pub async fn sweep_policy(&self, policy: Policy) -> Result<(usize, usize), Error> {
        let (fixes, counts) =
            tokio::try_join!(self.fixes(), self.fleet_counts(policy.stale_hours))?;
        let now = self.clock.now();
        let mut late: BTreeMap<(String, i64), (Vec<String>, i64)> = BTreeMap::new();
        for g in &counts.groups {
            let cves = fixes.late_cves(&g.build_id, g.level, now, policy);
            if !cves.is_empty() {
                let days = cves.iter().map(|c| c.1).max().unwrap_or(0);
                late.insert(
                    (g.build_id.clone(), g.level),
                    (cves.into_iter().map(|c| c.0).collect(), days),
                );
            }
        }
        // Read first: most sweeps find nothing changed and need no write.
        {
            let mut conn = self
                .db
                .pool()
                .acquire()
                .await
                .ctx("connect to the database")?;
            let (breaching, known) = breach_sets(&mut conn, &late).await?;
            if breaching.keys().eq(known.iter()) {
                return Ok((0, 0));
            }
        }
        // One writer at a time: two processes sweeping at once must not
        // both notify the same crossing.
        let mut tx = self.db.begin_write().await?;
        let (breaching, known) = breach_sets(&mut tx, &late).await?;
        let mut crossed = (0, 0);
        for (id, (host, level, cves, days)) in &breaching {
            if known.contains(id) {
                continue;
            }
            sqlx::query("INSERT INTO policy_breaches (host_id, since) VALUES ($1, $2)")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .ctx("record a breach")?;
            let payload = json!({"host": host, "applied_level": level, "policy_days": policy.policy_days,
                "cves": cves, "max_days_exposed": days});
            enqueue(&mut tx, now, POLICY_BREACH, payload).await?;
            crossed.0 += 1;
        }
        for id in known.iter().filter(|id| !breaching.contains_key(*id)) {
            sqlx::query("DELETE FROM policy_breaches WHERE host_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .ctx("forget a breach")?;
            let row = sqlx::query(
                "SELECT hostname, feed, kernel_release, build_id, level FROM hosts \
                 WHERE id = $1 AND retired_at IS NULL",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .ctx("read a host")?;
            if let Some(r) = row {
                let host = host_json(
                    id,
                    &r.try_get::<String, _>(0).ctx("read a host")?,
                    &r.try_get::<String, _>(1).ctx("read a host")?,
                    &r.try_get::<String, _>(2).ctx("read a host")?,
                    &r.try_get::<String, _>(3).ctx("read a host")?,
                );
                let level: i64 = r.try_get(4).ctx("read a host")?;
                let payload = json!({"host": host, "applied_level": level, "policy_days": policy.policy_days});
                enqueue(&mut tx, now, POLICY_BREACH_RESOLVED, payload).await?;
                crossed.1 += 1;
            }
        }
        tx.commit().await.ctx("commit the policy sweep")?;
        if crossed != (0, 0) {
            self.webhook_wake.notify_one();
        }
        Ok(crossed)
    }
}

/// A breaching host: its description, level, late CVEs and longest days.
type Breach = (Value, i64, Vec<String>, i64);

/// The active hosts on the (build-id, level) groups of `late`, and the
/// hosts `policy_breaches` knows.
async fn breach_sets(
    conn: &mut AnyConnection,
    late: &BTreeMap<(String, i64), (Vec<String>, i64)>,
) -> Result<(BTreeMap<String, Breach>, BTreeSet<String>), Error> {
    let mut breaching = BTreeMap::new();
    for ((build_id, level), (cves, days)) in late {
        let rows = sqlx::query(
            "SELECT id, hostname, feed, kernel_release FROM hosts \
             WHERE retired_at IS NULL AND build_id = $1 AND level = $2",
        )
        .bind(build_id)
        .bind(level)
        .fetch_all(&mut *conn)
        .await
        .ctx("read the breaching hosts")?;
        for r in rows {
            let id: String = r.try_get(0).ctx("read a host")?;
            let host = host_json(
                &id,
                &r.try_get::<String, _>(1).ctx("read a host")?,
                &r.try_get::<String, _>(2).ctx("read a host")?,
                &r.try_get::<String, _>(3).ctx("read a host")?,
                build_id,
            );
            breaching.insert(id, (host, *level, cves.clone(), *days));
        }
    }
    let known: BTreeSet<String> = sqlx::query("SELECT host_id FROM policy_breaches")
        .fetch_all(&mut *conn)
        .await
        .ctx("read the known breaches")?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .ctx("read the known breaches")?;
    Ok((breaching, known))
}

/// A host's skipped levels before a check-in.
#[derive(Debug, Clone)]
pub struct SkippedBefore {
    id: String,
    hostname: String,
    feed: String,
    release: String,
    build_id: String,
    skipped: Vec<u32>,
}

/// Starts the delivery task (and the policy sweep) on the current tokio
/// runtime: it looks at the outbox when `ctx.webhook_wake` is notified
/// (after deliveries are queued) and every `settings.poll`.
pub fn start(ctx: Context, settings: DeliverySettings, policy: Policy) {
    let wake = ctx.webhook_wake.clone();
    tokio::spawn(run(ctx, settings, policy, wake));
}

async fn run(ctx: Context, settings: DeliverySettings, policy: Policy, wake: Arc<Notify>) {
    let client = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("noreboot-server/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("webhooks: no HTTP client ({e}): nothing is delivered");
            return;
        }
    };
    // The first sweep after one interval, not at start; the outbox at
    // once (what an earlier run left).
    let mut sweep =
        tokio::time::interval_at(tokio::time::Instant::now() + settings.poll, settings.poll);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        match claim_due(&ctx, settings.hold_seconds(1)).await {
            Ok(ids) => {
                for id in ids {
                    tokio::spawn(deliver(ctx.clone(), client.clone(), settings, id));
                }
            }
            Err(e) => tracing::warn!("webhooks: reading the outbox failed: {e}"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = sweep.tick() => {
                if let Err(e) = ctx.sweep_policy(policy).await {
                    tracing::warn!("webhooks: the policy sweep failed: {e}");
                }
            }
        }
    }
}

/// The open deliveries no live process holds, each now leased to this
/// one (oldest first, 64 at most per look).
async fn claim_due(ctx: &Context, lease: i64) -> Result<Vec<String>, Error> {
    let now = ctx.clock.now();
    let ids: Vec<String> = sqlx::query(
        "SELECT id FROM webhook_deliveries WHERE delivered_at IS NULL AND failed_at IS NULL \
         AND (lease_until IS NULL OR lease_until <= $1) ORDER BY created_at, id LIMIT 64",
    )
    .bind(now)
    .fetch_all(ctx.db.pool())
    .await
    .ctx("read the outbox")?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()
    .ctx("read the outbox")?;
    let mut claimed = Vec::with_capacity(ids.len());
    for id in ids {
        let got = sqlx::query(
            "UPDATE webhook_deliveries SET lease_until = $1 WHERE id = $2 \
             AND delivered_at IS NULL AND failed_at IS NULL \
             AND (lease_until IS NULL OR lease_until <= $3)",
        )
        .bind(now + lease)
        .bind(&id)
        .bind(now)
        .execute(ctx.db.pool())
        .await
        .ctx("claim a delivery")?
        .rows_affected();
        if got == 1 {
            claimed.push(id);
        }
    }
    Ok(claimed)
}

/// Attempts one delivery until it is delivered or given up; each attempt
/// is recorded, the end audited.
async fn deliver(ctx: Context, client: reqwest::Client, settings: DeliverySettings, id: String) {
    if let Err(e) = attempts(&ctx, &client, settings, &id).await {
        tracing::warn!("webhooks: delivery {id}: {e}");
    }
}

async fn attempts(
    ctx: &Context,
    client: &reqwest::Client,
    settings: DeliverySettings,
    id: &str,
) -> Result<(), Error> {
    let row = sqlx::query(
        "SELECT d.event, d.body, d.attempts, w.id, w.url, w.secret FROM webhook_deliveries d \
         JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = $1",
    )
    .bind(id)
    .fetch_one(ctx.db.pool())
    .await
    .ctx("read a delivery")?;
    let event: String = row.try_get(0).ctx("read a delivery")?;
    let body: String = row.try_get(1).ctx("read a delivery")?;
    let mut done: i64 = row.try_get(2).ctx("read a delivery")?;
    let hook: String = row.try_get(3).ctx("read a delivery")?;
    let url: String = row.try_get(4).ctx("read a delivery")?;
    let secret: String = row.try_get(5).ctx("read a delivery")?;
    loop {
        done += 1;
        let t = ctx.clock.now();
        // Held for this attempt and the wait after it only: a process
        // that dies mid-delivery leaves it to another soon.
        sqlx::query("UPDATE webhook_deliveries SET lease_until = $1 WHERE id = $2")
            .bind(t + settings.hold_seconds(done as u32))
            .bind(id)
            .execute(ctx.db.pool())
            .await
            .ctx("hold a delivery")?;
        let sent = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, &event)
            .header(DELIVERY_HEADER, id)
            .header(SIGNATURE_HEADER, signature(&secret, t, body.as_bytes()))
            .body(body.clone())
            .send()
            .await;
        let outcome = match sent {
            Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
            Ok(r) => Err(format!("the receiver answered {}", r.status())),
            Err(e) => Err(describe(&e)),
        };
        let detail = json!({"delivery": id, "event": event, "url": url, "attempts": done});
        match outcome {
            Ok(status) => {
                let mut tx = ctx.begin_audited().await?;
                sqlx::query(
                    "UPDATE webhook_deliveries SET attempts = $1, delivered_at = $2, lease_until = NULL \
                     WHERE id = $3",
                )
                .bind(done)
                .bind(tx.now())
                .bind(id)
                .execute(&mut *tx)
                .await
                .ctx("record a delivery")?;
                let mut detail = detail;
                detail["status"] = json!(status);
                return tx
                    .commit(
                        SERVER_ACTOR,
                        "webhook-delivered",
                        &hook,
                        detail,
                        "commit the delivery",
                    )
                    .await;
            }
            Err(why) if done >= i64::from(settings.attempts) => {
                let mut tx = ctx.begin_audited().await?;
                sqlx::query(
                    "UPDATE webhook_deliveries SET attempts = $1, failed_at = $2, last_error = $3, \
                     lease_until = NULL WHERE id = $4",
                )
                .bind(done)
                .bind(tx.now())
                .bind(&why)
                .bind(id)
                .execute(&mut *tx)
                .await
                .ctx("record a failed delivery")?;
                let mut detail = detail;
                detail["error"] = json!(why);
                return tx
                    .commit(
                        SERVER_ACTOR,
                        "webhook-failed",
                        &hook,
                        detail,
                        "commit the failure",
                    )
                    .await;
            }
            Err(why) => {
                tracing::info!("webhooks: delivery {id} attempt {done} failed: {why}");
                sqlx::query(
                    "UPDATE webhook_deliveries SET attempts = $1, last_error = $2 WHERE id = $3",
                )
                .bind(done)
                .bind(&why)
                .bind(id)
                .execute(ctx.db.pool())
                .await
                .ctx("record an attempt")?;
                tokio::time::sleep(settings.backoff_after(done as u32)).await;
            }
        }
    }
}

/// An attempt's failure, with its causes (reqwest's own message is
/// "error sending request" alone).
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let s = DeliverySettings {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            ..DeliverySettings::default()
        };
        let waits: Vec<u128> = (1..=5).map(|n| s.backoff_after(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }
}
