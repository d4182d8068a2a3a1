//! How far above `--limit-max-memory` a worker is, and so what the supervisor does with it.
//!
//! Just over the limit, a worker is replaced the way a rolling restart replaces it: it
//! serves on until its replacement is ready, so no capacity is lost. That alone let a
//! worker grow without bound when replacements are slow to get ready (issue 25: 1.3 GiB
//! with a 200 MiB limit, both workers over at once with `--max-surge 1`), so two more
//! levels bound it:
//!
//! - far over ([`DRAIN_AT_ONCE`] times the limit), it drains at once when another worker
//!   still serves: that worker takes the traffic until the replacement is ready;
//! - at the ceiling ([`KILL_AT`] times the limit), it is killed, draining or not: the
//!   connections in flight on it are cut, as the kernel's OOM killer would cut them, but the
//!   machine keeps its memory and the shared socket keeps every queued connection for the
//!   other workers.
//!
//! Decisions only: the observer reads RSS, the machine acts on the level.

/// Far over the limit: drain at once if another worker serves (times the limit, in tenths).
pub(crate) const DRAIN_AT_ONCE: Ratio = Ratio { tenths: 12 };
/// The ceiling: kill (times the limit, in tenths). Sampled every 250 ms, so a worker can
/// pass it by what it allocates in that time before it is seen.
pub(crate) const KILL_AT: Ratio = Ratio { tenths: 14 };

/// A multiple of the limit, in tenths (integer arithmetic on byte counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ratio {
    tenths: u64,
}

impl Ratio {
    /// `limit` times this ratio, in bytes.
    pub(crate) fn of(self, limit: u64) -> u64 {
        limit.saturating_mul(self.tenths) / 10
    }
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}x", self.tenths / 10, self.tenths % 10)
    }
}

/// Where a worker's memory is relative to the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum MemoryLevel {
    /// At or below the limit: nothing to do.
    Within,
    /// Above the limit: replace it once a replacement is ready.
    Over,
    /// Above [`DRAIN_AT_ONCE`]: drain it now if another worker serves.
    FarOver,
    /// Above [`KILL_AT`]: kill it.
    AtCeiling,
}

impl MemoryLevel {
    /// The level of a worker using `rss_bytes` under a limit of `limit_bytes`.
    pub(crate) fn of(rss_bytes: u64, limit_bytes: u64) -> Self {
        if rss_bytes > KILL_AT.of(limit_bytes) {
            MemoryLevel::AtCeiling
        } else if rss_bytes > DRAIN_AT_ONCE.of(limit_bytes) {
            MemoryLevel::FarOver
        } else if rss_bytes > limit_bytes {
            MemoryLevel::Over
        } else {
            MemoryLevel::Within
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn levels_follow_the_limit_and_its_multiples() {
        let limit = 200 * MIB;
        assert_eq!(MemoryLevel::of(150 * MIB, limit), MemoryLevel::Within);
        assert_eq!(MemoryLevel::of(200 * MIB, limit), MemoryLevel::Within);
        assert_eq!(MemoryLevel::of(201 * MIB, limit), MemoryLevel::Over);
        assert_eq!(MemoryLevel::of(240 * MIB, limit), MemoryLevel::Over);
        assert_eq!(MemoryLevel::of(241 * MIB, limit), MemoryLevel::FarOver);
        assert_eq!(MemoryLevel::of(280 * MIB, limit), MemoryLevel::FarOver);
        assert_eq!(MemoryLevel::of(281 * MIB, limit), MemoryLevel::AtCeiling);
        assert_eq!(KILL_AT.to_string(), "1.4x");
    }
}
