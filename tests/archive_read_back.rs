//! The archive's files read back by an independent reader: pyarrow (from
//! PyPI, in `target/pyenv`, installed by tests/run.sh) opens the directory
//! as a Hive-partitioned dataset and must find every reading written, once,
//! with its values, types, partitions and NULL dims.
//!
//! Files are written through `object_store`'s local filesystem in the Hive
//! layout, two hours and two shards.

use std::collections::BTreeMap;

mod common;

use common::archive::python;
use rockfeed::archive::layout::{file_path, hour_of};
use rockfeed::archive::store::Store;
use rockfeed::archive::{ArchiveFormat, Raw, RawRows, Schema, ValueKind, encode};

const PY: &str = r#"
import json, sys
import pyarrow.dataset as ds
d = ds.dataset(sys.argv[1], format="parquet", partitioning="hive")
t = d.to_table()
rows = t.to_pylist()
out = {
  "schema": {f.name: str(f.type) for f in t.schema},
  "files": sorted(f.replace(sys.argv[1], "") for f in d.files),
  "rows": [[r["vin"], r["metric"], r["ts"].isoformat(), r["seq"], r["value"], r["value_kind"], r["fleet"], r["dt"], r["hour"], r["source"]] for r in rows],
}
print(json.dumps(out))
"#;

#[tokio::test]
async fn pyarrow_reads_every_reading_back_from_the_hive_layout() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = rockfeed::archive::ArchiveConfig { url: dir.path().display().to_string(), ..Default::default() };
    let store = Store::open(&cfg).unwrap();
    let staged = tempfile::tempdir().unwrap();
    let dims = vec!["fleet".to_string()];
    let schema = Schema::new(&dims);
    let hour0 = 1_795_514_400_000i64; // 2026-11-24T10:00Z
    // expected: (vin, metric, ts) -> (seq, value, kind, fleet)
    let mut want = BTreeMap::new();
    for shard in 0..2u32 {
        for h in 0..2i64 {
            let mut rows = RawRows::new(1);
            for i in 0..500i64 {
                let vin = format!("V{shard}{:02}", i % 9);
                let metric = ["speed", "soc", "door_open"][(i % 3) as usize];
                let ts = hour0 + h * 3_600_000 + i * 7_000;
                let kind = if metric == "door_open" { ValueKind::Bool } else { ValueKind::Number };
                let value = if kind == ValueKind::Bool { (i % 2) as f64 } else { i as f64 * 0.25 };
                let fleet = (i % 9 != 4).then(|| format!("fleet-{}", i % 2));
                let seq = (i % 10 != 0).then_some(i);
                rows.push(
                    Raw {
                        vin: &vin,
                        ts_ms: ts,
                        seq,
                        metric,
                        value,
                        kind,
                        received_ms: ts + 250,
                        source: &format!("kafka:telemetry/{shard}@{i}"),
                    },
                    &[fleet.as_deref()],
                );
                want.insert((vin.clone(), metric.to_string(), ts), (seq, value, kind.as_str(), fleet));
            }
            let bytes = encode(&rows, &schema, ArchiveFormat { row_group_rows: 128, zstd_level: 3 }).unwrap();
            let path = file_path(
                "telemetry",
                hour_of(hour0 + h * 3_600_000),
                &format!("rf-{shard}"),
                10 + h as u64,
                19 + h as u64,
            );
            let local = staged.path().join("f.parquet");
            std::fs::write(&local, &bytes).unwrap();
            store.publish(&path, &local, rows.len() as u64, "rf").await.unwrap();
        }
    }

    let out = std::process::Command::new(python()).arg("-c").arg(PY).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files: Vec<&str> = v["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert_eq!(
        files,
        [
            "/telemetry/dt=2026-11-24/hour=10/part-rf-0-10-19.parquet",
            "/telemetry/dt=2026-11-24/hour=10/part-rf-1-10-19.parquet",
            "/telemetry/dt=2026-11-24/hour=11/part-rf-0-11-20.parquet",
            "/telemetry/dt=2026-11-24/hour=11/part-rf-1-11-20.parquet",
        ]
    );
    let s = &v["schema"];
    assert_eq!(s["ts"], "timestamp[ms, tz=UTC]");
    assert_eq!(s["received_at"], "timestamp[ms, tz=UTC]");
    assert_eq!(s["vin"], "dictionary<values=string, indices=int32, ordered=0>");
    assert_eq!(s["value"], "double");
    assert_eq!(s["seq"], "int64");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), want.len(), "every reading once");
    let mut got = BTreeMap::new();
    for r in rows {
        let ts = parse_iso_utc(r[2].as_str().unwrap());
        let key = (r[0].as_str().unwrap().to_string(), r[1].as_str().unwrap().to_string(), ts);
        let (dt, hour) = rockfeed::archive::layout::partition_of(ts);
        assert_eq!((r[7].as_str().unwrap(), r[8].as_i64().unwrap()), (dt.as_str(), hour.parse::<i64>().unwrap()));
        assert!(r[9].as_str().unwrap().starts_with("kafka:telemetry/"));
        let val = (
            r[3].as_i64(),
            r[4].as_f64().unwrap(),
            r[5].as_str().unwrap().to_string(),
            r[6].as_str().map(String::from),
        );
        assert!(got.insert(key, val).is_none(), "a reading twice");
    }
    for (k, (seq, value, kind, fleet)) in &want {
        let g = got.get(k).unwrap_or_else(|| panic!("{k:?} missing"));
        assert_eq!(g, &(*seq, *value, kind.to_string(), fleet.clone()), "{k:?}");
    }
}

