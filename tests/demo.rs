//! `rockfeed demo` end to end, small: embedded rumqttd, generator, pipeline,
//! emulator; the demo's own audit must pass and every published sample must
//! be accounted for, in the tables and in the Parquet archive.

use std::sync::atomic::Ordering;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_audit_passes() {
    let dir = tempfile::tempdir().unwrap();
    let o = rockfeed::demo::DemoOptions {
        seconds: 3,
        vehicles: 20,
        metrics: 10,
        rate_hz: 2,
        data_dir: dir.path().to_path_buf(),
        report: None,
    };
    let r = rockfeed::demo::demo(o).await.unwrap();
    assert_eq!(r.published, 3 * 2 * 20);
    assert_eq!(r.stats.samples.load(Ordering::Relaxed), r.published);
    assert_eq!(r.stats.loads_failed.load(Ordering::Relaxed), 0);
    assert!(r.table_rows > 0);
    assert!(r.audit_errors.is_empty(), "{:?}", &r.audit_errors[..r.audit_errors.len().min(5)]);
    assert!(r.stats.latency().is_some());
    // Every third vehicle has no entry in the demo's vehicle file: kept with NULL dims, counted.
    use rockfeed::model::UnknownVehicle as U;
    assert!(r.stats.enrich.unknown(U::Keep).load(Ordering::Relaxed) > 0);
    assert_eq!(r.stats.enrich.unknown(U::DeadLetter).load(Ordering::Relaxed), 0);
    assert_eq!(r.audits.len(), 2, "telemetry_1m and vehicle_latest are audited");
    assert!(
        r.audits.iter().all(|a| a.ok() && a.records_sent > 0 && a.records_landed == a.records_sent),
        "{:?}",
        r.audits
    );
    // The archive: every reading once, read back from the Parquet files.
    let a = &r.archive_audit;
    assert!(a.ok() && a.records_sent == r.readings_published && a.records_landed == a.records_sent, "{a}");
    assert!(r.archive_files >= 1);
    assert_eq!(r.stats.archive_readings_published.load(Ordering::Relaxed), r.readings_published);
    assert_eq!(r.stats.reconcile_mismatches.load(Ordering::Relaxed), 0);
    // The report: every file, and a plot with the end-to-end curve in it.
    for f in ["summary.txt", "report.json", "received_to_committed.hgrm", "event_to_committed.hgrm", "latency.svg"] {
        assert!(r.report_dir.join(f).is_file(), "{f} in {}", r.report_dir.display());
    }
    let svg = std::fs::read_to_string(r.report_dir.join("latency.svg")).unwrap();
    for s in
        ["event_to_received", "received_to_committed", "event_to_committed", "stream_load_call", "loadgen_send_lag"]
    {
        assert!(svg.contains(&format!("data-series=\"{s}\"")), "{s} curve in the SVG");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.report_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["facts"]["readings"], r.readings_published);
    assert_eq!(json["facts"]["readings_committed"], r.readings_published);
    assert!(json["facts"]["cpu_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(json["facts"]["archive_readings_published"], r.readings_published);
    assert!(json["facts"]["archive_last_files"].as_array().is_some_and(|f| !f.is_empty()));
    let e2e = json["series"].as_array().unwrap().iter().find(|s| s["name"] == "event_to_committed").unwrap();
    assert_eq!(e2e["count"], r.readings_published, "every reading is weighed once");
}
