//! `/metrics` (Prometheus text format 0.0.4), `/health` and `/ready`.
//!
//! - `/health`: 200 while the process serves requests.
//! - `/ready`: 200 once the source has subscribed (the pipeline takes
//!   messages) and while StarRocks takes loads; 503 before, during
//!   shutdown, and while StarRocks refuses or fails them (the body says
//!   why and what to do).
//! - `/metrics`: the [`Stats`] counters (`rockfeed_*_total`), gauges (ready,
//!   shard queue depth, process memory) and every latency histogram as one
//!   Prometheus histogram family, `rockfeed_stage_latency_seconds{stage=…}`,
//!   with fixed buckets read off the HDR histogram (`_sum` is mean × count:
//!   HDR histograms keep no exact sum).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use http::{Method, StatusCode};
use tokio::sync::watch;

use super::{Stats, process};
use crate::httpd::{Drop, Resp, serve, text};

/// Bucket bounds of the latency histograms, seconds.
pub const BUCKETS_S: [f64; 15] =
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0];

/// One unlabelled sample with its HELP and TYPE (`counter` or `gauge`) lines.
fn metric(out: &mut String, kind: &str, name: &str, help: &str, v: impl std::fmt::Display) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n");
}

/// Vehicle dims: unknown vehicles by policy, database refreshes, bad rows
/// of the dims table by problem, vehicles in the snapshot.
fn enrich(o: &mut String, s: &Stats) {
    let e = &s.enrich;
    let _ = write!(
        o,
        "# HELP rockfeed_unknown_vehicles_total Samples of vehicles not in the dims, by the policy applied (enrich.unknown_vehicle).\n# TYPE rockfeed_unknown_vehicles_total counter\n"
    );
    for p in crate::model::UnknownVehicle::ALL {
        let _ =
            writeln!(o, "rockfeed_unknown_vehicles_total{{policy=\"{}\"}} {}", p.as_str(), e.unknown(p).load(Relaxed));
    }
    metric(
        o,
        "counter",
        "rockfeed_enrich_refreshes_total",
        "Vehicle dims database refreshes that worked.",
        e.refreshes.load(Relaxed),
    );
    metric(
        o,
        "counter",
        "rockfeed_enrich_refresh_failures_total",
        "Vehicle dims database refreshes that failed (the last snapshot stays in use).",
        e.refresh_failures.load(Relaxed),
    );
    let _ = write!(
        o,
        "# HELP rockfeed_enrich_bad_rows_total Rows of the vehicle dims table left out (or used with NULL dims: null_dim), by problem.\n# TYPE rockfeed_enrich_bad_rows_total counter\n"
    );
    for (p, n) in crate::model::BadRow::ALL.iter().zip(&e.bad_rows) {
        let _ = writeln!(o, "rockfeed_enrich_bad_rows_total{{problem=\"{}\"}} {}", p.as_str(), n.load(Relaxed));
    }
    metric(o, "gauge", "rockfeed_enrich_vehicles", "Vehicles in the current dims snapshot.", e.vehicles.load(Relaxed));
}

/// Kafka retention losses per partition: how often consumption jumped
/// past deleted offsets, and how many offsets it skipped.
fn offset_resets(o: &mut String, s: &Stats) {
    let m = s.kafka_offset_resets.lock();
    for (name, help, skipped) in [
        (
            "rockfeed_kafka_offset_resets_total",
            "Times a Kafka partition's consumption jumped past offsets the broker had deleted (retention).",
            false,
        ),
        (
            "rockfeed_kafka_offsets_skipped_total",
            "Kafka offsets deleted by retention before rockfeed read them: lost.",
            true,
        ),
    ] {
        let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} counter\n");
        for ((topic, partition), (resets, n)) in m.iter() {
            let v = if skipped { n } else { resets };
            let _ = writeln!(o, "{name}{{topic=\"{topic}\",partition=\"{partition}\"}} {v}");
        }
    }
}

