//! The configuration projected onto each stage's settings: one `From<&Config>`
//! per stage, which `run`, `check` and the tests all use, so a stage never
//! reads a key the others do not see.

use super::AppError;
use crate::archive::ArchiveFormat;
use crate::archive::roll::RollPolicy;
use crate::archive::writer::Settings;
use crate::config::Config;
use crate::model::Delivery;
use crate::pipeline::epoch::CoordinatorConfig;
use crate::pipeline::runner::RunnerConfig;
use crate::pipeline::window::WindowConfig;
use crate::sink::starrocks::client::{ClientConfig, Credentials, Endpoint, StreamLoadClient};
use crate::sink::starrocks::service::{RetryPolicy, StreamLoader};
use crate::sink::starrocks::txn::TxnTimeouts;

/// The loader for a configuration.
pub fn loader(cfg: &Config) -> Result<StreamLoader, AppError> {
    let sr = &cfg.starrocks;
    let endpoints =
        sr.endpoints.iter().map(|e| e.parse::<Endpoint>()).collect::<Result<Vec<_>, _>>().map_err(AppError::Config)?;
    let mut c = ClientConfig::new(endpoints, Credentials { user: sr.user.clone(), password: sr.password.clone() });
    c.request_timeout = sr.request_timeout.0;
    c.tls_ca_file = sr.tls_ca_file.clone();
    let client = StreamLoadClient::new(c).map_err(|e| AppError::Config(e.to_string()))?;
    Ok(StreamLoader::new(
        client,
        sr.database.clone(),
        RetryPolicy { max_attempts: sr.max_attempts, ..Default::default() },
    ))
}

fn timeouts(cfg: &Config) -> TxnTimeouts {
    TxnTimeouts {
        txn_timeout_s: cfg.starrocks.txn_timeout.0.as_secs().max(1),
        prepared_timeout_s: cfg.starrocks.prepared_timeout.map(|d| d.0.as_secs().max(1)),
    }
}

/// The decoder, shards and loads.
impl From<&Config> for RunnerConfig {
    fn from(cfg: &Config) -> RunnerConfig {
        RunnerConfig {
            decode: cfg.decode.clone(),
            window: WindowConfig {
                width_ms: cfg.window.width.0.as_millis() as i64,
                max_lateness_ms: cfg.window.max_lateness.0.as_millis() as i64,
            },
            shards: cfg.pipeline.shards,
            buckets: cfg.tables.buckets,
            epoch: cfg.pipeline.epoch.0,
            dims: cfg.tables.dims.clone(),
            unknown_vehicle: cfg
                .enrich
                .as_ref()
                .map(|e| e.unknown_vehicle)
                .unwrap_or(crate::model::UnknownVehicle::Keep),
            table: cfg.tables.telemetry.clone(),
            label_prefix: cfg.starrocks.label_prefix.clone(),
            dead_letter: cfg.dead_letter.clone(),
            channel_batches: cfg.pipeline.channel_batches,
            max_rows_per_load: cfg.pipeline.max_rows_per_load,
            max_epoch_bytes: cfg.pipeline.max_epoch_bytes,
            compression: cfg.starrocks.compression,
            latest: cfg.tables.loads_latest().then(|| (cfg.tables.latest.clone(), cfg.tables.latest_metrics.clone())),
            delivery: cfg.delivery(),
            timeouts: timeouts(cfg),
            route_by_key: cfg.source.kafka.as_ref().is_some_and(|k| k.key_is_colocation_key),
            rebuild: None,
        }
    }
}

/// The epoch coordinator.
impl From<&Config> for CoordinatorConfig {
    fn from(cfg: &Config) -> CoordinatorConfig {
        CoordinatorConfig {
            delivery: cfg.delivery(),
            prefix: cfg.starrocks.label_prefix.clone(),
            // The tables the shards write: one rule, the runner's.
            tables: RunnerConfig::from(cfg).tables(),
            shards: cfg.pipeline.shards,
            epoch: cfg.pipeline.epoch.0,
            max_epoch: cfg.pipeline.max_epoch(),
            timeouts: timeouts(cfg),
            state_dir: Some(cfg.pipeline.state_dir.clone()),
        }
    }
}

/// The raw archive's writer (whether it is on is `archive.enabled`).
impl From<&Config> for Settings {
    fn from(cfg: &Config) -> Settings {
        let a = &cfg.archive;
        Settings {
            writer: cfg.starrocks.label_prefix.clone(),
            table: a.table.clone(),
            dims: cfg.tables.dims.clone(),
            spool_dir: a.spool_dir.join(&cfg.starrocks.label_prefix),
            spool_max_bytes: a.spool_max_bytes,
            roll: RollPolicy { max_bytes: a.roll_bytes, max_age: a.roll_age.0, idle: a.roll_idle.0 },
            format: ArchiveFormat { row_group_rows: a.row_group_rows, zstd_level: a.zstd_level },
            fan_in: crate::archive::merge::FAN_IN,
            spill_bytes: a.spill_bytes,
            exactly_once: cfg.delivery() == Delivery::ExactlyOnce,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The coordinator's tables and timing are the runner's: both read them
    /// from the same keys.
    #[test]
    fn the_coordinator_and_the_runner_see_the_same_tables_shards_and_timeouts() {
        for latest in [false, true] {
            let mut cfg =
                Config::parse("[starrocks]\nendpoints = [\"http://127.0.0.1:8030\"]\ndatabase = \"d\"\nuser = \"u\"\n")
                    .unwrap();
            cfg.tables.load_latest = latest;
            cfg.pipeline.shards = 3;
            let (r, c) = (RunnerConfig::from(&cfg), CoordinatorConfig::from(&cfg));
            assert_eq!(c.tables, r.tables());
            assert_eq!(c.tables.len(), 1 + latest as usize);
            assert_eq!((c.shards, c.epoch, c.delivery), (r.shards, r.epoch, r.delivery));
            assert_eq!(
                (c.timeouts.txn_timeout_s, c.timeouts.prepared_timeout_s),
                (r.timeouts.txn_timeout_s, r.timeouts.prepared_timeout_s)
            );
        }
    }
}
