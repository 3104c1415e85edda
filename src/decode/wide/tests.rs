//! The wide decoder's tests: value kinds and time forms, bad values and
//! samples refused alone next to good ones, hostile and ambiguous payloads,
//! limits, and readings accepted and refused adding up.

use super::*;

const NOW: i64 = 1_714_979_289_000;

fn run(payload: &str) -> (Decoded, MetricCatalog) {
    let mut cat = MetricCatalog::new(100);
    let mut out = Decoded::default();
    decode(payload.as_bytes(), NOW, &DecodeConfig::default(), &mut cat, &mut out);
    (out, cat)
}

#[test]
fn decodes_a_wide_sample_with_numbers_bools_and_nulls() {
    let (d, cat) = run(
        r#"{"vin":"VIN1","ts":1714979289000,"seq":7,"metrics":{"speed":81.5,"door_open":true,"soc":null,"rpm":3000}}"#,
    );
    assert!(d.rejects.is_empty(), "{:?}", d.rejects);
    let s = &d.samples[0];
    assert_eq!((s.vin.as_str(), s.ts_ms, s.seq), ("VIN1", NOW, Some(7)));
    let named: Vec<(&str, f64, bool)> = s.readings.iter().map(|r| (cat.name(r.metric), r.value, r.is_bool)).collect();
    assert_eq!(named, vec![("speed", 81.5, false), ("door_open", 1.0, true), ("rpm", 3000.0, false)]);
}