/// The refusals by reason, one family per unit
/// (`rockfeed_rejected_{messages,samples,readings,rows}_total`); the
/// readings family also counts the readings inside refused messages,
/// samples and rows, where they could be counted. Every reason of a unit
/// is listed, at 0 until it happens.
fn rejected(o: &mut String, s: &Stats) {
    use crate::reject::{RejectReason, Unit};
    let counts = s.rejected.snapshot();
    for unit in Unit::ALL {
        let name = format!("rockfeed_rejected_{}_total", unit.as_str());
        let help = match unit {
            Unit::Messages => "Messages refused whole (dead-lettered), by reason.",
            Unit::Samples => "Samples refused whole (dead-lettered), by reason.",
            Unit::Readings => "Readings refused, alone or with their sample, message or row, by reason.",
            Unit::Rows => "Aggregate rows refused (dead-lettered), by reason.",
        };
        let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} counter\n");
        for r in RejectReason::ALL {
            let c = counts.get(&r).copied().unwrap_or_default();
            let v = match unit {
                Unit::Readings if r.unit() == Unit::Readings => c.count,
                Unit::Readings => c.readings,
                u if u == r.unit() => c.count,
                _ => continue,
            };
            let _ = writeln!(o, "{name}{{reason=\"{}\"}} {v}", r.as_str());
        }
    }
}

/// The `/metrics` text.
pub fn render(s: &Stats, ready: bool) -> String {
    let mut o = String::new();
    metric(
        &mut o,
        "counter",
        "rockfeed_messages_total",
        "Messages received from the source.",
        s.messages.load(Relaxed),
    );
    metric(
        &mut o,
        "counter",
        "rockfeed_samples_total",
        "Vehicle samples decoded and accepted.",
        s.samples.load(Relaxed),
    );
    metric(&mut o, "counter", "rockfeed_readings_total", "Readings decoded and accepted.", s.readings.load(Relaxed));
    metric(
        &mut o,
        "counter",
        "rockfeed_readings_committed_total",
        "Readings whose aggregate rows StarRocks committed.",
        s.readings_committed.load(Relaxed),
    );
    rejected(&mut o, s);
    offset_resets(&mut o, s);
    enrich(&mut o, s);
    metric(
        &mut o,
        "counter",
        "rockfeed_rows_loaded_total",
        "Aggregate rows loaded into StarRocks.",
        s.rows_loaded.load(Relaxed),
    );
    metric(&mut o, "counter", "rockfeed_loads_total", "Stream Loads that succeeded.", s.loads.load(Relaxed));
    metric(
        &mut o,
        "counter",
        "rockfeed_loads_failed_total",
        "Stream Loads that failed for good (dead-lettered).",
        s.loads_failed.load(Relaxed),
    );
    metric(&mut o, "counter", "rockfeed_epochs_total", "Epochs sealed.", s.epochs.load(Relaxed));
    metric(
        &mut o,
        "gauge",
        "rockfeed_epoch_seconds",
        "The epoch length the pacer set (stretched while StarRocks shows pressure).",
        s.epoch_ms.load(Relaxed) as f64 / 1000.0,
    );
    metric(
        &mut o,
        "counter",
        "rockfeed_starrocks_throttled_total",
        "StarRocks replies asking for less load (too many versions, running-transaction cap, memory, HTTP concurrency).",
        s.throttled.load(Relaxed),
    );
    protocol_counters(&mut o, s);
    gauges(&mut o, s, ready);
    histograms(&mut o, s);
    o
}

/// The epoch protocol's, the archive's, the MQTT source's and the WAL's counters.
fn protocol_counters(o: &mut String, s: &Stats) {
    epoch_counters(o, s);
    archive_counters(o, s);
    intake_counters(o, s);
}

/// Counters, each with its name and help.
fn counters(o: &mut String, list: &[(&str, &str, &AtomicU64)]) {
    for (name, help, v) in list {
        metric(o, "counter", name, help, v.load(Relaxed));
    }
}

