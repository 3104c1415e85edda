//! Sources hand the pipeline raw messages.

pub mod kafka;
pub mod mqtt;

use bytes::Bytes;

use crate::model::Position;

/// One message as received.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub topic: String,
    pub payload: Bytes,
    /// Receive time, epoch milliseconds.
    pub received_ms: i64,
    /// The message key (Kafka), the colocation key when the source routes by key.
    pub key: Option<Bytes>,
    /// Where the message sits in a replayable source.
    pub position: Option<Position>,
}

impl RawMessage {
    /// A message without key or position (MQTT, tests).
    pub fn new(topic: impl Into<String>, payload: Bytes, received_ms: i64) -> Self {
        RawMessage { topic: topic.into(), payload, received_ms, key: None, position: None }
    }
}
