//! The MQTT source: MQTT 3.1.1 or 5 (rumqttc's packet codecs over rockfeed's own
//! connection, `session.rs`), QoS 0/1, persistent sessions
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

mod acks;
mod session;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use wire::Wire;

use crate::telemetry::Stats;
use crate::wal::Wal;

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
    /// over this limit ends the connection, and the broker redelivers it
    /// for ever. Payloads over
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

    /// What the source opens before it connects (the TLS trust), opened.
    pub fn check(&self) -> Result<(), String> {
        self.tls().map(|_| ())
    }

    /// A TLS connector trusting `tls_ca_file`, when set.
    fn tls(&self) -> Result<Option<tokio_rustls::TlsConnector>, String> {
        match &self.tls_ca_file {
            None => Ok(None),
            Some(p) => crate::sink::starrocks::client::tls_connector(Some(p))
                .map(Some)
                .map_err(|e| format!("source.mqtt.tls_ca_file: {e}")),
        }
    }
}

/// Runs the source until `shutdown` flips: every message received goes
/// into `wal`, and is acknowledged once durable there. `ready` flips to true
/// once every topic filter is acknowledged by the broker (after each
/// (re)connect), so callers (the demo, tests) publish only when nothing can
/// be missed; back to false when the connection fails and when the source
/// stops (`/ready` follows it). Connection failures are retried with
/// back-off for ever; an error of the WAL ends the source.
pub async fn run(
    cfg: MqttConfig,
    wal: Arc<Wal>,
    mut shutdown: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    stats: Arc<Stats>,
) -> std::io::Result<()> {
    let tls = cfg.tls().map_err(std::io::Error::other)?;
    let wire: Box<dyn Wire> = if cfg.protocol == "3.1.1" { Box::new(wire::V4) } else { Box::new(wire::V5) };
    let ctx = session::Ctx { cfg: &cfg, wire: &*wire, tls: tls.as_ref(), wal: &wal, stats: &stats, ready: &ready };
    let mut durable = wal.durable();
    let mut failures = 0;
    while !*shutdown.borrow() {
        match session::serve(&ctx, &mut durable, &mut shutdown).await {
            Ok(session::End::Stopped) => break,
            Err(e) => {
                let _ = ready.send(false);
                if let Some(f) = wal.failed() {
                    return Err(std::io::Error::other(f));
                }
                failures += 1;
                let wait = backoff(failures);
                tracing::warn!(host = %cfg.host, port = cfg.port, error = %e, ?wait, "MQTT connection failed; reconnecting.");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    let _ = ready.send(false);
    Ok(())
}

/// `rockfeed check --connect`: connects and subscribes as the source
/// would, then disconnects. Under a client id of its own
/// (`{client_id}-check`) with a clean session, so the instance's persistent
/// session is untouched; a shared subscription's group gets a `-check`
/// suffix, so the probe never takes a message from the instances sharing
/// it (it gets copies, dropped with its clean session).
pub async fn probe(cfg: &MqttConfig) -> Result<String, String> {
    let mut c = cfg.clone();
    c.client_id = format!("{}-check", cfg.client_id);
    c.clean_session = true;
    c.topics = cfg.topics.iter().map(|t| probe_filter(t)).collect();
    let tls = c.tls()?;
    let wire: Box<dyn Wire> = if c.protocol == "3.1.1" { Box::new(wire::V4) } else { Box::new(wire::V5) };
    session::probe(&c, &*wire, tls.as_ref()).await.map_err(|e| format!("{}:{}: {e}", c.host, c.port))?;
    Ok(format!("{}:{} accepted the connection and the subscription of {:?}", c.host, c.port, cfg.topics))
}

/// A topic filter as the probe subscribes it: `$share/{group}/f` becomes
/// `$share/{group}-check/f`; others stay.
fn probe_filter(t: &str) -> String {
    match t.strip_prefix("$share/").and_then(|r| r.split_once('/')) {
        Some((group, filter)) => format!("$share/{group}-check/{filter}"),
        None => t.to_string(),
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(6)).min(5_000))
}

/// Waits until `ready` is true, or `limit` passes.
pub async fn wait_ready(ready: &mut watch::Receiver<bool>, limit: Duration) -> bool {
    tokio::time::timeout(limit, ready.wait_for(|r| *r)).await.map(|r| r.is_ok()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_probe_joins_a_share_group_of_its_own_and_keeps_other_filters() {
        assert_eq!(super::probe_filter("$share/rockfeed/telemetry/#"), "$share/rockfeed-check/telemetry/#");
        assert_eq!(super::probe_filter("telemetry/+/speed"), "telemetry/+/speed");
        assert_eq!(super::probe_filter("$share/onlygroup"), "$share/onlygroup");
    }
}
