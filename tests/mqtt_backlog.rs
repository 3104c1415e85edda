//! The MQTT source under pressure. After an outage: the broker holds a
//! backlog of 30,000 messages for its persistent session and lets all of it
//! be in flight at once (mosquitto `max_inflight_messages 0`). On reconnect
//! every message must arrive, every one must be acknowledged (a further
//! restart receives nothing again), and the source must stop cleanly.
//! Earlier versions failed here twice: rumqttc's request channel deadlocked
//! after about a thousand acks, and closing the socket with data still
//! unread sent an RST that made the broker drop thousands of PUBACKs it had
//! not read yet. And while the
//! pipeline takes nothing for several keep-alive periods (StarRocks slow),
//! the connection must survive: no reconnect, every message exactly once.

use std::time::Duration;

mod common;

use rockfeed::model::RawMessage;
use rockfeed::source::mqtt::{MqttConfig, wait_ready};
use tokio::sync::{mpsc, watch};

fn source_cfg(port: u16) -> MqttConfig {
    source_cfg_with(port, "")
}

fn source_cfg_with(port: u16, extra: &str) -> MqttConfig {
    let text = format!(
        "host = \"127.0.0.1\"\nport = {port}\nclient_id = \"rockfeed-backlog\"\ntopics = [\"telemetry/#\"]\nprotocol = \"3.1.1\"\n{extra}"
    );
    let cfg: MqttConfig = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    cfg
}

/// Runs the source until it has delivered `want` messages (or `limit`
/// passes), then stops it; returns how many it delivered, and the socket
/// writes that carried PUBACKs. The channel is drained from the start: a
/// persistent session's backlog arrives before the SubAck that makes the
/// source ready.
async fn session(port: u16, want: usize, limit: Duration) -> (usize, u64) {
    let (tx, mut rx) = mpsc::channel::<RawMessage>(1024);
    let (stop_tx, stop) = watch::channel(false);
    let (ready_tx, mut ready) = watch::channel(false);
    let (count_tx, mut count) = watch::channel(0usize);
    let counter = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            count_tx.send_modify(|n| *n += 1);
        }
    });
    // A WAL of its own per session: this counts what the broker delivers.
    let wal = tempfile::tempdir().unwrap();
    let stats = std::sync::Arc::new(rockfeed::telemetry::Stats::default());
    let src = common::mqtt_into(source_cfg(port), wal.path(), tx, stop, ready_tx, stats.clone());
    assert!(wait_ready(&mut ready, Duration::from_secs(30)).await, "never subscribed");
    let _ = tokio::time::timeout(limit, count.wait_for(|n| *n >= want)).await;
    let got = *count.borrow();
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), src).await.expect("the source stops within 10 s").unwrap().unwrap();
    counter.await.unwrap();
    (got.max(*count.borrow()), stats.mqtt_ack_writes.load(std::sync::atomic::Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_far_beyond_the_ack_channel_drains_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 0\nmax_queued_bytes 0\n"
    );
    let _broker = common::mosquitto(dir.path(), port, &conf);
    // The persistent session exists (subscribed), then the appliance is down.
    assert_eq!(session(port, 0, Duration::ZERO).await.0, 0);
    let n = 30_000;
    let msgs: Vec<(String, String)> =
        (0..n).map(|i| (format!("telemetry/RFBL{:013}/speed", i % 100), format!("{{\"ts\":{i},\"v\":{i}}}"))).collect();
    let mut o = rumqttc::MqttOptions::new("backlog-publisher", "127.0.0.1", port);
    o.set_inflight(1000);
    common::publish_v4(o, msgs).await;
    // Back up: the broker sends the whole backlog at once.
    let (got, ack_writes) = session(port, n, Duration::from_secs(60)).await;
    assert_eq!(got, n, "every queued message arrives");
    // The PUBACKs of a group commit share one socket write.
    assert!((ack_writes as usize) < n / 10, "{ack_writes} writes carried {n} PUBACKs");
    eprintln!("{n} PUBACKs in {ack_writes} socket writes");
    // Everything was acknowledged: nothing is redelivered.
    assert_eq!(session(port, 1, Duration::from_secs(2)).await.0, 0, "no redelivery after a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pipeline_keeps_the_connection_and_gets_every_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 100\n"
    );
    let _broker = common::mosquitto(dir.path(), port, &conf);
    // A pipeline with room for one message, not read for 8 s: more than
    // twice the broker's 1.5 × 2 s keep-alive limit.
    let (tx, mut rx) = mpsc::channel::<RawMessage>(1);
    let (stop_tx, stop) = watch::channel(false);
    let (ready_tx, mut ready) = watch::channel(false);
    let stats = std::sync::Arc::new(rockfeed::telemetry::Stats::default());
    let src = common::mqtt_into(
        source_cfg_with(port, "keep_alive_secs = 2\n"),
        &dir.path().join("wal"),
        tx,
        stop,
        ready_tx,
        stats,
    );
    assert!(wait_ready(&mut ready, Duration::from_secs(30)).await, "never subscribed");
    let n = 300;
    let msgs: Vec<(String, String)> =
        (0..n).map(|i| (format!("telemetry/RFKA{i:013}/speed"), format!("{{\"ts\":{i},\"v\":{i}}}"))).collect();
    common::publish_v4(rumqttc::MqttOptions::new("stall-publisher", "127.0.0.1", port), msgs).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(*ready.borrow(), "the connection survived the stall (no reconnect)");
    assert!(!ready.has_changed().unwrap(), "and never dropped in between");
    let mut seen = std::collections::HashSet::new();
    let mut got = 0;
    while got < n {
        let m = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("every message arrives").unwrap();
        seen.insert(m.topic);
        got += 1;
    }
    assert_eq!(seen.len(), n, "each message once");
    assert!(tokio::time::timeout(Duration::from_secs(2), rx.recv()).await.is_err(), "nothing redelivered");
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), src).await.expect("the source stops").unwrap().unwrap();
}
