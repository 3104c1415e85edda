//! The wide form: one JSON object per vehicle sample (or an array of them),
//! with every metric of the sample in one nested object.
//!
//! One pass with the purpose-built [`Scanner`]: no DOM, metric names
//! borrowed from the payload (unless escaped) straight into the catalog
//! lookup, numbers parsed in place. A semantic problem (no vin, a string
//! where a number belongs) rejects that sample or value and scanning goes on;
//! a syntax error stops the payload there (nothing after it can be located),
//! keeping the samples decoded before it.

use std::collections::HashSet;

use compact_str::CompactString;

use super::catalog::{MetricCatalog, name_rule};
use super::scan::{Kind, Num, ScanError, Scanner};
use super::{DecodeConfig, Decoded, Reading, Reject, RejectReason, Sample, check_ts, event_time};
use crate::model::MetricId;

/// Decodes one wide payload into `out` (appending).
pub fn decode(payload: &[u8], now_ms: i64, cfg: &DecodeConfig, catalog: &mut MetricCatalog, out: &mut Decoded) {
    if payload.len() > cfg.max_payload_bytes {
        out.rejects.push(Reject::new(
            RejectReason::Oversize,
            format!("payload of {} bytes exceeds max_payload_bytes {}", payload.len(), cfg.max_payload_bytes),
            None,
        ));
        return;
    }
    let malformed = |out: &mut Decoded, e: ScanError, index| {
        out.rejects.push(Reject::new(RejectReason::MalformedJson, e.to_string(), index))
    };
    let mut sc = match Scanner::new(payload) {
        Ok(sc) => sc,
        Err(e) => return malformed(out, e, None),
    };
    let (samples_before, rejects_before) = (out.samples.len(), out.rejects.len());
    let mut too_many = false;
    let res = match sc.kind() {
        Ok(Kind::Array) => {
            let mut last = 0;
            let r = sc.array(|sc, i| {
                last = i;
                if i >= cfg.max_samples_per_message {
                    too_many = true;
                    return sc.skip();
                }
                sample(sc, Some(i), now_ms, cfg, catalog, out)
            });
            r.map_err(|e| (e, Some(last)))
        }
        Ok(Kind::Object) => sample(&mut sc, None, now_ms, cfg, catalog, out).map_err(|e| (e, None)),
        Ok(_) => {
            out.rejects.push(Reject::new(
                RejectReason::NotAnObject,
                "a wide payload is a JSON object or an array of objects".into(),
                None,
            ));
            return;
        }
        Err(e) => Err((e, None)),
    };
    if too_many && res.is_ok() {
        // Refused whole: one dead letter holds the payload.
        let readings = out.samples.drain(samples_before..).map(|s| s.readings.len() as u64).sum::<u64>()
            + out.rejects.drain(rejects_before..).map(|r| r.readings).sum::<u64>();
        let mut r = Reject::new(
            RejectReason::TooManySamples,
            format!(
                "more than {} samples in one message (decode.max_samples_per_message)",
                cfg.max_samples_per_message
            ),
            None,
        );
        r.readings = readings;
        out.rejects.push(r);
        return;
    }
    match res.and_then(|_| sc.end().map_err(|e| (e, None))) {
        Ok(()) => {}
        Err((e, index)) => malformed(out, e, index),
    }
}

/// The fields of a sample rockfeed reads (each at most once).
#[derive(Clone, Copy)]
enum Field {
    Vin = 0,
    Ts = 1,
    Seq = 2,
    Metrics = 3,
}

/// A metric value: a reading, null (nothing to record), or refused.
enum Value {
    Reading(f64, bool),
    Null,
    Bad(RejectReason),
}

fn value(sc: &mut Scanner<'_>) -> Result<Value, ScanError> {
    Ok(match sc.kind()? {
        Kind::Number => {
            let f = sc.number()?.as_f64();
            if f.is_finite() { Value::Reading(f, false) } else { Value::Bad(RejectReason::NonFinite) }
        }
        Kind::Bool => Value::Reading(if sc.bool()? { 1.0 } else { 0.0 }, true),
        Kind::Null => {
            sc.null()?;
            Value::Null
        }
        _ => {
            sc.skip()?;
            Value::Bad(RejectReason::BadValue)
        }
    })
}

