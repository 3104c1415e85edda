//! `rockfeed demo` end to end, small: embedded rumqttd, generator, pipeline,
//! emulator; the demo's own audit must pass and every published sample must
//! be accounted for.

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
    };
    let r = rockfeed::demo::demo(o).await.unwrap();
    assert_eq!(r.published, 3 * 2 * 20);
    assert_eq!(r.stats.samples.load(Ordering::Relaxed), r.published);
    assert_eq!(r.stats.loads_failed.load(Ordering::Relaxed), 0);
    assert!(r.table_rows > 0);
    assert!(r.audit_errors.is_empty(), "{:?}", &r.audit_errors[..r.audit_errors.len().min(5)]);
    assert!(r.stats.latency().is_some());
}
