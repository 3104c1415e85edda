//! The StarRocks checks through the FE's MySQL port: each table's
//! `SHOW CREATE TABLE` against `rockfeed ddl` ([`compare`]), and
//! `max_running_txn_num_per_db` (module doc of `preflight`).

use super::{Check, Outcome};
use crate::config::Config;
use crate::starrocks::ddl::{AggFn, KeysType, TableDef};
use crate::starrocks::types::ColType;

/// Reaches the FE's MySQL port on the endpoints' hosts, in order.
async fn query_port(cfg: &Config) -> Result<(mysql_async::Conn, String), String> {
    let sr = &cfg.starrocks;
    let mut tried = Vec::new();
    for e in &sr.endpoints {
        let Ok(uri) = e.parse::<http::Uri>() else { continue };
        let Some(host) = uri.host() else { continue };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let mut b = mysql_async::OptsBuilder::default()
            .ip_or_hostname(host.clone())
            .tcp_port(sr.query_port)
            .user(Some(sr.user.clone()))
            .pass(Some(sr.password.clone()))
            // Nothing but our statements: no `SELECT @@…` on connect.
            .prefer_socket(false)
            .max_allowed_packet(Some(16 << 20))
            .wait_timeout(Some(28_800))
            .stmt_cache_size(0);
        // An FE served over HTTPS is asked over TLS on its MySQL port too.
        if uri.scheme_str() == Some("https") {
            let mut ssl = mysql_async::SslOpts::default();
            if let Some(ca) = &sr.tls_ca_file {
                ssl = ssl.with_root_certs(vec![ca.clone().into()]);
            }
            b = b.ssl_opts(Some(ssl));
        }
        let addr = format!("{host}:{}", sr.query_port);
        match tokio::time::timeout(std::time::Duration::from_secs(10), mysql_async::Conn::new(b)).await {
            Ok(Ok(c)) => return Ok((c, addr)),
            Ok(Err(mysql_async::Error::Server(e))) if e.code == 1045 => {
                return Err(format!(
                    "StarRocks refused user '{}' on its MySQL port {addr}: {}; check starrocks.user and ROCKFEED_STARROCKS_PASSWORD",
                    sr.user, e.message
                ));
            }
            Ok(Err(e)) => tried.push(format!("{addr}: {e}")),
            Err(_) => tried.push(format!("{addr}: no answer within 10 s")),
        }
    }
    Err(format!(
        "cannot reach the FE's MySQL port ({}); set starrocks.query_port to the FE's query_port (9030 by default) and let this host reach it, or set it to 0 to skip the schema checks",
        tried.join("; ")
    ))
}

fn server_error(e: &mysql_async::Error) -> Option<(u16, &str)> {
    match e {
        mysql_async::Error::Server(s) => Some((s.code, s.message.as_str())),
        _ => None,
    }
}

/// The tables' definitions and the running-transaction cap, through the FE's MySQL port.
pub(super) async fn schema(cfg: &Config, tables: &[String]) -> Vec<Check> {
    let sr = &cfg.starrocks;
    let cap = "StarRocks max_running_txn_num_per_db".to_string();
    let defs = |t: &String| format!("StarRocks {}.{t} schema", sr.database);
    if sr.query_port == 0 {
        let why = "not checked: starrocks.query_port = 0".to_string();
        let mut out: Vec<Check> =
            tables.iter().map(|t| Check { what: defs(t), result: Outcome::Skip(why.clone()) }).collect();
        out.push(Check { what: cap, result: Outcome::Skip(why) });
        return out;
    }
    let (mut conn, addr) = match query_port(cfg).await {
        Ok(c) => c,
        Err(e) => return vec![Check { what: "StarRocks MySQL port".into(), result: Outcome::Fail(e) }],
    };
    let expected = match crate::starrocks::ddl::parse_ddl(&crate::config::ddl::ddl(cfg)) {
        Ok(c) => c,
        Err(e) => {
            return vec![Check {
                what: "StarRocks schema".into(),
                result: Outcome::Fail(format!("rockfeed ddl: {e}")),
            }];
        }
    };
    let mut out = Vec::new();
    for t in tables {
        let result = match expected.table(&sr.database, t) {
            Some(want) => table_schema(cfg, &mut conn, &addr, want).await,
            None => Outcome::Fail(format!("rockfeed ddl does not define table '{t}'")),
        };
        out.push(Check { what: defs(t), result });
    }
    out.push(Check { what: cap, result: txn_cap(cfg, &mut conn, tables.len()).await });
    let _ = conn.disconnect().await;
    out
}

