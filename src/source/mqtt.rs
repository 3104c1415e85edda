//! The MQTT source (rumqttc): MQTT 3.1.1 or 5, QoS 0/1, persistent sessions
//! under a fixed client id, several topic filters (v5 shared subscriptions
//! `$share/group/filter` let instances split a stream), username/password,
//! TLS (rustls), a configurable maximum packet size, and reconnects with
//! back-off that always resubscribe.
//!
//! Acknowledgement: manual acks, sent only once the message is durable in
//! the write-ahead log (`crate::wal`, DESIGN.md §4), in receive order (MQTT
//! §4.6). The source never waits on the pipeline: it only appends to the
//! WAL, which buffers a StarRocks outage up to `wal.max_bytes`. A full WAL
//! does not stop the connection being polled (keep-alives keep flowing):
//! received messages wait unacknowledged in a small inbox, which the
//! broker's in-flight window bounds (`receive_maximum`); past that the
//! source stops reading and the backpressure reaches the broker.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::telemetry::Stats;
use crate::util::now_ms;
use crate::wal::{Record, Wal};

/// MQTT source settings.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Fixed client id: the broker keeps the session (and queued QoS 1
    /// messages) across reconnects.
    pub client_id: String,
    /// Topic filters to subscribe, e.g. `telemetry/+/+` or `$share/g/telemetry/#`.
    pub topics: Vec<String>,
    /// 0 or 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// `"3.1.1"` or `"5"`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Start without a persistent session (default false: keep it).
    #[serde(default)]
    pub clean_session: bool,
    /// Username; the password comes from `ROCKFEED_MQTT_PASSWORD` or `password`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// PEM CA bundle: connect over TLS.
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Largest packet accepted. Default: the protocol's own maximum
    /// (256 MiB), so that no message can break the connection: a packet
    /// over this limit is refused by the client library, the connection
    /// drops and the broker redelivers it for ever. Payloads over
    /// `decode.max_payload_bytes` are received, acknowledged and
    /// dead-lettered (`payload_too_large`) instead.
    #[serde(default = "default_max_packet")]
    pub max_packet_bytes: usize,
    /// Keep-alive interval in seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// Messages received and not yet handed to the pipeline (so not yet
    /// acknowledged) before the source stops reading; with MQTT 5 also sent
    /// as Receive Maximum, the broker's in-flight limit, which bounds what a
    /// reconnect redelivers. MQTT 3.1.1 has no such field: set the broker's
    /// limit to at most this (mosquitto `max_inflight_messages`).
    #[serde(default = "default_receive_maximum")]
    pub receive_maximum: u16,
}

fn default_port() -> u16 {
    1883
}
fn default_qos() -> u8 {
    1
}
fn default_protocol() -> String {
    "5".into()
}
fn default_max_packet() -> usize {
    PROTOCOL_MAX_PACKET
}

/// The largest MQTT packet (remaining length 268,435,455 bytes, both versions).
pub const PROTOCOL_MAX_PACKET: usize = 268_435_455;
fn default_receive_maximum() -> u16 {
    1000
}
fn default_keep_alive() -> u64 {
    30
}

/// The environment variable that overrides `source.mqtt.password`.
pub const MQTT_PASSWORD_ENV: &str = "ROCKFEED_MQTT_PASSWORD";

