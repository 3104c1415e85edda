//! The narrow form: one signal per message, the vin and metric in the topic
//! (`<prefix>/{vin}/{metric}`), the payload `{"ts":…,"v":…}` or a bare
//! number or boolean (event time = receive time).

use compact_str::CompactString;

use super::catalog::MetricCatalog;
use super::scan::{Kind, ScanError, Scanner};
use super::{DecodeConfig, Decoded, Reading, Reject, RejectReason, Sample, check_ts, event_time};

/// A parsed topic template: literal segments and the two captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    segments: Vec<Seg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Vin,
    Metric,
}

impl TopicTemplate {
    pub fn parse(t: &str) -> Result<Self, String> {
        let segments: Vec<Seg> = t
            .split('/')
            .map(|s| match s {
                "{vin}" => Seg::Vin,
                "{metric}" => Seg::Metric,
                lit => Seg::Lit(lit.to_string()),
            })
            .collect();
        let count = |k: &Seg| segments.iter().filter(|s| *s == k).count();
        if count(&Seg::Vin) != 1 || count(&Seg::Metric) != 1 {
            return Err(format!("topic template '{t}' needs exactly one {{vin}} and one {{metric}} segment"));
        }
        if segments.iter().any(|s| matches!(s, Seg::Lit(l) if l.contains(['+', '#', '{', '}']))) {
            return Err(format!("topic template '{t}' has wildcards or unknown placeholders"));
        }
        Ok(TopicTemplate { segments })
    }

