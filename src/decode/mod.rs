//! Decoding payloads into vehicle samples.
//!
//! Two wire forms (field names and the topic template are configurable):
//! - **wide**: `{"vin":"…","ts":<epoch ms | RFC 3339>,"seq":<u64>,"metrics":{"name":number|bool|null,…}}`,
//!   or a JSON array of such objects in one message (`wide/`);
//! - **narrow**: topic `<prefix>/{vin}/{metric}` with payload `{"ts":…,"v":…}`
//!   or a bare number/bool (`narrow.rs`).
//!
//! Parsing never builds a DOM: objects are walked with sonic-rs' lazy
//! iterators, metric names go through the [`catalog::MetricCatalog`] once,
//! and values land in reused vectors. The parser was chosen by
//! `benches/decode.rs` (numbers in the README).
//!
//! Bad input never panics and never takes good data down with it: a sample
//! that cannot be trusted (malformed JSON, no vin, no or absurd timestamp) is
//! rejected whole; a single bad value (a string, an object, a non-finite
//! number) is rejected alone and the sample's other readings are kept. Every
//! rejection carries a [`RejectReason`] (a counter label) and a detail for
//! the dead-letter record.

pub mod catalog;
#[cfg(test)]
mod fuzz;
pub mod narrow;
pub mod scan;
pub mod wide;

use compact_str::CompactString;

use crate::model::MetricId;
use crate::starrocks::text::parse_datetime;
use crate::util::Dur;

/// One reading of one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub metric: MetricId,
    pub value: f64,
    /// The payload carried a boolean (stored as 0/1).
    pub is_bool: bool,
}

/// One vehicle sample: a vin, an event time, a sequence number and readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub vin: CompactString,
    /// Event time, epoch milliseconds (UTC).
    pub ts_ms: i64,
    pub seq: Option<u64>,
    pub readings: Vec<Reading>,
}

pub use crate::reject::RejectReason;

/// A rejection: what, why, and (for one sample of an array) which one.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub reason: RejectReason,
    pub detail: String,
    /// Index of the sample in an array payload.
    pub index: Option<usize>,
    /// Readings refused with it (0 where they cannot be counted: a message
    /// that is not JSON).
    pub readings: u64,
}

impl Reject {
    pub fn new(reason: RejectReason, detail: String, index: Option<usize>) -> Reject {
        Reject { reason, detail, index, readings: 0 }
    }

    /// Refusals in the reason's unit: readings for a reading-level reason,
    /// else one.
    pub fn count(&self) -> u64 {
        if self.reason.unit() == crate::reject::Unit::Readings { self.readings } else { 1 }
    }
}

/// The decoder's settings: the config's `[decode]` section, deserialised
/// as it is (unknown keys refused, each key defaulted).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Field names of the wide form.
    pub vin_field: String,
    pub ts_field: String,
    pub seq_field: String,
    pub metrics_field: String,
    /// Narrow form: value field of an object payload.
    pub value_field: String,
    /// Narrow form: topic template with `{vin}` and `{metric}` segments.
    pub topic_template: String,
    /// `wide`, `narrow`, or `auto` (narrow when the topic matches the template).
    pub form: crate::model::Form,
    /// Largest payload accepted (bigger ones are rejected whole, counted).
    pub max_payload_bytes: usize,
    /// Bounded metric catalog: names at most.
    pub max_metrics: usize,
    /// Longest metric name (bytes, at most 128: the key column's width).
    pub max_metric_name_bytes: usize,
    /// New metric names one vehicle may introduce at once, refilled at
    /// `new_metrics_per_vehicle_per_hour` (a few vehicles inventing names
    /// cannot fill the catalog for the fleet).
    pub new_metrics_per_vehicle: u32,
    pub new_metrics_per_vehicle_per_hour: u32,
    /// Most metrics one sample may hold.
    pub max_metrics_per_sample: usize,
    /// Most samples one (array) payload may hold.
    pub max_samples_per_message: usize,
    /// Longest vin accepted (bytes).
    pub max_vin_bytes: usize,
    /// Event times further ahead of the receive time are rejected.
    pub max_future: Dur,
    /// Event times further behind the receive time are rejected.
    pub max_past: Dur,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            vin_field: "vin".into(),
            ts_field: "ts".into(),
            seq_field: "seq".into(),
            metrics_field: "metrics".into(),
            value_field: "v".into(),
            topic_template: "telemetry/{vin}/{metric}".into(),
            form: crate::model::Form::Auto,
            max_payload_bytes: 4 << 20,
            max_metrics: 100_000,
            max_metric_name_bytes: catalog::MAX_METRIC_NAME,
            new_metrics_per_vehicle: catalog::NewNames::default().burst,
            new_metrics_per_vehicle_per_hour: catalog::NewNames::default().per_hour,
            max_metrics_per_sample: 10_000,
            max_samples_per_message: 1_000,
            max_vin_bytes: 64,
            max_future: Dur(std::time::Duration::from_secs(3_600)),
            max_past: Dur(std::time::Duration::from_secs(30 * 86_400)),
        }
    }
}

