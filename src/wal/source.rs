//! MQTT's side of the epoch protocol over the WAL.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::feed::message;
use super::ledger::Entry;
use super::segment::{self, Reader};
use super::{STREAM, Wal};
use crate::model::epoch::{Decision, EpochSource, Positions, Replay, SourceError};

/// MQTT's side of the epoch protocol: decisions in the WAL's ledger,
/// positions are WAL positions.
pub struct WalSource {
    pub wal: Arc<Wal>,
}

impl WalSource {
    /// Where replay starts: the last decided position.
    pub fn decided_position(&self) -> u64 {
        self.wal.decided().map(|e| e.position).unwrap_or(0)
    }

    fn position(&self, p: &Positions) -> u64 {
        p.iter().filter(|((s, _), _)| &**s == STREAM).map(|(_, &o)| o as u64).max().unwrap_or(self.decided_position())
    }
}

impl EpochSource for WalSource {
    /// Records the epoch's range with it: it began at the previous
    /// decision's position, where the feeder started.
    async fn decide(&self, d: &Decision, positions: &Positions) -> Result<(), SourceError> {
        let d = Decision { from: Some(self.decided_position() as i64), ..d.clone() };
        let e = Entry { position: self.position(positions), decision: d.encode() };
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || wal.ledger.lock().unwrap_or_else(|p| p.into_inner()).record(e))
            .await
            .map_err(|e| SourceError::retry(format!("the ledger write stopped: {e}")))?
            .map_err(|e| SourceError::retry(format!("WAL ledger: {e}")))
    }

    async fn decisions(&self) -> Result<Vec<Decision>, SourceError> {
        Ok(self.wal.decided().and_then(|e| Decision::parse(&e.decision)).into_iter().collect())
    }

    fn committed(&self, positions: &Positions) {
        self.wal.release(self.position(positions));
    }

    /// The records between the decision before `d` and `d` (segments are
    /// released only below a position whose epoch committed, so they are
    /// still here), streamed from disk by a blocking task. A record that
    /// fails to read ends the stream with an error, never early in
    /// silence: the reader closes the channel only after the whole range.
    fn replay(&self, d: &Decision) -> Result<Replay, SourceError> {
        let last = self.wal.decided().ok_or_else(|| SourceError::gone("the WAL's ledger holds no decision"))?;
        if Decision::parse(&last.decision).is_none_or(|l| l.prefix != d.prefix || l.epoch != d.epoch) {
            return Err(SourceError::gone(format!("epoch {} is not the WAL's last decision", d.epoch)));
        }
        let from = d.from.ok_or_else(|| {
            SourceError::gone("the decision does not record where its range began (written by an older rockfeed)")
        })?;
        let (from, to) = (from as u64, last.position);
        let first = segment::list(&self.wal.shared.cfg.dir)
            .map_err(|e| SourceError::retry(format!("listing the WAL's segments: {e}")))?
            .first()
            .copied();
        if first.is_none_or(|s| s > from) && from < to {
            return Err(SourceError::gone(format!("the WAL no longer holds position {from}")));
        }
        let (tx, rx) = mpsc::channel(1024);
        let dir = self.wal.shared.cfg.dir.clone();
        let done = tokio::task::spawn_blocking(move || {
            let stream: Arc<str> = Arc::from(STREAM);
            let mut rd = Reader::new(&dir, from, to);
            let mut n = 0u64;
            while let Some((r, pos)) = rd.next_record().map_err(|e| e.to_string())? {
                if tx.blocking_send(message(&stream, r, pos)).is_err() {
                    return Err("the rebuild stopped reading".to_string());
                }
                n += 1;
            }
            Ok(n)
        });
        Ok(Replay { messages: rx, done })
    }
}
