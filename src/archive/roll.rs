//! When archive files are cut: by size (default 128 MiB), by age (default
//! 10 min since the file opened) and by idleness (no reading for its hour
//! for a while), never once per epoch.
//!
//! The spooler (`writer.rs`) keeps one open file per event-time hour and
//! asks [`RollPolicy::reason`] about each after every decided epoch and on
//! a timer. A file is only ever cut once its epochs are decided, so its
//! name `part-{shard}-{first}-{last}` is fixed by its content; a reading for
//! an hour whose file was already cut opens a new file of that hour,
//! starting at a later epoch: an old file is never rewritten.

use std::time::Duration;

/// Roll settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollPolicy {
    pub max_bytes: u64,
    pub max_age: Duration,
    pub idle: Duration,
}

impl RollPolicy {
    /// Why a file of `bytes`, opened at `opened_ms` and last appended to at
    /// `last_append_ms`, is due at `now_ms` (`None`: not due).
    pub fn reason(&self, bytes: u64, opened_ms: i64, last_append_ms: i64, now_ms: i64) -> Option<Reason> {
        if bytes >= self.max_bytes {
            Some(Reason::Size)
        } else if now_ms - opened_ms >= self.max_age.as_millis() as i64 {
            Some(Reason::Age)
        } else if now_ms - last_append_ms >= self.idle.as_millis() as i64 {
            Some(Reason::Idle)
        } else {
            None
        }
    }
}

impl Default for RollPolicy {
    fn default() -> Self {
        RollPolicy { max_bytes: 128 << 20, max_age: Duration::from_secs(600), idle: Duration::from_secs(120) }
    }
}

/// Why a file was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Size,
    Age,
    Idle,
    /// Shutdown or an explicit flush.
    Flush,
    /// The spool reached its disk bound.
    SpoolFull,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Size => "size",
            Reason::Age => "age",
            Reason::Idle => "idle",
            Reason::Flush => "flush",
            Reason::SpoolFull => "spool_full",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RollPolicy {
        RollPolicy { max_bytes: 1000, max_age: Duration::from_secs(600), idle: Duration::from_secs(60) }
    }

    #[test]
    fn a_busy_stream_rolls_by_size_and_age_never_per_epoch() {
        let p = policy();
        // 10 epochs of 90 bytes, one a second: under the size bound, not due.
        for e in 1..=10i64 {
            assert_eq!(p.reason(e as u64 * 90, 0, e * 1000, e * 1000), None, "epoch {e}");
        }
        assert_eq!(p.reason(1000, 0, 11_000, 11_000), Some(Reason::Size));
        // A slow stream is cut by age even if it keeps appending.
        assert_eq!(p.reason(600, 12_000, 611_000, 611_000), None);
        assert_eq!(p.reason(601, 12_000, 612_000, 612_000), Some(Reason::Age));
    }

    #[test]
    fn a_quiet_hour_is_closed_by_idleness() {
        let p = policy();
        assert_eq!(p.reason(50, 0, 0, 59_999), None);
        assert_eq!(p.reason(50, 0, 0, 60_000), Some(Reason::Idle));
        // Size wins over age, age over idleness.
        assert_eq!(p.reason(5000, 0, 0, 700_000), Some(Reason::Size));
        assert_eq!(p.reason(50, 0, 0, 700_000), Some(Reason::Age));
    }
}