/// The epoch protocol's counters: decisions, transactions, restarts.
fn epoch_counters(o: &mut String, s: &Stats) {
    counters(
        o,
        &[
            (
                "rockfeed_epochs_decided_total",
                "Epochs whose decision (source positions) is durable.",
                &s.epochs_decided,
            ),
            (
                "rockfeed_txns_committed_total",
                "2PC transactions committed after their epoch's decision.",
                &s.txns_committed,
            ),
            ("rockfeed_txns_reloaded_total", "Decided transactions found aborted and loaded again.", &s.txns_reloaded),
            (
                "rockfeed_epochs_abandoned_on_revoke_total",
                "Epochs rolled back on a Kafka revoke while the pipeline went on.",
                &s.epochs_abandoned_on_revoke,
            ),
            (
                "rockfeed_pipeline_restarts_total",
                "Pipeline restarts after an abandoned epoch (from the decided positions).",
                &s.pipeline_restarts,
            ),
            (
                "rockfeed_txns_rebuilt_total",
                "Lost transactions of a decided epoch rebuilt from the source at recovery and committed.",
                &s.txns_rebuilt,
            ),
            ("rockfeed_txns_rolled_back_total", "Transactions of undecided epochs rolled back.", &s.txns_rolled_back),
            (
                "rockfeed_txns_recovered_total",
                "Prepared transactions of decided epochs committed by recovery.",
                &s.txns_recovered,
            ),
            (
                "rockfeed_txns_lost_total",
                "Decided transactions StarRocks lost that could not be rebuilt from the source (rows lost).",
                &s.txns_lost,
            ),
            (
                "rockfeed_dead_letter_files_evicted_total",
                "Dead-letter files removed, with the refused input in them, to respect dead_letter.max_files.",
                &s.dead_letter_files_evicted,
            ),
        ],
    );
}

/// The raw archive's counters, and its reconciliation with the tables.
fn archive_counters(o: &mut String, s: &Stats) {
    counters(
        o,
        &[
            (
                "rockfeed_archive_readings_spooled_total",
                "Raw readings fsynced into the archive spool.",
                &s.archive_readings_spooled,
            ),
            (
                "rockfeed_archive_readings_published_total",
                "Raw readings in published archive files.",
                &s.archive_readings_published,
            ),
            ("rockfeed_archive_files_published_total", "Archive Parquet files published.", &s.archive_files_published),
            ("rockfeed_archive_bytes_published_total", "Bytes of archive files published.", &s.archive_bytes_published),
            (
                "rockfeed_archive_upload_failures_total",
                "Archive uploads that failed (retried).",
                &s.archive_upload_failures,
            ),
            (
                "rockfeed_archive_conflicts_total",
                "Archive files refused: their name holds other content.",
                &s.archive_conflicts,
            ),
            ("rockfeed_archive_spool_failures_total", "Archive spool writes that failed.", &s.archive_spool_failures),
            (
                "rockfeed_archive_spool_full_total",
                "Times spooling waited for the spool's disk bound.",
                &s.archive_spool_full,
            ),
            (
                "rockfeed_archive_spills_total",
                "Times a shard's raw samples spilled to the spool mid-epoch (archive.spill_bytes).",
                &s.archive_spills,
            ),
            (
                "rockfeed_reconcile_mismatches_total",
                "Epochs whose archived readings differ from aggregated + too-late ones.",
                &s.reconcile_mismatches,
            ),
        ],
    );
}

/// The MQTT intake's and the WAL's counters.
fn intake_counters(o: &mut String, s: &Stats) {
    counters(
        o,
        &[
            ("rockfeed_mqtt_received_total", "MQTT messages received.", &s.mqtt_received),
            (
                "rockfeed_mqtt_payload_bytes_total",
                "Payload bytes of the MQTT messages received.",
                &s.mqtt_payload_bytes,
            ),
            (
                "rockfeed_mqtt_duplicates_total",
                "MQTT redeliveries of messages already in the WAL, dropped.",
                &s.mqtt_duplicates,
            ),
            ("rockfeed_mqtt_ack_writes_total", "Socket writes that carried PUBACKs.", &s.mqtt_ack_writes),
            (
                "rockfeed_wal_commits_total",
                "WAL group commits (each made durable once: an fdatasync, or one O_DSYNC write through io_uring).",
                &s.wal_commits,
            ),
            ("rockfeed_wal_records_total", "Records made durable in the WAL.", &s.wal_records),
            (
                "rockfeed_wal_written_bytes_total",
                "Bytes written to the WAL's segment files: frames, the whole blocks around them (direct I/O), zeros ahead.",
                &s.wal_bytes_written,
            ),
            ("rockfeed_wal_full_total", "Times the WAL reached wal.max_bytes and MQTT intake stopped.", &s.wal_full),
        ],
    );
}

