//! What can be checked of a configuration without connecting anything:
//! the checks `Config::load` runs after parsing, so `rockfeed check` and
//! `rockfeed run` refuse the same mistakes, each naming its key.

use std::time::Duration;

use super::{Config, ConfigError, is_identifier};

impl Config {
    /// Checks everything that can be checked without connecting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_starrocks()?;
        self.validate_pipeline()?;
        self.validate_sources()?;
        self.validate_decode()
    }

    /// Endpoints, names, label prefix, prepared timeout, and the enrichment.
    fn validate_starrocks(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if let Some(e) = &self.enrich {
            match (&e.file, &e.database) {
                (Some(_), Some(_)) | (None, None) => {
                    return bad("[enrich]: give exactly one of `file` and `[enrich.database]`".into());
                }
                (None, Some(db)) => db.validate().map_err(ConfigError::Invalid)?,
                _ => {}
            }
        }
        let sr = &self.starrocks;
        if sr.endpoints.is_empty() {
            return bad("starrocks.endpoints is empty".into());
        }
        for e in &sr.endpoints {
            e.parse::<crate::sink::starrocks::client::Endpoint>()
                .map_err(|m| ConfigError::Invalid(format!("starrocks.endpoints: {m}")))?;
        }
        for (what, name) in [
            ("starrocks.database", &sr.database),
            ("tables.telemetry", &self.tables.telemetry),
            ("tables.latest", &self.tables.latest),
        ] {
            if !is_identifier(name) {
                return bad(format!("{what} '{name}' is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)"));
            }
        }
        for d in self.tables.dims.iter().chain(&self.tables.latest_metrics) {
            if !is_identifier(d) {
                return bad(format!("column '{d}' is not a plain identifier"));
            }
        }
        // The longest label must fit StarRocks' 128 characters.
        let longest = self.tables.telemetry.len().max(self.tables.latest.len());
        if sr.label_prefix.len() + longest + 2 + 10 + 1 + 20 > 128 || sr.label_prefix.is_empty() {
            return bad("starrocks.label_prefix is empty or too long for 128-character labels".into());
        }
        if !sr.label_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return bad(format!(
                "starrocks.label_prefix '{}' may only hold [-_A-Za-z0-9] (labels are prefix-table-shard-epoch)",
                sr.label_prefix
            ));
        }
        if let Some(p) = self.starrocks.prepared_timeout
            && p.0 < Duration::from_secs(1)
        {
            return bad("starrocks.prepared_timeout must be at least 1s".into());
        }
        Ok(())
    }

    /// Buckets and shards, windows, epochs, the stop and the dead letters.
    fn validate_pipeline(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !(1..=1024).contains(&self.tables.buckets) {
            return bad("tables.buckets must be within 1..=1024".into());
        }
        if self.pipeline.shards == 0 || self.pipeline.shards > self.tables.buckets {
            return bad(format!("pipeline.shards must be within 1..=tables.buckets ({})", self.tables.buckets));
        }
        if self.window.width.0 < Duration::from_secs(1) || 86_400_000 % self.window.width.0.as_millis() != 0 {
            return bad("window.width must be at least 1s and divide a day".into());
        }
        if self.pipeline.stop_grace.0 < Duration::from_secs(1) {
            return bad("pipeline.stop_grace must be at least 1s".into());
        }
        if self.pipeline.worker_threads > 1024 {
            return bad("pipeline.worker_threads must be within 0..=1024 (0: half the cores)".into());
        }
        if self.dead_letter.file_bytes < 1024 {
            return bad("dead_letter.file_bytes must be at least 1024".into());
        }
        if self.pipeline.epoch.0 < Duration::from_millis(100) {
            return bad("pipeline.epoch must be at least 100ms".into());
        }
        if let Some(m) = self.pipeline.max_epoch
            && m.0 < self.pipeline.epoch.0
        {
            return bad(format!(
                "pipeline.max_epoch ({:?}) is shorter than pipeline.epoch ({:?}); set it equal to turn pacing off",
                m.0, self.pipeline.epoch.0
            ));
        }
        Ok(())
    }

    /// One source, its settings, the WAL (MQTT) and the archive.
    fn validate_sources(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        crate::decode::narrow::TopicTemplate::parse(&self.decode.topic_template).map_err(ConfigError::Invalid)?;
        if let Some(m) = &self.source.mqtt {
            m.validate().map_err(ConfigError::Invalid)?;
            if m.max_packet_bytes < self.decode.max_payload_bytes + 64 * 1024 {
                return bad(format!(
                    "source.mqtt.max_packet_bytes ({}) must exceed decode.max_payload_bytes ({}) by 64 KiB (topic and headers): \
                     a payload between the two would break the MQTT connection instead of being dead-lettered",
                    m.max_packet_bytes, self.decode.max_payload_bytes
                ));
            }
        }
        if let Some(k) = &self.source.kafka {
            k.validate().map_err(ConfigError::Invalid)?;
        }
        self.archive.validate().map_err(ConfigError::Invalid)?;
        if self.source.mqtt.is_some() && self.source.kafka.is_some() {
            return bad("configure one source: [source.mqtt] or [source.kafka], not both".into());
        }
        if self.source.mqtt.is_some() {
            self.wal.validate().map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }

    /// The decoder's bounds.
    fn validate_decode(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let d = &self.decode;
        if !(1..=crate::decode::catalog::MAX_METRIC_NAME).contains(&d.max_metric_name_bytes) {
            return bad(
                "decode.max_metric_name_bytes must be within 1..=128 (the metric column is a VARCHAR(128))".into()
            );
        }
        if !(1..=64).contains(&d.max_vin_bytes) {
            return bad("decode.max_vin_bytes must be within 1..=64 (the vehicle_id column is a VARCHAR(64))".into());
        }
        for (key, v) in [
            ("decode.max_metrics", d.max_metrics),
            ("decode.max_metrics_per_sample", d.max_metrics_per_sample),
            ("decode.max_samples_per_message", d.max_samples_per_message),
            ("decode.new_metrics_per_vehicle", d.new_metrics_per_vehicle as usize),
        ] {
            if v == 0 {
                return bad(format!("{key} must be at least 1"));
            }
        }
        if self.decode.max_payload_bytes < 256 * 1024 {
            return bad("decode.max_payload_bytes below 256 KiB would refuse legitimate wide samples".into());
        }
        Ok(())
    }
}
