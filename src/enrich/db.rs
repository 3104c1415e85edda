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

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::model::BadRow;
use crate::util::{Dur, is_identifier};

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

/// A vehicle's dims as fetched.
pub type Row = (String, Vec<Option<String>>);

/// One fetch: good rows, what was wrong with the others, the newest `updated_at`.
#[derive(Debug, Default)]
pub struct Fetched {
    pub rows: Vec<Row>,
    pub problems: Vec<(BadRow, String)>,
    pub newest: Option<String>,
}

fn text(v: &mysql_async::Value) -> Result<Option<String>, BadRow> {
    use mysql_async::Value as V;
    Ok(match v {
        V::NULL => None,
        V::Bytes(b) => Some(String::from_utf8(b.clone()).map_err(|_| BadRow::BadValue)?),
        V::Int(i) => Some(i.to_string()),
        V::UInt(u) => Some(u.to_string()),
        V::Float(f) => Some(f.to_string()),
        V::Double(f) => Some(f.to_string()),
        V::Date(y, mo, d, h, mi, s, us) => Some(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")),
        V::Time(neg, d, h, mi, s, us) => Some(format!(
            "{}{}:{mi:02}:{s:02}.{us:06}",
            if *neg { "-" } else { "" },
            u64::from(*d) * 24 + u64::from(*h)
        )),
    })
}

/// Checks fetched rows: keeps the good ones, names what is wrong with the rest.
pub fn check(raw: Vec<Vec<Option<String>>>, bad_text: Vec<String>) -> Fetched {
    let mut out = Fetched::default();
    for b in bad_text {
        out.problems.push((BadRow::BadValue, format!("a row with a value that is not UTF-8 text (vin {b})")));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in &raw {
        if let Some(Some(v)) = r.first() {
            *seen.entry(v.clone()).or_default() += 1;
        }
    }
    for mut r in raw {
        let vin = match r.first().cloned().flatten() {
            Some(v) if !v.trim().is_empty() => v.trim().to_string(),
            _ => {
                out.problems.push((BadRow::NullVin, "a row without a vin".into()));
                continue;
            }
        };
        if seen.get(&vin).copied().unwrap_or(0) > 1 {
            out.problems.push((BadRow::DuplicateVin, format!("vin {vin} has several rows; none is used")));
            continue;
        }
        if vin.len() > MAX_VIN_BYTES {
            out.problems.push((BadRow::TooLong, format!("vin {}… is over {MAX_VIN_BYTES} bytes", &vin[..16])));
            continue;
        }
        let dims: Vec<Option<String>> = r.drain(1..).collect();
        let mut problem = None;
        for (i, d) in dims.iter().enumerate() {
            match d {
                None => {
                    out.problems.push((BadRow::NullDim, format!("vin {vin}: dim {} is NULL (used as NULL)", i + 1)))
                }
                Some(v) if v.len() > MAX_DIM_BYTES => {
                    problem = Some((
                        BadRow::TooLong,
                        format!("vin {vin}: dim {} is {} bytes, over {MAX_DIM_BYTES}", i + 1, v.len()),
                    ));
                }
                Some(v) if crate::sink::starrocks::encode::check_field(v).is_err() => {
                    problem = Some((
                        BadRow::BadValue,
                        format!("vin {vin}: dim {} holds a separator, a newline or \\N", i + 1),
                    ));
                }
                _ => {}
            }
        }
        match problem {
            Some(p) => out.problems.push(p),
            // As the CSV source reads them: trimmed, empty is NULL.
            None => out.rows.push((
                vin,
                dims.into_iter().map(|d| d.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())).collect(),
            )),
        }
    }
    out
}

/// Fetches the dims (all, or those changed at or after `since`).
pub async fn fetch(cfg: &DbConfig, dims: &[String], since: Option<&str>) -> Result<Fetched, String> {
    let sql = cfg.sql(dims, since);
    let run = async {
        let mut conn = mysql_async::Conn::new(cfg.opts()?).await.map_err(|e| format!("connect: {e}"))?;
        let rows: Vec<mysql_async::Row> = {
            use mysql_async::prelude::Queryable;
            conn.query(&sql).await.map_err(|e| format!("query: {e}"))?
        };
        let _ = conn.disconnect().await;
        Ok::<_, String>(rows)
    };
    let rows = tokio::time::timeout(cfg.timeout.0, run)
        .await
        .map_err(|_| format!("no answer within {:?}", cfg.timeout.0))??;
    // Columns by name: vin, the dims in order, updated_at.
    let mut raw = Vec::with_capacity(rows.len());
    let mut bad_text = Vec::new();
    let mut newest: Option<String> = None;
    if let Some(first) = rows.first() {
        let names: Vec<String> = first.columns_ref().iter().map(|c| c.name_str().to_ascii_lowercase()).collect();
        let find = |n: &str| {
            names
                .iter()
                .position(|c| c.eq_ignore_ascii_case(n))
                .ok_or_else(|| format!("the result has no column '{n}'"))
        };
        let mut idx = vec![find(&cfg.vin_column)?];
        for d in dims {
            idx.push(find(d)?);
        }
        let upd = cfg.updated_at.as_deref().map(find).transpose()?;
        for row in &rows {
            let mut vals = Vec::with_capacity(idx.len());
            let mut ok = true;
            for &i in &idx {
                match row.as_ref(i).map(text).unwrap_or(Ok(None)) {
                    Ok(v) => vals.push(v),
                    Err(_) => ok = false,
                }
            }
            if let Some(u) = upd
                && let Some(Ok(Some(t))) = row.as_ref(u).map(text)
                && newest.as_ref().is_none_or(|n| t > *n)
            {
                newest = Some(t);
            }
            if ok {
                raw.push(vals);
            } else {
                bad_text.push(vals.first().cloned().flatten().unwrap_or_default());
            }
        }
    }
    let mut f = check(raw, bad_text);
    f.newest = newest;
    Ok(f)
}

/// Writes the snapshot's rows as the CSV the file source reads, atomically.
pub fn write_cache(path: &Path, dims: &[String], rows: &[Row]) -> std::io::Result<()> {
    fn field(out: &mut String, v: &str) {
        if v.contains([',', '"']) || v != v.trim() {
            out.push('"');
            out.push_str(&v.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(v);
        }
    }
    let mut s = String::from("vin");
    for d in dims {
        s.push(',');
        s.push_str(d);
    }
    s.push('\n');
    for (vin, vals) in rows {
        field(&mut s, vin);
        for v in vals {
            s.push(',');
            field(&mut s, v.as_deref().unwrap_or(""));
        }
        s.push('\n');
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("csv.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(s.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Counts and logs what a fetch found wrong (one line per problem kind, with an example).
pub fn report(stats: &crate::telemetry::EnrichStats, shown: &str, problems: &[(BadRow, String)]) {
    let mut by: HashMap<BadRow, (u64, &str)> = HashMap::new();
    for (p, detail) in problems {
        stats.bad_rows[BadRow::ALL.iter().position(|x| x == p).expect("listed")].fetch_add(1, Ordering::Relaxed);
        by.entry(*p).or_insert((0, detail)).0 += 1;
    }
    for (p, (n, example)) in by {
        if p == BadRow::NullDim {
            tracing::warn!(
                database = shown,
                rows = n,
                problem = p.as_str(),
                example,
                "Vehicle dims with NULL values (used as NULL)."
            );
        } else {
            tracing::error!(
                database = shown,
                rows = n,
                problem = p.as_str(),
                example,
                "Vehicle dims rows left out; fix them in the database (the rest of the table is used)."
            );
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

    #[test]
    fn bad_rows_are_left_out_and_named_the_rest_is_used() {
        let s = |v: &str| Some(v.to_string());
        let raw = vec![
            vec![s("V1"), s("f1"), s("m1")],
            vec![s("V2"), None, s("m2")],
            vec![s("DUP"), s("a"), s("b")],
            vec![s("DUP"), s("c"), s("d")],
            vec![None, s("x"), s("y")],
            vec![s("V3"), Some("x".repeat(129)), s("m")],
            vec![s("V4"), s("a\nb"), s("m")],
            vec![s("V5"), s(""), s("m5")],
        ];
        let f = check(raw, vec!["V6".into()]);
        assert_eq!(
            f.rows,
            vec![
                ("V1".to_string(), vec![s("f1"), s("m1")]),
                ("V2".to_string(), vec![None, s("m2")]),
                ("V5".to_string(), vec![None, s("m5")]),
            ]
        );
        let kinds: Vec<BadRow> = f.problems.iter().map(|(p, _)| *p).collect();
        for (p, n) in [
            (BadRow::BadValue, 2),
            (BadRow::NullDim, 1),
            (BadRow::DuplicateVin, 2),
            (BadRow::NullVin, 1),
            (BadRow::TooLong, 1),
        ] {
            assert_eq!(kinds.iter().filter(|k| **k == p).count(), n, "{p:?}: {:?}", f.problems);
        }
    }

    #[test]
    fn the_cache_is_the_csv_the_file_source_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cache/enrich-cache.csv");
        let dims = vec!["fleet".to_string(), "model".to_string()];
        let rows = vec![
            ("V1".to_string(), vec![Some("fleet, \"one\"".to_string()), None]),
            ("V2".to_string(), vec![Some(" padded ".to_string()), Some("m".to_string())]),
        ];
        write_cache(&p, &dims, &rows).unwrap();
        let snap = super::super::load(&p, &dims).unwrap();
        assert_eq!(snap.values(snap.row_of("V1")), vec![Some("fleet, \"one\""), None]);
        assert_eq!(snap.len(), 2);
    }
}
