//! Kafka's side of the epoch protocol: a decision is committed as every
//! partition's offset metadata (with where its range began), read back from
//! every partition of the subscribed topics, and a decided epoch's range is
//! re-read by a consumer of its own for a rebuild. librdkafka's failures
//! are classified by their error codes ([`SourceError`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::{KafkaConfig, KafkaSource, raw};
use crate::model::RawMessage;
use crate::model::epoch::{Decision, EpochSource, Positions, Replay, SourceError};

impl KafkaSource {
    fn all_partitions(&self) -> Result<TopicPartitionList, SourceError> {
        let mut tpl = TopicPartitionList::new();
        for t in &self.topics {
            let md = self
                .reader
                .fetch_metadata(Some(t), self.timeout)
                .map_err(|e| failed(&format!("metadata of {t}"), e))?;
            for mt in md.topics() {
                if let Some(e) = mt.error() {
                    return Err(SourceError::retry(format!("metadata of {t}: {e:?}")));
                }
                for p in mt.partitions() {
                    tpl.add_partition(mt.name(), p.id());
                }
            }
        }
        Ok(tpl)
    }

    fn decisions_blocking(&self) -> Result<Vec<Decision>, SourceError> {
        let tpl = self.all_partitions()?;
        let c = self.reader.committed_offsets(tpl, self.timeout).map_err(|e| failed("committed offsets", e))?;
        Ok(c.elements().iter().filter_map(|e| Decision::parse(e.metadata())).collect())
    }

    /// Commits `positions` with the decision as every partition's
    /// metadata, each with where that partition's range began and how many
    /// partitions the decision covers.
    fn decide_blocking(&self, d: &Decision, positions: &Positions) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::new();
        {
            let parts = self.shared.partitions();
            for ((topic, partition), next) in positions {
                let p = parts.get(&(topic.clone(), *partition));
                let meta = Decision {
                    from: p.and_then(|p| p.start),
                    partitions: Some(positions.len() as u32),
                    base: p.and_then(|p| p.base.clone()),
                    ..d.clone()
                }
                .encode();
                let mut e = tpl.add_partition(topic, *partition);
                e.set_offset(Offset::Offset(*next)).map_err(|e| failed("offset commit", e))?;
                e.set_metadata(meta);
            }
        }
        self.consumer.commit(&tpl, CommitMode::Sync).map_err(|e| failed("offset commit", e))?;
        let mut parts = self.shared.partitions();
        for (k, next) in positions {
            parts.entry(k.clone()).or_default().start = Some(*next);
        }
        Ok(())
    }

    /// Where each partition of `d` (a decision this prefix wrote) began and
    /// ended: every partition it was written to must still hold it, and
    /// the broker must still hold the range.
    fn ranges_blocking(&self, d: &Decision) -> Result<Vec<(String, i32, i64, i64)>, SourceError> {
        let tpl = self.all_partitions()?;
        let c = self.reader.committed_offsets(tpl, self.timeout).map_err(|e| failed("committed offsets", e))?;
        let mut ranges = Vec::new();
        let mut covers = None;
        for e in c.elements() {
            let Some(pd) = Decision::parse(e.metadata()) else { continue };
            if pd.prefix != d.prefix || pd.epoch != d.epoch {
                continue;
            }
            let (Offset::Offset(to), Some(from)) = (e.offset(), pd.from) else {
                return Err(SourceError::gone(format!(
                    "{}/{} holds the decision without where its range began",
                    e.topic(),
                    e.partition()
                )));
            };
            covers = pd.partitions;
            ranges.push((e.topic().to_string(), e.partition(), from, to));
        }
        match covers {
            Some(n) if n as usize == ranges.len() => {}
            Some(n) => {
                return Err(SourceError::gone(format!(
                    "only {} of the {n} partitions it was written to still hold it (another instance committed over the others)",
                    ranges.len()
                )));
            }
            None => return Err(SourceError::gone("no partition holds it with its range")),
        }
        for (topic, partition, from, to) in &ranges {
            if from >= to {
                continue;
            }
            let (low, _) = self
                .consumer
                .fetch_watermarks(topic, *partition, self.timeout)
                .map_err(|e| failed(&format!("watermarks of {topic}/{partition}"), e))?;
            if low > *from {
                return Err(SourceError::gone(format!(
                    "Kafka no longer holds offsets {from}..{low} of {topic}/{partition} (retention deleted them)"
                )));
            }
        }
        Ok(ranges)
    }
}

