//! The no-op consumers (MQTT and Kafka): subscribe like rockfeed does (same
//! broker, filter and QoS; same topic) and only count what arrives. The end-to-end benchmark measures
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
    /// Counts one message of `bytes` bytes arriving `since` the start.
    pub fn add(&self, since: Instant, bytes: usize) {
        let us = since.elapsed().as_micros() as u64;
        if self.messages.fetch_add(1, Ordering::Relaxed) == 0 {
            self.first_us.store(us, Ordering::Relaxed);
        }
        self.last_us.store(us, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

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
                Ok(Event::Incoming(Packet::Publish(p))) => counts.add(start, p.payload.len()),
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

/// Consumes every partition of `topic` from the Kafka cluster at `brokers`
/// from the beginning and counts messages until `stop` flips; `ready` flips
/// once the partitions are assigned. No consumer group: the partitions are
/// assigned directly from the topic's metadata, so no rebalance sits in the
/// measured path. A polled `BaseConsumer` on a blocking thread.
pub async fn kafka(
    brokers: &str,
    topic: &str,
    counts: Arc<Counts>,
    ready: watch::Sender<bool>,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "loadgen-noop")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| format!("Kafka consumer: {e}"))?;
        let md =
            c.fetch_metadata(Some(&topic), Duration::from_secs(10)).map_err(|e| format!("metadata of {topic}: {e}"))?;
        let mut tpl = TopicPartitionList::new();
        for t in md.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                tpl.add_partition_offset(&topic, p.id(), Offset::Beginning).map_err(|e| e.to_string())?;
            }
        }
        if tpl.count() == 0 {
            return Err(format!("topic {topic} has no partitions"));
        }
        c.assign(&tpl).map_err(|e| format!("assign {topic}: {e}"))?;
        let _ = ready.send(true);
        let start = Instant::now();
        while !*stop.borrow() {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => counts.add(start, m.payload().map_or(0, |p| p.len())),
                Some(Err(e)) => eprintln!("loadgen: no-op Kafka consumer: {e}"),
                None => {}
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}
