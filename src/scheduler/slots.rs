//! Slot arithmetic. A site's slots are aligned to absolute time: slot `k` is
//! at `k * interval + offset` milliseconds since the Unix epoch, where the
//! offset is a stable hash of the site name modulo the interval. So load
//! spreads evenly across the interval, and a slot's identity does not depend
//! on when the process started.

use chrono::{DateTime, TimeZone, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub interval_ms: i64,
    pub offset_ms: i64,
}

impl Cadence {
    pub fn new(site: &str, interval: std::time::Duration) -> Cadence {
        let interval_ms = (interval.as_millis() as i64).max(1);
        Cadence {
            interval_ms,
            offset_ms: (stable_hash(site) % interval_ms as u64) as i64,
        }
    }

    /// The first slot at or after `t`.
    pub fn first_at_or_after(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let ms = t.timestamp_millis() - self.offset_ms;
        let k = ms.div_euclid(self.interval_ms) + i64::from(ms.rem_euclid(self.interval_ms) != 0);
        at(k * self.interval_ms + self.offset_ms)
    }

    /// The last slot at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let ms = t.timestamp_millis() - self.offset_ms;
        at(ms.div_euclid(self.interval_ms) * self.interval_ms + self.offset_ms)
    }

    pub fn next(&self, slot: DateTime<Utc>) -> DateTime<Utc> {
        at(slot.timestamp_millis() + self.interval_ms)
    }

    /// Slots in `[from, to)`: how many, and the first one.
    pub fn count_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> (i64, DateTime<Utc>) {
        let first = self.first_at_or_after(from);
        if first >= to {
            return (0, first);
        }
        let n = (to.timestamp_millis() - first.timestamp_millis() - 1) / self.interval_ms + 1;
        (n, first)
    }
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .expect("slot within chrono's range")
}

/// FNV-1a: stable across builds and platforms (std's hasher is not).
pub(crate) fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(ms: i64) -> DateTime<Utc> {
        at(ms)
    }

    #[test]
    fn slots_are_aligned_and_offset_is_stable() {
        let c = Cadence::new("shop", Duration::from_secs(30));
        assert_eq!(c, Cadence::new("shop", Duration::from_secs(30)));
        assert!((0..30_000).contains(&c.offset_ms));
        let s = c.first_at_or_after(t(1_000_000_000_123));
        assert_eq!((s.timestamp_millis() - c.offset_ms) % 30_000, 0);
        assert!(s >= t(1_000_000_000_123) && s < t(1_000_000_030_123));
        // A slot is its own first-at-or-after and last-at-or-before.
        assert_eq!(c.first_at_or_after(s), s);
        assert_eq!(c.last_at_or_before(s), s);
        assert_eq!(
            c.last_at_or_before(c.next(s) - chrono::Duration::milliseconds(1)),
            s
        );
    }

    #[test]
    fn offsets_spread_sites_over_the_interval() {
        let interval = Duration::from_secs(60);
        let mut buckets = [0u32; 6];
        for i in 0..6000 {
            let c = Cadence::new(&format!("site-{i}"), interval);
            buckets[(c.offset_ms / 10_000) as usize] += 1;
        }
        for b in buckets {
            assert!((800..1200).contains(&b), "uneven spread: {buckets:?}");
        }
    }

    #[test]
    fn counting_slots_in_a_range() {
        let c = Cadence {
            interval_ms: 10,
            offset_ms: 3,
        };
        assert_eq!(c.count_between(t(0), t(3)), (0, t(3)));
        assert_eq!(c.count_between(t(0), t(4)), (1, t(3)));
        assert_eq!(c.count_between(t(3), t(33)), (3, t(3)));
        assert_eq!(c.count_between(t(4), t(34)), (3, t(13)));
    }
}
