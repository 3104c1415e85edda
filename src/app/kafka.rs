//! The Kafka side of `rockfeed run`: one life is a consumer with its poll
//! thread, decoder and shards under the coordinator. Recovery runs at
//! start, before the group is joined, and again on every assignment; an
//! abandoned epoch restarts the whole life (new consumer, consumption from
//! the decided offsets).

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::{Parts, coordinator, drain_within, stop_grace, stopped_while_recovering};
use crate::config::Config;
use crate::pipeline::epoch::EpochError;
use crate::pipeline::runner::{RunnerConfig, Sinks};
use crate::shutdown::{Scope, join_within, stopped};
use crate::source::kafka::{KafkaConfig, KafkaSource};

/// One life of the Kafka pipeline: consumer thread, decoder and shards,
/// coordinator. Returns when `shutdown` has flipped and the last epoch is
/// committed, or with the error that ended it.
pub(super) async fn run_kafka(
    cfg: &Config,
    kafka: &KafkaConfig,
    parts: &Parts<'_>,
    shutdown: &watch::Receiver<bool>,
    ready: &watch::Sender<bool>,
) -> Result<(), EpochError> {
    let Parts { loader, enrich, stats, archive, .. } = *parts;
    let rcfg = RunnerConfig::from(cfg);
    let (req_tx, req_rx) = mpsc::channel(4);
    let source = KafkaSource::new(kafka, req_tx, ready.clone(), stats.clone()).map_err(EpochError::Fatal)?;
    let (tx, rx) = mpsc::channel(kafka.max_buffered.max(1));
    let (cut_tx, cut_rx) = mpsc::channel(1);
    let mut coordinator = coordinator(cfg, &rcfg, source.clone(), parts, cut_tx);
    // Recovery at start, before the group is joined: the decisions are
    // read from every partition's committed offsets, so an instance that
    // gets no partition (more members than partitions, or a restart the
    // group does not assign to) still finishes or rolls back what its last
    // life left prepared. Each assignment recovers again.
    let recovered = tokio::select! {
        r = coordinator.recover() => Some(r),
        _ = stopped(shutdown) => None,
    };
    match recovered {
        Some(Ok(())) => {}
        ended => {
            close_kafka(source, None).await;
            return ended.unwrap_or_else(stopped_while_recovering);
        }
    }
    // The poll thread stops handing messages over on the outer shutdown or
    // at the end of this life, and stops polling once `done` flips.
    let life = Scope::below(shutdown);
    let (done_tx, done_rx) = watch::channel(false);
    let (poll, poll_done) = spawn_poll(&source, kafka, tx, life.signal(), done_rx)?;
    let pipeline = tokio::spawn(crate::pipeline::runner::run(
        rcfg.clone(),
        Sinks { loader: loader.clone(), archive: archive.clone() },
        enrich.clone(),
        rx,
        stats.clone(),
        cut_rx,
    ));
    // Boxed, so an unfinished coordinator can be dropped below (its cut
    // sender going is what ends the decoder).
    let mut coordinate = Box::pin(coordinator.run(req_rx, shutdown.clone()));
    // A stop waits this long for the last epoch; past it (StarRocks down),
    // rockfeed exits undecided and recovery rolls the epoch back next time.
    let grace = stop_grace(parts.stop);
    tokio::pin!(grace);
    let result = tokio::select! {
        r = &mut coordinate => r,
        r = poll_done => match r {
            Ok(Err(e)) => Err(EpochError::Abandoned { epoch: 0, reason: e }),
            // The poll loop ended because of shutdown: the coordinator
            // finishes the last epoch.
            _ => tokio::select! {
                r = &mut coordinate => r,
                e = &mut grace => Err(e),
            },
        },
        e = &mut grace => Err(e),
    };
    drop(coordinate);
    drop(life);
    let _ = done_tx.send(true);
    // The decoder ends when the coordinator's cut sender is gone; a shard
    // still retrying a transaction is not waited for long.
    join_within(pipeline, drain_within(parts.stop)).await;
    close_kafka(source, Some(poll)).await;
    result
}

/// How a poll thread ended: `Err` when the consumer failed.
type PollEnded = tokio::sync::oneshot::Receiver<Result<(), String>>;

/// The poll thread of one Kafka life: hands messages to `tx` until `stop`
/// says so and polls until `done` flips; how it ended arrives on the
/// receiver.
fn spawn_poll(
    source: &Arc<KafkaSource>,
    kafka: &KafkaConfig,
    tx: mpsc::Sender<crate::model::RawMessage>,
    stop: watch::Receiver<bool>,
    done: watch::Receiver<bool>,
) -> Result<(std::thread::JoinHandle<()>, PollEnded), EpochError> {
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    let (source, max, by_key) = (source.clone(), kafka.max_buffered.max(1), kafka.topic_from_key);
    let poll = std::thread::Builder::new()
        .name("kafka-poll".into())
        .spawn(move || {
            let r = source.poll_loop(tx, stop, done, max, by_key);
            let _ = ended_tx.send(r);
        })
        .map_err(|e| EpochError::Fatal(format!("cannot start the Kafka thread: {e}")))?;
    Ok((poll, ended))
}

/// Stops the source's callbacks, then joins its poll thread and drops it
/// off the runtime (librdkafka's destructor blocks until the consumer has
/// left its group).
async fn close_kafka(source: Arc<KafkaSource>, poll: Option<std::thread::JoinHandle<()>>) {
    source.close();
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(p) = poll {
            let _ = p.join();
        }
        drop(source);
    })
    .await;
}
