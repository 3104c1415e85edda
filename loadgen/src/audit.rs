//! `loadgen audit`: what landed in StarRocks against the sent file. Rows
//! come from the emulator's inspection endpoint (`GET /_emulator/{db}/{table}`,
//! the visible rows as JSON objects) or, from a real StarRocks, through the
//! FE's MySQL port (`SELECT` of the audited columns, text protocol); rows of
//! the aggregate table are summed over their dims before the comparison, as
//! a `SELECT … GROUP BY vehicle_id, window_start, metric` would.

use serde_json::Value as J;

use crate::ledger::{Agg, LandedRow, LatestRow, Ledger, TableAudit, audit_aggregates, audit_latest};

/// Epoch ms of a StarRocks DATETIME text, `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC).
pub fn parse_datetime_ms(s: &str) -> Option<i64> {
    let (date, time) = s.trim().split_once([' ', 'T'])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let frac_ms = if frac.is_empty() { 0 } else { format!("{frac:0<3}")[..3].parse::<i64>().ok()? };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + frac_ms)
}

/// Where the tables are.
#[derive(Debug, Clone)]
pub struct EmulatorTables {
    /// FE base URL, e.g. `http://127.0.0.1:8030` (the emulator's inspection
    /// endpoint), or `mysql://host:port` (the FE's MySQL port: a real
    /// StarRocks, or any MySQL-protocol server holding the tables).
    pub url: String,
    pub user: String,
    pub password: String,
    pub db: String,
    pub telemetry: String,
    /// `None`: do not audit the latest table.
    pub latest: Option<String>,
}

/// The audited columns of a table: (SQL expression, name, numeric).
type Columns = &'static [(&'static str, &'static str, bool)];

const TELEMETRY_COLUMNS: Columns = &[
    ("vehicle_id", "vehicle_id", false),
    ("CAST(window_start AS CHAR)", "window_start", false),
    ("metric", "metric", false),
    ("cnt", "cnt", true),
    ("total", "total", true),
    ("`min`", "min", true),
    ("`max`", "max", true),
];

const LATEST_COLUMNS: Columns = &[
    ("vehicle_id", "vehicle_id", false),
    ("metric", "metric", false),
    ("CAST(ts AS CHAR)", "ts", false),
    ("value", "value", true),
];

async fn rows(t: &EmulatorTables, table: &str, cols: Columns) -> Result<Vec<serde_json::Map<String, J>>, String> {
    if let Some(addr) = t.url.strip_prefix("mysql://") {
        return mysql_rows(t, addr.trim_end_matches('/'), table, cols).await;
    }
    let url = format!("{}/_emulator/{}/{}", t.url.trim_end_matches('/'), t.db, table);
    let (status, body) = crate::http::get(&url, Some((&t.user, &t.password))).await?;
    if status == 401 || status == 403 {
        // The FE's JSON says why in `msg`; a sentence, not the raw body.
        let why = serde_json::from_slice::<J>(&body)
            .ok()
            .and_then(|v| v.get("msg").and_then(J::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        return Err(format!(
            "GET {url}: the FE refused user '{}' (HTTP {status}: {why}); give its password with --password or LOADGEN_STARROCKS_PASSWORD",
            t.user
        ));
    }
    if status != 200 {
        return Err(format!("GET {url}: HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    let v: Vec<J> = serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not a JSON array: {e}"))?;
    Ok(v.into_iter()
        .filter_map(|r| match r {
            J::Object(m) => Some(m),
            _ => None,
        })
        .collect())
}

/// The rows of `table` through the MySQL protocol, as the JSON objects the
/// emulator's endpoint gives: text columns as strings, numeric ones as
/// numbers, NULL as null. Plain text queries only, and no `SELECT @@…` on
/// connect (StarRocks' MySQL subset).
async fn mysql_rows(
    t: &EmulatorTables,
    addr: &str,
    table: &str,
    cols: Columns,
) -> Result<Vec<serde_json::Map<String, J>>, String> {
    use mysql_async::prelude::Queryable;
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("mysql://{addr}: bad port"))?),
        None => (addr, 9030),
    };
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(t.user.clone()))
        .pass((!t.password.is_empty()).then(|| t.password.clone()))
        .prefer_socket(false)
        .max_allowed_packet(Some(64 << 20))
        .wait_timeout(Some(28_800))
        .stmt_cache_size(0);
    let mut conn = mysql_async::Conn::new(opts).await.map_err(|e| format!("mysql://{addr}: {e}"))?;
    let select: Vec<String> = cols.iter().map(|(expr, name, _)| format!("{expr} AS `{name}`")).collect();
    let sql = format!("SELECT {} FROM `{}`.`{}`", select.join(", "), t.db, table);
    let got: Vec<mysql_async::Row> = conn.query(&sql).await.map_err(|e| format!("{sql}: {e}"))?;
    let _ = conn.disconnect().await;
    let mut out = Vec::with_capacity(got.len());
    for row in got {
        let mut m = serde_json::Map::new();
        for (i, (_, name, numeric)) in cols.iter().enumerate() {
            let v = match row.as_ref(i) {
                None | Some(mysql_async::Value::NULL) => J::Null,
                Some(mysql_async::Value::Bytes(b)) => {
                    let text = String::from_utf8(b.clone()).map_err(|_| format!("{table}.{name}: not UTF-8"))?;
                    if *numeric {
                        let x: f64 =
                            text.trim().parse().map_err(|_| format!("{table}.{name}: not a number: {text:?}"))?;
                        serde_json::Number::from_f64(x).map(J::Number).unwrap_or(J::Null)
                    } else {
                        J::String(text)
                    }
                }
                Some(mysql_async::Value::Int(x)) => J::from(*x),
                Some(mysql_async::Value::UInt(x)) => J::from(*x),
                Some(mysql_async::Value::Double(x)) => J::from(*x),
                Some(mysql_async::Value::Float(x)) => J::from(f64::from(*x)),
                Some(other) => return Err(format!("{table}.{name}: unexpected value {other:?}")),
            };
            m.insert(name.to_string(), v);
        }
        out.push(m);
    }
    Ok(out)
}

