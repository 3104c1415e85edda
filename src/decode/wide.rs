//! The wide form: one JSON object per vehicle sample (or an array of them),
//! with every metric of the sample in one nested object.
//!
//! One pass with the purpose-built [`Scanner`]: no DOM, metric names
//! borrowed from the payload (unless escaped) straight into the catalog
//! lookup, numbers parsed in place. A semantic problem (no vin, a string
//! where a number belongs) rejects that sample or value and scanning goes on;
//! a syntax error stops the payload there (nothing after it can be located),
//! keeping the samples decoded before it.

use compact_str::CompactString;

use super::catalog::MetricCatalog;
use super::scan::{Kind, Num, ScanError, Scanner};
use super::{DecodeConfig, Decoded, Reading, Reject, RejectReason, Sample, check_ts, event_time};

/// Decodes one wide payload into `out` (appending).
pub fn decode(payload: &[u8], now_ms: i64, cfg: &DecodeConfig, catalog: &mut MetricCatalog, out: &mut Decoded) {
    if payload.len() > cfg.max_payload_bytes {
        out.rejects.push(Reject {
            reason: RejectReason::Oversize,
            detail: format!("payload of {} bytes exceeds max_payload_bytes {}", payload.len(), cfg.max_payload_bytes),
            index: None,
        });
        return;
    }
    let malformed = |out: &mut Decoded, e: ScanError, index| {
        out.rejects.push(Reject { reason: RejectReason::MalformedJson, detail: e.to_string(), index })
    };
    let mut sc = match Scanner::new(payload) {
        Ok(sc) => sc,
        Err(e) => return malformed(out, e, None),
    };
    let res = match sc.kind() {
        Ok(Kind::Array) => {
            let mut last = 0;
            let r = sc.array(|sc, i| {
                last = i;
                sample(sc, Some(i), now_ms, cfg, catalog, out)
            });
            r.map_err(|e| (e, Some(last)))
        }
        Ok(Kind::Object) => sample(&mut sc, None, now_ms, cfg, catalog, out).map_err(|e| (e, None)),
        Ok(_) => {
            out.rejects.push(Reject {
                reason: RejectReason::NotAnObject,
                detail: "a wide payload is a JSON object or an array of objects".into(),
                index: None,
            });
            return;
        }
        Err(e) => Err((e, None)),
    };
    match res.and_then(|_| sc.end().map_err(|e| (e, None))) {
        Ok(()) => {}
        Err((e, index)) => malformed(out, e, index),
    }
}

/// Scans one sample object. `Err` only for syntax errors; semantic problems
/// become rejects while the value is still consumed.
fn sample(
    sc: &mut Scanner<'_>,
    index: Option<usize>,
    now_ms: i64,
    cfg: &DecodeConfig,
    catalog: &mut MetricCatalog,
    out: &mut Decoded,
) -> Result<(), ScanError> {
    let reject = |out: &mut Decoded, reason, detail: String| out.rejects.push(Reject { reason, detail, index });
    if sc.kind()? != Kind::Object {
        let raw = sc.raw()?;
        reject(out, RejectReason::NotAnObject, format!("sample is not an object: {}", truncate(raw)));
        return Ok(());
    }
    let mut s = Sample { readings: Vec::new(), ..Default::default() };
    let (mut have_vin, mut have_ts) = (false, false);
    let mut problem: Option<(RejectReason, String)> = None;
    let mut bad_values: Vec<(RejectReason, String)> = Vec::new();
    sc.object(|sc, k| {
        if k == cfg.vin_field {
            if sc.kind()? == Kind::String {
                let vin = sc.string()?;
                if !vin.is_empty() && vin.len() <= cfg.max_vin_len && !vin.contains(char::is_control) && vin != "\\N" {
                    s.vin = CompactString::from(&*vin);
                    have_vin = true;
                    return Ok(());
                }
            } else {
                sc.skip()?;
            }
            let msg = format!("{} must be a non-empty string of at most {} bytes", cfg.vin_field, cfg.max_vin_len);
            problem.get_or_insert((RejectReason::BadVin, msg));
        } else if k == cfg.ts_field {
            let ts = event_time(sc)?;
            match ts {
                Some(t) => {
                    s.ts_ms = t;
                    have_ts = true;
                }
                None => {
                    problem.get_or_insert((
                        RejectReason::BadTs,
                        format!("{} must be epoch milliseconds or RFC 3339", cfg.ts_field),
                    ));
                }
            }
        } else if k == cfg.seq_field {
            match sc.kind()? {
                Kind::Number => match sc.number()? {
                    Num::U(u) => s.seq = Some(u),
                    _ => {
                        problem.get_or_insert((
                            RejectReason::BadSeq,
                            format!("{} must be an unsigned integer", cfg.seq_field),
                        ));
                    }
                },
                Kind::Null => sc.null()?,
                _ => {
                    sc.skip()?;
                    problem.get_or_insert((
                        RejectReason::BadSeq,
                        format!("{} must be an unsigned integer", cfg.seq_field),
                    ));
                }
            }
        } else if k == cfg.metrics_field {
            if sc.kind()? != Kind::Object {
                sc.skip()?;
                problem.get_or_insert((RejectReason::NotAnObject, format!("{} must be an object", cfg.metrics_field)));
                return Ok(());
            }
            let mut pos = 0;
            sc.object(|sc, name| {
                let p = pos;
                pos += 1;
                let (value, is_bool) = match sc.kind()? {
                    Kind::Number => {
                        let f = sc.number()?.as_f64();
                        if !f.is_finite() {
                            bad_values.push((RejectReason::NonFinite, name.into_owned()));
                            return Ok(());
                        }
                        (f, false)
                    }
                    Kind::Bool => (if sc.bool()? { 1.0 } else { 0.0 }, true),
                    Kind::Null => return sc.null(),
                    _ => {
                        sc.skip()?;
                        bad_values.push((RejectReason::BadValue, name.into_owned()));
                        return Ok(());
                    }
                };
                match catalog.intern_at(p, &name) {
                    Ok(metric) => s.readings.push(Reading { metric, value, is_bool }),
                    Err(e) => bad_values.push((RejectReason::CatalogFull, e.name)),
                }
                Ok(())
            })?;
        } else {
            sc.skip()?;
        }
        Ok(())
    })?;
    if let Some((reason, detail)) = problem {
        reject(out, reason, detail);
        return Ok(());
    }
    if !have_vin {
        reject(out, RejectReason::MissingVin, format!("no '{}' field", cfg.vin_field));
        return Ok(());
    }
    if !have_ts {
        reject(out, RejectReason::MissingTs, format!("no '{}' field", cfg.ts_field));
        return Ok(());
    }
    if let Err(mut r) = check_ts(s.ts_ms, now_ms, cfg) {
        r.index = index;
        out.rejects.push(r);
        return Ok(());
    }
    // One reject per kind of bad value in this sample, naming the metrics.
    let mut kinds: Vec<RejectReason> = bad_values.iter().map(|(r, _)| *r).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let names: Vec<&str> =
            bad_values.iter().filter(|(r, _)| *r == kind).map(|(_, n)| n.as_str()).take(20).collect();
        reject(out, kind, format!("vin {}: metrics {}", s.vin, names.join(", ")));
    }
    out.samples.push(s);
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
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
        let named: Vec<(&str, f64, bool)> =
            s.readings.iter().map(|r| (cat.name(r.metric), r.value, r.is_bool)).collect();
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
        assert!(d.rejects[0].detail.contains("s, o"), "{}", d.rejects[0].detail);
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
}