/// `SHOW CREATE TABLE` of `want`'s table, compared with it.
async fn table_schema(cfg: &Config, conn: &mut mysql_async::Conn, addr: &str, want: &TableDef) -> Outcome {
    use mysql_async::prelude::Queryable;
    let sr = &cfg.starrocks;
    let q = |s: &str| format!("`{}`", s.replace('`', "``"));
    let sql = format!("SHOW CREATE TABLE {}.{}", q(&sr.database), q(&want.name));
    let text = match conn.query_first::<mysql_async::Row, _>(sql).await {
        Ok(Some(row)) => match row.get_opt::<String, usize>(1) {
            Some(Ok(text)) => text,
            _ => return Outcome::Fail("SHOW CREATE TABLE returned no definition".into()),
        },
        Ok(None) => return Outcome::Fail("SHOW CREATE TABLE returned no row".into()),
        Err(e) => {
            return match server_error(&e) {
                Some((1049 | 1051, m)) => Outcome::Fail(format!(
                    "{m}; create the tables from `rockfeed ddl --config …` (run through the FE's MySQL port)"
                )),
                Some((_, m)) => Outcome::Fail(format!(
                    "SHOW CREATE TABLE failed: {m}; the user '{}' needs a privilege on the table (INSERT, which run needs, will do)",
                    sr.user
                )),
                None => Outcome::Fail(format!("SHOW CREATE TABLE on {addr} failed: {e}")),
            };
        }
    };
    let have = match crate::starrocks::ddl::parse_table(&sr.database, &text) {
        Ok(t) => t,
        Err(e) => {
            return Outcome::Fail(format!(
                "cannot read the definition SHOW CREATE TABLE returned ({e}); compare it with `rockfeed ddl --config …` by hand"
            ));
        }
    };
    let wrong = compare(want, &have, cfg);
    if wrong.is_empty() {
        Outcome::Ok(format!(
            "{} KEY table with every column rockfeed writes, {} buckets on ({}), colocate_with '{}'",
            keys_name(have.keys),
            have.buckets,
            column_names(&have, &have.distribution),
            have.property("colocate_with").unwrap_or("")
        ))
    } else {
        Outcome::Fail(format!(
            "{}; alter the table or recreate it from `rockfeed ddl --config …`, or change the config to match",
            wrong.join("; ")
        ))
    }
}

/// `max_running_txn_num_per_db` against what one instance holds open.
async fn txn_cap(cfg: &Config, conn: &mut mysql_async::Conn, tables: usize) -> Outcome {
    use mysql_async::prelude::Queryable;
    let need = cfg.pipeline.shards as u64 * tables as u64;
    let how = format!(
        "one instance holds up to pipeline.shards × tables = {} × {tables} = {need} transactions at once, plus those of every other loader of the database",
        cfg.pipeline.shards,
    );
    match conn.query_first::<mysql_async::Row, _>("ADMIN SHOW FRONTEND CONFIG LIKE 'max_running_txn_num_per_db'").await
    {
        Ok(Some(row)) => {
            match row.get_opt::<String, &str>("Value").and_then(|v| v.ok()).and_then(|v| v.parse::<u64>().ok()) {
                Some(v) if v >= need => Outcome::Ok(format!("{v}, at least the {need} one instance needs ({how})")),
                Some(v) => Outcome::Fail(format!(
                    "{v}, below the {need} one instance needs ({how}); raise it: ADMIN SET FRONTEND CONFIG (\"max_running_txn_num_per_db\" = \"…\") and in fe.conf"
                )),
                None => Outcome::Skip("the FE answered without a numeric Value".into()),
            }
        }
        Ok(None) => Outcome::Skip(format!(
            "the FE has no max_running_txn_num_per_db setting to show; make sure the cap is at least {need} ({how})"
        )),
        Err(e) => Outcome::Skip(format!(
            "not readable by user '{}' ({}); ADMIN SHOW FRONTEND CONFIG needs OPERATE on SYSTEM: make sure it is at least {need} ({how})",
            cfg.starrocks.user,
            server_error(&e).map(|(_, m)| m.to_string()).unwrap_or_else(|| e.to_string())
        )),
    }
}