fn landed_row(r: &serde_json::Map<String, J>) -> Result<LandedRow, String> {
    let s = |k: &str| r.get(k).and_then(J::as_str).ok_or_else(|| format!("row without {k}: {r:?}"));
    let f = |k: &str| r.get(k).and_then(J::as_f64).ok_or_else(|| format!("row without numeric {k}: {r:?}"));
    Ok(LandedRow {
        vin: s("vehicle_id")?.to_string(),
        window_ms: parse_datetime_ms(s("window_start")?).ok_or_else(|| format!("bad window_start in {r:?}"))?,
        metric: s("metric")?.to_string(),
        agg: Agg { cnt: f("cnt")? as u64, sum: f("total")?, min: f("min")?, max: f("max")? },
    })
}

/// Audits the tables against `sent`.
pub async fn audit_emulator(t: &EmulatorTables, sent: &Ledger) -> Result<Vec<TableAudit>, String> {
    let agg = rows(t, &t.telemetry, TELEMETRY_COLUMNS).await?.iter().map(landed_row).collect::<Result<Vec<_>, _>>()?;
    let mut out = vec![audit_aggregates(&t.telemetry, sent, agg)];
    if let Some(latest) = &t.latest {
        // rockfeed's latest table: one row per (vehicle, metric), the empty
        // metric for the vehicle's newest sample; folded to a row per vehicle.
        let mut per_vin: std::collections::BTreeMap<String, LatestRow> = Default::default();
        for r in &rows(t, latest, LATEST_COLUMNS).await? {
            let s = |k: &str| r.get(k).and_then(J::as_str).ok_or_else(|| format!("{latest} row without {k}: {r:?}"));
            let (vin, metric) = (s("vehicle_id")?, s("metric")?);
            let row = per_vin.entry(vin.to_string()).or_insert_with(|| LatestRow {
                vin: vin.to_string(),
                last_ts_ms: i64::MIN,
                values: Vec::new(),
            });
            if metric.is_empty() {
                row.last_ts_ms = parse_datetime_ms(s("ts")?).ok_or_else(|| format!("bad ts in {r:?}"))?;
            } else {
                row.values.push((metric.to_string(), r.get("value").and_then(J::as_f64)));
            }
        }
        let landed: Vec<LatestRow> = per_vin.into_values().collect();
        out.push(audit_latest(latest, sent, landed));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_to_epoch_milliseconds() {
        assert_eq!(parse_datetime_ms("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_datetime_ms("2024-05-06 07:08:09"), Some(1_714_979_289_000));
        assert_eq!(parse_datetime_ms("2024-05-06 07:08:09.5"), Some(1_714_979_289_500));
        assert_eq!(parse_datetime_ms("2024-02-29 23:59:59.123456"), Some(1_709_251_199_123));
        assert_eq!(parse_datetime_ms("yesterday"), None);
    }

    #[test]
    fn an_aggregate_row_needs_every_column() {
        let good: serde_json::Map<String, J> = serde_json::from_str(
            r#"{"vehicle_id":"V","window_start":"2024-05-06 07:08:00","metric":"speed","fleet":null,"cnt":2,"total":3.5,"min":1.5,"max":2.0}"#,
        )
        .unwrap();
        let r = landed_row(&good).unwrap();
        assert_eq!((r.window_ms, r.agg.cnt, r.agg.sum), (1_714_979_280_000, 2, 3.5));
        let mut bad = good.clone();
        bad.remove("cnt");
        assert!(landed_row(&bad).is_err());
    }
}