impl MqttConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.topics.is_empty() {
            return Err("source.mqtt.topics is empty".into());
        }
        if self.qos > 1 {
            return Err("source.mqtt.qos must be 0 or 1".into());
        }
        if self.protocol != "5" && self.protocol != "3.1.1" {
            return Err("source.mqtt.protocol must be \"5\" or \"3.1.1\"".into());
        }
        if self.protocol == "3.1.1" && self.topics.iter().any(|t| t.starts_with("$share/")) {
            return Err("shared subscriptions ($share/…) need protocol \"5\"".into());
        }
        if !(256 * 1024..=PROTOCOL_MAX_PACKET).contains(&self.max_packet_bytes) {
            return Err(format!(
                "source.mqtt.max_packet_bytes must be within 256 KiB..={PROTOCOL_MAX_PACKET} (the protocol's maximum, the default)"
            ));
        }
        if self.client_id.is_empty() {
            return Err("source.mqtt.client_id is empty".into());
        }
        if self.receive_maximum == 0 {
            return Err("source.mqtt.receive_maximum must be at least 1".into());
        }
        // Checked here: the source subscribes without waiting (try_subscribe),
        // where an invalid filter would look like a full channel.
        if let Some(t) = self.topics.iter().find(|t| !rumqttc::valid_filter(t)) {
            return Err(format!("source.mqtt.topics: {t:?} is not a valid MQTT topic filter"));
        }
        Ok(())
    }

    fn password(&self) -> Option<String> {
        std::env::var(MQTT_PASSWORD_ENV).ok().or_else(|| self.password.clone())
    }

    fn tls(&self) -> std::io::Result<Option<rumqttc::TlsConfiguration>> {
        match &self.tls_ca_file {
            None => Ok(None),
            Some(p) => {
                Ok(Some(rumqttc::TlsConfiguration::Simple { ca: std::fs::read(p)?, alpn: None, client_auth: None }))
            }
        }
    }
}

/// Runs the source until `shutdown` flips: every message received goes
/// into `wal`, and is acknowledged once durable there. `ready` flips to true
/// once every topic filter is acknowledged by the broker (after each
/// (re)connect), so callers (the demo, tests) publish only when nothing can
/// be missed; back to false when the connection fails and when the source
/// stops (`/ready` follows it).
pub async fn run(
    cfg: MqttConfig,
    wal: Arc<Wal>,
    shutdown: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    stats: Arc<Stats>,
) -> std::io::Result<()> {
    if cfg.protocol == "3.1.1" {
        run_v4(cfg, wal, shutdown, ready, stats).await
    } else {
        run_v5(cfg, wal, shutdown, ready, stats).await
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(6)).min(5_000))
}

