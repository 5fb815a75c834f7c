//! Which level a feed serves for one kernel build at a given time: the
//! rule the whole distribution rests on, kept free of I/O so it can be
//! tested exhaustively. A pin serves its level; a hold serves the level
//! that was served when it was set; otherwise the newest level released
//! to the feed, not withdrawn by a rollback, and past the feed's delay.

/// A level released to a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// The level.
    pub level: i64,
    /// When it was published on the server.
    pub published_at: i64,
    /// When it was released (published or promoted) to the feed.
    pub released_at: i64,
    /// Whether a rollback withdrew it from the feed.
    pub withdrawn: bool,
}

/// A pin or hold set on a feed for one kernel build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    /// Exactly this level.
    Pin(i64),
    /// The level served when the hold was set (`None`: none).
    Hold(Option<i64>),
}

/// When a release becomes visible on a feed with `delay_hours`: never
/// before it was released to the feed, and a delayed feed waits
/// `delay_hours` after publication.
pub fn available_at(r: &Release, delay_hours: i64) -> i64 {
    let delayed = r
        .published_at
        .saturating_add(delay_hours.saturating_mul(3600));
    r.released_at.max(delayed)
}

/// The level served at `now`, if any.
pub fn resolve(
    releases: &[Release],
    over: Option<Override>,
    delay_hours: i64,
    now: i64,
) -> Option<i64> {
    match over {
        Some(Override::Pin(l)) => Some(l),
        Some(Override::Hold(l)) => l,
        None => releases
            .iter()
            .filter(|r| !r.withdrawn && available_at(r, delay_hours) <= now)
            .map(|r| r.level)
            .max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(level: i64, published_at: i64, released_at: i64) -> Release {
        Release {
            level,
            published_at,
            released_at,
            withdrawn: false,
        }
    }

    #[test]
    fn newest_released_level_wins() {
        let r = [rel(1, 0, 0), rel(3, 10, 10), rel(2, 5, 5)];
        assert_eq!(resolve(&r, None, 0, 100), Some(3));
        assert_eq!(resolve(&r, None, 0, 7), Some(2));
        assert_eq!(resolve(&[], None, 0, 100), None);
    }

    #[test]
    fn delay_counts_from_publication_but_not_before_release() {
        let r = [rel(1, 0, 0)];
        assert_eq!(resolve(&r, None, 2, 2 * 3600 - 1), None);
        assert_eq!(resolve(&r, None, 2, 2 * 3600), Some(1));
        // Promoted to the delayed feed long after publication: visible at once.
        let late = [rel(1, 0, 10 * 3600)];
        assert_eq!(available_at(&late[0], 2), 10 * 3600);
    }

    #[test]
    fn withdrawn_levels_are_skipped() {
        let mut r = [rel(1, 0, 0), rel(2, 1, 1)];
        r[1].withdrawn = true;
        assert_eq!(resolve(&r, None, 0, 100), Some(1));
    }

    #[test]
    fn pin_and_hold_override() {
        let r = [rel(1, 0, 0), rel(2, 1, 1)];
        assert_eq!(resolve(&r, Some(Override::Pin(1)), 0, 100), Some(1));
        assert_eq!(resolve(&r, Some(Override::Hold(None)), 0, 100), None);
        assert_eq!(resolve(&r, Some(Override::Hold(Some(1))), 0, 100), Some(1));
    }
}
