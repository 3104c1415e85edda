//! The hot path end to end without a broker: wide payloads → decode → route
//! to shards → pre-aggregate per epoch → CSV → Stream Load (real HTTP) into
//! the emulator's aggregate table, then an audit of every (vin, window,
//! metric) row against totals computed independently from the generated
//! readings.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use rockfeed::decode::catalog::MetricCatalog;
use rockfeed::decode::{DecodeConfig, Decoded, wide};
use rockfeed::pipeline::route::shard_of;
use rockfeed::pipeline::window::{NO_DIMS, WindowAggregator, WindowConfig};
use rockfeed::sink::starrocks::client::{ClientConfig, Credentials, StreamLoadClient};
use rockfeed::sink::starrocks::encode::{SEPARATOR_HEADER, TelemetryCsv};
use rockfeed::sink::starrocks::label::label;
use rockfeed::sink::starrocks::service::{RetryPolicy, StreamLoader};
use rockfeed::starrocks::ddl::parse_ddl;
use rockfeed::starrocks_emulator::{Emulator, EmulatorConfig, now_ms};

const DDL: &str = include_str!("../deploy/emulator/docs_examples.sql");
const SHARDS: u32 = 2;
const BUCKETS: u32 = 16;

/// (vin, window_start_ms, metric) → (cnt, sum, min, max), computed directly.
type Expected = BTreeMap<(String, i64, String), (u64, f64, f64, f64)>;

