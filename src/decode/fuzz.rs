//! Fuzzing on stable Rust: generated and mutated inputs (proptest) for the
//! wide and narrow decoders, the topic template, the config parser and the
//! dead-letter writer, plus the corpus in `tests/corpus/decode/` (cases
//! found, and the hostile payloads of issue 13), run on every `cargo test`.
//!
//! Invariants:
//! - nothing panics;
//! - every generated sample is accepted or refused with a reason and a
//!   detail that says something;
//! - the readings accepted plus the readings refused add up to the readings
//!   the input held (the generator knows how many it wrote; a JSON parser
//!   would not, since duplicates are what is being tested).
//!
//! `ROCKFEED_FUZZ_CASES` sets the cases per property (default 512 in CI).

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};

use super::catalog::MetricCatalog;
use super::narrow::TopicTemplate;
use super::{DecodeConfig, Decoded, narrow, wide};

const NOW: i64 = 1_714_979_289_000;

fn cases() -> u32 {
    std::env::var("ROCKFEED_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

/// A metric value as the generator writes it; `held` says whether it is a
/// reading of the input (null is not).
#[derive(Debug, Clone)]
enum V {
    Num(f64),
    Int(i64),
    Huge,
    Bool(bool),
    Null,
    Str(String),
    Obj,
}

impl V {
    fn json(&self) -> String {
        match self {
            V::Num(f) => format!("{f:?}"),
            V::Int(i) => i.to_string(),
            V::Huge => "1e999".into(),
            V::Bool(b) => b.to_string(),
            V::Null => "null".into(),
            V::Str(s) => serde_json::to_string(s).unwrap(),
            V::Obj => r#"{"x":[1,2]}"#.into(),
        }
    }

    fn held(&self) -> bool {
        !matches!(self, V::Null)
    }
}

fn value() -> impl Strategy<Value = V> {
    prop_oneof![
        6 => (-1e12f64..1e12).prop_map(V::Num),
        3 => any::<i64>().prop_map(V::Int),
        1 => Just(V::Huge),
        2 => any::<bool>().prop_map(V::Bool),
        2 => Just(V::Null),
        1 => "[a-z\"\\\\]{0,6}".prop_map(V::Str),
        1 => Just(V::Obj),
    ]
}

/// Names from a small pool (so duplicates happen), plus hostile ones.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-e]\\.[a-c]".prop_map(String::from),
        1 => Just(String::new()),
        1 => Just("\\N".to_string()),
        1 => Just("tab\there".to_string()),
        1 => Just("q\"uote".to_string()),
        1 => Just("x".repeat(129)),
        1 => "\\PC{1,12}".prop_map(String::from),
    ]
}

#[derive(Debug, Clone)]
enum Field {
    Vin(String),
    VinNum,
    Ts(i64),
    TsStr(String),
    Seq(i64),
    Metrics(Vec<(String, V)>),
    MetricsNotObj,
    Other,
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        4 => prop_oneof![Just("V1".to_string()), Just("V2".to_string()), Just(String::new()), "\\PC{0,70}".prop_map(String::from)].prop_map(Field::Vin),
        1 => Just(Field::VinNum),
        4 => prop_oneof![Just(NOW), Just(NOW - 1_000), Just(0i64), Just(NOW + 86_400_000)].prop_map(Field::Ts),
        1 => prop_oneof![Just("2024-05-06T07:08:09Z".to_string()), Just("soon".to_string())].prop_map(Field::TsStr),
        1 => prop_oneof![Just(7i64), Just(-1i64)].prop_map(Field::Seq),
        5 => prop::collection::vec((name(), value()), 0..12).prop_map(Field::Metrics),
        1 => Just(Field::MetricsNotObj),
        1 => Just(Field::Other),
    ]
}

/// A sample: usually vin, ts, metrics in some order, sometimes anything.
fn sample() -> impl Strategy<Value = Vec<Field>> {
    prop_oneof![
        3 => (field(), field(), field()).prop_map(|(a, b, c)| vec![a, b, c]),
        3 => (
            prop_oneof![Just("V1".to_string()), Just("V2".to_string())],
            prop::collection::vec((name(), value()), 0..12)
        )
            .prop_map(|(vin, m)| vec![Field::Vin(vin), Field::Ts(NOW), Field::Metrics(m)]),
        1 => prop::collection::vec(field(), 0..6),
    ]
}

