//! rockfeed's configuration: one strict TOML file.
//!
//! Unknown keys are errors (a typo must not silently fall back to a
//! default), every field is documented here, durations are written
//! `"500ms"`, `"1s"`, `"1m"`, `"2h"`, and secrets may come from the
//! environment: `ROCKFEED_STARROCKS_PASSWORD` overrides
//! `starrocks.password`. [`Config::validate`] runs before anything touches
//! the world; `rockfeed check --config` runs only that.
//!
//! This file holds the whole file's shape and the sections of the parts
//! that have no module of their own (StarRocks, tables, window, pipeline,
//! enrichment, dead letters, telemetry). A stage with a module owns its
//! section: `decode::DecodeConfig`, `source::mqtt::MqttConfig`,
//! `source::kafka::KafkaConfig`, `wal::WalConfig`, `archive::ArchiveConfig`.
//! `validate.rs` holds the checks; `ddl.rs` the statements `rockfeed ddl`
//! prints.

pub mod ddl;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::Delivery;

/// The environment variable that overrides `starrocks.password`.
pub const PASSWORD_ENV: &str = "ROCKFEED_STARROCKS_PASSWORD";

/// Per-instance overrides, for replicas that share one config file (a
/// Kubernetes StatefulSet sets both to the pod name), each unique per
/// instance and stable across its restarts: this one replaces
/// `starrocks.label_prefix`…
pub const LABEL_PREFIX_ENV: &str = "ROCKFEED_LABEL_PREFIX";
/// …and this one `source.mqtt.client_id`.
pub const MQTT_CLIENT_ID_ENV: &str = "ROCKFEED_MQTT_CLIENT_ID";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

pub use crate::util::{Dur, is_identifier, parse_duration};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where and how rows are loaded.
    pub starrocks: StarRocks,
    /// Target tables (the DDL `rockfeed ddl` prints and the loader writes).
    #[serde(default)]
    pub tables: Tables,
    /// Payload field names, topic template and sanity bounds.
    #[serde(default)]
    pub decode: Decode,
    /// Pre-aggregation windows.
    #[serde(default)]
    pub window: Window,
    /// Shards and epochs.
    #[serde(default)]
    pub pipeline: Pipeline,
    /// Where messages come from.
    #[serde(default)]
    pub source: Source,
    /// Vehicle dimensions joined to every sample.
    #[serde(default)]
    pub enrich: Option<Enrich>,
    /// Where refused input goes.
    #[serde(default)]
    pub dead_letter: DeadLetterCfg,
    /// The `/metrics`, `/health` and `/ready` endpoints.
    #[serde(default)]
    pub telemetry: Telemetry,
    /// The raw Parquet archive.
    #[serde(default)]
    pub archive: crate::archive::ArchiveConfig,
    /// The MQTT write-ahead log.
    #[serde(default)]
    pub wal: crate::wal::WalConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// Listen address of `/metrics` (Prometheus text), `/health` and `/ready`,
    /// e.g. `"127.0.0.1:9464"`; unset: no endpoint.
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// MQTT broker subscription.
    pub mqtt: Option<crate::source::mqtt::MqttConfig>,
    /// Kafka consumer group.
    pub kafka: Option<crate::source::kafka::KafkaConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrich {
    /// CSV with a `vin` column and the `tables.dims` columns; reloaded when it changes.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Or a MySQL-protocol database (MySQL, MariaDB, StarRocks), refreshed.
    #[serde(default)]
    pub database: Option<crate::enrich::db::DbConfig>,
    /// `keep` (NULL dims), `drop` or `dead-letter` for vins not in the dims.
    #[serde(default = "default_unknown")]
    pub unknown_vehicle: crate::model::UnknownVehicle,
}

