//! A per-source-address limit on registrations per minute, so a leaked or
//! guessed registration key cannot be used to flood the host table and a
//! key cannot be brute-forced. Fixed one-minute windows in memory: each
//! server replica limits on its own, which is enough for its purpose.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Counts attempts per address in the current minute.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    minute: i64,
    counts: HashMap<IpAddr, u32>,
}

impl RateLimiter {
    /// At most `per_minute` attempts per address and minute (0: no limit).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            state: Mutex::new(Window::default()),
        }
    }

    /// Counts an attempt from `ip` at `now` (Unix seconds); `Err` holds the
    /// seconds until the next window when the address is over its limit.
    pub fn check(&self, ip: IpAddr, now: i64) -> Result<(), u64> {
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
        let n = w.counts.entry(ip).or_insert(0);
        if *n >= self.per_minute {
            return Err(60 - now.rem_euclid(60) as u64);
        }
        *n += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_and_window() {
        let l = RateLimiter::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(l.check(a, 60).is_ok());
        assert!(l.check(a, 61).is_ok());
        assert_eq!(l.check(a, 90), Err(30));
        assert!(l.check(b, 90).is_ok());
        assert!(l.check(a, 120).is_ok());
        assert!(RateLimiter::new(0).check(a, 0).is_ok());
    }
}
