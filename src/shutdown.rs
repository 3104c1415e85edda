//! One stop signal for the process, in the manner of mini-redis'
//! `shutdown.rs`. `main` flips a `watch` channel on SIGTERM or SIGINT (the
//! demo when its time is up); every stage holds a receiver of it and
//! drains in order when it flips:
//!
//! 1. the source stops taking messages (MQTT: no more reads, PUBACKs of
//!    what is durable still go out; Kafka: no more hand-offs, polling goes
//!    on so the last offset commit meets a live group member);
//! 2. the decoder takes what is queued and seals the last epoch;
//! 3. the shards load it and the coordinator decides and commits it (past
//!    the deadline rockfeed exits with the epoch undecided, and recovery
//!    rolls it back at the next start);
//! 4. the archive publishes what it holds, in the time left (what is not
//!    published stays in the spool for the next start);
//! 5. dead letters are synced.
//!
//! One grace period bounds it all: `pipeline.stop_grace` from the signal
//! ([`Deadline`]). Past it only bounded clean-up remains: a stage task
//! still retrying (a shard whose epoch will not be decided) is aborted
//! within a second ([`join_within`]), and the archive's threads are given
//! 10 s to return.
//!
//! A pipeline *life* (the pipeline between two restarts) stops when the
//! process does, or when the life ends on its own (an abandoned epoch):
//! its stages watch a [`Scope`] below the process' signal.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Resolves once `signal` says stop (or its sender is gone, which can only
/// mean the same).
pub async fn stopped(signal: &watch::Receiver<bool>) {
    let mut s = signal.clone();
    let _ = s.wait_for(|stop| *stop).await;
}

/// A stop signal below another: it says stop when the parent does, or
/// when [`Scope::stop`] is called or the scope is dropped.
pub struct Scope {
    tx: watch::Sender<bool>,
    forward: JoinHandle<()>,
}

impl Scope {
    pub fn below(parent: &watch::Receiver<bool>) -> Scope {
        let (tx, _) = watch::channel(*parent.borrow());
        let (parent, to) = (parent.clone(), tx.clone());
        let forward = tokio::spawn(async move {
            stopped(&parent).await;
            to.send_replace(true);
        });
        Scope { tx, forward }
    }

    /// The signal the scope's stages watch.
    pub fn signal(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    pub fn stop(&self) {
        self.tx.send_replace(true);
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        self.stop();
        self.forward.abort();
    }
}

/// The one deadline of a stop: `grace` after the signal flips. Every
/// stage that drains after the signal (the last epoch, then the archive's
/// last uploads) finishes by it, so a service manager's stop timeout needs
/// to exceed one number.
#[derive(Clone)]
pub struct Deadline {
    grace: Duration,
    began: Arc<OnceLock<Instant>>,
    signal: watch::Receiver<bool>,
}

impl Deadline {
    /// Notes when `signal` flips (a task waits for it).
    pub fn new(signal: &watch::Receiver<bool>, grace: Duration) -> Deadline {
        let began = Arc::new(OnceLock::new());
        let (s, b) = (signal.clone(), began.clone());
        tokio::spawn(async move {
            stopped(&s).await;
            b.get_or_init(Instant::now);
        });
        Deadline { grace, began, signal: signal.clone() }
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Resolves at the deadline; never before the stop began.
    pub async fn passed(&self) {
        stopped(&self.signal).await;
        tokio::time::sleep_until(*self.began.get_or_init(Instant::now) + self.grace).await;
    }

    /// The time left before the deadline. A stop that had not begun begins
    /// now: a pipeline that ended on its own error stops the rest as a
    /// signal would.
    pub fn left(&self) -> Duration {
        self.began.get_or_init(Instant::now);
        self.left_if_stopping().unwrap_or(self.grace)
    }

    /// The time left, once the stop has begun (`None` before: a pipeline
    /// life that ends on its own does not start the stop).
    pub fn left_if_stopping(&self) -> Option<Duration> {
        self.began.get().map(|b| (*b + self.grace).saturating_duration_since(Instant::now()))
    }
}

/// Waits up to `grace` for a stage's task to finish; past it, the task is
/// aborted (a shard still retrying a transaction that no decision will
/// use). `None` when it did not finish or failed.
pub async fn join_within<T>(task: JoinHandle<T>, grace: Duration) -> Option<T> {
    let abort = task.abort_handle();
    match tokio::time::timeout(grace, task).await {
        Ok(r) => r.ok(),
        Err(_) => {
            abort.abort();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scope_stops_with_its_parent_or_on_its_own_and_never_the_other_way() {
        let (process, rx) = watch::channel(false);
        let life = Scope::below(&rx);
        let signal = life.signal();
        life.stop();
        stopped(&signal).await;
        assert!(!*rx.borrow(), "a life ending does not stop the process");

        let life = Scope::below(&rx);
        let signal = life.signal();
        process.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), stopped(&signal))
            .await
            .expect("the process' stop reaches the life");
        // A scope made after the stop starts stopped.
        assert!(*Scope::below(&rx).signal().borrow());

        let (_p, rx) = watch::channel(false);
        let signal = Scope::below(&rx).signal();
        tokio::time::timeout(Duration::from_secs(5), stopped(&signal)).await.expect("a dropped scope says stop");
    }

    #[tokio::test]
    async fn a_stop_has_one_deadline_counted_from_the_signal() {
        let ms = Duration::from_millis;
        let (process, rx) = watch::channel(false);
        let deadline = Deadline::new(&rx, ms(2000));
        tokio::time::sleep(ms(300)).await;
        let passed = deadline.clone();
        let passed = tokio::spawn(async move { passed.passed().await });
        tokio::time::sleep(ms(100)).await;
        assert!(!passed.is_finished(), "no deadline before the stop");
        process.send_replace(true);
        tokio::time::sleep(ms(500)).await;
        // The pipeline took 0.5 s of it: the archive gets the rest, counted
        // from the signal, not from the deadline's making.
        let left = deadline.left();
        assert!(left <= ms(1500) && left > ms(500), "{left:?}");
        assert!(!passed.is_finished());
        tokio::time::timeout(Duration::from_secs(10), passed).await.expect("the deadline passes").unwrap();
        assert_eq!(deadline.left(), Duration::ZERO);
        assert_eq!(deadline.left_if_stopping(), Some(Duration::ZERO));

        // A pipeline that ended on its own: the stop begins when the rest is
        // stopped, with the whole grace.
        let (_p, rx) = watch::channel(false);
        let deadline = Deadline::new(&rx, ms(2000));
        tokio::time::sleep(ms(300)).await;
        assert_eq!(deadline.left_if_stopping(), None, "asking does not start the stop");
        assert!(deadline.left() > ms(1900), "{:?}", deadline.left());
    }

    #[tokio::test]
    async fn a_stage_that_does_not_drain_in_its_grace_is_aborted() {
        assert_eq!(join_within(tokio::spawn(async { 7 }), Duration::from_secs(5)).await, Some(7));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stuck = tokio::spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await
        });
        assert_eq!(join_within(stuck, Duration::from_millis(50)).await, None);
        assert!(rx.await.is_err(), "the aborted task was dropped");
    }
}
