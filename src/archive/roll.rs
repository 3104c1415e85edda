//! When a shard's archive files are cut: by size (default 128 MiB), by age
//! (default 10 min since the file opened) and by idleness (no reading for
//! its hour for a while), never once per epoch.
//!
//! A shard keeps one open file per event-time hour it has readings for. A
//! file covers a range of epochs and is only ever cut after an epoch is
//! committed, so its name `part-{shard}-{first}-{last}` is fixed by its
//! content. A reading for an hour whose file was already cut opens a new
//! file of that hour, starting at a later epoch: an old file is never
//! rewritten and two files never share a name.

use std::collections::BTreeMap;
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

/// One open file: the readings of one hour since `first_epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFile {
    pub hour_ms: i64,
    pub first_epoch: u64,
    pub last_epoch: u64,
    pub rows: u64,
    /// Spooled bytes (the encoded Parquet is smaller).
    pub bytes: u64,
    pub opened_ms: i64,
    pub last_append_ms: i64,
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

#[derive(Debug, Default)]
pub struct Roller {
    policy: RollPolicy,
    open: BTreeMap<i64, OpenFile>,
}

impl Roller {
    pub fn new(policy: RollPolicy) -> Self {
        Roller { policy, open: BTreeMap::new() }
    }

    pub fn open_files(&self) -> impl Iterator<Item = &OpenFile> {
        self.open.values()
    }

    /// Epoch `epoch` spooled `rows` readings (`bytes`) of hour `hour_ms`.
    pub fn append(&mut self, hour_ms: i64, epoch: u64, rows: u64, bytes: u64, now_ms: i64) {
        let f = self.open.entry(hour_ms).or_insert(OpenFile {
            hour_ms,
            first_epoch: epoch,
            last_epoch: epoch,
            rows: 0,
            bytes: 0,
            opened_ms: now_ms,
            last_append_ms: now_ms,
        });
        debug_assert!(epoch >= f.last_epoch, "epochs only grow");
        f.last_epoch = f.last_epoch.max(epoch);
        f.rows += rows;
        f.bytes += bytes;
        f.last_append_ms = now_ms;
    }

    /// After an epoch is committed: the files to cut now (removed from the
    /// open set), with their reason.
    pub fn due(&mut self, now_ms: i64) -> Vec<(OpenFile, Reason)> {
        let p = self.policy;
        let mut out = Vec::new();
        self.open.retain(|_, f| {
            let reason = p.reason(f.bytes, f.opened_ms, f.last_append_ms, now_ms);
            match reason {
                Some(r) => {
                    out.push((*f, r));
                    false
                }
                None => true,
            }
        });
        out
    }

    /// Cuts every open file (shutdown).
    pub fn flush(&mut self) -> Vec<(OpenFile, Reason)> {
        std::mem::take(&mut self.open).into_values().map(|f| (f, Reason::Flush)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn policy() -> RollPolicy {
        RollPolicy { max_bytes: 1000, max_age: Duration::from_secs(600), idle: Duration::from_secs(60) }
    }

    #[test]
    fn a_busy_stream_rolls_by_size_and_age_never_per_epoch() {
        let mut r = Roller::new(policy());
        // 10 epochs of 90 bytes: under the size bound, nothing is cut.
        for e in 1..=10 {
            r.append(0, e, 9, 90, e as i64 * 1000);
            assert!(r.due(e as i64 * 1000).is_empty(), "epoch {e}");
        }
        r.append(0, 11, 10, 100, 11_000);
        let cut = r.due(11_000);
        assert_eq!(cut.len(), 1);
        assert_eq!((cut[0].0.first_epoch, cut[0].0.last_epoch, cut[0].0.rows, cut[0].1), (1, 11, 100, Reason::Size));
        // A slow stream is cut by age even if it keeps appending.
        for e in 12..=611 {
            r.append(0, e, 1, 1, e as i64 * 1000);
        }
        let cut = r.due(612_000);
        assert_eq!((cut[0].0.first_epoch, cut[0].1), (12, Reason::Age));
    }

    #[test]
    fn a_quiet_hour_is_closed_by_idleness_and_a_late_reading_opens_a_new_file() {
        let mut r = Roller::new(policy());
        r.append(0, 1, 5, 50, 0);
        r.append(H, 2, 5, 50, 1000);
        // Hour 0 goes quiet while hour 1 keeps receiving.
        for e in 3..=70 {
            r.append(H, e, 1, 1, e as i64 * 1000);
        }
        let cut = r.due(70_000);
        assert_eq!(cut.len(), 1);
        assert_eq!((cut[0].0.hour_ms, cut[0].0.first_epoch, cut[0].0.last_epoch, cut[0].1), (0, 1, 1, Reason::Idle));
        // A late reading for hour 0: a new file starting at its epoch, so its
        // name (part-k-71-…) cannot collide with the closed part-k-1-1.
        r.append(0, 71, 1, 10, 71_000);
        let f: Vec<_> = r.open_files().copied().collect();
        assert_eq!(f.iter().find(|f| f.hour_ms == 0).map(|f| (f.first_epoch, f.rows)), Some((71, 1)));
        let all = r.flush();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|(_, why)| *why == Reason::Flush));
        assert!(r.open_files().next().is_none());
    }
}
