//! The no-op consumer: subscribes like rockfeed does (same broker, filter
//! and QoS) and only counts what arrives. The end-to-end benchmark measures
//! the broker's own ceiling with it, in the same run as rockfeed, so
//! rockfeed's throughput can be stated as a ratio of what the broker can
//! deliver at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// What the consumer saw.
#[derive(Debug, Default)]
pub struct Counts {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    /// Microseconds from subscription to the first and to the latest message.
    pub first_us: AtomicU64,
    pub last_us: AtomicU64,
}

impl Counts {
    /// Messages per second between the first and the last message.
    pub fn rate(&self) -> f64 {
        let n = self.messages.load(Ordering::Relaxed);
        let span = self.last_us.load(Ordering::Relaxed).saturating_sub(self.first_us.load(Ordering::Relaxed));
        if n < 2 || span == 0 { 0.0 } else { (n - 1) as f64 / (span as f64 / 1e6) }
    }
}

/// Subscribes to `filter` on `host:port` (MQTT 3.1.1) and counts messages
/// until `stop` flips; `ready` flips once the subscription is acknowledged.
pub async fn mqtt(
    host: &str,
    port: u16,
    filter: &str,
    qos: u8,
    counts: Arc<Counts>,
    ready: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut o = MqttOptions::new(format!("loadgen-noop-{}", std::process::id()), host, port);
    o.set_max_packet_size(64 << 20, 64 << 20).set_keep_alive(Duration::from_secs(30)).set_clean_session(true);
    let (client, mut ev) = AsyncClient::new(o, 1000);
    let q = if qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
    client.subscribe(filter, q).await.map_err(|e| e.to_string())?;
    let start = Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            e = ev.poll() => match e {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let us = start.elapsed().as_micros() as u64;
                    if counts.messages.fetch_add(1, Ordering::Relaxed) == 0 {
                        counts.first_us.store(us, Ordering::Relaxed);
                    }
                    counts.last_us.store(us, Ordering::Relaxed);
                    counts.bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready.send(true);
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("loadgen: no-op consumer connection error: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    let _ = client.disconnect().await;
    Ok(())
}
