//! The decoder stage: takes raw messages from the source channel, decodes
//! them (wide or narrow JSON), dead-letters what it refuses (with the
//! reason and the raw payload), joins the vehicle dims, and routes each
//! sample to its shard by StarRocks bucket. It hands each shard one batch
//! for everything already waiting in the source channel (up to 256
//! messages), so a stream of small narrow messages does not cost a channel
//! send each.
//!
//! It also answers the coordinator's cuts: a seal goes to every shard in
//! the same channel as the samples, so it follows exactly the samples
//! routed before it, and the cut's reply carries the source positions after
//! the last message taken. The last cut closes the source channel, takes
//! what is left in it and ends the stage.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use compact_str::CompactString;
use tokio::sync::{mpsc, oneshot};

use super::epoch::{Cut, CutReply};
use super::route::shard_of;
use super::runner::RunnerConfig;
use super::shard::ShardMsg;
use crate::deadletter::{DeadLetter, DeadLetterWriter};
use crate::decode::catalog::MetricCatalog;
use crate::decode::narrow::TopicTemplate;
use crate::decode::{Decoded, Sample, narrow, wide};
use crate::enrich::{DimRow, Enrichment};
use crate::model::Form;
use crate::model::RawMessage;
use crate::model::UnknownVehicle;
use crate::model::epoch::Positions;
use crate::reject::RejectReason;
use crate::telemetry::{Local, Stage, Stats};

/// A sample on its way to its shard.
pub(crate) struct Routed {
    pub sample: Sample,
    /// The vehicle's dims (`None`: unknown vehicle, NULL dims).
    pub dims: Option<DimRow>,
    /// Receive time, ms.
    pub received_ms: i64,
    /// Where it came from, for the archive (empty without one).
    pub source: CompactString,
}

/// Messages the decoder takes from the source channel before handing the
/// routed samples to the shards, and readings: a shard's channel holds
/// `channel_batches` hand-offs, so this bounds its memory in readings
/// (~16 bytes each), whatever the messages' width (narrow messages carry
/// one reading, wide ones a thousand).
const MAX_MESSAGES_PER_HANDOFF: usize = 256;
const MAX_READINGS_PER_HANDOFF: usize = 16_384;

/// How often the vehicle file is checked for changes.
const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the stage until the coordinator's last cut (or its cut sender goes).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    cfg: &RunnerConfig,
    catalog: &RwLock<MetricCatalog>,
    dead: &Mutex<DeadLetterWriter>,
    enrich: Option<&Enrichment>,
    stats: &Stats,
    mut rx: mpsc::Receiver<RawMessage>,
    mut cuts: mpsc::Receiver<Cut>,
    shard_tx: &[mpsc::Sender<ShardMsg>],
    archive: bool,
) -> std::io::Result<()> {
    let template = TopicTemplate::parse(&cfg.decode.topic_template).map_err(std::io::Error::other)?;
    let mut dec = Decoder {
        cfg,
        template: &template,
        catalog,
        dead,
        enrich,
        stats,
        decoded: Decoded::default(),
        event_to_received: Local::default(),
        positions: Positions::new(),
        archive,
        reported_drop: false,
    };
    // Samples routed but not yet handed to their shard; empty between
    // branches, so a seal always follows exactly the samples before it.
    let mut per_shard: Vec<Vec<Routed>> = (0..cfg.shards).map(|_| Vec::new()).collect();
    let mut reload = tokio::time::interval(RELOAD_EVERY);
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut source_open = true;
    loop {
        // At pipeline.max_epoch_bytes: take no more messages until an
        // (early) epoch lets bodies go; cuts are still served.
        let over = stats.bodies.over();
        tokio::select! {
            biased;
            cut = cuts.recv() => {
                let Some(cut) = cut else { break };
                if seal(cut, &mut dec, &mut rx, &mut per_shard, shard_tx).await? {
                    break;
                }
            }
            _ = reload.tick() => {
                if let Some(e) = enrich && let Err(err) = e.reload_if_changed() {
                    tracing::error!(error = %err, "Vehicle file reload failed; keeping the previous snapshot.");
                }
            }
            _ = stats.bodies.freed(), if over => {}
            msg = rx.recv(), if source_open && !over => {
                let Some(m) = msg else {
                    // The source is gone; the last cut still seals what was taken.
                    source_open = false;
                    continue;
                };
                take_burst(m, &mut dec, &mut rx, &mut per_shard);
                hand_off(&mut per_shard, shard_tx).await?;
            }
        }
    }
    stats.merge(Stage::EventToReceived, &mut dec.event_to_received);
    Ok(())
}

