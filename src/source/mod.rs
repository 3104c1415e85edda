//! Sources hand the pipeline raw messages.

pub mod kafka;
pub mod mqtt;

use std::sync::Arc;

use bytes::Bytes;

/// One message as received.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub topic: String,
    pub payload: Bytes,
    /// Receive time, epoch milliseconds.
    pub received_ms: i64,
    /// The message key (Kafka), the colocation key when the source routes by key.
    pub key: Option<Bytes>,
    /// Where the message sits in a replayable source: (stream, partition,
    /// offset). The epoch coordinator commits the position after it.
    pub position: Option<(Arc<str>, i32, i64)>,
}

impl RawMessage {
    /// A message without key or position (MQTT, tests).
    pub fn new(topic: impl Into<String>, payload: Bytes, received_ms: i64) -> Self {
        RawMessage { topic: topic.into(), payload, received_ms, key: None, position: None }
    }
}