impl DecodeConfig {
    /// The metric catalog's bounds.
    pub fn catalog_limits(&self) -> catalog::Limits {
        catalog::Limits {
            max_metrics: self.max_metrics,
            max_name_bytes: self.max_metric_name_bytes,
            new_names: catalog::NewNames {
                burst: self.new_metrics_per_vehicle,
                per_hour: self.new_metrics_per_vehicle_per_hour,
            },
        }
    }
}

/// What one payload decoded into. Reused across payloads to keep
/// allocations off the hot path.
#[derive(Debug, Default)]
pub struct Decoded {
    pub samples: Vec<Sample>,
    pub rejects: Vec<Reject>,
    /// Per metric id, the last sample that named it (duplicate names).
    seen: Vec<u32>,
    /// The current sample's stamp in `seen`.
    stamp: u32,
}

impl Decoded {
    pub fn clear(&mut self) {
        self.samples.clear();
        self.rejects.clear();
    }

    /// Starts a sample for duplicate detection.
    fn next_sample(&mut self) {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.seen.iter_mut().for_each(|s| *s = 0);
            self.stamp = 1;
        }
    }

    /// Whether `id` was already named in this sample (and notes it).
    fn named_twice(&mut self, id: MetricId) -> bool {
        let i = id.0 as usize;
        if i >= self.seen.len() {
            self.seen.resize(i + 1, 0);
        }
        std::mem::replace(&mut self.seen[i], self.stamp) == self.stamp
    }

    /// Total readings decoded.
    pub fn readings(&self) -> usize {
        self.samples.iter().map(|s| s.readings.len()).sum()
    }
}

/// Parses an RFC 3339 timestamp (`2024-05-06T07:08:09.123Z`, `…+02:00`)
/// to epoch milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let (naive, offset_min) = if let Some(rest) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        (rest, 0i64)
    } else {
        // ±HH:MM at the end, after the time part.
        let cut = s.len().checked_sub(6)?;
        // Not a char boundary: not an offset either (and never a panic).
        let (head, tail) = s.split_at_checked(cut)?;
        let sign = match tail.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let h: i64 = tail.get(1..3)?.parse().ok()?;
        let m: i64 = tail.get(4..6)?.parse().ok()?;
        if tail.as_bytes()[3] != b':' || h > 23 || m > 59 {
            return None;
        }
        (head, sign * (h * 60 + m))
    };
    if !naive.contains(['T', 't', ' ']) {
        return None;
    }
    let micros = parse_datetime(&naive.replace('t', "T"))?;
    Some(micros.div_euclid(1000) - offset_min * 60_000)
}

/// Reads an event time value: epoch milliseconds (integer, or a finite
/// float truncated) or an RFC 3339 string; `None` for anything else (the
/// value is consumed either way).
pub fn event_time(sc: &mut scan::Scanner<'_>) -> Result<Option<i64>, scan::ScanError> {
    use scan::{Kind, Num};
    Ok(match sc.kind()? {
        Kind::Number => match sc.number()? {
            Num::U(u) => i64::try_from(u).ok(),
            Num::I(i) => Some(i),
            Num::F(f) if f.is_finite() && f.abs() < 9.2e18 => Some(f as i64),
            Num::F(_) => None,
        },
        Kind::String => parse_rfc3339_ms(&sc.string()?),
        _ => {
            sc.skip()?;
            None
        }
    })
}

/// Checks an event time against the receive time.
pub fn check_ts(ts_ms: i64, now_ms: i64, cfg: &DecodeConfig) -> Result<(), Reject> {
    let (max_past_ms, max_future_ms) = (cfg.max_past.0.as_millis() as i64, cfg.max_future.0.as_millis() as i64);
    if ts_ms > now_ms.saturating_add(max_future_ms) || ts_ms < now_ms.saturating_sub(max_past_ms) {
        return Err(Reject::new(
            RejectReason::TsOutOfRange,
            format!("event time {ts_ms} ms is outside [now - {max_past_ms} ms, now + {max_future_ms} ms]"),
            None,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_zone_and_fraction() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_rfc3339_ms("1970-01-01T02:00:00+02:00"), Some(0));
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:00:00-01:00"), Some(0));
        assert_eq!(parse_rfc3339_ms("2024-05-06T07:08:09.123456Z"), Some(1_714_979_289_123));
        assert_eq!(parse_rfc3339_ms("2024-05-06"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        assert_eq!(parse_rfc3339_ms("2024-05-06T07:08:09+25:00"), None);
        // Found by the fuzzer: a multi-byte character where the offset would be.
        assert_eq!(parse_rfc3339_ms("2024-05-\u{ffc2}  Aa#\u{1c4d}A0a!"), None);
        assert_eq!(parse_rfc3339_ms("2024-05-06T07:08:09\u{e9}00:00"), None);
    }

    #[test]
    fn absurd_times_are_rejected() {
        let c = DecodeConfig::default();
        assert!(check_ts(1_000, 1_000, &c).is_ok());
        assert!(check_ts(1_000 + 3_600_001, 1_000, &c).is_err());
        assert!(check_ts(-31 * 86_400_000, 0, &c).is_err());
    }
}
