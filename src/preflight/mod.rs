//! `rockfeed check --connect`: the systems a configuration points at,
//! asked whether they are set up the way `run` needs, one line per check:
//! `OK`, `FAIL` with what to do (the exit status is non-zero), or `SKIP`
//! with why it could not be asked.
//!
//! - **StarRocks, HTTP**: for each table rockfeed loads, a transaction is
//!   begun and rolled back under a label of its own
//!   (`{prefix}-check-{table}-{ms}`) through the FE's HTTP port, the one
//!   `run` uses. That one call shows the FE is reachable, the credentials
//!   are right, the database and table exist, the user may load them, and
//!   the transaction API (exactly-once) answers. With `delivery =
//!   "at-least-once"`, which needs no transaction API, the FE is asked for a
//!   label's state instead (reachable, credentials, database).
//! - **StarRocks, MySQL port** (`starrocks.query_port`, 9030; 0 skips):
//!   `SHOW CREATE TABLE` for each table, compared with the table
//!   `rockfeed ddl` creates from the same config ([`compare`]): key type and
//!   key columns, every column rockfeed writes (type, aggregate function,
//!   nullability), columns it does not write (they need a default),
//!   distribution columns, bucket count and colocation group. Then
//!   `ADMIN SHOW FRONTEND CONFIG LIKE 'max_running_txn_num_per_db'`, which
//!   must be at least `pipeline.shards × tables`; a user without OPERATE on
//!   SYSTEM cannot read it (`SKIP`, saying what to make sure of).
//!
//!   Why the MySQL port and not the FE's HTTP schema API: `/api/{db}/{table}/_schema`
//!   has the columns and aggregate types but neither buckets nor colocation,
//!   and `/api/_get_ddl` needs an admin user. `SHOW CREATE TABLE` needs only
//!   a privilege on the table, which the loading user has, and the FE config
//!   is readable there when the user may read it at all.
//! - **MQTT**: CONNECT and SUBSCRIBE as the source would, under a client id
//!   and share group of its own (`source::mqtt::probe`).
//! - **Kafka**: a metadata request for every topic, each of which must
//!   exist with partitions (`KafkaConfig::probe`; the group is not joined).
//! - **Archive**: a probe object written and deleted (`Store::probe`).
//!
//! Not compared: partitioning (rockfeed loads into expression or range
//! partitions alike; a range without a partition for the data's dates
//! filters rows, which `run` reports), column comments, and properties
//! other than `colocate_with`.

use crate::config::Config;
use crate::sink::starrocks::response::LoadReply;
use crate::sink::starrocks::txn::TxnLoader;

mod schema;

pub use schema::compare;
use schema::schema;

/// One check: what was checked, and its outcome.
pub struct Check {
    pub what: String,
    pub result: Outcome,
}

pub enum Outcome {
    /// What was found.
    Ok(String),
    /// What is wrong and what to do.
    Fail(String),
    /// Why it could not be checked, and what to make sure of by hand.
    Skip(String),
}

impl From<Result<String, String>> for Outcome {
    fn from(r: Result<String, String>) -> Self {
        match r {
            Ok(s) => Outcome::Ok(s),
            Err(s) => Outcome::Fail(s),
        }
    }
}

/// Every check the configuration calls for, in order.
pub async fn run(cfg: &Config) -> Vec<Check> {
    let mut out = starrocks(cfg).await;
    if let Some(m) = &cfg.source.mqtt {
        let result = crate::source::mqtt::probe(m).await.map_err(|e| {
            format!("{e}; check source.mqtt (host, port, tls_ca_file, username, ROCKFEED_MQTT_PASSWORD) and the broker's ACL")
        });
        out.push(Check { what: "MQTT broker".into(), result: result.into() });
    }
    if let Some(k) = &cfg.source.kafka {
        let result = k.probe().await.map_err(|e| {
            format!(
                "{e}; check source.kafka (brokers, topics, and the TLS/SASL properties with ROCKFEED_KAFKA_PASSWORD)"
            )
        });
        out.push(Check { what: "Kafka".into(), result: result.into() });
    }
    if cfg.archive.enabled {
        let result = match crate::archive::store::Store::open(&cfg.archive) {
            Ok(store) => store.probe().await.map_err(|e| format!("{e}; check archive.url and its credentials")),
            Err(e) => Err(e),
        };
        out.push(Check { what: "archive store".into(), result: result.into() });
    }
    out
}

async fn starrocks(cfg: &Config) -> Vec<Check> {
    let sr = &cfg.starrocks;
    let loader = match crate::app::loader(cfg) {
        Ok(l) => l,
        Err(e) => return vec![Check { what: "StarRocks".into(), result: Outcome::Fail(e.to_string()) }],
    };
    // The tables and transaction timeouts `run` uses.
    let rc = crate::pipeline::runner::RunnerConfig::from(cfg);
    let mut tables = vec![rc.table.clone()];
    tables.extend(rc.latest.map(|(t, _)| t));
    let mut out = Vec::new();
    if cfg.delivery() == crate::model::Delivery::AtLeastOnce {
        // Plain Stream Load needs no transaction API (StarRocks before 2.4
        // has none): the FE is asked for a label's state instead, which
        // shows it answers, knows the database and takes the credentials.
        let label = format!("{}-check-{}", sr.label_prefix, crate::util::now_ms());
        let result = match loader.label_state(&label).await {
            Ok(_) => Outcome::Ok(format!(
                "the FE answers get_load_state for database {} (at-least-once delivery uses no transaction API, so none was begun)",
                sr.database
            )),
            Err(e) => Outcome::Fail(format!(
                "{e}; check starrocks.endpoints, starrocks.database, starrocks.user and ROCKFEED_STARROCKS_PASSWORD"
            )),
        };
        out.push(Check { what: format!("StarRocks {}", sr.database), result });
        out.extend(schema(cfg, &tables).await);
        return out;
    }
    for table in &tables {
        let what = format!("StarRocks {}.{table}", sr.database);
        let label = format!("{}-check-{table}-{}", sr.label_prefix, crate::util::now_ms());
        let txn = TxnLoader::new(&loader, rc.timeouts);
        let result = match txn.begin(table, &label).await {
            Err(e) => Err(format!("{e}; check starrocks.endpoints and that this host reaches the FE's HTTP port")),
            Ok(r) if r.status == 401 || r.status == 403 => Err(format!(
                "StarRocks refused user '{}' (HTTP {}): {}; check starrocks.user and ROCKFEED_STARROCKS_PASSWORD",
                sr.user,
                r.status,
                LoadReply::parse(&r.body).map(|p| p.message).unwrap_or_else(|| String::from_utf8_lossy(&r.body).into())
            )),
            Ok(r) => match LoadReply::parse(&r.body) {
                // Rolled back, or cancelled through the FE when the rollback fails.
                Some(p) if p.status.eq_ignore_ascii_case("OK") => match txn.abort(table, &label).await.as_deref() {
                    Some("ABORTED") => {
                        Ok(format!("the transaction API began and rolled back a probe transaction ({label})"))
                    }
                    st => Err(format!(
                        "began a probe transaction ({label}) but could not roll it back (state {st:?}); it ends at its timeout"
                    )),
                },
                Some(p) => Err(format!(
                    "{}; the tables come from `rockfeed ddl --config …` (run through the FE's MySQL port), and the user needs INSERT on them",
                    p.message
                )),
                None => Err(format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body))),
            },
        };
        out.push(Check { what, result: result.into() });
    }
    out.extend(schema(cfg, &tables).await);
    out
}