    /// `(vin, metric)` of a topic, or `None` when it does not match.
    pub fn captures<'t>(&self, topic: &'t str) -> Option<(&'t str, &'t str)> {
        let (mut vin, mut metric) = (None, None);
        let mut parts = topic.split('/');
        for seg in &self.segments {
            let p = parts.next()?;
            match seg {
                Seg::Lit(l) if l != p => return None,
                Seg::Lit(_) => {}
                Seg::Vin => vin = Some(p),
                Seg::Metric => metric = Some(p),
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some((vin?, metric?))
    }

    /// The MQTT subscription filter for this template (`+` for captures).
    pub fn filter(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Seg::Lit(l) => l.as_str(),
                _ => "+",
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Decodes one narrow message into `out` (appending one sample or a reject).
pub fn decode(
    topic: &str,
    payload: &[u8],
    now_ms: i64,
    cfg: &DecodeConfig,
    template: &TopicTemplate,
    catalog: &mut MetricCatalog,
    out: &mut Decoded,
) {
    let reject = |out: &mut Decoded, reason, detail: String| out.rejects.push(Reject::new(reason, detail, None));
    if payload.len() > cfg.max_payload_bytes {
        return reject(out, RejectReason::Oversize, format!("payload of {} bytes", payload.len()));
    }
    let Some((vin, metric)) = template.captures(topic) else {
        return reject(out, RejectReason::BadTopic, format!("topic '{topic}' does not match '{}'", template.filter()));
    };
    let mut ts = now_ms;
    let mut value: Option<(f64, bool)> = None;
    let mut sc = match Scanner::new(payload) {
        Ok(sc) => sc,
        Err(e) => return reject(out, RejectReason::MalformedJson, e.to_string()),
    };
    let mut problem: Option<(RejectReason, String)> = None;
    // ts and value seen (each at most once); a non-null value seen.
    let mut seen = (false, false);
    let mut held = false;
    let first = sc.kind();
    let object = matches!(first, Ok(Kind::Object));
    let parsed = match first {
        Ok(Kind::Object) => sc.object(|sc, k| {
            let twice = if k == cfg.ts_field {
                std::mem::replace(&mut seen.0, true)
            } else if k == cfg.value_field {
                std::mem::replace(&mut seen.1, true)
            } else {
                false
            };
            if k == cfg.value_field && sc.kind()? != Kind::Null {
                held = true;
            }
            if twice {
                problem =
                    Some((RejectReason::DuplicateKey, format!("{metric}: field '{k}' appears twice (ambiguous)")));
                return sc.skip();
            }
            if k == cfg.ts_field {
                let t = event_time(sc)?;
                match t {
                    Some(t) => ts = t,
                    None => {
                        problem.get_or_insert((RejectReason::BadTs, format!("{metric}: bad {}", cfg.ts_field)));
                    }
                }
            } else if k == cfg.value_field {
                value = scalar(sc, metric, &mut problem)?;
            } else {
                sc.skip()?;
            }
            Ok(())
        }),
        Ok(kind) => {
            held = kind != Kind::Null;
            scalar(&mut sc, metric, &mut problem).map(|v| value = v)
        }
        Err(e) => Err(e),
    };
    if let Err(e) = parsed.and_then(|_| sc.end()) {
        return reject(out, RejectReason::MalformedJson, format!("{metric}: {e}"));
    }
    // A refused message held one reading, unless its value was null.
    let held = u64::from(held);
    if let Some(rule) = super::catalog::name_rule(vin, cfg.max_vin_bytes) {
        let shown = super::catalog::visible(vin, 64);
        problem = Some((RejectReason::BadVin, format!("vin '{shown}' from the topic {rule}")));
    }
    if let Some((reason, detail)) = problem {
        let mut r = Reject::new(reason, detail, None);
        r.readings = held;
        out.rejects.push(r);
        return;
    }
    if let Err(mut r) = check_ts(ts, now_ms, cfg) {
        r.readings = held;
        out.rejects.push(r);
        return;
    }
    let Some((value, is_bool)) = value else {
        // `{"v": null}` or a bare null: nothing to record, nothing wrong.
        // An object without the value field is refused: it is most likely
        // a `decode.value_field` that does not match the fleet, and every
        // message would vanish silently.
        if object && !seen.1 {
            return reject(out, RejectReason::MissingValue, format!("{metric}: no '{}' field", cfg.value_field));
        }
        return;
    };
    let metric = match catalog.admit(vin, metric, now_ms) {
        Ok(m) => m,
        Err(e) => {
            let mut r = Reject::new(e.reason(), format!("vin {vin}: {e}"), None);
            r.readings = 1;
            out.rejects.push(r);
            return;
        }
    };
    out.samples.push(Sample {
        vin: CompactString::from(vin),
        ts_ms: ts,
        seq: None,
        readings: vec![Reading { metric, value, is_bool }],
    });
}

/// A number or boolean reading; `None` for null. Other kinds and
/// non-finite numbers are recorded in `problem`.
fn scalar(
    sc: &mut Scanner<'_>,
    metric: &str,
    problem: &mut Option<(RejectReason, String)>,
) -> Result<Option<(f64, bool)>, ScanError> {
    Ok(match sc.kind()? {
        Kind::Number => {
            let f = sc.number()?.as_f64();
            if f.is_finite() {
                Some((f, false))
            } else {
                problem.get_or_insert((RejectReason::NonFinite, format!("{metric}: out of range")));
                None
            }
        }
        Kind::Bool => Some((if sc.bool()? { 1.0 } else { 0.0 }, true)),
        Kind::Null => {
            sc.null()?;
            None
        }
        _ => {
            let raw = sc.raw()?;
            problem.get_or_insert((
                RejectReason::BadValue,
                format!("{metric}: {}", raw.chars().take(64).collect::<String>()),
            ));
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_714_979_289_000;

    fn run(topic: &str, payload: &str) -> (Decoded, MetricCatalog) {
        let mut cat = MetricCatalog::new(10);
        let mut out = Decoded::default();
        let t = TopicTemplate::parse("fleet/{vin}/{metric}").unwrap();
        decode(topic, payload.as_bytes(), NOW, &DecodeConfig::default(), &t, &mut cat, &mut out);
        (out, cat)
    }

    #[test]
    fn templates_capture_and_produce_filters() {
        let t = TopicTemplate::parse("fleet/{vin}/{metric}").unwrap();
        assert_eq!(t.captures("fleet/V1/speed"), Some(("V1", "speed")));
        assert_eq!(t.captures("fleet/V1/speed/x"), None);
        assert_eq!(t.captures("other/V1/speed"), None);
        assert_eq!(t.filter(), "fleet/+/+");
        assert!(TopicTemplate::parse("fleet/{vin}").is_err());
        assert!(TopicTemplate::parse("fleet/#/{vin}/{metric}").is_err());
    }

    #[test]
    fn object_and_bare_payloads() {
        let (d, cat) = run("fleet/V1/speed", r#"{"ts":1714979288000,"v":12.5}"#);
        assert_eq!(d.samples[0].ts_ms, NOW - 1000);
        assert_eq!(cat.name(d.samples[0].readings[0].metric), "speed");
        let (d, _) = run("fleet/V1/speed", " 42 ");
        assert_eq!((d.samples[0].readings[0].value, d.samples[0].ts_ms), (42.0, NOW));
        let (d, _) = run("fleet/V1/door", "true");
        assert!(d.samples[0].readings[0].is_bool);
        let (d, _) = run("fleet/V1/door", r#"{"v":null}"#);
        assert!(d.samples.is_empty() && d.rejects.is_empty());
    }

    #[test]
    fn bad_narrow_input_is_rejected_with_a_reason() {
        for (topic, p, why) in [
            ("nope/V1/speed", "1", RejectReason::BadTopic),
            ("fleet/V1/speed", "fast", RejectReason::MalformedJson),
            ("fleet/V1/speed", "NaN", RejectReason::MalformedJson),
            ("fleet/V1/speed", "inf", RejectReason::MalformedJson),
            ("fleet/V1/speed", "1e999", RejectReason::NonFinite),
            ("fleet/V1/speed", r#"{"v":"x"}"#, RejectReason::BadValue),
            ("fleet/V1/speed", r#"{"ts":"later","v":1}"#, RejectReason::BadTs),
            ("fleet/V1/speed", r#"{"ts":1,"v":1}"#, RejectReason::TsOutOfRange),
            ("fleet/V1/speed", r#"{"v":1"#, RejectReason::MalformedJson),
        ] {
            let (d, _) = run(topic, p);
            assert!(d.samples.is_empty(), "{p}");
            assert_eq!(d.rejects[0].reason, why, "{p}");
        }
    }

    #[test]
    fn narrow_duplicates_and_names_are_refused_with_their_rule() {
        for p in [r#"{"v":1,"v":2}"#, r#"{"ts":1714979288000,"ts":1714979288001,"v":1}"#] {
            let (d, _) = run("fleet/V1/speed", p);
            assert!(d.samples.is_empty(), "{p}");
            assert_eq!(d.rejects[0].reason, RejectReason::DuplicateKey, "{p}");
        }
        let (d, _) = run("fleet/V1/\\N", "1");
        assert_eq!(d.rejects[0].reason, RejectReason::BadMetricName);
        assert_eq!(d.rejects[0].readings, 1);
        let (d, _) = run("fleet/\\N/speed", "1");
        assert_eq!(d.rejects[0].reason, RejectReason::BadVin);
        assert!(d.rejects[0].detail.contains("NULL"), "{}", d.rejects[0].detail);
    }
}