/// Reads `ranges` (topic, partition, from, to) with a consumer of its own
/// (assigned, outside the group: it joins nothing and commits nothing)
/// into `tx`, each partition from `from` up to `to`. An error if a range
/// cannot be read whole (its start deleted meanwhile, or no progress for a
/// minute).
fn read_ranges(
    cfg: &KafkaConfig,
    ranges: &[(String, i32, i64, i64)],
    tx: &mpsc::Sender<RawMessage>,
) -> Result<u64, String> {
    let mut cc = cfg.client_config();
    cc.set("group.id", format!("{}-rebuild", cfg.group_id)).set("auto.offset.reset", "error");
    let consumer: BaseConsumer = cc.create().map_err(|e| format!("Kafka consumer for the rebuild: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    // (topic, partition) → (next offset wanted, end).
    let mut open: HashMap<(String, i32), (i64, i64)> = HashMap::new();
    for (topic, partition, from, to) in ranges.iter().filter(|r| r.2 < r.3) {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*from)).map_err(|e| e.to_string())?;
        open.insert((topic.clone(), *partition), (*from, *to));
    }
    if open.is_empty() {
        return Ok(0);
    }
    consumer.assign(&tpl).map_err(|e| format!("assign for the rebuild: {e}"))?;
    let mut topics: HashMap<String, Arc<str>> = HashMap::new();
    let mut n = 0u64;
    let mut progress = std::time::Instant::now();
    while !open.is_empty() {
        if progress.elapsed() > Duration::from_secs(60) {
            return Err(format!("no progress re-reading {:?} for a minute", open.keys().collect::<Vec<_>>()));
        }
        let m = match consumer.poll(Duration::from_millis(100)) {
            // Nothing: a range may end in records the consumer never hands
            // out (transaction markers); its fetch position says so.
            None => {
                if let Ok(at) = consumer.position() {
                    for e in at.elements() {
                        if let Offset::Offset(p) = e.offset()
                            && open.get(&(e.topic().to_string(), e.partition())).is_some_and(|&(_, to)| p >= to)
                        {
                            open.remove(&(e.topic().to_string(), e.partition()));
                        }
                    }
                }
                continue;
            }
            Some(Err(e)) => return Err(format!("re-reading the range: {e}")),
            Some(Ok(m)) => m,
        };
        let key = (m.topic().to_string(), m.partition());
        let Some(&(next, to)) = open.get(&key) else { continue };
        // Offsets may skip (transaction markers); the range's start was
        // checked against the broker's low watermark, and a start deleted
        // since fails the read (`auto.offset.reset = error`).
        if m.offset() < next {
            continue;
        }
        progress = std::time::Instant::now();
        if m.offset() < to {
            let topic = topics.entry(key.0.clone()).or_insert_with(|| Arc::from(m.topic())).clone();
            if tx.blocking_send(raw(&m, topic, cfg.topic_from_key)).is_err() {
                return Err("the rebuild stopped reading".into());
            }
            n += 1;
        }
        if m.offset() + 1 >= to {
            open.remove(&key);
        } else {
            open.insert(key, (m.offset() + 1, to));
        }
    }
    Ok(n)
}

impl EpochSource for KafkaSource {
    // librdkafka's commit and offset fetch block: off the async workers
    // (needs the multi-threaded runtime `rockfeed run` uses).
    async fn decide(&self, d: &Decision, positions: &Positions) -> Result<(), SourceError> {
        tokio::task::block_in_place(|| self.decide_blocking(d, positions))
    }

    async fn decisions(&self) -> Result<Vec<Decision>, SourceError> {
        tokio::task::block_in_place(|| self.decisions_blocking())
    }

    /// Every partition's range of `d` (from its committed offset's
    /// metadata), read by a consumer of its own on a blocking thread.
    fn replay(&self, d: &Decision) -> Result<Replay, SourceError> {
        let ranges = tokio::task::block_in_place(|| self.ranges_blocking(d))?;
        let (tx, rx) = mpsc::channel(1024);
        let cfg = self.cfg.clone();
        let done = tokio::task::spawn_blocking(move || read_ranges(&cfg, &ranges, &tx));
        Ok(Replay { messages: rx, done })
    }
}

/// A librdkafka failure of `what`, classified by its error code. A group
/// that is rebalancing refuses a commit until this member rejoins, and
/// rejoining starts with the revoke callback, which waits for the
/// coordinator, which is deciding: retrying cannot succeed, so it is
/// [`Refused`](crate::model::epoch::SourceErrorKind::Refused) (the epoch is rolled back after a few
/// seconds and replayed from the decided offsets). Anything else may pass.
fn failed(what: &str, e: KafkaError) -> SourceError {
    use rdkafka::types::RDKafkaErrorCode as C;
    let message = format!("{what}: {e}");
    match e.rdkafka_error_code() {
        Some(C::RebalanceInProgress | C::IllegalGeneration | C::UnknownMemberId) => SourceError::refused(message),
        _ => SourceError::retry(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_refused_for_the_members_generation_is_told_by_its_code() {
        use crate::model::epoch::SourceErrorKind;
        use rdkafka::types::RDKafkaErrorCode as C;
        for code in [C::RebalanceInProgress, C::IllegalGeneration, C::UnknownMemberId] {
            let e = failed("offset commit", KafkaError::ConsumerCommit(code));
            assert_eq!(e.kind, SourceErrorKind::Refused, "{e}");
            assert!(e.message.starts_with("offset commit: "), "{e}");
            assert_eq!(e.retry_for(), Duration::from_secs(5));
        }
        for e in [
            KafkaError::ConsumerCommit(C::RequestTimedOut),
            KafkaError::ConsumerCommit(C::BrokerTransportFailure),
            KafkaError::MetadataFetch(C::UnknownTopicOrPartition),
        ] {
            let e = failed("offset commit", e);
            assert_eq!((e.kind, e.retry_for()), (SourceErrorKind::Retry, Duration::from_secs(60)), "{e}");
        }
    }
}