#[test]
fn accepts_rfc3339_and_field_order_does_not_matter() {
    let (d, _) = run(r#"{"metrics":{"a":1},"ts":"2024-05-06T07:08:09Z","vin":"V"}"#);
    assert_eq!(d.samples[0].ts_ms, NOW);
}

#[test]
fn an_array_keeps_good_samples_next_to_bad_ones() {
    let (d, _) = run(
        r#"[{"vin":"A","ts":1714979289000,"metrics":{"x":1}},{"ts":1714979289000,"metrics":{}},{"vin":"C","ts":"soon","metrics":{}},{"vin":"D","ts":1714979289000,"metrics":{"x":2}}]"#,
    );
    let vins: Vec<&str> = d.samples.iter().map(|s| s.vin.as_str()).collect();
    assert_eq!(vins, ["A", "D"]);
    let reasons: Vec<(RejectReason, Option<usize>)> = d.rejects.iter().map(|r| (r.reason, r.index)).collect();
    assert_eq!(reasons, vec![(RejectReason::MissingVin, Some(1)), (RejectReason::BadTs, Some(2))]);
}

#[test]
fn bad_values_are_rejected_alone() {
    let (d, _) =
        run(r#"{"vin":"V","ts":1714979289000,"metrics":{"ok":1,"s":"fast","o":{"x":1},"big":1e999,"fine":2}}"#);
    assert_eq!(d.samples[0].readings.len(), 2);
    let reasons: Vec<RejectReason> = d.rejects.iter().map(|r| r.reason).collect();
    assert_eq!(reasons, vec![RejectReason::BadValue, RejectReason::NonFinite]);
    assert!(d.rejects[0].detail.contains("s; o"), "{}", d.rejects[0].detail);
}

#[test]
fn malformed_and_hostile_payloads_never_panic() {
    for p in [
        "",
        "nul",
        "{",
        "{\"vin\":",
        "[1,2",
        "\"x\"",
        "{\"vin\":\"V\",\"ts\":1714979289000,\"metrics\":{\"a\":NaN}}",
        "[{}]",
        "{\"vin\":\"\\u0000\"}",
        "\u{feff}{}",
        "[[[[[[[[[[]]]]]]]]]]",
    ] {
        let (d, _) = run(p);
        assert!(d.samples.is_empty(), "{p:?}");
        assert!(!d.rejects.is_empty(), "{p:?} must be rejected, not dropped");
    }
    let (d, _) = run(r#"{"vin":"V","ts":99999999999999,"metrics":{}}"#);
    assert_eq!(d.rejects[0].reason, RejectReason::TsOutOfRange);
}

#[test]
fn vins_that_would_break_the_csv_body_are_rejected() {
    for vin in [r#""\\N""#, r#""a\u0001b""#, r#""line\nbreak""#] {
        let (d, _) = run(&format!(r#"{{"vin":{vin},"ts":1714979289000,"metrics":{{"x":1}}}}"#));
        assert!(d.samples.is_empty(), "{vin}");
        assert_eq!(d.rejects[0].reason, RejectReason::BadVin, "{vin}");
    }
}

#[test]
fn oversize_payloads_are_rejected_whole() {
    let mut cfg = DecodeConfig { max_payload_bytes: 10, ..Default::default() };
    cfg.vin_field = "vin".into();
    let mut out = Decoded::default();
    decode(br#"{"vin":"V","ts":1,"metrics":{}}"#, NOW, &cfg, &mut MetricCatalog::new(1), &mut out);
    assert_eq!(out.rejects[0].reason, RejectReason::Oversize);
}

#[test]
fn a_payload_that_says_two_things_is_refused_as_ambiguous() {
    for p in [
        r#"{"vin":"X18","vin":"X19","ts":1714979289000,"metrics":{"a":1}}"#,
        r#"{"vin":"X18","ts":1714979289000,"ts":1714979289001,"metrics":{"a":1}}"#,
        r#"{"vin":"X18","ts":1714979289000,"metrics":{"a":1},"metrics":{"a":2}}"#,
        r#"{"vin":"X18","ts":1714979289000,"metrics":{"a":1,"b":2,"a":3}}"#,
        r#"{"vin":"X18","ts":1714979289000,"metrics":{"new":1,"new":null}}"#,
    ] {
        let (d, _) = run(p);
        assert!(d.samples.is_empty(), "{p}");
        assert_eq!(d.rejects.len(), 1, "{p}");
        assert_eq!(d.rejects[0].reason, RejectReason::DuplicateKey, "{p}");
        assert!(d.rejects[0].detail.contains("twice"), "{}", d.rejects[0].detail);
    }
    // A known name twice, across two samples of one array, is fine; and
    // fields rockfeed does not read may repeat.
    let (d, _) = run(
        r#"[{"vin":"A","ts":1714979289000,"x":1,"x":2,"metrics":{"a":1}},{"vin":"B","ts":1714979289000,"metrics":{"a":2}}]"#,
    );
    assert_eq!((d.samples.len(), d.rejects.len()), (2, 0), "{:?}", d.rejects);
}

#[test]
fn a_vin_refusal_names_the_rule_it_broke() {
    for (vin, rule) in [
        (r#""""#, "is empty"),
        (r#""a\u0001b""#, "U+0001"),
        (r#""\\N""#, "NULL"),
        (r#"7"#, "must be a string"),
        (&format!(r#""{}""#, "V".repeat(65)), "over the limit of 64"),
    ] {
        let (d, _) = run(&format!(r#"{{"vin":{vin},"ts":1714979289000,"metrics":{{"x":1}}}}"#));
        assert_eq!(d.rejects[0].reason, RejectReason::BadVin, "{vin}");
        assert!(d.rejects[0].detail.contains(rule), "{vin}: {}", d.rejects[0].detail);
        assert_eq!(d.rejects[0].readings, 1);
    }
}

#[test]
fn limits_refuse_whole_samples_and_messages_and_count_their_readings() {
    let cfg = DecodeConfig { max_metrics_per_sample: 3, max_samples_per_message: 2, ..Default::default() };
    let mut cat = MetricCatalog::new(100);
    let mut out = Decoded::default();
    let p = r#"{"vin":"V","ts":1714979289000,"metrics":{"a":1,"b":2,"c":null,"d":4,"e":5}}"#;
    decode(p.as_bytes(), NOW, &cfg, &mut cat, &mut out);
    assert!(out.samples.is_empty());
    assert_eq!(out.rejects[0].reason, RejectReason::TooManyMetrics);
    assert_eq!(out.rejects[0].readings, 4, "every non-null value");
    assert!(cat.is_empty(), "a refused sample admits no name");
    out.clear();
    let one = r#"{"vin":"V","ts":1714979289000,"metrics":{"a":1,"b":2}}"#;
    decode(format!("[{one},{one},{one}]").as_bytes(), NOW, &cfg, &mut cat, &mut out);
    assert!(out.samples.is_empty());
    assert_eq!(out.rejects.len(), 1);
    assert_eq!(out.rejects[0].reason, RejectReason::TooManySamples);
    out.clear();
    decode(format!("[{one},{one}]").as_bytes(), NOW, &cfg, &mut cat, &mut out);
    assert_eq!((out.samples.len(), out.rejects.len()), (2, 0));
}

#[test]
fn readings_accepted_and_refused_add_up_and_empty_samples_leave_no_trace() {
    let mut cat = MetricCatalog::new(100);
    let mut out = Decoded::default();
    let p = r#"[{"vin":"V","ts":1714979289000,"metrics":{"ok":1,"s":"x","\\N":2,"z":null}},
                {"vin":"W","ts":1714979289000,"metrics":{"s2":"x","":3}},
                {"vin":"Y","ts":1714979289000,"metrics":{"n":null}}]"#;
    decode(p.as_bytes(), NOW, &DecodeConfig::default(), &mut cat, &mut out);
    let vins: Vec<&str> = out.samples.iter().map(|s| s.vin.as_str()).collect();
    assert_eq!(vins, ["V"], "W kept no reading, Y held none: no sample, no latest row");
    let accepted = out.readings() as u64;
    let refused: u64 = out.rejects.iter().map(|r| r.readings).sum();
    assert_eq!((accepted, refused), (1, 4));
    let reasons: Vec<RejectReason> = out.rejects.iter().map(|r| r.reason).collect();
    assert_eq!(
        reasons,
        [RejectReason::BadValue, RejectReason::BadMetricName, RejectReason::BadValue, RejectReason::BadMetricName]
    );
    assert!(out.rejects[1].detail.contains("NULL"), "{}", out.rejects[1].detail);
    assert!(out.rejects[3].detail.contains("is empty"), "{}", out.rejects[3].detail);
}

/// Found using it by hand: a detail showed a raw tab, and an ambiguous
/// vin was named as the first of the two.
#[test]
fn details_escape_control_characters_and_name_no_ambiguous_vin() {
    let (d, _) = run(r#"{"vin":"G1","ts":1714979289000,"metrics":{"a\tb":1,"ok":2}}"#);
    assert!(d.rejects[0].detail.contains(r"'a\tb'"), "{}", d.rejects[0].detail);
    let (d, _) = run(r#"{"vin":"V\u0007","ts":1714979289000,"metrics":{"ok":2}}"#);
    assert!(d.rejects[0].detail.contains(r"'V\u{7}'"), "{}", d.rejects[0].detail);
    let (d, _) = run(r#"{"vin":"X18","vin":"X19","ts":1714979289000,"metrics":{"soc":50}}"#);
    assert!(!d.rejects[0].detail.contains("X18"), "{}", d.rejects[0].detail);
}