/// What is held now: spool, WAL, bodies, readiness, shard queues, the process.
fn gauges(o: &mut String, s: &Stats, ready: bool) {
    metric(
        o,
        "gauge",
        "rockfeed_archive_spool_bytes",
        "Archive spool bytes on disk.",
        s.archive_spool_bytes.load(Relaxed),
    );
    metric(
        o,
        "gauge",
        "rockfeed_archive_spool_max_bytes",
        "The spool's bound (archive.spool_max_bytes; 0 without an archive).",
        s.archive_spool_max_bytes.load(Relaxed),
    );
    metric(o, "gauge", "rockfeed_wal_bytes", "Bytes the retained WAL segments hold.", s.wal_bytes.load(Relaxed));
    metric(
        o,
        "gauge",
        "rockfeed_wal_max_bytes",
        "The WAL's bound (wal.max_bytes; 0 without a WAL).",
        s.wal_max_bytes.load(Relaxed),
    );
    metric(
        o,
        "gauge",
        "rockfeed_load_bodies_bytes",
        "Stream Load bodies held in memory until their epoch commits (bound: pipeline.max_epoch_bytes).",
        s.bodies.held(),
    );
    metric(o, "gauge", "rockfeed_ready", "1 once the source has subscribed.", u8::from(ready));
    let depth = s.queue_depth.lock().clone();
    if !depth.is_empty() {
        o.push_str("# HELP rockfeed_shard_queue_batches Batches waiting in a shard's channel.\n# TYPE rockfeed_shard_queue_batches gauge\n");
        for (k, d) in depth.iter().enumerate() {
            let _ = writeln!(o, "rockfeed_shard_queue_batches{{shard=\"{k}\"}} {d}");
        }
    }
    if let Some(c) = process::cpu_seconds() {
        metric(o, "counter", "process_cpu_seconds_total", "User and system CPU time.", c);
    }
    if let Some(r) = process::rss_bytes() {
        metric(o, "gauge", "process_resident_memory_bytes", "Resident memory.", r);
    }
}

/// The stage latency histograms, in seconds.
fn histograms(o: &mut String, s: &Stats) {
    o.push_str("# HELP rockfeed_stage_latency_seconds Latency per pipeline stage (see the stage label).\n# TYPE rockfeed_stage_latency_seconds histogram\n");
    for (name, h) in s.histograms() {
        for le in BUCKETS_S {
            let n = if h.is_empty() { 0 } else { h.count_between(0, (le * 1e6) as u64) };
            let _ = writeln!(o, "rockfeed_stage_latency_seconds_bucket{{stage=\"{name}\",le=\"{le}\"}} {n}");
        }
        let _ = writeln!(o, "rockfeed_stage_latency_seconds_bucket{{stage=\"{name}\",le=\"+Inf\"}} {}", h.len());
        let sum = if h.is_empty() { 0.0 } else { h.mean() * h.len() as f64 / 1e6 };
        let _ = writeln!(o, "rockfeed_stage_latency_seconds_sum{{stage=\"{name}\"}} {sum}");
        let _ = writeln!(o, "rockfeed_stage_latency_seconds_count{{stage=\"{name}\"}} {}", h.len());
    }
}

