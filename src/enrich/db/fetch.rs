//! Fetching the dims table: the rows a query returns, checked row by row
//! (what is wrong with a bad row is counted by [`BadRow`], the rest is
//! used), the CSV cache written from them, and the log line of a fetch.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::{DbConfig, MAX_DIM_BYTES, MAX_VIN_BYTES};
use crate::model::BadRow;

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
        let snap = crate::enrich::load(&p, &dims).unwrap();
        assert_eq!(snap.values(snap.row_of("V1")), vec![Some("fleet, \"one\""), None]);
        assert_eq!(snap.len(), 2);
    }
}