fn default_unknown() -> crate::model::UnknownVehicle {
    crate::model::UnknownVehicle::Keep
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterCfg {
    /// Directory of `dead-letter-NNNNNN.jsonl` files.
    pub dir: PathBuf,
    /// A file is closed past this size (bytes; at least 1 KiB).
    pub file_bytes: u64,
    /// Files kept; past it the oldest file is removed, with a WARN line
    /// (0: keep all).
    pub max_files: usize,
}

impl Default for DeadLetterCfg {
    fn default() -> Self {
        DeadLetterCfg { dir: PathBuf::from("rockfeed-data/dead-letter"), file_bytes: 64 << 20, max_files: 100 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StarRocks {
    /// FE (or BE) HTTP endpoints, `http(s)://host:port`, tried in order with failover.
    pub endpoints: Vec<String>,
    /// Database of the target tables.
    pub database: String,
    /// User with INSERT on the tables.
    pub user: String,
    /// Password; prefer the `ROCKFEED_STARROCKS_PASSWORD` environment variable.
    #[serde(default)]
    pub password: String,
    /// Label prefix, unique per rockfeed instance: labels are `{prefix}-{table}-{shard}-{epoch}`.
    #[serde(default = "default_label_prefix")]
    pub label_prefix: String,
    /// `exactly-once` (epochs with 2PC, StarRocks 2.4+; the default with a
    /// Kafka source) or `at-least-once` (plain Stream Load, label-exact; the
    /// default and only mode with MQTT until its WAL lands). See
    /// [`Config::delivery`].
    #[serde(default)]
    pub delivery: Option<Delivery>,
    /// Exactly-once: the `timeout` header of `begin` (an epoch's transaction
    /// must be prepared within it).
    #[serde(default = "default_txn_timeout")]
    pub txn_timeout: Dur,
    /// Exactly-once: the `prepared_timeout` header of `prepare` (StarRocks
    /// 3.5.4+; unset leaves the FE's `prepared_transaction_default_timeout_second`,
    /// 86400 s). A prepared transaction not committed within it is aborted
    /// and its rows are lost, so it must exceed the longest outage of
    /// rockfeed you want to survive.
    #[serde(default)]
    pub prepared_timeout: Option<Dur>,
    /// PEM CA bundle for `https` endpoints (system bundle when unset).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Per-request limit (Stream Load `timeout` is derived from it).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    /// Body compression: `none`, `gzip`, `lz4`, `zstd` (sent as compressed-CSV `format`).
    #[serde(default = "default_compression")]
    pub compression: crate::sink::starrocks::encode::Compression,
    /// Retries of one batch before it is dead-lettered (0 = forever).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The FE's MySQL port (`query_port`) on the endpoints' hosts. Only
    /// `rockfeed check --connect` uses it, to read the tables' definitions
    /// and `max_running_txn_num_per_db`; 0 skips those checks.
    #[serde(default = "default_query_port")]
    pub query_port: u16,
}

fn default_label_prefix() -> String {
    "rockfeed".into()
}
fn default_txn_timeout() -> Dur {
    Dur(Duration::from_secs(600))
}
fn default_request_timeout() -> Dur {
    Dur(Duration::from_secs(600))
}
fn default_compression() -> crate::sink::starrocks::encode::Compression {
    crate::sink::starrocks::encode::Compression::None
}
fn default_max_attempts() -> u32 {
    10
}
fn default_query_port() -> u16 {
    9030
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tables {
    /// The per-minute aggregate table.
    #[serde(default = "default_telemetry")]
    pub telemetry: String,
    /// The latest-values table: PRIMARY KEY(vehicle_id, metric), loaded
    /// with `merge_condition` on the event order; `<latest>_wide` is a view
    /// with one row per vehicle.
    #[serde(default = "default_latest")]
    pub latest: String,
    /// Metrics whose latest value is kept (a row per vehicle and metric,
    /// and a column of the wide view).
    #[serde(default)]
    pub latest_metrics: Vec<String>,
    /// Load the latest table even without metrics (each vehicle's newest
    /// sample only: the wide view's `last_ts`).
    #[serde(default)]
    pub load_latest: bool,
    /// Dimension columns joined from the vehicle file (VARCHAR, nullable).
    #[serde(default = "default_dims")]
    pub dims: Vec<String>,
    /// Buckets of every table (they share a colocation group).
    #[serde(default = "default_buckets")]
    pub buckets: u32,
    /// The colocation group name.
    #[serde(default = "default_colocate")]
    pub colocate_with: String,
    /// Replicas per tablet.
    #[serde(default = "default_replication")]
    pub replication_num: u32,
}

fn default_telemetry() -> String {
    "telemetry_1m".into()
}
fn default_latest() -> String {
    "vehicle_latest".into()
}
fn default_dims() -> Vec<String> {
    vec!["fleet".into(), "model".into(), "region".into()]
}
fn default_buckets() -> u32 {
    16
}
fn default_colocate() -> String {
    "vehicle".into()
}
fn default_replication() -> u32 {
    3
}

impl Tables {
    /// Whether the latest-values table is loaded (named metrics, or all).
    pub fn loads_latest(&self) -> bool {
        self.load_latest || !self.latest_metrics.is_empty()
    }
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            telemetry: default_telemetry(),
            latest: default_latest(),
            latest_metrics: Vec::new(),
            load_latest: false,
            dims: default_dims(),
            buckets: default_buckets(),
            colocate_with: default_colocate(),
            replication_num: default_replication(),
        }
    }
}

/// The `[decode]` section is the decoder's own settings.
pub type Decode = crate::decode::DecodeConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Window {
    /// Tumbling window width (the `_1m` of `telemetry_1m`).
    pub width: Dur,
    /// Readings older than this behind the newest event time are dead-lettered.
    pub max_lateness: Dur,
}

impl Default for Window {
    fn default() -> Self {
        Window { width: Dur(Duration::from_secs(60)), max_lateness: Dur(Duration::from_secs(86_400)) }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pipeline {
    /// Shard workers; shard = StarRocks bucket mod shards.
    pub shards: u32,
    /// Epoch length: how often partial aggregates are sealed and loaded
    /// (while StarRocks shows no pressure).
    pub epoch: Dur,
    /// The longest epoch pacing may stretch to while StarRocks shows
    /// pressure (`too many versions`, the running-transaction cap, loads
    /// slow for the epoch); equal to `epoch`: pacing off. Default: 30 s, or
    /// `epoch` if that is longer.
    pub max_epoch: Option<Dur>,
    /// Batches buffered per shard before the source is held back.
    pub channel_batches: usize,
    /// A shard loads early when it holds this many partial rows (bounds
    /// memory and body size within an epoch).
    pub max_rows_per_load: usize,
    /// Stream Load bodies (compressed) and the raw archive's samples not
    /// yet spooled, held in memory at most (bytes): past it the pipeline
    /// takes no more messages and cuts the epoch early
    /// (bounds memory while a backlog drains).
    pub max_epoch_bytes: u64,
    /// Local state: the last epoch this instance decided (exactly-once), a
    /// note that survives another instance overwriting the group's offset
    /// metadata.
    pub state_dir: PathBuf,
    /// The one grace period of a stop (SIGTERM), from the signal: the last
    /// epoch commits within it (past it rockfeed exits with the epoch
    /// undecided, and the next start rolls it back and reads it again),
    /// then the archive publishes what it can in the time left (the rest
    /// stays in the spool for the next start). A service manager's stop
    /// timeout must exceed it by some 20 s of bounded clean-up.
    pub stop_grace: Dur,
    /// Threads of the async runtime `rockfeed run` uses (the MQTT
    /// connection, decoder, shards, loads, coordinator); 0: half the
    /// machine's cores, at least one. The blocking work has threads of its
    /// own (the WAL writer, the archive's encoder and uploaders, librdkafka
    /// and the Kafka poll thread), and an edge appliance shares its machine
    /// with the broker: more runtime threads than that cost CPU in
    /// cross-thread wake-ups (README, "Narrow messages").
    pub worker_threads: usize,
}

impl Pipeline {
    /// The longest epoch pacing may stretch to (see `max_epoch`).
    pub fn max_epoch(&self) -> Duration {
        self.max_epoch.map(|d| d.0).unwrap_or(Duration::from_secs(30).max(self.epoch.0))
    }

    /// The runtime's threads (see `worker_threads`).
    pub fn worker_threads(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map(|n| n.get() / 2).unwrap_or(1).max(1),
            n => n,
        }
    }
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            shards: 2,
            epoch: Dur(Duration::from_secs(1)),
            max_epoch: None,
            channel_batches: 64,
            max_rows_per_load: 500_000,
            max_epoch_bytes: 128 << 20,
            state_dir: PathBuf::from("rockfeed-data/state"),
            stop_grace: Dur(Duration::from_secs(60)),
            worker_threads: 0,
        }
    }
}

impl Config {
    /// The delivery mode: as configured, else exactly-once (Kafka through
    /// the group's offsets, MQTT through its write-ahead log).
    pub fn delivery(&self) -> Delivery {
        self.starrocks.delivery.unwrap_or(Delivery::ExactlyOnce)
    }

    /// The directories `rockfeed run` writes, each created if missing and
    /// probed with a file write, so that `rockfeed check` saying OK means
    /// `run` can start: an error names the key and the path.
    pub fn check_dirs(&self) -> Result<(), ConfigError> {
        let mut dirs =
            vec![("pipeline.state_dir", &self.pipeline.state_dir), ("dead_letter.dir", &self.dead_letter.dir)];
        if self.source.mqtt.is_some() {
            dirs.push(("wal.dir", &self.wal.dir));
        }
        if self.archive.enabled {
            dirs.push(("archive.spool_dir", &self.archive.spool_dir));
        }
        for (key, dir) in dirs {
            if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
                return Err(ConfigError::Invalid(format!(
                    "{key} {}: this is a file, not a directory; name a directory (created if missing)",
                    dir.display()
                )));
            }
            let probe = dir.join(".rockfeed-check");
            std::fs::create_dir_all(dir)
                .and_then(|_| std::fs::write(&probe, b"ok"))
                .and_then(|_| std::fs::remove_file(&probe))
                .map_err(|e| ConfigError::Invalid(format!("{key} {}: not a writable directory: {e}", dir.display())))?;
        }
        Ok(())
    }

    /// Reads, applies environment overrides, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut cfg = Config::parse(&text).map_err(|message| ConfigError::Parse { path: path.into(), message })?;
        if let Ok(pw) = std::env::var(PASSWORD_ENV) {
            cfg.starrocks.password = pw;
        }
        cfg.archive.apply_env();
        cfg.apply_instance_env(|k| std::env::var(k).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies [`LABEL_PREFIX_ENV`] and [`MQTT_CLIENT_ID_ENV`] where set
    /// (`var` reads the environment). A value that is empty or outside
    /// `[-_A-Za-z0-9]` is refused naming the variable, not the config key it
    /// replaces: an unexpanded `$(POD_NAME)` is a deployment mistake.
    pub fn apply_instance_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let checked = |name: &str, key: &str| -> Result<Option<String>, ConfigError> {
            let Some(v) = var(name) else { return Ok(None) };
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(ConfigError::Invalid(format!(
                    "{name} is {v:?}: it replaces {key}, and must be non-empty [-_A-Za-z0-9] (unset it to use the config's value)"
                )));
            }
            Ok(Some(v))
        };
        if let Some(p) = checked(LABEL_PREFIX_ENV, "starrocks.label_prefix")? {
            self.starrocks.label_prefix = p;
        }
        if let Some(id) = checked(MQTT_CLIENT_ID_ENV, "source.mqtt.client_id")? {
            match self.source.mqtt.as_mut() {
                Some(m) => m.client_id = id,
                None => {
                    return Err(ConfigError::Invalid(format!(
                        "{MQTT_CLIENT_ID_ENV} is set, but the config has no [source.mqtt]"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Parses TOML text (no environment, no validation).
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| {
            let e = e.to_string();
            // Only [pipeline] takes `stop_grace` now.
            if e.contains("unknown field `stop_grace`") {
                format!(
                    "{e}archive.stop_grace is gone: pipeline.stop_grace bounds the whole stop, the archive's last uploads included"
                )
            } else {
                e
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[starrocks]
endpoints = ["http://127.0.0.1:8030"]
database = "rockfeed"
user = "root"
"#;

    #[test]
    fn a_minimal_file_gets_documented_defaults() {
        let c = Config::parse(MIN).unwrap();
        c.validate().unwrap();
        assert_eq!(c.delivery(), Delivery::ExactlyOnce);
        assert_eq!(c.tables.buckets, 16);
        assert_eq!(c.window.width.0, Duration::from_secs(60));
        assert_eq!(c.pipeline.epoch.0, Duration::from_secs(1));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Config::parse(&format!("{MIN}\n[pipeline]\nshardz = 3\n")).unwrap_err();
        assert!(e.contains("shardz"), "{e}");
        let e = Config::parse(&format!("{MIN}\ncolour = 1\n")).unwrap_err();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn validation_catches_what_would_fail_later() {
        let with = |extra: &str| Config::parse(&format!("{MIN}\n{extra}")).unwrap().validate();
        assert!(with("[pipeline]\nshards = 0").is_err());
        assert!(with("[window]\nwidth = \"7s\"").is_err());
        assert!(with("[tables]\ndims = [\"bad-name\"]").is_err());
        assert!(with("[decode]\ntopic_template = \"x/{vin}\"").is_err());
        assert!(Config::parse(&MIN.replace("http://127.0.0.1:8030", "ftp://x")).unwrap().validate().is_err());
        assert!(with("[pipeline]\nepoch = \"10ms\"").is_err());
        let e = with("[pipeline]\nstop_grace = \"0s\"").unwrap_err().to_string();
        assert!(e.contains("pipeline.stop_grace"), "{e}");
        let e = with("[pipeline]\nworker_threads = 5000").unwrap_err().to_string();
        assert!(e.contains("pipeline.worker_threads"), "{e}");
        let c = Config::parse(&format!("{MIN}[pipeline]\nworker_threads = 3\n")).unwrap();
        assert_eq!(c.pipeline.worker_threads(), 3);
        let auto = Config::parse(MIN).unwrap().pipeline.worker_threads();
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(auto, (cores / 2).max(1), "0: half the cores, at least one");
        let e = with("[dead_letter]\nfile_bytes = 10").unwrap_err().to_string();
        assert!(e.contains("dead_letter.file_bytes"), "{e}");
        let mqtt = "[source.mqtt]\nhost = \"b\"\nclient_id = \"c\"\ntopics = [\"t/#\"]\n";
        let e = with(&format!("{mqtt}[wal]\nfeed_channel = 0")).unwrap_err().to_string();
        assert!(e.contains("wal.feed_channel"), "{e}");
        assert!(with("[dead_letter]\nfile_bytes = 1048576\nmax_files = 0\n[pipeline]\nstop_grace = \"90s\"").is_ok());
        // One grace period for the whole stop: the archive's own is gone, and
        // a config that still has it is told where it went.
        let e = Config::parse(&format!("{MIN}\n[archive]\nstop_grace = \"60s\"\n")).err().unwrap();
        assert!(e.contains("archive.stop_grace is gone: pipeline.stop_grace bounds the whole stop"), "{e}");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 weeks").is_err());
    }

    #[test]
    fn delivery_is_exactly_once_by_default_for_both_sources_and_the_wal_is_checked() {
        let kafka = "[source.kafka]\nbrokers = \"b:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n";
        let mqtt = "[source.mqtt]\nhost = \"h\"\nclient_id = \"c\"\ntopics = [\"t/#\"]\n";
        let c = Config::parse(&format!("{MIN}\n{kafka}")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.delivery(), Delivery::ExactlyOnce);
        let c = Config::parse(&format!("{MIN}\n{mqtt}")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.delivery(), Delivery::ExactlyOnce);
        assert_eq!(c.wal.commit_interval.0, Duration::from_millis(2));
        let c = Config::parse(&format!("{}delivery = \"at-least-once\"\n{mqtt}", MIN)).unwrap();
        assert_eq!(c.delivery(), Delivery::AtLeastOnce);
        let c = Config::parse(&format!("{MIN}\n{mqtt}[wal]\nsegment_bytes = 1000\n")).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("wal.segment_bytes"), "{e}");
        let c = Config::parse(&format!("{MIN}\n{mqtt}[wal]\nio = \"uring\"\ncommit_interval = \"5ms\"\n")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.wal.io, crate::wal::IoMode::Uring);
        let c = Config::parse(&format!("{MIN}\n{kafka}[source.kafka.properties]\n\"enable.auto.commit\" = \"true\"\n"))
            .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("enable.auto.commit"));
        assert!(Config::parse(&format!("{MIN}\n{kafka}{mqtt}")).unwrap().validate().is_err(), "one source");
    }

    #[test]
    fn check_dirs_creates_what_run_writes_and_names_a_directory_it_cannot() {
        let tmp = tempfile::tempdir().unwrap();
        let mqtt = "[source.mqtt]\nhost = \"h\"\nclient_id = \"c\"\ntopics = [\"t/#\"]\n";
        let d = tmp.path().display();
        let text = format!(
            "{MIN}\n[pipeline]\nstate_dir = \"{d}/state\"\n[dead_letter]\ndir = \"{d}/dead\"\n[wal]\ndir = \"{d}/wal\"\n{mqtt}"
        );
        Config::parse(&text).unwrap().check_dirs().unwrap();
        assert!(tmp.path().join("wal").is_dir() && tmp.path().join("state").is_dir());
        let bad = text.replace(&format!("{d}/wal"), "/proc/rockfeed-no/wal");
        let e = Config::parse(&bad).unwrap().check_dirs().unwrap_err().to_string();
        assert!(e.contains("wal.dir /proc/rockfeed-no/wal"), "{e}");
        // A file where a directory should be is said to be one (creating it
        // would only say "File exists").
        std::fs::write(tmp.path().join("a-file"), b"x").unwrap();
        let file = text.replace(&format!("{d}/wal"), &format!("{d}/a-file"));
        let e = Config::parse(&file).unwrap().check_dirs().unwrap_err().to_string();
        assert!(e.contains(&format!("wal.dir {d}/a-file: this is a file, not a directory")), "{e}");
    }

    #[test]
    fn the_kafka_example_config_in_deploy_loads_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rockfeed.kafka.example.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.delivery(), Delivery::ExactlyOnce);
        let k = c.source.kafka.as_ref().unwrap();
        assert!(k.key_is_colocation_key);
        assert_eq!(k.properties.get("group.instance.id").map(String::as_str), Some("rockfeed-edge-1"));
        let a = &c.archive;
        assert!(a.enabled && a.url.starts_with("s3://") && a.s3.path_style);
        assert_eq!((a.roll_bytes, a.roll_age.0.as_secs(), a.roll_idle.0.as_secs()), (128 << 20, 600, 120));
        // Dims from the registry database (`rockfeed check` reads the CA file).
        let db = c.enrich.as_ref().and_then(|e| e.database.as_ref()).unwrap();
        assert_eq!((db.table.as_deref(), db.updated_at.as_deref()), (Some("vehicles"), Some("updated_at")));
        assert_eq!(db.shown(), "registry.example:3306/fleet");
    }

    #[test]
    fn archive_settings_are_checked_and_secrets_stay_out_of_debug_output() {
        let base = "[starrocks]\nendpoints = [\"http://fe:8030\"]\ndatabase = \"d\"\nuser = \"u\"\n[source.mqtt]\nhost = \"b\"\nclient_id = \"c\"\ntopics = [\"t/#\"]\n";
        let check =
            |extra: &str| Config::parse(&format!("{base}[archive]\nenabled = true\n{extra}")).unwrap().validate();
        assert!(check("").is_ok());
        assert!(check("url = \"gs://b/x\"\n").unwrap_err().to_string().contains("s3://"));
        assert!(check("roll_bytes = 1000\n").is_err());
        assert!(check("spool_max_bytes = 1048576\n").unwrap_err().to_string().contains("twice"));
        assert!(check("table = \"raw-x\"\n").is_err());
        assert!(check("zstd_level = 30\n").is_err());
        assert!(check("roll_idle = \"20m\"\n").is_err(), "idle longer than age");
        // Each refusal names the one rule broken, with the values.
        let e = check("roll_age = \"5s\"\n").unwrap_err().to_string();
        assert!(e.contains("archive.roll_age (5s) is shorter than archive.roll_idle (120s, the default)"), "{e}");
        let e = check("roll_idle = \"500ms\"\n").unwrap_err().to_string();
        assert!(e.contains("archive.roll_idle must be at least 1s (it is 500ms)") && !e.contains("roll_age"), "{e}");
        let c = Config::parse(&format!("{base}[archive.s3]\nsecret_access_key = \"hunter2\"\n")).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn the_example_config_in_deploy_loads_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rockfeed.example.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.tables.dims, vec!["fleet", "model", "region"]);
        assert_eq!(c.source.mqtt.as_ref().unwrap().topics, vec!["telemetry/#"]);
        assert!(c.archive.enabled && c.archive.url == "/var/lib/rockfeed/archive");
        assert_eq!(c.delivery(), Delivery::ExactlyOnce);
        assert_eq!(
            (c.wal.dir.to_str(), c.wal.max_bytes, c.wal.io),
            (Some("/var/lib/rockfeed/wal"), 8 << 30, crate::wal::IoMode::Auto)
        );
    }

    #[test]
    fn the_instance_overrides_replace_the_prefix_and_the_client_id_and_refuse_a_bad_value() {
        let text = "[starrocks]\nendpoints = [\"http://fe:8030\"]\ndatabase = \"d\"\nuser = \"u\"\nlabel_prefix = \"shared\"\n[source.mqtt]\nhost = \"b\"\nclient_id = \"c\"\ntopics = [\"t/#\"]\n";
        let env = |pairs: &[(&str, &str)]| {
            let m: std::collections::HashMap<String, String> =
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            move |k: &str| m.get(k).cloned()
        };
        let mut cfg = Config::parse(text).unwrap();
        cfg.apply_instance_env(env(&[])).unwrap();
        assert_eq!(
            (cfg.starrocks.label_prefix.as_str(), cfg.source.mqtt.as_ref().unwrap().client_id.as_str()),
            ("shared", "c")
        );
        cfg.apply_instance_env(env(&[(LABEL_PREFIX_ENV, "rockfeed-1"), (MQTT_CLIENT_ID_ENV, "rockfeed-1")])).unwrap();
        assert_eq!(cfg.starrocks.label_prefix, "rockfeed-1");
        assert_eq!(cfg.source.mqtt.as_ref().unwrap().client_id, "rockfeed-1");
        cfg.validate().unwrap();
        for bad in ["", "$(POD_NAME)"] {
            let e = Config::parse(text)
                .unwrap()
                .apply_instance_env(env(&[(LABEL_PREFIX_ENV, bad)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(LABEL_PREFIX_ENV) && e.contains("starrocks.label_prefix"), "{e}");
        }
        let kafka_only = text.replace("[source.mqtt]\nhost = \"b\"\nclient_id = \"c\"\ntopics = [\"t/#\"]\n", "");
        let e = Config::parse(&kafka_only).unwrap().apply_instance_env(env(&[(MQTT_CLIENT_ID_ENV, "x")])).unwrap_err();
        assert!(e.to_string().contains("no [source.mqtt]"), "{e}");
    }
}
