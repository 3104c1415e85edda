//! Sources hand the pipeline raw messages.

pub mod mqtt;

use bytes::Bytes;

/// One message as received.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub topic: String,
    pub payload: Bytes,
    /// Receive time, epoch milliseconds.
    pub received_ms: i64,
}
