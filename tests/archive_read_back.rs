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
