//! The end-of-run report of `rockfeed run --report DIR` and `rockfeed demo`:
//! every stage histogram, the counters, and this process's CPU seconds and
//! peak RSS, written with the load generator's report writer (percentile
//! table, `report.json`, `.hgrm` files, `latency.svg`).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use loadgen::report::Report;

use super::{Stats, process};

/// Builds the report of a run that took `elapsed`.
pub fn build(title: &str, stats: &Stats, elapsed: Duration) -> Report {
    let mut r = Report::new(title);
    for (name, h) in stats.histograms() {
        r.series(&name, h);
    }
    let readings = stats.readings.load(Relaxed);
    let rows = stats.rows_loaded.load(Relaxed);
    r.fact("elapsed_s", elapsed.as_secs_f64())
        .fact("messages", stats.messages.load(Relaxed))
        .fact("samples", stats.samples.load(Relaxed))
        .fact("readings", readings)
        .fact("readings_committed", stats.readings_committed.load(Relaxed))
        .fact("rejected", stats.rejected.total())
        .fact("rejected_readings", stats.rejected.readings())
        .fact("rows_loaded", rows)
        .fact("rows_per_reading", if readings > 0 { rows as f64 / readings as f64 } else { 0.0 })
        .fact("loads", stats.loads.load(Relaxed))
        .fact("loads_failed", stats.loads_failed.load(Relaxed))
        .fact("epochs", stats.epochs.load(Relaxed))
        .fact("epochs_decided", stats.epochs_decided.load(Relaxed))
        .fact("txns_committed", stats.txns_committed.load(Relaxed))
        .fact("txns_rolled_back", stats.txns_rolled_back.load(Relaxed))
        .fact("txns_recovered", stats.txns_recovered.load(Relaxed))
        .fact("txns_rebuilt", stats.txns_rebuilt.load(Relaxed))
        .fact("starrocks_throttled", stats.throttled.load(Relaxed))
        .fact("pipeline_restarts", stats.pipeline_restarts.load(Relaxed))
        .fact("epochs_abandoned_on_revoke", stats.epochs_abandoned_on_revoke.load(Relaxed))
        .fact("epoch_ms_last", stats.epoch_ms.load(Relaxed))
        .fact("txns_lost", stats.txns_lost.load(Relaxed));
    epoch_facts(&mut r, stats);
    rejected_facts(&mut r, stats);
    mqtt_facts(&mut r, stats);
    archive_facts(&mut r, stats);
    if let Some(c) = process::cpu_seconds() {
        r.fact("cpu_seconds", c);
    }
    if let Some(p) = process::peak_rss_bytes() {
        r.fact("peak_rss_bytes", p);
    }
    r
}

/// The epoch length: its longest and its changes over time.
fn epoch_facts(r: &mut Report, stats: &Stats) {
    {
        let changes = stats.epoch_changes.lock();
        r.fact("epoch_ms_max", changes.iter().map(|c| c.1).max().unwrap_or(0));
        // The epoch length over time: `unix_ms:epoch_ms` at each change.
        let series: Vec<String> = changes.iter().map(|(t, e)| format!("{t}:{e}")).collect();
        r.fact("epoch_ms_changes", series.join(" "));
    }
}

/// Refusals by reason, in each reason's unit and in readings.
fn rejected_facts(r: &mut Report, stats: &Stats) {
    let by_reason = stats.rejected.snapshot();
    if !by_reason.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> = by_reason
            .iter()
            .map(|(r, c)| {
                (r.as_str().to_string(), serde_json::json!({ r.unit().as_str(): c.count, "readings": c.readings }))
            })
            .collect();
        r.fact("rejected_by_reason", serde_json::Value::Object(m));
    }
}

/// The MQTT intake and its WAL (when MQTT was used).
fn mqtt_facts(r: &mut Report, stats: &Stats) {
    if stats.mqtt_received.load(Relaxed) > 0 {
        let (received, payload) = (stats.mqtt_received.load(Relaxed), stats.mqtt_payload_bytes.load(Relaxed));
        let written = stats.wal_bytes_written.load(Relaxed);
        r.fact("mqtt_received", received)
            .fact("mqtt_duplicates", stats.mqtt_duplicates.load(Relaxed))
            .fact("wal_records", stats.wal_records.load(Relaxed))
            .fact("wal_commits", stats.wal_commits.load(Relaxed))
            .fact("wal_written_bytes", written)
            .fact("wal_full", stats.wal_full.load(Relaxed))
            // Bytes written to the WAL per payload byte received.
            .fact("wal_write_amplification", if payload > 0 { written as f64 / payload as f64 } else { 0.0 });
    }
}

/// The raw archive and its reconciliation with what StarRocks aggregated
/// (when the archive was on).
fn archive_facts(r: &mut Report, stats: &Stats) {
    if stats.archive_readings_spooled.load(Relaxed) > 0 || stats.archive_files_published.load(Relaxed) > 0 {
        // Reconciliation: per file and per epoch, what the archive holds
        // next to what StarRocks aggregated (archived = aggregated + too late).
        let log = stats.archive_log.lock();
        let epochs: Vec<serde_json::Value> =
            log.epochs.iter().map(|e| serde_json::to_value(e).unwrap_or_default()).collect();
        let files: Vec<serde_json::Value> =
            log.files.iter().map(|f| serde_json::to_value(f).unwrap_or_default()).collect();
        r.fact("archive_readings_spooled", stats.archive_readings_spooled.load(Relaxed))
            .fact("archive_readings_published", stats.archive_readings_published.load(Relaxed))
            .fact("archive_files_published", stats.archive_files_published.load(Relaxed))
            .fact("archive_bytes_published", stats.archive_bytes_published.load(Relaxed))
            .fact("archive_upload_failures", stats.archive_upload_failures.load(Relaxed))
            .fact("archive_conflicts", stats.archive_conflicts.load(Relaxed))
            .fact("archive_spool_full", stats.archive_spool_full.load(Relaxed))
            .fact("archive_spills", stats.archive_spills.load(Relaxed))
            .fact("archive_spool_failures", stats.archive_spool_failures.load(Relaxed))
            .fact("reconcile_epochs", log.epochs_total)
            .fact("reconcile_mismatches", stats.reconcile_mismatches.load(Relaxed))
            .fact("reconcile_last_epochs", serde_json::Value::Array(epochs))
            .fact("archive_last_files", serde_json::Value::Array(files));
    }
}