/// Serves the coordinator's cut: takes what it asks for from the source,
/// hands every routed sample over, and asks each shard to seal the epoch;
/// the reply carries the positions and the shards' answers. A discard cut
/// drops what is queued and held instead. Returns whether it was the last.
async fn seal(
    cut: Cut,
    dec: &mut Decoder<'_>,
    rx: &mut mpsc::Receiver<RawMessage>,
    per_shard: &mut [Vec<Routed>],
    shard_tx: &[mpsc::Sender<ShardMsg>],
) -> std::io::Result<bool> {
    if cut.discard {
        discard(rx, per_shard, &mut dec.positions, shard_tx).await?;
        let _ = cut.reply.send(CutReply { positions: Positions::new(), shards: Vec::new() });
        return Ok(false);
    }
    if cut.last {
        // Everything the source handed over belongs to the last epoch.
        rx.close();
        while let Some(m) = rx.recv().await {
            dec.take(m, per_shard);
        }
    } else if cut.drain {
        while let Ok(m) = rx.try_recv() {
            dec.take(m, per_shard);
        }
    }
    hand_off(per_shard, shard_tx).await?;
    if let Ok(mut d) = dec.dead.lock() {
        let _ = d.flush(false);
    }
    let mut replies = Vec::with_capacity(shard_tx.len());
    for t in shard_tx {
        let (done_tx, done_rx) = oneshot::channel();
        if t.send(ShardMsg::Seal(cut.epoch, done_tx)).await.is_err() {
            return Err(std::io::Error::other("a shard stopped"));
        }
        replies.push(done_rx);
    }
    let positions = if cut.reset_positions { std::mem::take(&mut dec.positions) } else { dec.positions.clone() };
    let _ = cut.reply.send(CutReply { positions, shards: replies });
    let stats = dec.stats;
    stats.epochs.fetch_add(1, Ordering::Relaxed);
    stats.merge(Stage::EventToReceived, &mut dec.event_to_received);
    *stats.queue_depth.lock() = shard_tx.iter().map(|t| (t.max_capacity() - t.capacity()) as u64).collect();
    Ok(cut.last)
}

/// Decodes `m`, then what is already waiting behind it (try_recv never
/// waits, so a quiet stream gains no latency), up to a hand-off's bounds:
/// a burst of small messages costs one channel send per shard, not one
/// each.
fn take_burst(
    m: RawMessage,
    dec: &mut Decoder<'_>,
    rx: &mut mpsc::Receiver<RawMessage>,
    per_shard: &mut [Vec<Routed>],
) {
    let mut readings = dec.take(m, per_shard);
    for _ in 1..MAX_MESSAGES_PER_HANDOFF {
        if readings >= MAX_READINGS_PER_HANDOFF {
            break;
        }
        match rx.try_recv() {
            Ok(m) => readings += dec.take(m, per_shard),
            Err(_) => break,
        }
    }
}

/// Sends each shard its routed samples (one batch per shard) and leaves
/// `per_shard` empty.
async fn hand_off(per_shard: &mut [Vec<Routed>], shard_tx: &[mpsc::Sender<ShardMsg>]) -> std::io::Result<()> {
    let now = Instant::now();
    for (batch, tx) in per_shard.iter_mut().zip(shard_tx) {
        // The next batch is allocated at this one's size: grown from empty
        // it would be reallocated a dozen times per hand-off.
        let next = Vec::with_capacity(batch.len());
        if !batch.is_empty() && tx.send(ShardMsg::Samples(std::mem::replace(batch, next), now)).await.is_err() {
            return Err(std::io::Error::other("a shard stopped"));
        }
    }
    Ok(())
}

/// The decoder's state: decode, dead-letter what is refused, enrich, route.
pub(crate) struct Decoder<'a> {
    cfg: &'a RunnerConfig,
    template: &'a TopicTemplate,
    catalog: &'a RwLock<MetricCatalog>,
    dead: &'a Mutex<DeadLetterWriter>,
    enrich: Option<&'a Enrichment>,
    stats: &'a Stats,
    /// Reused for every message.
    decoded: Decoded,
    /// Event time → received, merged into the stats once per epoch.
    event_to_received: Local,
    /// Position after the last message taken, per (stream, partition).
    positions: Positions,
    /// Samples carry their source position for the archive.
    archive: bool,
    /// The first sample dropped as an unknown vehicle was logged.
    reported_drop: bool,
}

