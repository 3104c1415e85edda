//! Open-loop rate control on a fixed schedule.
//!
//! Message `i` is due at `i / rate` seconds after the start, whatever
//! happened to the messages before it. A sender that falls behind (a slow
//! broker, a full send queue) does not stretch the schedule: the messages
//! that came due meanwhile are sent at once, each one's *lag* (send time
//! minus due time) is recorded, and the current distance behind the
//! schedule is reported. Measuring from the due time, not from the moment
//! the sender got round to it, is what keeps a stalled system from hiding
//! its stall (coordinated omission); the generator also stamps each message
//! with its due time as the event time, so rockfeed's end-to-end latency
//! carries the lag too.
//!
//! The controller is pure: callers pass the elapsed time, so tests can drive
//! it with any clock.

use std::time::Duration;

use hdrhistogram::Histogram;

/// When each message is due.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Messages per second; 0 means as fast as possible (everything is due at once).
    pub per_sec: f64,
    /// Nothing due at or after this is sent (`--duration`).
    pub end: Option<Duration>,
}

impl Schedule {
    /// Offset of message `i` from the start.
    pub fn due_at(&self, i: u64) -> Duration {
        if self.per_sec <= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(i as f64 / self.per_sec) }
    }

    /// How many messages are due by `elapsed` (those with `due_at ≤ elapsed`
    /// and before the end).
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        let upto = match self.end {
            Some(end) if elapsed >= end => end,
            _ => elapsed,
        };
        let total = self.total().unwrap_or(u64::MAX);
        if self.per_sec <= 0.0 {
            return if self.end.is_some_and(|e| elapsed >= e) { 0 } else { total };
        }
        let n = (upto.as_secs_f64() * self.per_sec).floor() as u64 + 1;
        // At exactly `end` nothing more is due: the count is the schedule's total.
        n.min(total)
    }

    /// Messages the whole schedule holds, if it ends.
    pub fn total(&self) -> Option<u64> {
        let end = self.end?;
        if self.per_sec <= 0.0 {
            return None;
        }
        // The tolerance keeps 3 s × 40/s at 120 when the rate came out of a
        // division as 39.999999….
        Some((end.as_secs_f64() * self.per_sec - 1e-6).ceil() as u64)
    }
}

/// Tracks progress along a schedule and the lag of each send.
pub struct Pacer {
    pub schedule: Schedule,
    /// Messages sent so far (the next one to send has this index).
    pub sent: u64,
    /// Send lag per message in microseconds (up to an hour), after the warm-up.
    pub lag_us: Histogram<u64>,
    /// Messages due before this offset are warm-up: sent, not measured.
    pub warmup: Duration,
}

impl Pacer {
    pub fn new(schedule: Schedule, warmup: Duration) -> Self {
        Pacer {
            schedule,
            sent: 0,
            lag_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            warmup,
        }
    }

    /// Messages due now and not sent yet.
    pub fn backlog(&self, elapsed: Duration) -> u64 {
        self.schedule.due_by(elapsed).saturating_sub(self.sent)
    }

    /// Records that message `self.sent` went out at `at`; returns its lag.
    pub fn sent_one(&mut self, at: Duration) -> Duration {
        let due = self.schedule.due_at(self.sent);
        let lag = at.saturating_sub(due);
        if due >= self.warmup && self.schedule.per_sec > 0.0 {
            self.lag_us.saturating_record(lag.as_micros() as u64);
        }
        self.sent += 1;
        lag
    }

    /// How far behind the schedule the sender is at `elapsed`: the age of
    /// the oldest due message not yet sent (zero when caught up).
    pub fn behind(&self, elapsed: Duration) -> Duration {
        if self.backlog(elapsed) == 0 {
            Duration::ZERO
        } else {
            elapsed.saturating_sub(self.schedule.due_at(self.sent))
        }
    }

    /// When the next message is due, or `None` when the schedule is done.
    pub fn next_due(&self) -> Option<Duration> {
        match self.schedule.total() {
            Some(t) if self.sent >= t => None,
            _ => Some(self.schedule.due_at(self.sent)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn messages_fall_due_on_a_fixed_schedule() {
        let s = Schedule { per_sec: 1000.0, end: None };
        assert_eq!(s.due_at(0), ms(0));
        assert_eq!(s.due_at(250), ms(250));
        assert_eq!(s.due_by(ms(0)), 1);
        assert_eq!(s.due_by(ms(9)), 10);
        assert_eq!(s.due_by(Duration::from_micros(9_999)), 10);
    }

    #[test]
    fn a_duration_bounds_the_schedule() {
        let s = Schedule { per_sec: 100.0, end: Some(Duration::from_secs(2)) };
        assert_eq!(s.total(), Some(200));
        assert_eq!(s.due_by(Duration::from_secs(5)), 200);
        let mut p = Pacer::new(s, Duration::ZERO);
        for _ in 0..200 {
            p.sent_one(Duration::from_secs(5));
        }
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn a_sender_on_time_has_no_lag() {
        let mut p = Pacer::new(Schedule { per_sec: 1000.0, end: None }, Duration::ZERO);
        for i in 0..100 {
            assert_eq!(p.backlog(ms(i)), 1);
            assert_eq!(p.sent_one(ms(i)), Duration::ZERO);
            assert_eq!(p.behind(ms(i)), Duration::ZERO);
        }
        assert_eq!(p.lag_us.max(), 0);
        assert_eq!(p.next_due(), Some(ms(100)));
    }

    #[test]
    fn a_stall_is_reported_as_lag_and_the_schedule_does_not_stretch() {
        let mut p = Pacer::new(Schedule { per_sec: 1000.0, end: None }, Duration::ZERO);
        p.sent_one(ms(0));
        // The sender stalls for 50 ms: 50 messages came due meanwhile.
        assert_eq!(p.backlog(ms(50)), 50);
        assert_eq!(p.behind(ms(50)), ms(49), "the oldest unsent message is 49 ms old");
        // They are sent at once, each with its own lag (49 ms down to 0).
        let lags: Vec<Duration> = (0..50).map(|_| p.sent_one(ms(50))).collect();
        assert_eq!(lags[0], ms(49));
        assert_eq!(lags[49], ms(0));
        assert_eq!(p.backlog(ms(50)), 0);
        // The next message is still due at 51 ms, not 50 ms after the stall.
        assert_eq!(p.next_due(), Some(ms(51)));
        assert_eq!(p.lag_us.len(), 51);
        assert!(p.lag_us.max() >= 48_900, "max lag {}", p.lag_us.max());
        assert!(p.lag_us.value_at_quantile(0.5) >= 20_000, "median lag {}", p.lag_us.value_at_quantile(0.5));
    }

    #[test]
    fn warm_up_messages_are_sent_but_not_measured() {
        let mut p = Pacer::new(Schedule { per_sec: 100.0, end: None }, ms(100));
        for _ in 0..20 {
            p.sent_one(ms(500));
        }
        assert_eq!(p.sent, 20);
        assert_eq!(p.lag_us.len(), 10, "only messages due at or after 100 ms count");
    }

    #[test]
    fn rate_zero_means_as_fast_as_possible() {
        let s = Schedule { per_sec: 0.0, end: None };
        assert_eq!(s.due_at(1_000_000), Duration::ZERO);
        assert_eq!(s.due_by(ms(0)), u64::MAX);
        let stopped = Schedule { per_sec: 0.0, end: Some(ms(10)) };
        assert_eq!(stopped.due_by(ms(20)), 0, "past the end nothing more is due");
    }
}
