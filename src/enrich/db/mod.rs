//! Vehicle dimensions from a MySQL-protocol database: MySQL, MariaDB, or
//! StarRocks' own FE (`[enrich.database]`).
//!
//! - **Queries**: plain text queries only (COM_QUERY, no prepared
//!   statements), a connection per refresh, and nothing else on connect:
//!   `max_allowed_packet`, `wait_timeout` and `prefer_socket` are set, so
//!   the client sends no `SELECT @@…` of its own (StarRocks' MySQL subset
//!   need not answer it). The rows come from `table` (`vin_column` plus the
//!   `tables.dims` columns) or from `query`, whose result columns are found
//!   by name.
//! - **Refresh**: every `refresh`; with `updated_at`, only rows whose
//!   `updated_at` is at or after the newest value seen (rows deleted from the
//!   table are noticed by a full fetch every `full_refresh`). The new
//!   snapshot is swapped atomically, as the CSV reload does.
//! - **Failures** keep the last snapshot, counted
//!   (`rockfeed_enrich_refresh_failures_total`) and logged once per episode.
//!   Ingestion and `/ready` are unaffected.
//! - **Bad rows** (a NULL or empty vin, a vin seen twice, a value StarRocks'
//!   CSV or the dims' VARCHAR(128) cannot take) are left out and counted by
//!   problem; a NULL dim is used as NULL and counted. The rest of the
//!   snapshot is used.
//! - **Cache**: each good snapshot is written to `cache` (CSV, atomically);
//!   a start without the database enriches from it.
//! - **Secrets**: the password comes from `ROCKFEED_ENRICH_PASSWORD` (or
//!   `password`), never from the URL, and is never logged. `tls = true` (or
//!   `tls_ca_file`) speaks TLS through rustls.
//!
//! This file holds `[enrich.database]` and its queries; `fetch.rs` the
//! fetch, the checks of each row and the cache.

mod fetch;

use std::path::PathBuf;
use std::time::Duration;

use crate::util::{Dur, is_identifier};
pub use fetch::{Fetched, Row, check, fetch, report, write_cache};

/// The environment variable holding the database password.
pub const PASSWORD_ENV: &str = "ROCKFEED_ENRICH_PASSWORD";

/// Longest dim value the generated DDL's VARCHAR(128) columns take, in bytes.
pub const MAX_DIM_BYTES: usize = 128;

/// Longest vin the tables take (VARCHAR(64)).
pub const MAX_VIN_BYTES: usize = 64;

/// `[enrich.database]`.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbConfig {
    /// `mysql://user@host:port/database` (no password in it).
    pub url: String,
    /// The password; `ROCKFEED_ENRICH_PASSWORD` overrides it.
    #[serde(default)]
    pub password: Option<String>,
    /// The table holding `vin_column` and the `tables.dims` columns
    /// (`table` or `database.table`).
    #[serde(default)]
    pub table: Option<String>,
    /// Or a SELECT whose result has those columns (found by name).
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default = "default_vin_column")]
    pub vin_column: String,
    /// A column that changes whenever its row does (a TIMESTAMP or DATETIME
    /// `ON UPDATE CURRENT_TIMESTAMP`): refreshes fetch only what changed.
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default = "default_refresh")]
    pub refresh: Dur,
    /// With `updated_at`: a full fetch this often (deleted rows go).
    #[serde(default = "default_full_refresh")]
    pub full_refresh: Dur,
    /// Bounds a connect or a query.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// TLS, verified against the built-in roots (or `tls_ca_file`).
    #[serde(default)]
    pub tls: bool,
    /// A PEM CA to verify the server with (implies `tls`).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Where the last good snapshot is kept (default:
    /// `<pipeline.state_dir>/enrich-cache.csv`).
    #[serde(default)]
    pub cache: Option<PathBuf>,
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL itself: a password may have been put into it by mistake.
        f.debug_struct("DbConfig")
            .field("database", &self.shown())
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("table", &self.table)
            .field("query", &self.query)
            .field("updated_at", &self.updated_at)
            .field("refresh", &self.refresh)
            .field("tls", &(self.tls || self.tls_ca_file.is_some()))
            .finish()
    }
}

fn default_vin_column() -> String {
    "vin".into()
}
fn default_refresh() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_full_refresh() -> Dur {
    Dur(Duration::from_secs(3600))
}
fn default_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

/// `a` or `a.b`, backquoted.
fn quoted(name: &str) -> String {
    name.split('.').map(|p| format!("`{p}`")).collect::<Vec<_>>().join(".")
}

impl DbConfig {
    pub fn validate(&self) -> Result<(), String> {
        let opts = mysql_async::Opts::from_url(&self.url)
            .map_err(|e| format!("enrich.database.url: not a mysql:// URL ({e})"))?;
        if opts.pass().is_some() {
            return Err(format!(
                "enrich.database.url holds a password: put it in {PASSWORD_ENV} instead (secrets stay out of the config file)"
            ));
        }
        match (&self.table, &self.query) {
            (Some(_), Some(_)) | (None, None) => {
                return Err("enrich.database: give exactly one of `table` and `query`".into());
            }
            (Some(t), None) if !t.split('.').all(is_identifier) || t.split('.').count() > 2 => {
                return Err(format!("enrich.database.table '{t}' is not a plain [database.]table name"));
            }
            _ => {}
        }
        for (what, name) in
            [("vin_column", Some(&self.vin_column)), ("updated_at", self.updated_at.as_ref())].into_iter()
        {
            if let Some(n) = name
                && !is_identifier(n)
            {
                return Err(format!("enrich.database.{what} '{n}' is not a plain column name"));
            }
        }
        if self.refresh.0 < Duration::from_secs(1) {
            return Err(format!("enrich.database.refresh is {:?}: it must be at least 1s", self.refresh.0));
        }
        if self.timeout.0.is_zero() {
            return Err("enrich.database.timeout must be positive".into());
        }
        Ok(())
    }