/// Serves the endpoints on `addr` until `shutdown` flips; returns the bound
/// address (useful with port 0).
pub async fn start(
    addr: SocketAddr,
    stats: Arc<Stats>,
    ready: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("telemetry.listen {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let handler = Arc::new(move |req: hyper::Request<hyper::body::Incoming>| {
        let (stats, ready) = (stats.clone(), ready.clone());
        async move {
            let down = stats.destination.down();
            let is_ready = *ready.borrow() && down.is_none();
            let r: Resp = match (req.method(), req.uri().path()) {
                (&Method::GET, "/metrics") => {
                    let mut r = text(StatusCode::OK, render(&stats, is_ready));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    r
                }
                (&Method::GET, "/health") => text(StatusCode::OK, "ok\n".into()),
                (&Method::GET, "/ready") if is_ready => text(StatusCode::OK, "ready\n".into()),
                (&Method::GET, "/ready") => match down {
                    Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: StarRocks: {why}\n")),
                    None => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
                },
                _ => text(StatusCode::NOT_FOUND, "not found: /metrics, /health, /ready\n".into()),
            };
            Ok::<Resp, Drop>(r)
        }
    });
    tokio::spawn(serve(listener, shutdown, None, handler));
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{Local, Stage};

    #[test]
    fn metrics_text_has_counters_and_cumulative_buckets() {
        let s = Stats::default();
        s.readings.store(42, Relaxed);
        *s.queue_depth.lock() = vec![0, 3];
        let mut l = Local::default();
        l.record_ms(3, 5); // 3 ms
        l.record_ms(700, 1); // 0.7 s
        s.merge(Stage::ReceivedToCommitted, &mut l);
        let t = render(&s, true);
        assert!(t.contains("# TYPE rockfeed_readings_total counter\nrockfeed_readings_total 42\n"));
        assert!(t.contains("rockfeed_ready 1\n"));
        assert!(t.contains("rockfeed_shard_queue_batches{shard=\"1\"} 3\n"));
        let bucket = |le: &str| -> u64 {
            let key = format!("rockfeed_stage_latency_seconds_bucket{{stage=\"received_to_committed\",le=\"{le}\"}} ");
            t.lines().find_map(|l| l.strip_prefix(&key)).unwrap().parse().unwrap()
        };
        assert_eq!((bucket("0.001"), bucket("0.005"), bucket("0.5"), bucket("1"), bucket("+Inf")), (0, 5, 5, 6, 6));
        assert!(t.contains("rockfeed_stage_latency_seconds_count{stage=\"received_to_committed\"} 6\n"));
        assert!(t.contains("rockfeed_stage_latency_seconds_count{stage=\"event_to_received\"} 0\n"));
    }

    #[tokio::test]
    async fn ready_follows_the_source_and_health_answers_throughout() {
        let (ready_tx, ready) = watch::channel(false);
        let (stop_tx, stop) = watch::channel(false);
        let addr = start("127.0.0.1:0".parse().unwrap(), Arc::new(Stats::default()), ready, stop).await.unwrap();
        let get =
            |p: &'static str| async move { loadgen::http::get(&format!("http://{addr}{p}"), None).await.unwrap() };
        assert_eq!(get("/health").await.0, 200);
        assert_eq!(get("/ready").await.0, 503);
        ready_tx.send(true).unwrap();
        assert_eq!(get("/ready").await.0, 200);
        let (st, body) = get("/metrics").await;
        assert_eq!(st, 200);
        assert!(String::from_utf8_lossy(&body).contains("rockfeed_ready 1\n"));
        assert_eq!(get("/nope").await.0, 404);
        ready_tx.send(false).unwrap();
        assert_eq!(get("/ready").await.0, 503, "back to 503 when the source drops");
        stop_tx.send(true).unwrap();
    }

    #[tokio::test]
    async fn ready_is_503_with_the_reason_while_starrocks_refuses_loads() {
        use crate::telemetry::health::Trouble;
        let stats = Arc::new(Stats::default());
        let (_ready_tx, ready) = watch::channel(true);
        let (stop_tx, stop) = watch::channel(false);
        let addr = start("127.0.0.1:0".parse().unwrap(), stats.clone(), ready, stop).await.unwrap();
        let get =
            |p: &'static str| async move { loadgen::http::get(&format!("http://{addr}{p}"), None).await.unwrap() };
        assert_eq!(get("/ready").await.0, 200);
        stats.destination.failure(Trouble::Auth, "HTTP 401: Need auth information.");
        let (st, body) = get("/ready").await;
        assert_eq!(st, 503);
        let body = String::from_utf8_lossy(&body).into_owned();
        assert!(body.contains("401") && body.contains("ROCKFEED_STARROCKS_PASSWORD"), "{body}");
        stats.destination.success();
        assert_eq!(get("/ready").await.0, 200);
        stop_tx.send(true).unwrap();
    }
}
