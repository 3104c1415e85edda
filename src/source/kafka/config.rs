//! `[source.kafka]`: the settings, their validation, and the librdkafka
//! client configuration they make.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

/// Environment variable with the SASL password (`sasl.password`).
pub const PASSWORD_ENV: &str = "ROCKFEED_KAFKA_PASSWORD";

/// Kafka source settings (`[source.kafka]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, e.g. `"broker1:9092,broker2:9092"`.
    pub brokers: String,
    /// Consumer group; its committed offsets carry the epoch decisions.
    pub group_id: String,
    /// Topics to subscribe.
    pub topics: Vec<String>,
    /// Where a partition without a committed offset starts: `earliest`,
    /// `latest` or `error`.
    #[serde(default = "default_reset")]
    pub auto_offset_reset: String,
    /// librdkafka properties passed through as they are (TLS, SASL, fetch
    /// sizes, `client.id`, …). Offset handling properties are rockfeed's.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Use the message key as the colocation key (route by key, not by the
    /// decoded VIN). Producers keyed by VIN give the same shards.
    #[serde(default)]
    pub key_is_colocation_key: bool,
    /// Match `decode.topic_template` against the record key instead of the
    /// Kafka topic: MQTT-to-Kafka bridges (Kafka Connect's MQTT source,
    /// EMQX, HiveMQ) write the MQTT topic (`telemetry/{vin}/{metric}`) as
    /// the key, so narrow records decode as they would from MQTT.
    #[serde(default)]
    pub topic_from_key: bool,
    /// Messages fetched but not yet handed to the pipeline before the
    /// partitions are paused.
    #[serde(default = "default_buffer")]
    pub max_buffered: usize,
}

fn default_reset() -> String {
    "earliest".into()
}
fn default_buffer() -> usize {
    1024
}

/// Properties rockfeed sets itself; a config that sets them is refused.
const OWNED: [&str; 5] =
    ["enable.auto.commit", "enable.auto.offset.store", "group.id", "bootstrap.servers", "auto.offset.reset"];

impl KafkaConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.topics.is_empty() {
            return Err("source.kafka.topics is empty".into());
        }
        if !["earliest", "latest", "error"].contains(&self.auto_offset_reset.as_str()) {
            return Err(format!(
                "source.kafka.auto_offset_reset '{}' is not earliest, latest or error",
                self.auto_offset_reset
            ));
        }
        if self.properties.get("partition.assignment.strategy").is_some_and(|v| v.contains("cooperative")) {
            return Err("source.kafka: cooperative rebalancing is not supported (an epoch is finished on every revoke, which assumes eager assignment)".into());
        }
        if self.topic_from_key && self.key_is_colocation_key {
            return Err("source.kafka: topic_from_key and key_is_colocation_key exclude each other (the key is a topic, not a VIN)".into());
        }
        if let Some(k) = self.properties.keys().find(|k| OWNED.contains(&k.as_str())) {
            return Err(format!("source.kafka.properties may not set '{k}' (rockfeed owns offsets and the group)"));
        }
        Ok(())
    }

    /// `rockfeed check --connect`: the brokers answer a metadata request
    /// for every topic, and each exists with partitions. A consumer that
    /// never joins the group: nothing is assigned or committed.
    pub async fn probe(&self) -> Result<String, String> {
        let cfg = self.clone();
        tokio::task::spawn_blocking(move || {
            let c: BaseConsumer<ProbeContext> = cfg
                .client_config()
                .create_with_context(ProbeContext::default())
                .map_err(|e| format!("a Kafka client: {e}"))?;
            let mut found = Vec::new();
            for t in &cfg.topics {
                let md = c.fetch_metadata(Some(t), Duration::from_secs(10)).map_err(|e| {
                    // Serves the queued log lines and errors into the context.
                    let _ = c.poll(Duration::ZERO);
                    let why = c.context().first_error.lock().ok().and_then(|f| f.clone());
                    let why = why.map(|w| format!(" ({w})")).unwrap_or_default();
                    format!("{}: no metadata for topic {t}: {e}{why}", cfg.brokers)
                })?;
                let topic = md.topics().iter().find(|x| x.name() == t.as_str());
                match topic {
                    Some(x) if x.error().is_none() && !x.partitions().is_empty() => {
                        found.push(format!("{t} ({} partitions)", x.partitions().len()));
                    }
                    Some(x) if let Some(e) = x.error() => {
                        return Err(format!("{}: topic {t}: {e:?}", cfg.brokers));
                    }
                    _ => return Err(format!("{}: topic {t} does not exist", cfg.brokers)),
                }
            }
            Ok(format!("{} answered: {}", cfg.brokers, found.join(", ")))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    pub(super) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set("queued.max.messages.kbytes", "16384")
            // Latency at the edge: a fetch waits at most 100 ms for data.
            .set("fetch.wait.max.ms", "100")
            .set("partition.assignment.strategy", "range,roundrobin");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        if let Ok(p) = std::env::var(PASSWORD_ENV) {
            c.set("sasl.password", p);
        }
        c
    }
}

/// The preflight's client context: librdkafka's errors and logs, which it
/// repeats for every broker state change while the brokers are down, are
/// not logged; the first error goes into the check's FAIL line instead.
#[derive(Default)]
struct ProbeContext {
    first_error: Mutex<Option<String>>,
}

impl ClientContext for ProbeContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(fac, "librdkafka: {log_message}");
        use rdkafka::config::RDKafkaLogLevel as L;
        if matches!(level, L::Emerg | L::Alert | L::Critical | L::Error)
            && let Ok(mut f) = self.first_error.lock()
        {
            f.get_or_insert_with(|| log_message.to_string());
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if let Ok(mut f) = self.first_error.lock() {
            f.get_or_insert_with(|| format!("{error}: {reason}"));
        }
    }
}

impl ConsumerContext for ProbeContext {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kafka::KafkaSource;
    use tokio::sync::{mpsc, watch};

    fn cfg(props: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            group_id: "g".into(),
            topics: vec!["t".into()],
            auto_offset_reset: "earliest".into(),
            properties: props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            key_is_colocation_key: false,
            topic_from_key: false,
            max_buffered: 16,
        }
    }

    #[test]
    fn tls_and_scram_are_built_in() {
        // librdkafka refuses these at creation when built without OpenSSL
        // ("OpenSSL not available at build time").
        for props in [
            vec![("security.protocol", "ssl")],
            vec![
                ("security.protocol", "sasl_ssl"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ],
        ] {
            let (tx, _rx) = mpsc::channel(1);
            let r = KafkaSource::new(&cfg(&props), tx, watch::channel(false).0, Default::default());
            assert!(r.is_ok(), "{props:?}: {:?}", r.err());
            r.unwrap().close();
        }
    }

    #[test]
    fn owned_properties_and_cooperative_rebalancing_are_refused() {
        assert!(cfg(&[("enable.auto.commit", "true")]).validate().is_err());
        assert!(cfg(&[("partition.assignment.strategy", "cooperative-sticky")]).validate().is_err());
        assert!(cfg(&[("fetch.wait.max.ms", "50")]).validate().is_ok());
        let mut c = cfg(&[]);
        c.auto_offset_reset = "smallest-ish".into();
        assert!(c.validate().is_err());
    }
}
