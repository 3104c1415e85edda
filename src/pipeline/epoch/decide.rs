//! Making a decision durable: at the source (an ambiguous failure is
//! resolved by reading the decision back, never guessed), and in this
//! instance's local notes (the intent before, the decided epoch after),
//! which survive another instance overwriting the source's metadata.

use std::time::Instant;

use super::{Coordinator, EpochError};
use crate::model::epoch::{Decision, EpochSource, Positions, SourceErrorKind};
use crate::sink::starrocks::retry::Backoff;

impl<S: EpochSource> Coordinator<S> {
    /// Makes the decision durable; an ambiguous failure is resolved by
    /// reading it back. Gives up (so the epoch is abandoned) after the
    /// source's retry budget of failures that leave it undecided. A request
    /// arriving meanwhile (a revoke's Finish: the group is rebalancing and
    /// waits for this member) abandons the epoch at once, so the rebalance
    /// is not held up longer than the rollback; the request is answered
    /// after it (`deferred`).
    pub(super) async fn decide(&mut self, d: &Decision, positions: &Positions) -> Result<(), String> {
        let policy = self.loader.policy();
        let started = Instant::now();
        let mut n = 0;
        loop {
            n += 1;
            let err = match self.source.decide(d, positions).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            // A refusal leaves nothing to read back.
            let undecided = if err.kind == SourceErrorKind::Refused {
                true
            } else {
                match self.source.decided(d).await {
                    Ok(true) => return Ok(()),
                    Ok(false) => true,
                    // Cannot even read it back: keep trying, the outcome matters.
                    Err(e) => {
                        tracing::warn!(epoch = d.epoch, error = %e, "Cannot read the decision back.");
                        false
                    }
                }
            };
            if undecided && started.elapsed() > err.retry_for() {
                return Err(err.message);
            }
            let delay = policy.delay(n, Backoff::Normal);
            tracing::warn!(epoch = d.epoch, error = %err, ?delay, "Deciding the epoch failed; retrying.");
            let wait = tokio::time::sleep(delay);
            match self.requests.as_mut() {
                Some(rq) => tokio::select! {
                    _ = wait => {}
                    req = rq.recv() => {
                        let why = "the open epoch could not be decided while the group rebalances; it is rolled back";
                        self.deferred = req;
                        return Err(format!("{err}; {why}"));
                    }
                },
                None => wait.await,
            }
        }
    }

    /// `{state_dir}/{prefix}.{what}`: `decided` notes this instance's last
    /// decided epoch, `intent` the epoch it is about to decide (written
    /// first: a crash between a decision and its note leaves the intent).
    pub(super) fn note_path(&self, what: &str) -> Option<std::path::PathBuf> {
        self.cfg.state_dir.as_ref().map(|d| d.join(format!("{}.{what}", self.cfg.prefix)))
    }

    /// Notes epoch `e` at `path` (fsynced; a failure is logged: the
    /// source's decisions still say what was decided).
    pub(super) fn note(&self, path: &Option<std::path::PathBuf>, e: u64) {
        let Some(path) = path else { return };
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d)?;
            }
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(format!("{e}\n").as_bytes())?;
            f.sync_data()?;
            std::fs::rename(&tmp, path)
        };
        if let Err(err) = write() {
            tracing::warn!(path = %path.display(), error = %err, "Cannot note the epoch locally.");
        }
    }

    /// The epoch noted at `path`.
    pub(super) fn noted(&self, path: &Option<std::path::PathBuf>) -> Result<Option<u64>, EpochError> {
        let Some(path) = path else { return Ok(None) };
        match std::fs::read_to_string(path) {
            Ok(t) => t
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| EpochError::Fatal(format!("{} does not hold an epoch number", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(EpochError::Fatal(format!("{}: {e}", path.display()))),
        }
    }
}
