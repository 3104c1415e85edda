//! The epoch protocol's contract between the coordinator
//! (`pipeline::epoch`) and the sources: the decision a source makes durable
//! with its positions ("epoch e of prefix p is decided") and its codec,
//! what a source does for the protocol ([`EpochSource`]), how its failures
//! are classified ([`SourceError`]), and what its rebalance callbacks ask of
//! the coordinator ([`Request`]). Kafka (`source::kafka`) and the MQTT WAL
//! (`wal::source`) implement it; the coordinator drives it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::RawMessage;

/// Source positions: (stream, partition) → the next position to read.
pub type Positions = BTreeMap<(Arc<str>, i32), i64>;

/// "Epoch `epoch` of instance `prefix` (with `shards` shards writing
/// `tables`) is decided": what a source stores with its positions. It also
/// says how to rebuild the epoch's rows from the source, should StarRocks
/// lose a transaction of it (issue 14): where the epoch's range began
/// (`from`, a WAL position) and each shard's lateness watermark when it
/// began (`watermarks`, newest event time seen, ms).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub prefix: String,
    pub epoch: u64,
    pub shards: u32,
    pub tables: Vec<String>,
    /// The source position the epoch's range starts at (`None`: not
    /// recorded; the range cannot be re-read).
    pub from: Option<i64>,
    /// Per shard, the newest event time it had seen when the epoch began
    /// (empty, or `i64::MIN`: none).
    pub watermarks: Vec<i64>,
    /// How many partitions the decision was written to (Kafka: a rebuild
    /// must find every one of them still holding it).
    pub partitions: Option<u32>,
    /// The decision this partition held when this instance was assigned it
    /// (Kafka): (prefix, epoch). It tells a previous owner, recovering,
    /// whether its last decision landed before the hand-over.
    pub base: Option<(String, u64)>,
}

const MAGIC: &str = "rockfeed/1";

impl Decision {
    /// `rockfeed/1 <prefix> <epoch> <shards> <table>,<table>[ from=<pos>][ parts=<n>][ base=<prefix>:<epoch>][ wm=<ms>,<ms>]`
    /// (a watermark of none is written empty).
    pub fn encode(&self) -> String {
        let mut s = format!("{MAGIC} {} {} {} {}", self.prefix, self.epoch, self.shards, self.tables.join(","));
        if let Some(f) = self.from {
            s.push_str(&format!(" from={f}"));
        }
        if let Some(n) = self.partitions {
            s.push_str(&format!(" parts={n}"));
        }
        if let Some((p, e)) = &self.base {
            s.push_str(&format!(" base={p}:{e}"));
        }
        if self.watermarks.iter().any(|&w| w != i64::MIN) {
            let w: Vec<String> =
                self.watermarks.iter().map(|&w| if w == i64::MIN { String::new() } else { w.to_string() }).collect();
            s.push_str(&format!(" wm={}", w.join(",")));
        }
        s
    }

    /// `None` for metadata rockfeed did not write.
    pub fn parse(s: &str) -> Option<Decision> {
        let mut it = s.split(' ');
        if it.next()? != MAGIC {
            return None;
        }
        let prefix = it.next()?.to_string();
        let epoch = it.next()?.parse().ok()?;
        let shards = it.next()?.parse().ok()?;
        let tables = it.next()?.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect();
        let mut d = Decision { prefix, epoch, shards, tables, ..Default::default() };
        for field in it {
            if let Some(f) = field.strip_prefix("from=") {
                d.from = Some(f.parse().ok()?);
            } else if let Some(n) = field.strip_prefix("parts=") {
                d.partitions = Some(n.parse().ok()?);
            } else if let Some(b) = field.strip_prefix("base=") {
                let (p, e) = b.rsplit_once(':')?;
                d.base = Some((p.to_string(), e.parse().ok()?));
            } else if let Some(w) = field.strip_prefix("wm=") {
                d.watermarks = w
                    .split(',')
                    .map(|x| if x.is_empty() { Some(i64::MIN) } else { x.parse().ok() })
                    .collect::<Option<_>>()?;
            }
        }
        Some(d)
    }

    /// Shard `k`'s watermark when the epoch began (`i64::MIN`: none).
    pub fn watermark(&self, k: u32) -> i64 {
        self.watermarks.get(k as usize).copied().unwrap_or(i64::MIN)
    }
}

/// Why a source's part of the epoch protocol failed, with what the
/// coordinator does about it ([`SourceErrorKind`]). Sources classify their
/// own failures (Kafka by librdkafka's error codes), so nothing downstream
/// reads message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub kind: SourceErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// The outcome is unknown (a timeout, a broker away, a disk error):
    /// read the decision back, and retry with back-off.
    Retry,
    /// Refused for this member's generation of the consumer group: nothing
    /// was applied, and retrying cannot succeed until the member rejoins,
    /// which waits for the coordinator (Kafka's RebalanceInProgress,
    /// IllegalGeneration, UnknownMemberId).
    Refused,
    /// The source does not hold what was asked, and never will again (a
    /// range past retention, a decision without its range): report it.
    Gone,
}

impl SourceError {
    pub fn retry(message: impl Into<String>) -> SourceError {
        SourceError { kind: SourceErrorKind::Retry, message: message.into() }
    }

