//! The memory bound on Stream Load bodies and the raw archive's samples
//! (`pipeline.max_epoch_bytes`).
//!
//! A body lives from its encoding (at `max_rows_per_load` rows, or at the
//! seal) until its epoch commits: exactly-once keeps it to load it again
//! should StarRocks abort the prepared transaction. How many bodies one
//! epoch makes grows with the rate, and a backlog (a WAL or Kafka lag
//! drained after an outage) arrives as fast as the disk reads, so nothing
//! but this bound keeps a drain within DESIGN §7's memory.
//!
//! - **Counting**: every body is a [`Bytes`] whose owner counts its size
//!   here until the last clone is dropped ([`BodyBudget::body`]). A shard's
//!   raw samples for the archive are counted ([`BodyBudget::hold`]) from
//!   the fold until the spooler has written them ([`BodyBudget::let_go`]).
//! - **At the bound**: the decoder stops taking messages (the WAL, the
//!   broker or Kafka hold them) and the coordinator cuts the epoch early
//!   instead of waiting for the next tick, so what is held gets loaded,
//!   committed and let go. Each drop below the bound wakes the decoder.
//!
//! One epoch in flight may pass the bound by the bodies being encoded when
//! it is reached (at most one per shard and table).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::Notify;

#[derive(Debug)]
pub struct BodyBudget {
    held: AtomicU64,
    peak: AtomicU64,
    /// Bytes of every body ever counted.
    total: AtomicU64,
    max: AtomicU64,
    /// Wakes the decoder when held drops below the bound.
    freed: Notify,
    /// Asks the coordinator for an early cut.
    cut: Notify,
}

impl Default for BodyBudget {
    fn default() -> Self {
        BodyBudget {
            held: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            total: AtomicU64::new(0),
            max: AtomicU64::new(u64::MAX),
            freed: Notify::new(),
            cut: Notify::new(),
        }
    }
}

/// A body's bytes, counted in `budget` while they live.
struct Counted {
    buf: Vec<u8>,
    budget: Arc<BodyBudget>,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.budget.release(self.buf.len() as u64);
    }
}

impl BodyBudget {
    /// Sets the bound (bytes).
    pub fn set_max(&self, max: u64) {
        self.max.store(max.max(1), Ordering::Relaxed);
    }

    /// `buf` as a body counted in `budget` (`stats.bodies`) until its last
    /// clone goes.
    pub fn body(budget: &Arc<BodyBudget>, buf: Vec<u8>) -> Bytes {
        budget.hold(buf.len() as u64);
        Bytes::from_owner(Counted { buf, budget: budget.clone() })
    }

    /// Counts `n` bytes held outside a body (the archive's raw samples);
    /// at the bound the coordinator is asked for an early cut.
    pub fn hold(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
        let now = self.held.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
        if now >= self.max.load(Ordering::Relaxed) {
            self.cut.notify_one();
        }
    }

    /// Lets go of `n` bytes counted by [`BodyBudget::hold`].
    pub fn let_go(&self, n: u64) {
        self.release(n);
    }

    fn release(&self, n: u64) {
        let before = self.held.fetch_sub(n, Ordering::Relaxed);
        let max = self.max.load(Ordering::Relaxed);
        if before >= max && before - n < max {
            self.freed.notify_one();
        }
    }

    /// Bytes of bodies alive now, and the most at once.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Bytes of every body made since start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// At the bound: the decoder takes no more messages.
    pub fn over(&self) -> bool {
        self.held() >= self.max.load(Ordering::Relaxed)
    }

    /// Resolves once held drops below the bound (or already has, since the
    /// last call).
    pub async fn freed(&self) {
        self.freed.notified().await
    }

    /// Resolves when the bound was reached (since the last call): the
    /// coordinator cuts the epoch early.
    pub async fn cut_requested(&self) {
        self.cut.notified().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::telemetry::Stats;

    #[tokio::test]
    async fn bodies_are_counted_until_their_last_clone_and_the_bound_wakes_both_sides() {
        let stats = Arc::new(Stats::default());
        stats.bodies.set_max(100);
        let a = BodyBudget::body(&stats.bodies, vec![0; 60]);
        assert!(!stats.bodies.over());
        let b = BodyBudget::body(&stats.bodies, vec![0; 50]);
        assert!(stats.bodies.over());
        // The coordinator was asked for a cut.
        tokio::time::timeout(Duration::from_secs(1), stats.bodies.cut_requested()).await.unwrap();
        let a2 = a.clone();
        drop(a);
        assert_eq!(stats.bodies.held(), 110, "a clone keeps the body counted");
        drop(a2);
        assert_eq!(stats.bodies.held(), 50);
        assert!(!stats.bodies.over());
        // The decoder is woken (the permit waits for it).
        tokio::time::timeout(Duration::from_secs(1), stats.bodies.freed()).await.unwrap();
        assert_eq!(&b[..], &[0u8; 50][..]);
        drop(b);
        assert_eq!((stats.bodies.held(), stats.bodies.peak()), (0, 110));
    }

    #[tokio::test]
    async fn raw_samples_held_count_toward_the_bound_until_let_go() {
        let stats = Arc::new(Stats::default());
        stats.bodies.set_max(100);
        let body = BodyBudget::body(&stats.bodies, vec![0; 40]);
        stats.bodies.hold(70);
        assert!(stats.bodies.over(), "bodies and raw samples share the bound");
        tokio::time::timeout(Duration::from_secs(1), stats.bodies.cut_requested()).await.unwrap();
        stats.bodies.let_go(70);
        assert!(!stats.bodies.over());
        tokio::time::timeout(Duration::from_secs(1), stats.bodies.freed()).await.unwrap();
        drop(body);
        assert_eq!((stats.bodies.held(), stats.bodies.peak()), (0, 110));
    }
}