fn render(fields: &[Field]) -> (String, u64) {
    let mut parts = Vec::new();
    let mut held = 0;
    for f in fields {
        parts.push(match f {
            Field::Vin(v) => format!(r#""vin":{}"#, serde_json::to_string(v).unwrap()),
            Field::VinNum => r#""vin":42"#.into(),
            Field::Ts(t) => format!(r#""ts":{t}"#),
            Field::TsStr(t) => format!(r#""ts":"{t}""#),
            Field::Seq(s) => format!(r#""seq":{s}"#),
            Field::Metrics(m) => {
                held += m.iter().filter(|(_, v)| v.held()).count() as u64;
                let inner: Vec<String> =
                    m.iter().map(|(n, v)| format!("{}:{}", serde_json::to_string(n).unwrap(), v.json())).collect();
                format!(r#""metrics":{{{}}}"#, inner.join(","))
            }
            Field::MetricsNotObj => r#""metrics":[1,2]"#.into(),
            Field::Other => r#""other":{"a":[null,"x"]}"#.into(),
        });
    }
    (format!("{{{}}}", parts.join(",")), held)
}

/// Decodes and checks the invariants; returns (accepted, refused) readings.
fn check_wide(payload: &[u8], cfg: &DecodeConfig, cat: &mut MetricCatalog) -> (u64, u64) {
    let mut out = Decoded::default();
    wide::decode(payload, NOW, cfg, cat, &mut out);
    for r in &out.rejects {
        assert!(!r.detail.is_empty(), "{:?} without a detail", r.reason);
    }
    for s in &out.samples {
        assert!(!s.readings.is_empty(), "a sample without readings was kept");
        assert!(!s.vin.is_empty());
        for r in &s.readings {
            assert!(r.value.is_finite());
            assert!((r.metric.0 as usize) < cat.len(), "a reading of an unadmitted name");
        }
    }
    (out.readings() as u64, out.rejects.iter().map(|r| r.readings).sum())
}

#[test]
fn wide_samples_are_accounted_for_reading_by_reading() {
    let mut runner = TestRunner::new(PtConfig { cases: cases(), failure_persistence: None, ..PtConfig::default() });
    let cfg = DecodeConfig::default();
    runner
        .run(&prop::collection::vec(sample(), 1..4), |samples| {
            let mut cat = MetricCatalog::new(1_000);
            let rendered: Vec<(String, u64)> = samples.iter().map(|s| render(s)).collect();
            let held: u64 = rendered.iter().map(|r| r.1).sum();
            let payload = if rendered.len() == 1 {
                rendered[0].0.clone()
            } else {
                format!("[{}]", rendered.iter().map(|r| r.0.as_str()).collect::<Vec<_>>().join(","))
            };
            let (accepted, refused) = check_wide(payload.as_bytes(), &cfg, &mut cat);
            prop_assert_eq!(accepted + refused, held, "{}", payload);
            Ok(())
        })
        .unwrap();
}

/// Valid payloads with bytes flipped, cut or repeated: nothing panics and
/// nothing is counted twice.
#[test]
fn mutated_wide_payloads_never_panic() {
    let mut runner = TestRunner::new(PtConfig { cases: cases(), failure_persistence: None, ..PtConfig::default() });
    let cfg = DecodeConfig::default();
    let strategy = (sample(), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6));
    runner
        .run(&strategy, |(s, edits)| {
            let (text, held) = render(&s);
            let mut b = text.into_bytes();
            for (at, byte, op) in edits {
                if b.is_empty() {
                    break;
                }
                let i = at.index(b.len());
                match op {
                    0 => b[i] = byte,
                    1 => b.truncate(i),
                    _ => {
                        let tail = b[i..].to_vec();
                        b.extend_from_slice(&tail);
                    }
                }
            }
            let mut cat = MetricCatalog::new(1_000);
            let (accepted, _) = check_wide(&b, &cfg, &mut cat);
            // A mutation can add readings (a repeated tail), never invent
            // more than the bytes hold.
            prop_assert!(accepted <= held.max(1) * 4 + b.len() as u64);
            Ok(())
        })
        .unwrap();
}

#[test]
fn narrow_messages_and_topics_never_panic_and_add_up() {
    let mut runner = TestRunner::new(PtConfig { cases: cases(), failure_persistence: None, ..PtConfig::default() });
    let t = TopicTemplate::parse("telemetry/{vin}/{metric}").unwrap();
    let cfg = DecodeConfig::default();
    let topic = prop_oneof![
        4 => (prop_oneof![Just("V1".to_string()), "\\PC{0,10}".prop_map(String::from)], name())
            .prop_map(|(v, m)| format!("telemetry/{v}/{m}")),
        1 => "\\PC{0,30}".prop_map(String::from),
    ];
    let payload = prop_oneof![
        // A bare object is the object form without a value: no reading.
        3 => value().prop_map(|v| (v.json(), Some(v.held() && !matches!(v, V::Obj)))),
        3 => value().prop_map(|v| (format!(r#"{{"ts":{NOW},"v":{}}}"#, v.json()), Some(v.held()))),
        1 => (value(), value())
            .prop_map(|(a, b)| (format!(r#"{{"v":{},"v":{}}}"#, a.json(), b.json()), Some(a.held() || b.held()))),
        // Anything: what it holds is not known here.
        1 => "\\PC{0,20}".prop_map(|s| (s, None)),
    ];
    runner
        .run(&(topic, payload), |(topic, (p, held))| {
            let mut cat = MetricCatalog::new(1_000);
            let mut out = Decoded::default();
            narrow::decode(&topic, p.as_bytes(), NOW, &cfg, &t, &mut cat, &mut out);
            prop_assert!(out.samples.len() + out.rejects.len() <= 1);
            let accepted = out.readings() as u64;
            let refused: u64 = out.rejects.iter().map(|r| r.readings).sum();
            if let Some(held) = held
                && t.captures(&topic).is_some()
            {
                prop_assert_eq!(accepted + refused, u64::from(held), "{} {}", topic, p);
            }
            if let Some((v, m)) = t.captures(&topic) {
                prop_assert_eq!(format!("telemetry/{v}/{m}"), topic);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn topic_templates_and_configs_never_panic() {
    let mut runner = TestRunner::new(PtConfig { cases: cases(), failure_persistence: None, ..PtConfig::default() });
    runner
        .run(&("\\PC{0,40}", "\\PC{0,40}"), |(template, topic)| {
            if let Ok(t) = TopicTemplate::parse(&template) {
                let _ = t.captures(&topic);
                let _ = t.filter();
            }
            Ok(())
        })
        .unwrap();
    // The example config with a line replaced, cut or garbled.
    let example = include_str!("../../deploy/rockfeed.example.toml");
    let lines: Vec<&str> = example.lines().collect();
    let edit = (any::<prop::sample::Index>(), "\\PC{0,30}", any::<bool>());
    runner
        .run(&edit, |(at, junk, cut)| {
            let i = at.index(lines.len());
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            if cut {
                l.truncate(i);
            } else {
                let key = l[i].split('=').next().unwrap_or("").to_string();
                l[i] = if key.trim().is_empty() { junk } else { format!("{key}= {junk}") };
            }
            if let Ok(c) = crate::config::Config::parse(&l.join("\n")) {
                let _ = c.validate();
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn dead_letters_round_trip_whatever_they_hold() {
    let mut runner =
        TestRunner::new(PtConfig { cases: cases().min(128), failure_persistence: None, ..PtConfig::default() });
    let strategy = (
        "\\PC{0,20}",
        "\\PC{0,40}",
        prop::collection::vec(any::<u8>(), 0..200),
        prop_oneof![Just(None), "\\PC{0,40}".prop_map(Some)],
    );
    runner
        .run(&strategy, |(detail, source, bytes, text)| {
            let tmp = tempfile::tempdir().unwrap();
            let payload = text.map(String::into_bytes).unwrap_or(bytes);
            let mut w = crate::deadletter::DeadLetterWriter::open(tmp.path(), 1 << 20, 4).unwrap();
            let d = crate::deadletter::DeadLetter {
                at_ms: 1,
                reason: "bad_value",
                detail: &detail,
                source: &source,
                payload: &payload,
            };
            w.write(&d).unwrap();
            w.flush(true).unwrap();
            let recs = crate::deadletter::read_all(tmp.path()).unwrap();
            prop_assert_eq!(recs.len(), 1);
            prop_assert_eq!(recs[0]["detail"].as_str().unwrap(), detail.as_str());
            let p = recs[0]["payload"].as_str().unwrap();
            let back = match recs[0]["payload_encoding"].as_str().unwrap() {
                "base64" => {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.decode(p).unwrap()
                }
                _ => p.as_bytes().to_vec(),
            };
            prop_assert_eq!(back, payload);
            Ok(())
        })
        .unwrap();
}

/// The corpus: every file decodes without a panic, every refusal has a
/// reason and a detail, and a file's `# expect:` line (reason codes, or
/// `ok`) holds.
#[test]
fn the_corpus_decodes_as_recorded() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/decode");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus is in {}", dir.display());
    for f in files {
        let text = std::fs::read(&f).unwrap();
        let (head, payload) = match text.iter().position(|&b| b == b'\n') {
            Some(i) if text.starts_with(b"# expect:") => {
                (String::from_utf8_lossy(&text[..i]).to_string(), &text[i + 1..])
            }
            _ => (String::new(), &text[..]),
        };
        let mut cat = MetricCatalog::new(1_000);
        let mut out = Decoded::default();
        wide::decode(payload, NOW, &DecodeConfig::default(), &mut cat, &mut out);
        let mut got: Vec<&str> = out.rejects.iter().map(|r| r.reason.as_str()).collect();
        got.sort();
        got.dedup();
        let want = head.trim_start_matches("# expect:").trim();
        if !want.is_empty() {
            let want: Vec<&str> = if want == "ok" { vec![] } else { want.split(',').map(str::trim).collect() };
            assert_eq!(got, want, "{}", f.display());
        }
        assert!(out.rejects.iter().all(|r| !r.detail.is_empty()), "{}", f.display());
    }
}
