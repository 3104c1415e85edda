//! The vocabulary the stages share, in one place: a message as received
//! and where it sits in its source, a metric's id, what a shard reports of
//! the samples it took, the delivery mode, payload form and unknown-vehicle
//! policy the config picks, the partial rows the aggregator hands the sink,
//! what can be wrong with a dims row, and ([`epoch`]) the epoch protocol's
//! contract between the coordinator and the sources.
//!
//! It imports no other module of the crate: every stage may use it, so the
//! stages never import each other for a type.

pub mod epoch;

use std::sync::Arc;

use bytes::Bytes;

/// Where a message sits in a replayable source: Kafka's topic, partition
/// and offset, or the MQTT WAL's stream (partition 0) and record position.
/// The epoch coordinator commits the position after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub stream: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// A sample a shard took into an epoch, for the latency histograms
/// (received → committed, event → committed) and the readings committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Receive time, ms.
    pub received_ms: i64,
    /// Event time, ms.
    pub event_ms: i64,
    pub readings: u32,
}

/// How loads reach StarRocks (`starrocks.delivery`; see `Config::delivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Plain Stream Load, exactly once per label; for StarRocks without the
    /// transaction API.
    AtLeastOnce,
    /// Epochs with two-phase commit (`/api/transaction/*`).
    ExactlyOnce,
}

/// Which wire form payloads use (`decode.form`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    Wide,
    Narrow,
    /// Narrow when the topic matches the template, wide otherwise.
    Auto,
}

/// The dims row of a vehicle the enrichment snapshot does not know (its
/// dims load as NULL).
pub const NO_DIMS: u32 = u32::MAX;

/// Count, sum, min and max of the readings of one key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    pub cnt: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Agg {
    pub(crate) fn one(v: f64) -> Agg {
        Agg { cnt: 1, sum: v, min: v, max: v }
    }

    #[inline]
    pub(crate) fn add(&mut self, v: f64) {
        self.cnt += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Folds another partial aggregate in (what the Aggregate table does).
    pub fn merge(&mut self, o: &Agg) {
        self.cnt += o.cnt;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// The drained partial rows of one (vehicle, window, dims) group, in the
/// order their metrics first arrived: what the aggregator hands the sink's
/// CSV encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct PartialGroup<'a> {
    pub vin: &'a str,
    pub window_start_ms: i64,
    pub dims: u32,
    pub metrics: &'a [MetricId],
    pub aggs: &'a [Agg],
}

/// A metric's id in the catalog (`decode::catalog`): the hot path carries
/// ids, never names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricId(pub u32);

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

/// What to do with a sample whose vin is not in the dims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownVehicle {
    /// Load it with NULL dims.
    Keep,
    /// Leave it out (counted, logged once).
    Drop,
    /// Refuse it (dead letter, counted).
    DeadLetter,
}

impl UnknownVehicle {
    pub const ALL: [UnknownVehicle; 3] = [UnknownVehicle::Keep, UnknownVehicle::Drop, UnknownVehicle::DeadLetter];

    pub fn as_str(self) -> &'static str {
        match self {
            UnknownVehicle::Keep => "keep",
            UnknownVehicle::Drop => "drop",
            UnknownVehicle::DeadLetter => "dead_letter",
        }
    }
}

/// What is wrong with a row of the dims table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadRow {
    /// The vin is NULL or empty: the row is left out.
    NullVin,
    /// Several rows have this vin: all are left out (which is right is unknown).
    DuplicateVin,
    /// A vin or value longer than the tables take: the row is left out.
    TooLong,
    /// A value StarRocks' CSV cannot carry (separator, newline, `\N`, not
    /// UTF-8): the row is left out.
    BadValue,
    /// A dim is NULL: used as NULL.
    NullDim,
}

impl BadRow {
    pub const ALL: [BadRow; 5] =
        [BadRow::NullVin, BadRow::DuplicateVin, BadRow::TooLong, BadRow::BadValue, BadRow::NullDim];

    pub fn as_str(self) -> &'static str {
        match self {
            BadRow::NullVin => "null_vin",
            BadRow::DuplicateVin => "duplicate_vin",
            BadRow::TooLong => "too_long",
            BadRow::BadValue => "bad_value",
            BadRow::NullDim => "null_dim",
        }
    }
}
