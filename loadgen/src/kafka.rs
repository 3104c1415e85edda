//! The Kafka target: an rdkafka producer, each message keyed by its VIN (so a
//! vehicle's messages stay in one partition, in order), the Java client's
//! partitioner (`murmur2_random`) so keys land where a JVM producer would put
//! them, and idempotence on. Any librdkafka property passes through
//! (`-X acks=all`, `-X compression.type=zstd`, `-X security.protocol=SASL_SSL`,
//! `-X sasl.mechanism=…`); the SASL password comes from
//! [`PASSWORD_ENV`], never from the command line.
//!
//! A message counts as delivered when its delivery report says so; the run
//! waits for every report at the end and fails if one is missing or failed.
//! A full local queue (`QueueFull`) is backpressure: the sender waits and
//! retries the same record, it never drops it.
//!
//! Kafka has no topic per signal, so the narrow profile sends each reading as
//! a one-reading wide object (`{"vin","ts","seq","metrics":{name: v}}`).
//!
//! For tests and the benchmark, [`mock_cluster`] starts librdkafka's mock
//! cluster (real Kafka protocol on local TCP ports, inside this process).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;

use crate::payload::Message;

/// Environment variable with the SASL password.
pub const PASSWORD_ENV: &str = "LOADGEN_KAFKA_PASSWORD";

/// Kafka target settings.
#[derive(Debug, Clone)]
pub struct KafkaTarget {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub topic: String,
    /// librdkafka properties, applied last.
    pub properties: Vec<(String, String)>,
}

impl KafkaTarget {
    pub fn new(brokers: &str, topic: &str) -> Self {
        KafkaTarget { brokers: brokers.into(), topic: topic.into(), properties: Vec::new() }
    }
}

/// Counts delivery reports.
struct Reports {
    delivered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();

    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// An open producer.
pub struct KafkaSender {
    producer: ThreadedProducer<Reports>,
    topic: String,
    published: u64,
    delivered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl KafkaSender {
    pub fn connect(t: &KafkaTarget) -> Result<KafkaSender, String> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &t.brokers)
            .set("partitioner", "murmur2_random")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576");
        if let Ok(p) = std::env::var(PASSWORD_ENV) {
            c.set("sasl.password", p);
        }
        for (k, v) in &t.properties {
            c.set(k, v);
        }
        let delivered = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let ctx = Reports { delivered: delivered.clone(), failed: failed.clone(), first_error: Default::default() };
        let producer: ThreadedProducer<Reports> =
            c.create_with_context(ctx).map_err(|e| format!("Kafka producer for {}: {e}", t.brokers))?;
        Ok(KafkaSender { producer, topic: t.topic.clone(), published: 0, delivered, failed })
    }

    /// Queues one message, keyed by its VIN; waits while the local queue is full.
    pub async fn send(&mut self, m: Message) -> Result<(), String> {
        let mut rec = BaseRecord::to(&self.topic).key(m.vin.as_bytes()).payload(&m.payload);
        loop {
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(format!("Kafka produce: {e}")),
            }
        }
        self.published += 1;
        Ok(())
    }

    /// Messages with a successful delivery report so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub fn published(&self) -> u64 {
        self.published
    }

    /// Waits up to `limit` for every delivery report; returns the messages
    /// delivered, or the first delivery error.
    pub async fn finish(self, limit: Duration) -> Result<u64, String> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.producer.in_flight_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = self.producer.context().first_error.lock().ok().and_then(|g| g.clone()).unwrap_or_default();
            return Err(format!("{failed} messages failed delivery; first: {first}"));
        }
        Ok(self.delivered())
    }
}

/// Starts librdkafka's mock cluster with `brokers` brokers and creates
/// `topic` with `partitions` partitions.
pub fn mock_cluster(
    brokers: i32,
    topic: &str,
    partitions: i32,
) -> Result<MockCluster<'static, DefaultProducerContext>, String> {
    let m = MockCluster::new(brokers).map_err(|e| format!("mock cluster: {e}"))?;
    m.create_topic(topic, partitions, brokers.min(3)).map_err(|e| format!("mock topic {topic}: {e}"))?;
    Ok(m)
}
