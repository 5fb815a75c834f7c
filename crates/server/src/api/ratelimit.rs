//! Limits on registrations per source address and minute, so a leaked or
//! guessed registration key cannot flood the host table and keys cannot be
//! brute-forced, without one misconfigured client locking out a whole site
//! behind one NAT address: failures are counted per address and key
//! presented (a client retrying a wrong key blocks only itself), failures
//! with any key per address at a higher bound (guessing many keys), and
//! successes per address at a much higher one (a site enrolling hundreds
//! of hosts at once). The dashboard limits failed sign-ins per address
//! with one [`Limit`].
//!
//! Fixed one-minute windows. On SQLite (one server process) the counts
//! are in memory ([`RateLimiter`]); on PostgreSQL, where several server
//! processes share the database behind a load balancer, they are rows of
//! `rate_limits`, taken and given back by single-statement upserts, so a
//! client spreading its attempts over N processes gets the allowance of
//! one, not N.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use crate::blobs::sha256_hex;
use crate::db::Db;
use crate::error::{DbContext, Error};

/// Counts per key in the current minute.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_minute: u32,
    state: Mutex<Window<K>>,
}

#[derive(Debug)]
struct Window<K> {
    minute: i64,
    counts: HashMap<K, u32>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// At most `per_minute` per key and minute (0: no limit).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            state: Mutex::new(Window {
                minute: i64::MIN,
                counts: HashMap::new(),
            }),
        }
    }

    /// Takes one from `key`'s allowance at `now` (Unix seconds); `Err`
    /// holds the seconds until the next window when none is left.
    pub fn take(&self, key: &K, now: i64) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        // A poisoned lock only means another request panicked mid-count;
        // the counts are still usable.
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let minute = now.div_euclid(60);
        if w.minute != minute {
            w.minute = minute;
            w.counts.clear();
        }
        let n = w.counts.entry(key.clone()).or_insert(0);
        if *n >= self.per_minute {
            return Err(retry_after(now));
        }
        *n += 1;
        Ok(())
    }

    /// Gives back one taken at `now` (in the same window).
    pub fn refund(&self, key: &K, now: i64) {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if w.minute == now.div_euclid(60) {
            if let Some(n) = w.counts.get_mut(key) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// One limit: at most `per_minute` per subject (an address, or an address
/// and key) and minute, counted in memory or in the database.
#[derive(Debug)]
pub struct Limit {
    /// Its name in `rate_limits`.
    name: &'static str,
    per_minute: u32,
    counts: Counts,
}

#[derive(Debug)]
enum Counts {
    /// This process's own counts.
    Memory(RateLimiter<String>),
    /// Rows of `rate_limits`, shared by every process on the database.
    Shared {
        db: Db,
        /// The window whose predecessors this process last deleted.
        swept: AtomicI64,
    },
}

/// Seconds until the window after the one `now` is in.
fn retry_after(now: i64) -> u64 {
    60 - now.rem_euclid(60) as u64
}

impl Limit {
    /// `per_minute` (0: no limit) per subject, named `name`; counted in
    /// `shared`'s `rate_limits` when given, else in this process.
    pub fn new(name: &'static str, per_minute: u32, shared: Option<Db>) -> Self {
        let counts = match shared {
            Some(db) => Counts::Shared {
                db,
                swept: AtomicI64::new(i64::MIN),
            },
            None => Counts::Memory(RateLimiter::new(per_minute)),
        };
        Self {
            name,
            per_minute,
            counts,
        }
    }

    /// Takes one from `subject`'s allowance at `now` (Unix seconds); the
    /// inner `Err` holds the seconds until the next window when none is
    /// left. The outer error: the database failed.
    pub async fn take(&self, subject: &str, now: i64) -> Result<Result<(), u64>, Error> {
        if self.per_minute == 0 {
            return Ok(Ok(()));
        }
        let (db, swept) = match &self.counts {
            Counts::Memory(l) => return Ok(l.take(&subject.to_string(), now)),
            Counts::Shared { db, swept } => (db, swept),
        };
        let minute = now.div_euclid(60);
        // Past windows count for nothing: whichever process first sees a
        // new window deletes them (each process at most once a minute).
        if swept.swap(minute, Ordering::Relaxed) < minute {
            sqlx::query("DELETE FROM rate_limits WHERE minute < $1")
                .bind(minute)
                .execute(db.pool())
                .await
                .ctx("delete past rate limit windows")?;
        }
        // One statement: concurrent takes from any process are counted one
        // after the other by the row lock, and none passes a full window.
        let row = sqlx::query(
            "INSERT INTO rate_limits (name, subject, minute, used) VALUES ($1, $2, $3, 1) \
             ON CONFLICT (name, subject, minute) DO UPDATE SET used = rate_limits.used + 1 \
             WHERE rate_limits.used < $4 RETURNING used",
        )
        .bind(self.name)
        .bind(subject)
        .bind(minute)
        .bind(i64::from(self.per_minute))
        .fetch_optional(db.pool())
        .await
        .ctx("count against a rate limit")?;
        // No row back: the upsert's WHERE found the window used up.
        Ok(match row {
            Some(_) => Ok(()),
            None => Err(retry_after(now)),
        })
    }

    /// Gives back one taken at `now` (in the same window). A failure is
    /// logged, not returned: the allowance stays used until the window
    /// ends, which errs on the side of the limit.
    pub async fn refund(&self, subject: &str, now: i64) {
        if self.per_minute == 0 {
            return;
        }
        let db = match &self.counts {
            Counts::Memory(l) => return l.refund(&subject.to_string(), now),
            Counts::Shared { db, .. } => db,
        };
        let done = sqlx::query(
            "UPDATE rate_limits SET used = used - 1 \
             WHERE name = $1 AND subject = $2 AND minute = $3 AND used > 0",
        )
        .bind(self.name)
        .bind(subject)
        .bind(now.div_euclid(60))
        .execute(db.pool())
        .await;
        if let Err(e) = done {
            tracing::warn!(limit = self.name, "giving back a rate limit allowance: {e}");
        }
    }
}

/// Longest part of a presented registration key used to tell keys apart
/// (real keys are shorter; a huge invented one must not grow memory).
const KEY_PREFIX: usize = 128;

/// The registration limits, all derived from one setting: failures per
/// address and key `per_minute`, failures per address 4×, successes per
/// address 20×.
#[derive(Debug)]
pub struct RegisterLimits {
    failures_by_key: Limit,
    failures: Limit,
    successes: Limit,
}

/// Which limit refused an attempt, and when to retry.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failed attempts (with this key, or with any).
    Failures(u64),
    /// Too many registrations.
    Successes(u64),
}

/// An attempt under way: it holds one of each allowance it may use (a
/// failure with its key, a failure of its address, a registration of its
/// address) until its outcome gives back the ones it did not use, so
/// concurrent attempts — on any process, when the counts are shared —
/// cannot all slip under a limit before one counts.
#[derive(Debug)]
pub struct Attempt {
    /// The address.
    ip: String,
    /// The address and a hash of the key presented: the key itself is a
    /// secret, and the counts may be rows of the database.
    by_key: String,
    now: i64,
}

impl RegisterLimits {
    /// Limits for `per_minute` (0: none), counted in `shared`'s database
    /// when given.
    pub fn new(per_minute: u32, shared: Option<Db>) -> Self {
        Self {
            failures_by_key: Limit::new("register-failures-by-key", per_minute, shared.clone()),
            failures: Limit::new(
                "register-failures",
                per_minute.saturating_mul(4),
                shared.clone(),
            ),
            successes: Limit::new("registrations", per_minute.saturating_mul(20), shared),
        }
    }

    /// Starts an attempt from `ip` presenting `key` at `now`, or refuses
    /// it when a limit it could reach is used up.
    pub async fn start(
        &self,
        ip: IpAddr,
        key: &str,
        now: i64,
    ) -> Result<Result<Attempt, Refusal>, Error> {
        let mut end = KEY_PREFIX.min(key.len());
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        let ip = ip.to_string();
        let a = Attempt {
            by_key: format!("{ip} {}", sha256_hex(&key.as_bytes()[..end])),
            ip,
            now,
        };
        if let Err(retry) = self.failures_by_key.take(&a.by_key, now).await? {
            return Ok(Err(Refusal::Failures(retry)));
        }
        match self.failures.take(&a.ip, now).await {
            Ok(Ok(())) => {}
            Ok(Err(retry)) => {
                self.give_back(&a, 1).await;
                return Ok(Err(Refusal::Failures(retry)));
            }
            Err(e) => {
                self.give_back(&a, 1).await;
                return Err(e);
            }
        }
        match self.successes.take(&a.ip, now).await {
            Ok(Ok(())) => {}
            Ok(Err(retry)) => {
                self.give_back(&a, 2).await;
                return Ok(Err(Refusal::Successes(retry)));
            }
            Err(e) => {
                self.give_back(&a, 2).await;
                return Err(e);
            }
        }
        Ok(Ok(a))
    }

    /// Gives back the first `taken` allowances [`RegisterLimits::start`]
    /// took for `a` (failures with its key, then failures of its address).
    async fn give_back(&self, a: &Attempt, taken: usize) {
        if taken >= 1 {
            self.failures_by_key.refund(&a.by_key, a.now).await;
        }
        if taken >= 2 {
            self.failures.refund(&a.ip, a.now).await;
        }
    }

    /// The attempt registered a host: its failure allowances come back.
    pub async fn succeeded(&self, a: Attempt) {
        self.failures_by_key.refund(&a.by_key, a.now).await;
        self.failures.refund(&a.ip, a.now).await;
    }

    /// The attempt failed: its registration allowance comes back.
    pub async fn failed(&self, a: Attempt) {
        self.successes.refund(&a.ip, a.now).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::pg;
    use sqlx::Row;

    #[test]
    fn limits_per_key_and_window() {
        let l = RateLimiter::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(l.take(&a, 60).is_ok());
        assert!(l.take(&a, 61).is_ok());
        assert_eq!(l.take(&a, 90), Err(30));
        l.refund(&a, 91);
        assert!(l.take(&a, 92).is_ok());
        assert!(l.take(&b, 90).is_ok());
        assert!(l.take(&a, 120).is_ok());
        assert!(RateLimiter::new(0).take(&a, 0).is_ok());
    }

    /// The registration limits' rules, on limits counted in `shared` (or
    /// in memory); `second` is another process's limits on the same counts.
    async fn registration_rules(shared: Option<Db>) {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let limits = |n| RegisterLimits::new(n, shared.clone());
        let l = limits(3);
        // A client retrying a wrong key: blocked after 3.
        for _ in 0..3 {
            l.failed(l.start(ip, "nrk_wrong", 0).await.unwrap().unwrap())
                .await;
        }
        assert_eq!(
            l.start(ip, "nrk_wrong", 1).await.unwrap().unwrap_err(),
            Refusal::Failures(59)
        );
        // The site's other hosts, with the right key, register: 50 of them.
        for _ in 0..50 {
            l.succeeded(l.start(ip, "nrk_good", 2).await.unwrap().unwrap())
                .await;
        }
        // Guessing many keys from the address: capped at 4x in all.
        let mut refused = 0;
        for i in 0..20 {
            match l.start(ip, &format!("nrk_guess{i}"), 3).await.unwrap() {
                Ok(a) => l.failed(a).await,
                Err(_) => refused += 1,
            }
        }
        assert_eq!(
            refused,
            20 - (12 - 3),
            "the address may fail 12 times a minute"
        );
        // 20x registrations per address and minute, refused before the
        // attempt (no host is made that its agent never hears of); the
        // next minute starts afresh.
        let l = limits(1);
        for _ in 0..20 {
            l.succeeded(l.start(ip, "k", 65).await.unwrap().unwrap())
                .await;
        }
        assert_eq!(
            l.start(ip, "k", 66).await.unwrap().unwrap_err(),
            Refusal::Successes(54)
        );
        // Attempts in flight hold their allowance.
        let l = limits(2);
        let a = l.start(ip, "x", 120).await.unwrap().unwrap();
        let b = l.start(ip, "x", 120).await.unwrap().unwrap();
        assert!(l.start(ip, "x", 120).await.unwrap().is_err());
        l.succeeded(a).await;
        l.failed(b).await;
        assert!(l.start(ip, "x", 120).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn one_bad_client_does_not_lock_out_its_address() {
        registration_rules(None).await;
    }

    #[tokio::test]
    async fn shared_limits_keep_the_rules() {
        registration_rules(Some(Db::open(&pg::database()).await.unwrap())).await;
    }

    #[tokio::test]
    async fn processes_on_one_database_share_one_allowance() {
        let url = pg::database();
        // Two pools on one database: two server processes.
        let a = RegisterLimits::new(2, Some(Db::open(&url).await.unwrap()));
        let b = RegisterLimits::new(2, Some(Db::open(&url).await.unwrap()));
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        a.failed(a.start(ip, "nrk_wrong", 0).await.unwrap().unwrap())
            .await;
        // In flight on B: it holds the second failure.
        let held = b.start(ip, "nrk_wrong", 1).await.unwrap().unwrap();
        assert_eq!(
            a.start(ip, "nrk_wrong", 2).await.unwrap().unwrap_err(),
            Refusal::Failures(58)
        );
        // It succeeded: the failure comes back, on A too.
        b.succeeded(held).await;
        a.failed(a.start(ip, "nrk_wrong", 3).await.unwrap().unwrap())
            .await;
        assert!(b.start(ip, "nrk_wrong", 4).await.unwrap().is_err());
        // Another address, another key: unaffected.
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        assert!(b.start(other, "nrk_wrong", 4).await.unwrap().is_ok());
        assert!(a.start(ip, "nrk_right", 4).await.unwrap().is_ok());
        // Past windows are deleted when a process enters a new one.
        assert!(a.start(ip, "nrk_wrong", 60).await.unwrap().is_ok());
        let Counts::Shared { db, .. } = &a.successes.counts else {
            unreachable!()
        };
        let old: i64 = sqlx::query("SELECT COUNT(*) FROM rate_limits WHERE minute < 1")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get(0);
        assert_eq!(old, 0);
    }
}
