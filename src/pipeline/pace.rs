//! Adaptive epoch pacing: how long the next epoch is, from what StarRocks
//! says about the load it takes. A pure state machine (no clock of its
//! own, no I/O); the coordinator feeds it each committed epoch.
//!
//! Every epoch gives each tablet it touches a new version, and StarRocks
//! compacts them at its own pace. Loading faster than it compacts ends in
//! `too many versions`; many loaders share the running-transaction cap of
//! the database. So the epoch stretches when StarRocks shows pressure, and
//! shrinks back once it has not for a while, between `pipeline.epoch` (the
//! floor, what latency asks for) and `pipeline.max_epoch`:
//!
//! - **Pressure** is a reply asking for less load during the epoch (`too
//!   many versions`, the running-transaction cap, memory, HTTP
//!   concurrency), or StarRocks' time in the epoch's load calls (begin,
//!   load, prepare, commit: per shard, the shards load side by side) taking
//!   more than half the epoch: its write and publish times growing relative
//!   to the epoch. rockfeed's own encoding and fsyncs do not count.
//! - **On pressure** the epoch doubles, and the length that cured it is
//!   remembered as the level not to go below (`hold`).
//! - **Calm** epochs shrink it by a quarter every [`SHRINK_AFTER`] of them,
//!   never below `hold`; `hold` itself halves (towards the floor) after
//!   [`HOLD_FOR`] without pressure. So after the first refusals the epoch
//!   settles at a length StarRocks keeps up with, probes shorter only
//!   rarely, and returns to the floor once the pressure is gone.

use std::time::Duration;

/// Calm epochs between two shrinks.
pub const SHRINK_AFTER: u32 = 10;
/// How long a length that cured pressure is held as the lower bound.
pub const HOLD_FOR: Duration = Duration::from_secs(300);

/// What one committed epoch showed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// Replies asking for less load while the epoch loaded.
    pub throttled: u64,
    /// StarRocks' time in the epoch's load calls, per shard.
    pub loading: Duration,
}

#[derive(Debug, Clone)]
pub struct Pacer {
    min: Duration,
    max: Duration,
    current: Duration,
    /// Not below this until `hold_until`.
    hold: Duration,
    /// When `hold` halves next (time since an arbitrary origin).
    hold_until: Duration,
    calm: u32,
}

impl Pacer {
    /// Epochs between `min` and `max` (equal: pacing off), starting at `min`.
    pub fn new(min: Duration, max: Duration) -> Pacer {
        let max = max.max(min);
        Pacer { min, max, current: min, hold: min, hold_until: Duration::ZERO, calm: 0 }
    }

    /// The length of the next epoch.
    pub fn epoch(&self) -> Duration {
        self.current
    }

    /// Feeds an epoch that committed at `now` (any monotonic origin);
    /// returns the next epoch's length.
    pub fn committed(&mut self, s: Signals, now: Duration) -> Duration {
        if s.throttled > 0 || s.loading * 2 > self.current {
            self.current = (self.current * 2).min(self.max);
            self.hold = self.hold.max(self.current);
            self.hold_until = now + HOLD_FOR;
            self.calm = 0;
            return self.current;
        }
        if now >= self.hold_until && self.hold > self.min {
            self.hold = (self.hold / 2).max(self.min);
            self.hold_until = now + HOLD_FOR;
        }
        self.calm += 1;
        if self.calm >= SHRINK_AFTER {
            self.calm = 0;
            self.current = (self.current * 3 / 4).max(self.hold).max(self.min);
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn calm() -> Signals {
        Signals { throttled: 0, loading: Duration::from_millis(100) }
    }

    #[test]
    fn pressure_doubles_the_epoch_up_to_the_max() {
        let mut p = Pacer::new(S, 8 * S);
        let refused = Signals { throttled: 3, loading: S / 10 };
        assert_eq!(p.committed(refused, S), 2 * S);
        assert_eq!(p.committed(refused, 2 * S), 4 * S);
        assert_eq!(p.committed(refused, 3 * S), 8 * S);
        assert_eq!(p.committed(refused, 4 * S), 8 * S);
        // Slow loading is pressure too: more than half the epoch.
        let mut p = Pacer::new(S, 8 * S);
        assert_eq!(p.committed(Signals { throttled: 0, loading: S * 6 / 10 }, S), 2 * S);
        // 0.9 s of loading in a 2 s epoch is calm.
        assert_eq!(p.committed(Signals { throttled: 0, loading: S * 9 / 10 }, 2 * S), 2 * S);
    }

    #[test]
    fn calm_epochs_shrink_it_back_but_not_below_the_held_length_until_the_hold_passes() {
        let mut p = Pacer::new(S, 16 * S);
        let mut t = Duration::ZERO;
        for _ in 0..3 {
            t += S;
            p.committed(Signals { throttled: 1, ..calm() }, t);
        }
        assert_eq!(p.epoch(), 8 * S);
        // Calm for a while: held at 8 s.
        for _ in 0..50 {
            t += 8 * S;
            assert_eq!(p.committed(calm(), t), 8 * S);
            if t >= HOLD_FOR {
                break;
            }
        }
        // Past the hold, it halves each period and the epoch follows down,
        // a quarter per SHRINK_AFTER calm epochs, to the floor.
        for _ in 0..1000 {
            t += p.epoch();
            p.committed(calm(), t);
        }
        assert_eq!(p.epoch(), S);
    }

    #[test]
    fn pacing_off_keeps_the_epoch() {
        let mut p = Pacer::new(S, S);
        assert_eq!(p.committed(Signals { throttled: 9, loading: 5 * S }, S), S);
        assert_eq!(p.committed(calm(), 2 * S), S);
    }
}
