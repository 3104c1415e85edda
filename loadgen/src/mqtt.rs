//! The MQTT target: several rumqttc connections (MQTT 3.1.1 or 5), QoS 0 or
//! 1, optional TLS and credentials. A vehicle always goes through the same
//! connection (`vehicle % connections`), so its messages stay in order.
//!
//! With QoS 1 a message counts as delivered when its PUBACK arrives; the
//! run waits for every PUBACK at the end and fails if the broker did not
//! acknowledge everything. QoS 0 has no acknowledgement: what the broker
//! drops shows up only in the audit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::payload::Message;

/// Environment variable with the MQTT password.
pub const PASSWORD_ENV: &str = "LOADGEN_MQTT_PASSWORD";

/// MQTT target settings.
#[derive(Debug, Clone)]
pub struct MqttTarget {
    pub host: String,
    pub port: u16,
    pub connections: u32,
    pub qos: u8,
    /// 3.1.1 (`false`) or 5 (`true`).
    pub v5: bool,
    pub client_prefix: String,
    pub username: Option<String>,
    /// From [`PASSWORD_ENV`]; never logged.
    pub password: Option<String>,
    /// PEM CA bundle: connect over TLS.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Messages in flight per connection (QoS 1).
    pub inflight: u16,
}

impl MqttTarget {
    pub fn new(host: &str, port: u16) -> Self {
        MqttTarget {
            host: host.into(),
            port,
            connections: 4,
            qos: 1,
            v5: false,
            client_prefix: "loadgen".into(),
            username: None,
            password: std::env::var(PASSWORD_ENV).ok(),
            tls_ca: None,
            inflight: 1000,
        }
    }
}

enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// Open connections.
pub struct MqttSender {
    clients: Vec<Client>,
    loops: Vec<JoinHandle<()>>,
    qos: u8,
    /// PUBACKs received, over all connections.
    pub acked: Arc<AtomicU64>,
    /// Connection errors seen (each is followed by a reconnect).
    pub errors: Arc<AtomicU64>,
    /// Set before the deliberate disconnect, so its error is not reported.
    closing: Arc<AtomicBool>,
    published: u64,
}

const MAX_PACKET: usize = 64 << 20;

/// Spawns the event loop of one connection (the two protocol versions differ
/// in types, not in logic): counts PUBACKs, reports errors while rumqttc
/// reconnects on the next poll, ends once the sender is closing.
macro_rules! pump {
    ($ev:ident, $Event:path, $Packet:path, $acked:ident, $errors:ident, $closing:ident) => {
        tokio::spawn(async move {
            use $Event as Ev;
            use $Packet as Pk;
            loop {
                match $ev.poll().await {
                    Ok(Ev::Incoming(Pk::PubAck(_))) => {
                        $acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) if $closing.load(Ordering::Relaxed) => break,
                    Err(e) => {
                        $errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("loadgen: MQTT connection error: {e}; reconnecting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        })
    };
}

impl MqttSender {
    pub async fn connect(t: &MqttTarget) -> std::io::Result<MqttSender> {
        let acked = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let closing = Arc::new(AtomicBool::new(false));
        let tls = match &t.tls_ca {
            Some(p) => Some(rumqttc::TlsConfiguration::Simple { ca: std::fs::read(p)?, alpn: None, client_auth: None }),
            None => None,
        };
        let (mut clients, mut loops) = (Vec::new(), Vec::new());
        for c in 0..t.connections.max(1) {
            let id = format!("{}-{}-{c}", t.client_prefix, std::process::id());
            let (acked, errors, closing) = (acked.clone(), errors.clone(), closing.clone());
            if t.v5 {
                let mut o = rumqttc::v5::MqttOptions::new(id, t.host.clone(), t.port);
                o.set_keep_alive(Duration::from_secs(30))
                    .set_max_packet_size(Some(MAX_PACKET as u32))
                    .set_outgoing_inflight_upper_limit(t.inflight)
                    .set_request_channel_capacity(4096);
                if let (Some(u), Some(p)) = (&t.username, &t.password) {
                    o.set_credentials(u.clone(), p.clone());
                }
                if let Some(tls) = &tls {
                    o.set_transport(rumqttc::Transport::Tls(tls.clone()));
                }
                let (client, mut ev) = rumqttc::v5::AsyncClient::new(o, 4096);
                loops.push(pump!(ev, rumqttc::v5::Event, rumqttc::v5::mqttbytes::v5::Packet, acked, errors, closing));
                clients.push(Client::V5(client));
            } else {
                let mut o = rumqttc::MqttOptions::new(id, t.host.clone(), t.port);
                o.set_keep_alive(Duration::from_secs(30))
                    .set_max_packet_size(MAX_PACKET, MAX_PACKET)
                    .set_inflight(t.inflight.max(1))
                    .set_request_channel_capacity(4096);
                if let (Some(u), Some(p)) = (&t.username, &t.password) {
                    o.set_credentials(u.clone(), p.clone());
                }
                if let Some(tls) = &tls {
                    o.set_transport(rumqttc::Transport::Tls(tls.clone()));
                }
                let (client, mut ev) = rumqttc::AsyncClient::new(o, 4096);
                loops.push(pump!(ev, rumqttc::Event, rumqttc::Packet, acked, errors, closing));
                clients.push(Client::V4(client));
            }
        }
        Ok(MqttSender { clients, loops, qos: t.qos, acked, errors, closing, published: 0 })
    }

    /// Queues one message (waits when the connection's queue is full).
    pub async fn send(&mut self, m: Message) -> Result<(), String> {
        let c = &self.clients[m.vehicle as usize % self.clients.len()];
        let payload = Bytes::from(m.payload);
        let r = match c {
            Client::V4(c) => {
                let q = if self.qos == 0 { rumqttc::QoS::AtMostOnce } else { rumqttc::QoS::AtLeastOnce };
                c.publish_bytes(m.topic, q, false, payload).await.map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                use rumqttc::v5::mqttbytes::QoS;
                let q = if self.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                c.publish_bytes(m.topic, q, false, payload).await.map_err(|e| e.to_string())
            }
        };
        self.published += 1;
        r
    }

    /// Messages acknowledged so far (QoS 0: queued).
    pub fn delivered(&self) -> u64 {
        if self.qos == 0 { self.published } else { self.acked.load(Ordering::Relaxed) }
    }

    /// Waits up to `limit` for every PUBACK, then disconnects. Returns the
    /// messages delivered.
    pub async fn finish(self, limit: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + limit;
        while self.delivered() < self.published && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // QoS 0: give the event loops a moment to write what is queued.
        if self.qos == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let n = self.delivered();
        self.closing.store(true, Ordering::Relaxed);
        for c in &self.clients {
            let _ = match c {
                Client::V4(c) => c.disconnect().await.map_err(|e| e.to_string()),
                Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        for l in self.loops {
            l.abort();
        }
        n
    }

    pub fn published(&self) -> u64 {
        self.published
    }
}