/// A reading whose metric name is new: resolved once the sample's vin is known.
const PENDING: MetricId = MetricId(u32::MAX);

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
    if sc.kind()? != Kind::Object {
        let raw = sc.raw()?;
        out.rejects.push(Reject::new(
            RejectReason::NotAnObject,
            format!("sample is not an object: {}", truncate(raw)),
            index,
        ));
        return Ok(());
    }
    out.next_sample();
    let mut s = Sample { readings: Vec::new(), ..Default::default() };
    let mut seen = [false; 4];
    let mut problem: Option<(RejectReason, String)> = None;
    let mut duplicate: Option<String> = None;
    let mut vin_twice = false;
    // Refused values and names: (reason, what).
    let mut bad: Vec<(RejectReason, String)> = Vec::new();
    // New names: (reading index, position, name), and the set of them.
    let mut pending: Vec<(usize, usize, String)> = Vec::new();
    let mut new_names: HashSet<String> = HashSet::new();
    // Metrics named, and non-null values among them.
    let (mut named, mut values) = (0usize, 0u64);
    sc.object(|sc, k| {
        let field = if k == cfg.vin_field {
            Field::Vin
        } else if k == cfg.ts_field {
            Field::Ts
        } else if k == cfg.seq_field {
            Field::Seq
        } else if k == cfg.metrics_field {
            Field::Metrics
        } else {
            return sc.skip();
        };
        if std::mem::replace(&mut seen[field as usize], true) {
            duplicate.get_or_insert(format!("field '{k}' appears twice"));
            // Which vehicle is ambiguous: the detail names none.
            vin_twice |= matches!(field, Field::Vin);
            // Refused with the sample below: count what a second `metrics` held.
            if matches!(field, Field::Metrics) && sc.kind()? == Kind::Object {
                return sc.object(|sc, _| {
                    if !matches!(value(sc)?, Value::Null) {
                        values += 1;
                    }
                    Ok(())
                });
            }
            return sc.skip();
        }
        match field {
            Field::Vin => {
                let rule = if sc.kind()? == Kind::String {
                    let vin = sc.string()?;
                    // A vin is a key column of the CSV body too: the metric name rules.
                    match name_rule(&vin, cfg.max_vin_bytes) {
                        None => {
                            s.vin = CompactString::from(&*vin);
                            return Ok(());
                        }
                        Some(rule) => format!("'{}' {rule}", truncate(&vin)),
                    }
                } else {
                    let raw = sc.raw()?;
                    format!("must be a string, not {}", truncate(raw))
                };
                problem.get_or_insert((RejectReason::BadVin, format!("{} {rule}", cfg.vin_field)));
            }
            Field::Ts => match event_time(sc)? {
                Some(t) => s.ts_ms = t,
                None => {
                    problem.get_or_insert((
                        RejectReason::BadTs,
                        format!("{} must be epoch milliseconds or RFC 3339", cfg.ts_field),
                    ));
                }
            },
            Field::Seq => match sc.kind()? {
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
            },
            Field::Metrics => {
                if sc.kind()? != Kind::Object {
                    sc.skip()?;
                    problem
                        .get_or_insert((RejectReason::NotAnObject, format!("{} must be an object", cfg.metrics_field)));
                    return Ok(());
                }
                sc.object(|sc, name| {
                    let pos = named;
                    named += 1;
                    if named > cfg.max_metrics_per_sample {
                        // Refused whole below; only counted from here on.
                        if sc.kind()? == Kind::Null {
                            return sc.null();
                        }
                        values += 1;
                        return sc.skip();
                    }
                    let known = catalog.get_at(pos, &name);
                    let twice = match known {
                        Some(id) => out.named_twice(id),
                        None => !new_names.insert(name.to_string()),
                    };
                    if twice {
                        duplicate.get_or_insert(format!("metric '{}' appears twice", truncate(&name)));
                        // Refused with the sample below: count its value.
                        if !matches!(value(sc)?, Value::Null) {
                            values += 1;
                        }
                        return Ok(());
                    }
                    match value(sc)? {
                        Value::Null => {}
                        Value::Bad(reason) => {
                            values += 1;
                            bad.push((reason, truncate(&name)));
                        }
                        Value::Reading(value, is_bool) => {
                            values += 1;
                            let metric = known.unwrap_or(PENDING);
                            if metric == PENDING {
                                pending.push((s.readings.len(), pos, name.into_owned()));
                            }
                            s.readings.push(Reading { metric, value, is_bool });
                        }
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    })?;
    // The whole sample is refused: every value it held goes with it.
    let refuse = |out: &mut Decoded, reason, detail: String| {
        let mut r = Reject::new(reason, detail, index);
        r.readings = values;
        out.rejects.push(r);
        Ok(())
    };
    // "vin V: " in a refusal's detail (formatted only when refusing).
    let who = Who(if vin_twice { "" } else { &s.vin });
    if named > cfg.max_metrics_per_sample {
        let detail = format!(
            "{who}{named} metrics in one sample, over decode.max_metrics_per_sample {}",
            cfg.max_metrics_per_sample
        );
        return refuse(out, RejectReason::TooManyMetrics, detail);
    }
    if let Some(d) = duplicate {
        return refuse(out, RejectReason::DuplicateKey, format!("{who}{d} in one sample (ambiguous)"));
    }
    if let Some((reason, detail)) = problem {
        return refuse(out, reason, format!("{who}{detail}"));
    }
    if !seen[Field::Vin as usize] {
        return refuse(out, RejectReason::MissingVin, format!("no '{}' field", cfg.vin_field));
    }
    if !seen[Field::Ts as usize] {
        return refuse(out, RejectReason::MissingTs, format!("{who}no '{}' field", cfg.ts_field));
    }
    if let Err(r) = check_ts(s.ts_ms, now_ms, cfg) {
        return refuse(out, r.reason, format!("{who}{}", r.detail));
    }
    // New names, now that the vehicle is known (its budget pays for them).
    for (i, pos, name) in pending {
        match catalog.admit_at(pos, &s.vin, &name, now_ms) {
            Ok(id) => s.readings[i].metric = id,
            Err(e) => bad.push((e.reason(), e.to_string())),
        }
    }
    s.readings.retain(|r| r.metric != PENDING);
    // One reject per kind of refused value or name, naming them.
    let mut kinds: Vec<RejectReason> = bad.iter().map(|(r, _)| *r).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let of_kind: Vec<&str> = bad.iter().filter(|(r, _)| *r == kind).map(|(_, n)| n.as_str()).collect();
        let shown = of_kind.iter().take(20).copied().collect::<Vec<_>>().join("; ");
        let more = if of_kind.len() > 20 { format!(" (and {} more)", of_kind.len() - 20) } else { String::new() };
        let what = match kind {
            RejectReason::BadValue => "not a number, boolean or null: ",
            RejectReason::NonFinite => "out of a double's range: ",
            _ => "",
        };
        let mut r = Reject::new(kind, format!("vin {}: {what}{shown}{more}", s.vin), index);
        r.readings = of_kind.len() as u64;
        out.rejects.push(r);
    }
    // A sample that kept no reading leaves no trace (no latest row).
    if !s.readings.is_empty() {
        out.samples.push(s);
    }
    Ok(())
}

/// Names the sample's vehicle in a detail, when it has one.
struct Who<'a>(&'a str);

impl std::fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() { Ok(()) } else { write!(f, "vin {}: ", self.0) }
    }
}

fn truncate(s: &str) -> String {
    super::catalog::visible(s, 64)
}

#[cfg(test)]
mod tests;