impl Decoder<'_> {
    /// Decodes one message and routes its samples into `per_shard`.
    /// Returns the readings routed.
    fn take(&mut self, m: RawMessage, per_shard: &mut [Vec<Routed>]) -> usize {
        let (cfg, stats) = (self.cfg, self.stats);
        stats.messages.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &m.position {
            self.positions.insert((p.stream.clone(), p.partition), p.offset + 1);
        }
        self.decoded.clear();
        {
            let mut cat = self.catalog.write().unwrap_or_else(|p| p.into_inner());
            let narrow_topic = matches!(cfg.decode.form, Form::Narrow)
                || (cfg.decode.form == Form::Auto && self.template.captures(&m.topic).is_some());
            if narrow_topic {
                narrow::decode(
                    &m.topic,
                    &m.payload,
                    m.received_ms,
                    &cfg.decode,
                    self.template,
                    &mut cat,
                    &mut self.decoded,
                );
            } else {
                wide::decode(&m.payload, m.received_ms, &cfg.decode, &mut cat, &mut self.decoded);
            }
        }
        // Only refused input (and the archive) needs the source text: build
        // it then.
        let source = || source_of(&m);
        if !self.decoded.rejects.is_empty() {
            let mut d = self.dead.lock().unwrap_or_else(|p| p.into_inner());
            for r in &self.decoded.rejects {
                stats.rejected.add(r.reason, r.count(), r.readings);
                let detail = match r.index {
                    Some(i) => format!("sample {i}: {}", r.detail),
                    None => r.detail.clone(),
                };
                let rec = DeadLetter {
                    at_ms: m.received_ms,
                    reason: r.reason.as_str(),
                    detail: &detail,
                    source: &source(),
                    payload: &m.payload,
                };
                if let Err(e) = d.write(&rec) {
                    tracing::error!(error = %e, "Cannot write a dead letter.");
                }
            }
        }
        let src = if self.archive && !self.decoded.samples.is_empty() { source() } else { CompactString::default() };
        let snap = self.enrich.map(|e| e.snapshot());
        let mut routed = 0;
        for s in self.decoded.samples.drain(..) {
            let dims = snap.as_ref().and_then(|sn| sn.row(&s.vin));
            if dims.is_none() && snap.is_some() {
                stats.enrich.unknown(cfg.unknown_vehicle).fetch_add(1, Ordering::Relaxed);
                match cfg.unknown_vehicle {
                    UnknownVehicle::Keep => {}
                    UnknownVehicle::Drop => {
                        if !std::mem::replace(&mut self.reported_drop, true) {
                            tracing::info!(vin = %s.vin, "Samples of vehicles not in the dims are dropped (enrich.unknown_vehicle = \"drop\"; rockfeed_unknown_vehicles_total{{policy=\"drop\"}} counts them).");
                        }
                        continue;
                    }
                    UnknownVehicle::DeadLetter => {
                        stats.rejected.add(RejectReason::UnknownVehicle, 1, s.readings.len() as u64);
                        let mut d = self.dead.lock().unwrap_or_else(|p| p.into_inner());
                        let detail = format!("vin {} is not in the vehicle dimensions", s.vin);
                        let rec = DeadLetter {
                            at_ms: m.received_ms,
                            reason: RejectReason::UnknownVehicle.as_str(),
                            detail: &detail,
                            source: &source(),
                            payload: &m.payload,
                        };
                        if let Err(e) = d.write(&rec) {
                            tracing::error!(error = %e, "Cannot write a dead letter.");
                        }
                        continue;
                    }
                }
            }
            stats.samples.fetch_add(1, Ordering::Relaxed);
            stats.readings.fetch_add(s.readings.len() as u64, Ordering::Relaxed);
            self.event_to_received.record_ms(m.received_ms - s.ts_ms, s.readings.len() as u64);
            let key = match (&m.key, cfg.route_by_key) {
                (Some(k), true) => k.as_ref(),
                _ => s.vin.as_bytes(),
            };
            let k = shard_of(key, cfg.buckets, cfg.shards) as usize;
            routed += s.readings.len();
            per_shard[k].push(Routed { sample: s, dims, received_ms: m.received_ms, source: src.clone() });
        }
        routed
    }
}

/// A discard cut (epoch rolled back on a revoke): drops what the source
/// queued, the samples not yet handed over and the positions, and has every
/// shard drop what it holds; returns once they have.
async fn discard(
    rx: &mut mpsc::Receiver<RawMessage>,
    per_shard: &mut [Vec<Routed>],
    positions: &mut Positions,
    shard_tx: &[mpsc::Sender<ShardMsg>],
) -> std::io::Result<()> {
    let mut dropped = 0u64;
    while rx.try_recv().is_ok() {
        dropped += 1;
    }
    per_shard.iter_mut().for_each(Vec::clear);
    positions.clear();
    let mut acks = Vec::with_capacity(shard_tx.len());
    for t in shard_tx {
        let (tx, ack) = oneshot::channel();
        t.send(ShardMsg::Discard(tx)).await.map_err(|_| std::io::Error::other("a shard stopped"))?;
        acks.push(ack);
    }
    for a in acks {
        a.await.map_err(|_| std::io::Error::other("a shard stopped"))?;
    }
    tracing::debug!(dropped, "Discarded the revoked partitions' in-flight messages.");
    Ok(())
}

/// Where a message came from: `kafka:topic/partition@offset` or `mqtt:topic`.
fn source_of(m: &RawMessage) -> CompactString {
    match &m.position {
        Some(p) if &*p.stream == crate::wal::STREAM => {
            compact_str::format_compact!("mqtt:{}@wal:{}", m.topic, p.offset + 1)
        }
        Some(p) => compact_str::format_compact!("kafka:{}/{}@{}", p.stream, p.partition, p.offset),
        None => compact_str::format_compact!("mqtt:{}", m.topic),
    }
}
