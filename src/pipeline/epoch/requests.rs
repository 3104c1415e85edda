//! The source's requests to the coordinator: a revoke finishes the open
//! epoch (one that cannot be decided is rolled back, and what the pipeline
//! holds of the revoked partitions is discarded, without a restart); an
//! assignment recovers. A request that arrives while a decision is being
//! retried is answered after the epoch is abandoned (`deferred`).

use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

use super::{Coordinator, Cut, EpochError};
use crate::model::epoch::{EpochSource, Request};

impl<S: EpochSource> Coordinator<S> {
    /// A source's request: finish the open epoch (a revoke), or recover (an
    /// assignment). An error ends this life of the pipeline.
    pub(super) async fn request(&mut self, req: Request) -> Result<(), EpochError> {
        match req {
            Request::Finish(reply) => {
                let r = self.epoch(true, true, false).await;
                self.last_decided.clear();
                let r = self.revoked(r).await;
                let _ = reply.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                r
            }
            Request::Recover(reply) => {
                let r = self.recover().await;
                let _ = reply.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                r
            }
        }
    }

    /// An epoch's outcome when a request arrived while it was being decided
    /// (`deferred`): the epoch was abandoned for it, and the request is
    /// served now.
    pub(super) async fn answer_deferred(&mut self, r: Result<(), EpochError>) -> Result<(), EpochError> {
        let Some(req) = self.deferred.take() else { return r };
        let r = self.revoked(r).await;
        match (req, r) {
            (req, Ok(())) => self.request(req).await,
            (Request::Finish(reply) | Request::Recover(reply), Err(e)) => {
                let _ = reply.send(Err(e.to_string()));
                Err(e)
            }
        }
    }

    /// After a revoke: an epoch that could not be decided was rolled back
    /// (its transactions aborted); what the pipeline still holds of the
    /// revoked partitions is discarded, and so are the archive frames of
    /// the epoch, while the consumer and the pipeline go on (the
    /// partitions' next owner, maybe this one, reads them again from the
    /// decided offsets). If the pipeline cannot discard (a stage stopped),
    /// the error stands and this life ends.
    pub(super) async fn revoked(&mut self, r: Result<(), EpochError>) -> Result<(), EpochError> {
        let Err(EpochError::Abandoned { epoch, reason }) = r else { return r };
        let (tx, rx) = oneshot::channel();
        let cut = Cut { epoch, drain: true, reset_positions: true, last: false, discard: true, reply: tx };
        if self.cuts.send(cut).await.is_err() || rx.await.is_err() {
            return Err(EpochError::Abandoned { epoch, reason });
        }
        self.last_decided.clear();
        if let Some(a) = &self.archive
            && self.exactly_once()
        {
            a.recover(Some(self.next_epoch - 1)).await.map_err(EpochError::Fatal)?;
        }
        self.stats.epochs_abandoned_on_revoke.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(epoch, %reason, "The open epoch was rolled back on a revoke; the pipeline goes on without it (the partitions' next owner reads it again).");
        Ok(())
    }
}

pub(super) async fn next_request(r: &mut Option<mpsc::Receiver<Request>>) -> Option<Request> {
    match r {
        Some(r) => r.recv().await,
        None => None,
    }
}