fn generate(now: i64) -> (Vec<Vec<u8>>, Expected) {
    let mut payloads = Vec::new();
    let mut exp = Expected::new();
    let base = now - now.rem_euclid(60_000) - 120_000;
    for seq in 0..12u64 {
        for v in 0..7 {
            let vin = format!("RFVIN{v:012}");
            let ts = base + seq as i64 * 15_000 + v as i64; // spans three windows
            let mut metrics = Vec::new();
            for m in 0..25 {
                let value = ((seq * 37 + v * 11 + m * 5) % 101) as f64 / 4.0 - 3.0;
                metrics.push(format!("\"sig_{m:02}\":{value}"));
                let win = ts - ts.rem_euclid(60_000);
                let e = exp.entry((vin.clone(), win, format!("sig_{m:02}"))).or_insert((
                    0,
                    0.0,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                ));
                e.0 += 1;
                e.1 += value;
                e.2 = e.2.min(value);
                e.3 = e.3.max(value);
            }
            payloads.push(
                format!("{{\"vin\":\"{vin}\",\"ts\":{ts},\"seq\":{seq},\"metrics\":{{{}}}}}", metrics.join(","))
                    .into_bytes(),
            );
        }
    }
    (payloads, exp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoded_aggregated_and_loaded_rows_equal_an_independent_audit() {
    let emu = Emulator::start(EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", "pw")).await.unwrap();
    let mut cfg = ClientConfig::new(
        vec![emu.fe_url().parse().unwrap()],
        Credentials { user: "root".into(), password: "pw".into() },
    );
    cfg.request_timeout = Duration::from_secs(10);
    let loader = StreamLoader::new(StreamLoadClient::new(cfg).unwrap(), "rockfeed", RetryPolicy::default());

    let now = now_ms() as i64;
    let (payloads, expected) = generate(now);
    let mut catalog = MetricCatalog::new(10_000);
    let dcfg = DecodeConfig::default();
    let mut shards: Vec<WindowAggregator> =
        (0..SHARDS).map(|_| WindowAggregator::new(WindowConfig::default())).collect();
    let dims = vec!["fleet".to_string(), "model".to_string(), "region".to_string()];
    let mut h = HeaderMap::new();
    h.insert("column_separator", HeaderValue::from_static(SEPARATOR_HEADER));
    h.insert("columns", HeaderValue::from_str(&TelemetryCsv::columns(&dims)).unwrap());

    // Three epochs, a third of the payloads each; late data lands as extra partial rows.
    let mut decoded = Decoded::default();
    for (epoch, chunk) in payloads.chunks(payloads.len().div_ceil(3)).enumerate() {
        for p in chunk {
            decoded.clear();
            wide::decode(p, now, &dcfg, &mut catalog, &mut decoded);
            assert!(decoded.rejects.is_empty(), "{:?}", decoded.rejects);
            for s in &decoded.samples {
                let k = shard_of(s.vin.as_bytes(), BUCKETS, SHARDS) as usize;
                shards[k].add(s, NO_DIMS);
            }
        }
        for (k, agg) in shards.iter_mut().enumerate() {
            let mut csv = TelemetryCsv::default();
            agg.drain(|g| csv.push_group(&g, &[None, None, None], |m| catalog.name(m)).unwrap());
            if csv.rows == 0 {
                continue;
            }
            let l = label("rf", "telemetry_1m", k as u32, epoch as u64).unwrap();
            let r = loader.load("telemetry_1m", &l, &h, Bytes::from(csv.buf)).await.unwrap();
            assert_eq!(r.reply.loaded_rows, csv.rows);
        }
    }

    // Audit: the emulator's visible rows against the independent totals.
    let rows: Vec<serde_json::Value> = emu.with_core(|c| {
        let t = c.table("rockfeed", "telemetry_1m").unwrap();
        t.rows()
            .iter()
            .map(|r| {
                serde_json::json!([
                    r[0].to_string(),
                    r[1].to_string(),
                    r[2].to_string(),
                    r[6].to_string(),
                    r[7].to_string(),
                    r[8].to_string(),
                    r[9].to_string()
                ])
            })
            .collect()
    });
    assert_eq!(rows.len(), expected.len(), "one row per (vin, window, metric)");
    for r in &rows {
        let vin = r[0].as_str().unwrap().to_string();
        let win = rockfeed::starrocks::text::parse_datetime(r[1].as_str().unwrap()).unwrap() / 1000;
        let key = (vin, win, r[2].as_str().unwrap().to_string());
        let (cnt, sum, min, max) = expected[&key];
        let f = |i: usize| r[i].as_str().unwrap().parse::<f64>().unwrap();
        assert_eq!(f(3) as u64, cnt, "{key:?}");
        assert!((f(4) - sum).abs() < 1e-9, "{key:?}: {} vs {sum}", f(4));
        assert_eq!((f(5), f(6)), (min, max), "{key:?}");
    }

    // Colocation: each tablet is written by one shard only, so it gains at
    // most one version per epoch (two shards writing every bucket would give
    // up to two per epoch).
    let versions = emu.with_core(|c| {
        c.table("rockfeed", "telemetry_1m")
            .unwrap()
            .tablets
            .values()
            .map(|t| (t.bucket, t.versions_total))
            .collect::<Vec<_>>()
    });
    assert!(!versions.is_empty());
    for (bucket, v) in versions {
        assert!(v - 1 <= 3, "bucket {bucket} got {} versions in 3 epochs", v - 1);
    }
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_with_the_wrong_password_says_so_in_a_sentence() {
    let emu = Emulator::start(EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", "pw")).await.unwrap();
    let t = loadgen::audit::EmulatorTables {
        url: emu.fe_url(),
        user: "root".into(),
        password: String::new(),
        db: "rockfeed".into(),
        telemetry: "telemetry_1m".into(),
        latest: None,
    };
    let ledger = loadgen::ledger::Ledger::new(&[], 60_000);
    let err = loadgen::audit::audit_emulator(&t, &ledger).await.expect_err("refused");
    assert!(
        err.contains("the FE refused user 'root' (HTTP 401: Access denied for user 'root'")
            && err.contains("LOADGEN_STARROCKS_PASSWORD")
            && !err.contains('{'),
        "{err}"
    );
    emu.shutdown().await;
}
