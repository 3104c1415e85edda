//! loadgen's Kafka target against librdkafka's mock cluster (the Kafka
//! protocol on local TCP ports): with produce requests failing now and then
//! (retriable broker errors), every message arrives exactly once, keyed by
//! its VIN, each vehicle in one partition and in order, and the readings in
//! the payloads add up to the ledger.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use loadgen::fleet::Fleet;
use loadgen::kafka::{KafkaSender, KafkaTarget, mock_cluster};
use loadgen::ledger::Ledger;
use loadgen::payload::{Generator, Profile};
use loadgen::run::{RunOptions, Target};
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

async fn produce(brokers: &str, profile: Profile) -> (Ledger, loadgen::run::RunSummary) {
    let fleet = Fleet::new(30, 12, 5, "RFKF");
    let mut ledger = Ledger::new(&fleet.metrics, 60_000);
    let mut generator = Generator::new(fleet, profile, "telemetry", 50).narrow_as_objects(true);
    let sender = KafkaSender::connect(&KafkaTarget::new(brokers, "telemetry")).unwrap();
    let o = RunOptions { ack_timeout: Duration::from_secs(60), ..RunOptions::timed(4000.0, Duration::from_secs(2)) };
    let s = loadgen::run::run(&mut generator, profile, &mut ledger, Target::Kafka(sender), &o, &AtomicBool::new(false))
        .await
        .unwrap();
    assert!(s.complete(), "{} of {} delivered", s.delivered, s.messages);
    (ledger, s)
}

/// Every message of the topic: (partition, key, payload).
fn read_all(brokers: &str, want: u64) -> Vec<(i32, String, serde_json::Value)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "loadgen-kafka-test")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&["telemetry"]).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (out.len() as u64) < want && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            out.push((m.partition(), key, serde_json::from_slice(m.payload().unwrap()).unwrap()));
        }
    }
    // Nothing more than was sent.
    let extra = (0..10).filter_map(|_| c.poll(Duration::from_millis(100))).count();
    assert_eq!(extra, 0, "no duplicates after the last message");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_arrives_once_keyed_ordered_and_adding_up_despite_broker_errors() {
    let mock = mock_cluster(3, "telemetry", 4).unwrap();
    let brokers = mock.bootstrap_servers();
    // Retriable errors on some produce requests: the idempotent producer
    // retries them without duplicating anything.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    let (ledger, s) = produce(&brokers, Profile::Narrow).await;
    assert_eq!(s.messages, s.readings, "narrow: one reading per message");
    let msgs = tokio::task::spawn_blocking(move || read_all(&brokers, s.messages)).await.unwrap();
    assert_eq!(msgs.len() as u64, s.messages);

    let mut partition_of: HashMap<String, i32> = HashMap::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut sums: HashMap<String, (u64, f64)> = HashMap::new();
    for (p, key, j) in &msgs {
        assert_eq!(j["vin"].as_str(), Some(key.as_str()), "keyed by VIN");
        assert_eq!(*partition_of.entry(key.clone()).or_insert(*p), *p, "a vehicle stays in one partition");
        let seq = j["seq"].as_u64().unwrap();
        let last = last_seq.entry(key.clone()).or_insert(seq);
        assert!(seq >= *last, "{key}: seq {seq} after {last}: in order");
        *last = seq;
        for (_, v) in j["metrics"].as_object().unwrap() {
            let e = sums.entry(key.clone()).or_default();
            e.0 += 1;
            e.1 += v.as_f64().unwrap_or_else(|| f64::from(u8::from(v.as_bool().unwrap())));
        }
    }
    assert!(partition_of.values().collect::<std::collections::HashSet<_>>().len() > 1, "keys spread over partitions");
    // The payloads add up to the ledger, per vehicle.
    let mut want: HashMap<String, (u64, f64)> = HashMap::new();
    for ((v, _, _), a) in &ledger.keys {
        let e = want.entry(ledger.vins[*v as usize].clone()).or_default();
        e.0 += a.cnt;
        e.1 += a.sum;
    }
    assert_eq!(sums, want);
}

async fn run_into(
    mock: &rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) -> Result<loadgen::run::RunSummary, String> {
    let fleet = Fleet::new(2, 3, 1, "RFKF");
    let mut ledger = Ledger::new(&fleet.metrics, 60_000);
    let mut generator = Generator::new(fleet, Profile::Wide, "telemetry", 50);
    let mut t = KafkaTarget::new(&mock.bootstrap_servers(), "telemetry");
    t.properties.push(("message.timeout.ms".into(), "1500".into()));
    let sender = KafkaSender::connect(&t).unwrap();
    let o = RunOptions { ack_timeout: Duration::from_secs(20), ..RunOptions::timed(100.0, Duration::from_millis(300)) };
    loadgen::run::run(&mut generator, Profile::Wide, &mut ledger, Target::Kafka(sender), &o, &AtomicBool::new(false))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_and_refused_produces_fail_the_run_instead_of_counting_as_sent() {
    // Every broker down: messages queue, time out, and their delivery reports fail.
    let mock = mock_cluster(1, "telemetry", 1).unwrap();
    mock.broker_down(1).unwrap();
    let e = run_into(&mock).await.expect_err("failed deliveries fail the run");
    assert!(e.contains("failed delivery"), "{e}");
    // A topic the broker refuses: produce itself errors.
    let mock = mock_cluster(1, "other", 1).unwrap();
    mock.topic_error("telemetry", RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED).unwrap();
    let e = run_into(&mock).await.expect_err("a refused topic fails the run");
    assert!(e.contains("authorization"), "{e}");
}