fn keys_name(k: KeysType) -> &'static str {
    match k {
        KeysType::Duplicate => "DUPLICATE",
        KeysType::Aggregate => "AGGREGATE",
        KeysType::Primary => "PRIMARY",
        KeysType::Unique => "UNIQUE",
    }
}

fn column_names(t: &TableDef, idx: &[usize]) -> String {
    idx.iter().map(|i| t.columns[*i].name.as_str()).collect::<Vec<_>>().join(", ")
}

/// Whether a column of type `have` takes every value rockfeed writes as `want`.
fn holds(have: &ColType, want: &ColType) -> bool {
    let len = |t: &ColType| match t {
        ColType::Varchar(n) => Some(*n),
        ColType::String => Some(crate::starrocks::types::MAX_VARCHAR_LEN),
        _ => None,
    };
    match (len(have), len(want)) {
        (Some(h), Some(w)) => h >= w,
        _ => have == want,
    }
}

/// What differs between the table rockfeed creates (`want`, from
/// `rockfeed ddl`) and the one StarRocks has (`have`), each with the
/// setting it concerns; empty when `run` can load it as intended.
pub fn compare(want: &TableDef, have: &TableDef, cfg: &Config) -> Vec<String> {
    let mut wrong = Vec::new();
    if have.keys != want.keys {
        wrong.push(format!(
            "it is a {} KEY table, rockfeed loads a {} KEY table",
            keys_name(have.keys),
            keys_name(want.keys)
        ));
    }
    let want_keys = column_names(want, &want.key_columns);
    let have_keys = column_names(have, &have.key_columns);
    if !want_keys.eq_ignore_ascii_case(&have_keys) {
        wrong.push(format!("its key columns are ({have_keys}), rockfeed expects ({want_keys})"));
    }
    for w in &want.columns {
        let Some(h) = have.column_index(&w.name).map(|i| &have.columns[i]) else {
            wrong.push(format!("column `{}` ({}) is missing", w.name, w.ty.show_name()));
            continue;
        };
        if !holds(&h.ty, &w.ty) {
            wrong.push(format!("column `{}` is {}, rockfeed writes {}", w.name, h.ty.show_name(), w.ty.show_name()));
        }
        if h.agg != w.agg {
            let name = |a: Option<AggFn>| a.map(|a| a.name()).unwrap_or("none");
            wrong.push(format!(
                "column `{}` aggregates with {}, rockfeed expects {}",
                w.name,
                name(h.agg),
                name(w.agg)
            ));
        }
        if w.nullable && !h.nullable {
            wrong.push(format!("column `{}` is NOT NULL, and rockfeed writes NULL into it", w.name));
        }
    }
    for h in &have.columns {
        if want.column_index(&h.name).is_none() && !h.nullable && h.default.is_none() {
            wrong.push(format!(
                "column `{}` is not written by rockfeed and is NOT NULL without a DEFAULT, so every load would fail",
                h.name
            ));
        }
    }
    let want_dist = column_names(want, &want.distribution);
    let have_dist = column_names(have, &have.distribution);
    if !want_dist.eq_ignore_ascii_case(&have_dist) {
        wrong.push(format!(
            "it is distributed by HASH({have_dist}), rockfeed shards by HASH({want_dist}), the colocation key"
        ));
    }
    if have.buckets != want.buckets {
        wrong.push(format!(
            "it has {} buckets, and tables.buckets is {}: rockfeed's shards follow the table's buckets, so set tables.buckets = {} (or recreate the table)",
            have.buckets, cfg.tables.buckets, have.buckets
        ));
    }
    let (wc, hc) = (want.property("colocate_with").unwrap_or(""), have.property("colocate_with").unwrap_or(""));
    if wc != hc {
        wrong.push(format!(
            "its colocate_with is '{hc}', tables.colocate_with is '{wc}' (ALTER TABLE … SET (\"colocate_with\" = \"{wc}\"))"
        ));
    }
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::starrocks::ddl::parse_table;

    fn cfg() -> Config {
        Config::parse(
            "[starrocks]\nendpoints = [\"http://fe:8030\"]\ndatabase = \"rockfeed\"\nuser = \"u\"\n[tables]\nbuckets = 8\n[source.mqtt]\nhost = \"b\"\nclient_id = \"c\"\ntopics = [\"t/#\"]\n",
        )
        .unwrap()
    }

    /// The telemetry table as `rockfeed ddl` creates it, then as StarRocks shows it after `edit`.
    fn compared(edit: impl FnOnce(&mut String)) -> Vec<String> {
        let cfg = cfg();
        let cat = crate::starrocks::ddl::parse_ddl(&crate::config::ddl::ddl(&cfg)).unwrap();
        let want = cat.table("rockfeed", "telemetry_1m").unwrap();
        let mut shown = want.show_create();
        edit(&mut shown);
        compare(want, &parse_table("rockfeed", &shown).unwrap(), &cfg)
    }

    #[test]
    fn the_table_rockfeed_ddl_creates_matches_itself() {
        assert_eq!(compared(|_| {}), Vec::<String>::new());
    }

    #[test]
    fn a_wider_varchar_and_a_nullable_key_source_are_fine_a_narrower_one_is_not() {
        assert!(compared(|s| *s = s.replace("`metric` varchar(128)", "`metric` varchar(255)")).is_empty());
        let w = compared(|s| *s = s.replace("`metric` varchar(128)", "`metric` varchar(32)"));
        assert_eq!(w, ["column `metric` is varchar(32), rockfeed writes varchar(128)"]);
    }

    #[test]
    fn aggregate_functions_nullability_and_unwritten_columns_are_named() {
        let w = compared(|s| {
            *s = s
                .replace("`max` double MAX", "`max` double SUM")
                .replace("`fleet` varchar(128) NULL", "`fleet` varchar(128) NOT NULL")
                .replace(") ENGINE=OLAP", ",\n  `extra` int(11) SUM NOT NULL COMMENT \"\"\n) ENGINE=OLAP")
        });
        assert_eq!(
            w,
            [
                "column `fleet` is NOT NULL, and rockfeed writes NULL into it",
                "column `max` aggregates with SUM, rockfeed expects MAX",
                "column `extra` is not written by rockfeed and is NOT NULL without a DEFAULT, so every load would fail",
            ]
        );
        // With a default, the column the loads leave out is filled in.
        assert!(
            compared(|s| *s = s.replace(
                ") ENGINE=OLAP",
                ",\n  `extra` int(11) SUM NOT NULL DEFAULT \"0\" COMMENT \"\"\n) ENGINE=OLAP"
            ))
            .is_empty()
        );
    }

    #[test]
    fn keys_distribution_buckets_and_colocation_are_compared() {
        let w = compared(|s| {
            *s = s
                .replace("HASH(`vehicle_id`) BUCKETS 8", "HASH(`vehicle_id`, `metric`) BUCKETS 16")
                .replace("\"colocate_with\" = \"vehicle\",\n", "")
        });
        assert_eq!(
            w,
            [
                "it is distributed by HASH(vehicle_id, metric), rockfeed shards by HASH(vehicle_id), the colocation key",
                "it has 16 buckets, and tables.buckets is 8: rockfeed's shards follow the table's buckets, so set tables.buckets = 16 (or recreate the table)",
                "its colocate_with is '', tables.colocate_with is 'vehicle' (ALTER TABLE … SET (\"colocate_with\" = \"vehicle\"))",
            ]
        );
        let w = compared(|s| {
            *s =
                s.replace("`region` varchar(128) NULL COMMENT \"vehicle dimension\",\n", "").replace(", `region`)", ")")
        });
        assert_eq!(
            w,
            [
                "its key columns are (vehicle_id, window_start, metric, fleet, model), rockfeed expects (vehicle_id, window_start, metric, fleet, model, region)",
                "column `region` (varchar(128)) is missing",
            ]
        );
    }
}