/// The event loop shared by both protocol versions (their types differ, the
/// logic does not): subscribe on every ConnAck, append each publish to the
/// WAL and acknowledge it once its group commit is durable, in receive
/// order; back off on errors (rumqttc reconnects on the next poll), stop on
/// shutdown.
///
/// Three queues, each bounded by the broker's in-flight window
/// (`receive_maximum`): `inbox` (received, not yet appended: only while the
/// WAL is full), `waiting` (appended, with their WAL sequence numbers, until
/// durable) and `unacked` (durable, acks not yet handed to rumqttc).
///
/// Acknowledgements never wait on rumqttc's request channel. Only this task
/// polls the event loop, and the event loop takes at most one request per
/// poll while one network read yields up to ten publishes: awaiting `ack()`
/// on a full channel here would wait for a poll that can never come. So
/// each publish leaves an ack-only stub (`$stub`: no topic, no payload), and
/// the stubs go out with `try_ack` before every poll, as far as the channel
/// takes them.
///
/// While the WAL is full, received publishes wait in `inbox` and polling
/// goes on (keep-alives flow) until `receive_maximum` of them wait; then
/// polling pauses, which is TCP backpressure (QoS 0 has no window).
macro_rules! event_loop {
    ($cfg:ident, $wal:ident, $shutdown:ident, $ready:ident, $stats:ident, $client:ident, $ev:ident, $qos:ident, $Event:path, $Packet:path, $topic:expr, $stub:expr) => {{
        use $Event as Ev;
        use $Packet as Pk;
        let mut failures = 0;
        let mut acked = 0;
        let mut unacked = std::collections::VecDeque::new();
        // Hands queued acks to the event loop as far as its channel takes
        // them (the only error is a full channel: the event loop is ours and
        // alive); the rest goes after the next poll.
        let send_acks = |unacked: &mut std::collections::VecDeque<_>| {
            while let Some(a) = unacked.front() {
                if $client.try_ack(a).is_err() {
                    break;
                }
                unacked.pop_front();
            }
        };
        let mut durable = $wal.durable();
        // Appended to the WAL, not yet durable: (sequence number, ack stub).
        let mut waiting = std::collections::VecDeque::new();
        // Moves the stubs of durable records to `unacked`, in order.
        let advance = |waiting: &mut std::collections::VecDeque<(u64, _)>, unacked: &mut std::collections::VecDeque<_>, d: u64| {
            while waiting.front().is_some_and(|(seq, _)| *seq < d) {
                let (_, stub) = waiting.pop_front().expect("checked");
                unacked.push_back(stub);
            }
        };
        // Received while the WAL was full: (record, ack stub).
        let mut inbox: std::collections::VecDeque<(Record, _)> = std::collections::VecDeque::new();
        let inbox_cap = $cfg.receive_maximum.max(1) as usize;
        // Filters still to subscribe after a ConnAck (same rule as acks).
        let mut to_subscribe: Vec<String> = Vec::new();
        loop {
            while let Some(t) = to_subscribe.last() {
                if $client.try_subscribe(t.clone(), $qos).is_err() {
                    break;
                }
                to_subscribe.pop();
            }
            send_acks(&mut unacked);
            if let Some(e) = $wal.failed() {
                let _ = $ready.send(false);
                return Err(std::io::Error::other(e));
            }
            let polled = tokio::select! {
                biased;
                _ = $shutdown.changed() => break,
                // Acks first: durable records are acknowledged before more is read.
                r = durable.changed() => {
                    if r.is_err() {
                        return Err(std::io::Error::other("the WAL writer stopped"));
                    }
                    let d = *durable.borrow_and_update();
                    advance(&mut waiting, &mut unacked, d);
                    continue;
                }
                _ = tokio::time::sleep(Duration::from_millis(50)), if !inbox.is_empty() => {
                    while !inbox.is_empty() && !$wal.full() {
                        let (r, stub) = inbox.pop_front().expect("checked");
                        waiting.push_back(($wal.append(r).seq(), stub));
                    }
                    continue;
                }
                e = $ev.poll(), if inbox.len() < inbox_cap => e,
            };
            match polled {
                Ok(Ev::Incoming(Pk::ConnAck(_))) => {
                    failures = 0;
                    acked = 0;
                    let _ = $ready.send(false);
                    tracing::info!(host = %$cfg.host, port = $cfg.port, protocol = %$cfg.protocol, "MQTT connected; subscribing.");
                    to_subscribe = $cfg.topics.iter().rev().cloned().collect();
                }
                Ok(Ev::Incoming(Pk::SubAck(_))) => {
                    acked += 1;
                    if acked == $cfg.topics.len() {
                        let _ = $ready.send(true);
                    }
                }
                Ok(Ev::Incoming(Pk::Publish(p))) => {
                    $stats.mqtt_received.fetch_add(1, Ordering::Relaxed);
                    $stats.mqtt_payload_bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                    let r = Record { qos: p.qos as u8, received_ms: now_ms(), topic: $topic(&p), payload: Bytes::clone(&p.payload) };
                    let stub = $stub(p);
                    if inbox.is_empty() && !$wal.full() {
                        waiting.push_back(($wal.append(r).seq(), stub));
                    } else {
                        inbox.push_back((r, stub));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    failures += 1;
                    let _ = $ready.send(false);
                    let wait = backoff(failures);
                    tracing::warn!(host = %$cfg.host, port = $cfg.port, error = %e, ?wait, "MQTT connection failed; reconnecting.");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let _ = $ready.send(false);
        // Stopping: what was appended becomes durable within a commit
        // interval; ack it (and then DISCONNECT) while polling, for up to
        // 2 s; neither may wait on the request channel without a poll.
        // What the inbox holds was never appended: the broker redelivers it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut disconnecting = false;
        while tokio::time::Instant::now() < deadline {
            let d = *durable.borrow_and_update();
            advance(&mut waiting, &mut unacked, d);
            send_acks(&mut unacked);
            if unacked.is_empty() && waiting.is_empty() && !disconnecting {
                disconnecting = $client.try_disconnect().is_ok();
            }
            // After DISCONNECT the broker closes the connection: poll errors.
            if let Ok(Err(_)) = tokio::time::timeout(Duration::from_millis(20), $ev.poll()).await {
                break;
            }
        }
        if !unacked.is_empty() || !waiting.is_empty() {
            tracing::warn!(unacked = unacked.len() + waiting.len(), "Stopped with acks unsent; the broker will redeliver those messages.");
        }
        Ok(())
    }};
}

async fn run_v4(
    cfg: MqttConfig,
    wal: Arc<Wal>,
    mut shutdown: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    stats: Arc<Stats>,
) -> std::io::Result<()> {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let mut o = MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_secs))
        .set_clean_session(cfg.clean_session)
        .set_manual_acks(true)
        .set_max_packet_size(cfg.max_packet_bytes, cfg.max_packet_bytes);
    if let (Some(u), Some(p)) = (&cfg.username, cfg.password()) {
        o.set_credentials(u, p);
    }
    if let Some(t) = cfg.tls()? {
        o.set_transport(rumqttc::Transport::Tls(t));
    }
    let qos = if cfg.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
    let (client, mut ev) = AsyncClient::new(o, 1024);
    event_loop!(
        cfg,
        wal,
        shutdown,
        ready,
        stats,
        client,
        ev,
        qos,
        rumqttc::Event,
        rumqttc::Packet,
        |p: &rumqttc::Publish| p.topic.clone(),
        |p: rumqttc::Publish| rumqttc::Publish { topic: String::new(), payload: Bytes::new(), ..p }
    )
}

async fn run_v5(
    cfg: MqttConfig,
    wal: Arc<Wal>,
    mut shutdown: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    stats: Arc<Stats>,
) -> std::io::Result<()> {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, MqttOptions};
    let mut o = MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_secs))
        .set_clean_start(cfg.clean_session)
        .set_manual_acks(true)
        .set_max_packet_size(Some(cfg.max_packet_bytes as u32))
        .set_receive_maximum(Some(cfg.receive_maximum));
    if !cfg.clean_session {
        // Keep the session after disconnects (MQTT 5 session expiry).
        o.set_session_expiry_interval(Some(u32::MAX));
    }
    if let (Some(u), Some(p)) = (&cfg.username, cfg.password()) {
        o.set_credentials(u, p);
    }
    if let Some(t) = cfg.tls()? {
        o.set_transport(rumqttc::Transport::Tls(t));
    }
    let qos = if cfg.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
    let (client, mut ev) = AsyncClient::new(o, 1024);
    event_loop!(
        cfg,
        wal,
        shutdown,
        ready,
        stats,
        client,
        ev,
        qos,
        rumqttc::v5::Event,
        rumqttc::v5::mqttbytes::v5::Packet,
        |p: &rumqttc::v5::mqttbytes::v5::Publish| String::from_utf8_lossy(&p.topic).into_owned(),
        |p: rumqttc::v5::mqttbytes::v5::Publish| rumqttc::v5::mqttbytes::v5::Publish {
            topic: Bytes::new(),
            payload: Bytes::new(),
            properties: None,
            ..p
        }
    )
}

/// Waits until `ready` is true, or `limit` passes.
pub async fn wait_ready(ready: &mut watch::Receiver<bool>, limit: Duration) -> bool {
    tokio::time::timeout(limit, ready.wait_for(|r| *r)).await.map(|r| r.is_ok()).unwrap_or(false)
}