    /// What `rockfeed check` can know without connecting: the CA file reads.
    pub fn check(&self) -> Result<(), String> {
        if let Some(ca) = &self.tls_ca_file {
            std::fs::read(ca).map_err(|e| format!("enrich.database.tls_ca_file {}: {e}", ca.display()))?;
        }
        Ok(())
    }

    fn password(&self) -> Option<String> {
        std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()).or_else(|| self.password.clone())
    }

    /// Where the database is, for log lines (no credentials).
    pub fn shown(&self) -> String {
        match mysql_async::Opts::from_url(&self.url) {
            Ok(o) => format!("{}:{}/{}", o.ip_or_hostname(), o.tcp_port(), o.db_name().unwrap_or("")),
            Err(_) => "?".into(),
        }
    }

    fn opts(&self) -> Result<mysql_async::Opts, String> {
        let base = mysql_async::Opts::from_url(&self.url).map_err(|e| e.to_string())?;
        let mut b = mysql_async::OptsBuilder::from_opts(base)
            .pass(self.password())
            // Nothing but our query: no `SELECT @@…` on connect.
            .prefer_socket(false)
            .max_allowed_packet(Some(64 << 20))
            .wait_timeout(Some(28_800))
            .stmt_cache_size(0);
        if self.tls || self.tls_ca_file.is_some() {
            let mut ssl = mysql_async::SslOpts::default();
            if let Some(ca) = &self.tls_ca_file {
                ssl = ssl.with_root_certs(vec![ca.clone().into()]);
            }
            b = b.ssl_opts(Some(ssl));
        }
        Ok(b.into())
    }

    /// The text of one fetch (`since`: only rows changed at or after it).
    pub fn sql(&self, dims: &[String], since: Option<&str>) -> String {
        let filter = match (&self.updated_at, since) {
            (Some(col), Some(s)) => {
                format!(" WHERE {} >= '{}'", quoted(col), s.replace('\\', "\\\\").replace('\'', "''"))
            }
            _ => String::new(),
        };
        match (&self.table, &self.query) {
            (Some(t), _) => {
                let mut cols = vec![quoted(&self.vin_column)];
                cols.extend(dims.iter().map(|d| quoted(d)));
                cols.extend(self.updated_at.iter().map(|u| quoted(u)));
                format!("SELECT {} FROM {}{filter}", cols.join(", "), quoted(t))
            }
            (None, Some(q)) => format!("SELECT * FROM ({}) AS rockfeed_dims{filter}", q.trim().trim_end_matches(';')),
            (None, None) => unreachable!("validated"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> DbConfig {
        toml::from_str(&format!("url = \"mysql://rockfeed@db.example:3307/fleet\"\n{extra}")).unwrap()
    }

    #[test]
    fn configs_are_checked_and_queries_are_plain_text() {
        let dims = vec!["fleet".to_string(), "model".to_string()];
        let t = cfg("table = \"fleet.vehicles\"\nupdated_at = \"updated_at\"");
        t.validate().unwrap();
        assert_eq!(t.sql(&dims, None), "SELECT `vin`, `fleet`, `model`, `updated_at` FROM `fleet`.`vehicles`");
        assert_eq!(
            t.sql(&dims, Some("2026-11-27 01:02:03")),
            "SELECT `vin`, `fleet`, `model`, `updated_at` FROM `fleet`.`vehicles` WHERE `updated_at` >= '2026-11-27 01:02:03'"
        );
        let q = cfg("query = \"SELECT v.vin, f.name AS fleet, v.model FROM v JOIN f ON f.id = v.fleet_id;\"");
        q.validate().unwrap();
        assert_eq!(
            q.sql(&dims, None),
            "SELECT * FROM (SELECT v.vin, f.name AS fleet, v.model FROM v JOIN f ON f.id = v.fleet_id) AS rockfeed_dims"
        );
        assert_eq!(t.shown(), "db.example:3307/fleet");
        for (bad, needle) in [
            ("url = \"mysql://u:secret@h/db\"\ntable = \"t\"", PASSWORD_ENV),
            ("url = \"postgres://h/db\"\ntable = \"t\"", "not a mysql:// URL"),
            ("url = \"mysql://u@h/db\"", "exactly one of"),
            ("url = \"mysql://u@h/db\"\ntable = \"t; DROP\"", "plain"),
            ("url = \"mysql://u@h/db\"\ntable = \"t\"\nupdated_at = \"a b\"", "plain column"),
            (
                "url = \"mysql://u@h/db\"\ntable = \"t\"\nrefresh = \"500ms\"",
                "refresh is 500ms: it must be at least 1s",
            ),
            ("url = \"mysql://u@h/db\"\ntable = \"t\"\ntimeout = \"0s\"", "timeout must be positive"),
        ] {
            let c: DbConfig = toml::from_str(bad).unwrap();
            let e = c.validate().unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(!format!("{c:?}").contains("secret"), "the password is never shown");
        }
    }
}
