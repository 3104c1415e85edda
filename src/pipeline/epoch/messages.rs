//! What the coordinator, the decoder and the shards send each other.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::model::RawMessage;
use crate::model::epoch::{Decision, Positions};
use crate::sink::starrocks::txn::Chunk;

/// One table's share of a shard's epoch, prepared (or, at-least-once,
/// already loaded).
#[derive(Debug, Clone)]
pub struct PreparedTxn {
    pub table: String,
    pub label: String,
    /// The body chunks with their format headers, kept until the commit,
    /// so an aborted transaction can be loaded again.
    pub chunks: Vec<Chunk>,
    pub rows: u64,
}

/// A shard's answer to a seal.
#[derive(Debug, Default)]
pub struct ShardDone {
    pub txns: Vec<PreparedTxn>,
    /// (received ms, event ms, readings) of the samples in the epoch.
    pub received: Vec<crate::model::Received>,
    /// Readings archived (spooled) and refused as too late in this epoch.
    pub archived: u64,
    pub too_late: u64,
    /// The shard's newest event time after the epoch (`i64::MIN`: none).
    pub watermark_ms: i64,
    /// Set when the shard could not prepare: the epoch is abandoned.
    pub error: Option<ShardError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// Retryable failures outlasted the attempts: abandon the epoch, replay.
    #[error("{0}")]
    Transient(String),
    /// Another writer owns a label: stop.
    #[error("{0}")]
    Conflict(String),
}

/// A seal request from the coordinator to the decoder.
pub struct Cut {
    pub epoch: u64,
    /// Take everything already queued from the source before sealing (a
    /// rebalance or stop: the source is not sending).
    pub drain: bool,
    /// Forget positions after this cut (partitions were revoked).
    pub reset_positions: bool,
    /// The last cut: the decoder closes the source channel, drains it, seals
    /// and stops.
    pub last: bool,
    /// Seal nothing: drop what the source queued and what the shards hold,
    /// and forget the positions (an epoch was rolled back on a revoke; the
    /// partitions' next owner reads it again from the decided offsets).
    pub discard: bool,
    pub reply: oneshot::Sender<CutReply>,
}

pub struct CutReply {
    pub positions: Positions,
    pub shards: Vec<oneshot::Receiver<ShardDone>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    /// The epoch was rolled back; the pipeline must restart from the
    /// decided positions.
    #[error("epoch {epoch} abandoned: {reason}")]
    Abandoned { epoch: u64, reason: String },
    /// Refuse to go on (another writer, StarRocks says no for good).
    #[error("{0}")]
    Fatal(String),
}

/// Rebuilds lost transactions of a decided epoch: runs the epoch's
/// messages (a channel the source fills, then closes) through a private
/// decoder and shards that prepare only the given labels, and returns
/// those transactions, prepared (`runner::rebuild`).
pub type Rebuilder = Arc<
    dyn Fn(
            Decision,
            Vec<String>,
            mpsc::Receiver<RawMessage>,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<Rebuilt, String>> + Send>>
        + Send
        + Sync,
>;

/// What a rebuild prepared: the lost transactions, and the readings the
/// rebuilt telemetry rows aggregate (committed with them).
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub txns: Vec<PreparedTxn>,
    pub readings: u64,
}
