//! Limits on registrations per source address and minute, so a leaked or
//! guessed registration key cannot flood the host table and keys cannot be
//! brute-forced, without one misconfigured client locking out a whole site
//! behind one NAT address: failures are counted per address and key
//! presented (a client retrying a wrong key blocks only itself), failures
//! with any key per address at a higher bound (guessing many keys), and
//! successes per address at a much higher one (a site enrolling hundreds
//! of hosts at once). The dashboard limits failed sign-ins per address
//! with a plain [`RateLimiter`]. Fixed one-minute windows in memory: each
//! server replica limits on its own, which is enough for the purpose.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

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
            return Err(60 - now.rem_euclid(60) as u64);
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

/// Longest part of a presented registration key used to tell keys apart
/// (real keys are shorter; a huge invented one must not grow memory).
const KEY_PREFIX: usize = 128;

/// The registration limits, all derived from one setting: failures per
/// address and key `per_minute`, failures per address 4×, successes per
/// address 20×.
#[derive(Debug)]
pub struct RegisterLimits {
    failures_by_key: RateLimiter<(IpAddr, String)>,
    failures: RateLimiter<IpAddr>,
    successes: RateLimiter<IpAddr>,
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
/// concurrent attempts cannot all slip under a limit before one counts.
#[derive(Debug)]
pub struct Attempt {
    ip: IpAddr,
    key: String,
    now: i64,
}

impl RegisterLimits {
    /// Limits for `per_minute` (0: none).
    pub fn new(per_minute: u32) -> Self {
        Self {
            failures_by_key: RateLimiter::new(per_minute),
            failures: RateLimiter::new(per_minute.saturating_mul(4)),
            successes: RateLimiter::new(per_minute.saturating_mul(20)),
        }
    }

    /// Starts an attempt from `ip` presenting `key` at `now`, or refuses
    /// it when a limit it could reach is used up.
    pub fn start(&self, ip: IpAddr, key: &str, now: i64) -> Result<Attempt, Refusal> {
        let mut end = KEY_PREFIX.min(key.len());
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        let a = Attempt {
            ip,
            key: key[..end].to_string(),
            now,
        };
        let by_key = (ip, a.key.clone());
        self.failures_by_key
            .take(&by_key, now)
            .map_err(Refusal::Failures)?;
        if let Err(retry) = self.failures.take(&ip, now) {
            self.failures_by_key.refund(&by_key, now);
            return Err(Refusal::Failures(retry));
        }
        if let Err(retry) = self.successes.take(&ip, now) {
            self.failures_by_key.refund(&by_key, now);
            self.failures.refund(&ip, now);
            return Err(Refusal::Successes(retry));
        }
        Ok(a)
    }

    /// The attempt registered a host: its failure allowances come back.
    pub fn succeeded(&self, a: Attempt) {
        self.failures_by_key.refund(&(a.ip, a.key), a.now);
        self.failures.refund(&a.ip, a.now);
    }

    /// The attempt failed: its registration allowance comes back.
    pub fn failed(&self, a: Attempt) {
        self.successes.refund(&a.ip, a.now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn one_bad_client_does_not_lock_out_its_address() {
        let l = RegisterLimits::new(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        // A client retrying a wrong key: blocked after 3.
        for _ in 0..3 {
            l.failed(l.start(ip, "nrk_wrong", 0).unwrap());
        }
        assert_eq!(
            l.start(ip, "nrk_wrong", 1).unwrap_err(),
            Refusal::Failures(59)
        );
        // The site's other hosts, with the right key, register: 50 of them.
        for _ in 0..50 {
            l.succeeded(l.start(ip, "nrk_good", 2).unwrap());
        }
        // Guessing many keys from the address: capped at 4x in all.
        let mut refused = 0;
        for i in 0..20 {
            match l.start(ip, &format!("nrk_guess{i}"), 3) {
                Ok(a) => l.failed(a),
                Err(_) => refused += 1,
            }
        }
        assert_eq!(
            refused,
            20 - (12 - 3),
            "the address may fail 12 times a minute"
        );
        // 20x registrations per address and minute, refused before the
        // attempt (no host is made that its agent never hears of).
        let l = RegisterLimits::new(1);
        for _ in 0..20 {
            l.succeeded(l.start(ip, "k", 5).unwrap());
        }
        assert_eq!(l.start(ip, "k", 6).unwrap_err(), Refusal::Successes(54));
        // Attempts in flight hold their allowance.
        let l = RegisterLimits::new(2);
        let (a, b) = (l.start(ip, "x", 0).unwrap(), l.start(ip, "x", 0).unwrap());
        assert!(l.start(ip, "x", 0).is_err());
        l.succeeded(a);
        l.failed(b);
        assert!(l.start(ip, "x", 0).is_ok());
    }
}