/// `2026-11-24T10:00:07+00:00` → epoch ms (pyarrow's isoformat of a UTC timestamp).
fn parse_iso_utc(s: &str) -> i64 {
    let (date, rest) = s.split_once('T').unwrap();
    let time = rest.trim_end_matches("+00:00");
    let d: Vec<u32> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let ms: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    let days = i64::from(rockfeed::starrocks::text::days_from_civil(d[0] as i32, d[1], d[2]));
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + ms
}

const PY_BOTH: &str = r#"
import sys
path, reader = sys.argv[1], sys.argv[2]
cols = "vin, ts, metric, value, seq, value_kind, received_at, source, fleet"
if reader == "pyarrow":
    import pyarrow.parquet as pq, pyarrow.compute as pc, pyarrow as pa
    t = pq.read_table(path)
    ms = lambda c: pc.cast(pc.cast(t[c], pa.timestamp("ms")), pa.int64()).to_pylist()
    data = [t["vin"].to_pylist(), ms("ts"), t["metric"].to_pylist(), t["value"].to_pylist(), t["seq"].to_pylist(),
            t["value_kind"].to_pylist(), ms("received_at"), t["source"].to_pylist(), t["fleet"].to_pylist()]
    rows = zip(*data)
else:
    import duckdb
    q = f"select vin, epoch_ms(ts), metric, value, seq, value_kind, epoch_ms(received_at), source, fleet from read_parquet('{path}')"
    rows = duckdb.connect().execute(q).fetchall()
out = sys.stdout
for r in rows:
    out.write("\t".join("NULL" if x is None else repr(x) if isinstance(x, float) else str(x) for x in r) + "\n")
"#;

/// Every kind of page the writer makes, read back by pyarrow and by DuckDB:
/// two row groups; a dimension whose first pages are all NULL (no
/// dictionary yet) and whose later pages are dictionary-encoded; and a
/// `source` column whose distinct values outgrow the dictionary (1 MiB),
/// so its later pages are PLAIN.
#[test]
fn pyarrow_and_duckdb_read_dictionary_null_and_plain_pages() {
    let schema = Schema::new(&["fleet".to_string()]);
    let mut rows = RawRows::new(1);
    let mut want = Vec::new();
    let t0 = 1_795_514_400_000i64;
    let n = 60_000i64;
    for i in 0..n {
        // Sorted by (vin, metric, ts) as written, so the first 30,000 rows
        // (NULL fleet) fill the first pages.
        let vin = format!("VIN{:05}", i / 600);
        let metric = format!("m{}", (i / 100) % 6);
        let ts = t0 + i % 100 * 1000;
        let fleet = (i >= 30_000).then(|| format!("fleet-{}", i / 7_000));
        let kind = if i % 5 == 0 { ValueKind::Bool } else { ValueKind::Number };
        let value = if kind == ValueKind::Bool { (i % 2) as f64 } else { i as f64 / 3.0 };
        let seq = (i % 13 != 0).then_some(i);
        let source = format!("kafka:telemetry-with-a-long-name/{}@{i:012}", i % 6);
        rows.push(
            Raw { vin: &vin, ts_ms: ts, seq, metric: &metric, value, kind, received_ms: ts + 5, source: &source },
            &[fleet.as_deref()],
        );
        let line = [
            vin,
            ts.to_string(),
            metric,
            format!("{value:?}"),
            seq.map_or("NULL".into(), |s| s.to_string()),
            kind.as_str().into(),
            (ts + 5).to_string(),
            source,
            fleet.unwrap_or("NULL".into()),
        ];
        want.push(line.join("\t"));
    }
    want.sort();
    let bytes = encode(&rows, &schema, ArchiveFormat { row_group_rows: 50_000, zstd_level: 1 }).unwrap();

    // The pages are what the test says they are.
    use parquet::basic::Encoding;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = SerializedFileReader::new(bytes.clone()).unwrap();
    let md = file.metadata();
    assert_eq!(md.num_row_groups(), 2);
    let encodings = |c: usize| md.row_group(0).column(c).encodings().collect::<Vec<_>>();
    assert!(
        encodings(7).contains(&Encoding::PLAIN) && encodings(7).contains(&Encoding::RLE_DICTIONARY),
        "source falls back"
    );
    assert!(
        encodings(8).contains(&Encoding::PLAIN) && encodings(8).contains(&Encoding::RLE_DICTIONARY),
        "fleet: NULL pages then dictionary"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.parquet");
    std::fs::write(&path, &bytes).unwrap();
    for reader in ["pyarrow", "duckdb"] {
        let out = std::process::Command::new(python()).arg("-c").arg(PY_BOTH).arg(&path).arg(reader).output().unwrap();
        assert!(out.status.success(), "{reader}: {}", String::from_utf8_lossy(&out.stderr));
        let mut got: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect();
        got.sort();
        assert_eq!(got.len(), want.len(), "{reader}: every row");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{reader}");
        }
    }
}