    pub fn refused(message: impl Into<String>) -> SourceError {
        SourceError { kind: SourceErrorKind::Refused, message: message.into() }
    }

    pub fn gone(message: impl Into<String>) -> SourceError {
        SourceError { kind: SourceErrorKind::Gone, message: message.into() }
    }

    /// How long a decision that fails like this is retried before its
    /// epoch is abandoned (rolled back, replayed from the decided
    /// positions). A refusal gets a few seconds, which cover a rebalance
    /// that completes without this member; anything else a minute.
    pub fn retry_for(&self) -> Duration {
        match self.kind {
            SourceErrorKind::Refused => Duration::from_secs(5),
            SourceErrorKind::Retry | SourceErrorKind::Gone => Duration::from_secs(60),
        }
    }
}

/// What a source does for the epoch protocol.
pub trait EpochSource: Send + Sync + 'static {
    /// Makes `d` durable together with `positions`.
    fn decide(&self, d: &Decision, positions: &Positions) -> impl Future<Output = Result<(), SourceError>> + Send;
    /// Every decision the source holds (Kafka: the offset metadata of every
    /// partition of the subscribed topics, not only the assigned ones).
    fn decisions(&self) -> impl Future<Output = Result<Vec<Decision>, SourceError>> + Send;
    /// Every transaction of the epoch decided at `positions` is committed:
    /// what lies before them is no longer needed (the WAL deletes segments).
    fn committed(&self, _positions: &Positions) {}
    /// Re-reads the range of `d`, this instance's last decision, into a
    /// channel, for a rebuild of its lost transactions; an error says why
    /// the source cannot (no range recorded, or no longer held).
    fn replay(&self, _d: &Decision) -> Result<Replay, SourceError> {
        Err(SourceError::gone("this source cannot re-read a decided epoch's range"))
    }
    /// Whether `d` (or a later epoch of its prefix) is durable.
    fn decided(&self, d: &Decision) -> impl Future<Output = Result<bool, SourceError>> + Send {
        async move { Ok(self.decisions().await?.iter().any(|x| x.prefix == d.prefix && x.epoch >= d.epoch)) }
    }
}

/// A decided epoch's range, re-read from the source: its messages, then
/// the reader's end (how many it read, or why it failed; a failed range is
/// never loaded).
pub struct Replay {
    pub messages: mpsc::Receiver<RawMessage>,
    pub done: tokio::task::JoinHandle<Result<u64, String>>,
}

/// Requests from a source (its rebalance callbacks) to the coordinator.
pub enum Request {
    /// Finish the open epoch now (partitions are being revoked).
    Finish(oneshot::Sender<Result<(), String>>),
    /// Recover after an assignment, before any message of it is read.
    Recover(oneshot::Sender<Result<(), String>>),
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decision() -> impl Strategy<Value = Decision> {
        let name = "[a-z0-9_-]{1,12}";
        (
            (name, any::<u64>(), any::<u32>(), prop::collection::vec("[a-z_][a-z0-9_]{0,10}", 0..4)),
            (
                prop::option::of(any::<i64>()),
                prop::collection::vec(prop_oneof![Just(i64::MIN), any::<i64>()], 0..6),
                prop::option::of(any::<u32>()),
                prop::option::of((name, any::<u64>())),
            ),
        )
            .prop_map(|((prefix, epoch, shards, tables), (from, watermarks, partitions, base))| Decision {
                prefix,
                epoch,
                shards,
                tables,
                from,
                // Watermarks of none only are not written.
                watermarks: if watermarks.iter().all(|&w| w == i64::MIN) { Vec::new() } else { watermarks },
                partitions,
                base,
            })
    }

    proptest! {
        #[test]
        fn every_decision_reads_back_as_written(d in decision()) {
            prop_assert_eq!(Decision::parse(&d.encode()), Some(d));
        }
    }

    #[test]
    fn decisions_round_trip_and_foreign_metadata_is_ignored() {
        let d = Decision {
            prefix: "edge_7".into(),
            epoch: 42,
            shards: 4,
            tables: vec!["t1".into(), "latest".into()],
            ..Default::default()
        };
        assert_eq!(d.encode(), "rockfeed/1 edge_7 42 4 t1,latest");
        assert_eq!(Decision::parse(&d.encode()), Some(d.clone()));
        // The range and the watermarks a rebuild needs; older decisions
        // without them still parse.
        let full =
            Decision { from: Some(9000), watermarks: vec![i64::MIN, 1_700_000_000_000, -5, i64::MIN], ..d.clone() };
        assert_eq!(full.encode(), "rockfeed/1 edge_7 42 4 t1,latest from=9000 wm=,1700000000000,-5,");
        assert_eq!(Decision::parse(&full.encode()), Some(full.clone()));
        assert_eq!(full.watermark(1), 1_700_000_000_000);
        assert_eq!(full.watermark(7), i64::MIN);
        assert_eq!(Decision::parse("rockfeed/1 p 1 1 t from=x"), None);
        assert_eq!(Decision::parse(""), None);
        assert_eq!(Decision::parse("some other consumer"), None);
        assert_eq!(Decision::parse("rockfeed/1 p notanumber 1 t"), None);
    }
}
