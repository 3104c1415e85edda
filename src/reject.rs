//! Every reason rockfeed refuses input or rows, what a refusal counts in,
//! and the counters by reason.
//!
//! One enum for the whole pipeline: the decoder's refusals, the
//! enrichment's, the shards' (too late, a field the CSV cannot carry) and
//! StarRocks' refusal of rows. Its `as_str` is the dead-letter record's
//! `reason` and the `reason` label of the `rockfeed_rejected_*_total`
//! families; the README's table of reasons is checked against
//! [`RejectReason::ALL`] by a test.
//!
//! A refusal counts in its own [`Unit`]: a whole message (nothing in it
//! could be located), a sample (vin, time or shape wrong: all its readings
//! go), readings (one bad value or name: the sample's other readings stay),
//! or aggregate rows (after aggregation). Separately, every refusal counts
//! the readings it took out of the stream where they could be counted, so
//! that readings accepted + readings refused = readings sent.

use std::collections::BTreeMap;

/// Why input or rows were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    MalformedJson,
    NotAnObject,
    Oversize,
    BadTopic,
    TooManySamples,
    MissingVin,
    BadVin,
    MissingTs,
    BadTs,
    TsOutOfRange,
    BadSeq,
    MissingValue,
    DuplicateKey,
    TooManyMetrics,
    UnknownVehicle,
    TooLate,
    BadValue,
    NonFinite,
    BadMetricName,
    MetricAdmission,
    CatalogFull,
    UnsafeField,
    LoadRejected,
}

/// What one refusal of a reason counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Messages,
    Samples,
    Readings,
    Rows,
}

impl Unit {
    pub const ALL: [Unit; 4] = [Unit::Messages, Unit::Samples, Unit::Readings, Unit::Rows];

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Messages => "messages",
            Unit::Samples => "samples",
            Unit::Readings => "readings",
            Unit::Rows => "rows",
        }
    }
}

impl RejectReason {
    pub const ALL: [RejectReason; 23] = [
        RejectReason::MalformedJson,
        RejectReason::NotAnObject,
        RejectReason::Oversize,
        RejectReason::BadTopic,
        RejectReason::TooManySamples,
        RejectReason::MissingVin,
        RejectReason::BadVin,
        RejectReason::MissingTs,
        RejectReason::BadTs,
        RejectReason::TsOutOfRange,
        RejectReason::BadSeq,
        RejectReason::MissingValue,
        RejectReason::DuplicateKey,
        RejectReason::TooManyMetrics,
        RejectReason::UnknownVehicle,
        RejectReason::TooLate,
        RejectReason::BadValue,
        RejectReason::NonFinite,
        RejectReason::BadMetricName,
        RejectReason::MetricAdmission,
        RejectReason::CatalogFull,
        RejectReason::UnsafeField,
        RejectReason::LoadRejected,
    ];

    /// The dead-letter `reason` and the counters' `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::Oversize => "payload_too_large",
            RejectReason::BadTopic => "bad_topic",
            RejectReason::TooManySamples => "too_many_samples",
            RejectReason::MissingVin => "missing_vin",
            RejectReason::BadVin => "bad_vin",
            RejectReason::MissingTs => "missing_ts",
            RejectReason::BadTs => "bad_ts",
            RejectReason::TsOutOfRange => "ts_out_of_range",
            RejectReason::BadSeq => "bad_seq",
            RejectReason::MissingValue => "missing_value",
            RejectReason::DuplicateKey => "duplicate_key",
            RejectReason::TooManyMetrics => "too_many_metrics",
            RejectReason::UnknownVehicle => "unknown_vehicle",
            RejectReason::TooLate => "too_late",
            RejectReason::BadValue => "bad_value",
            RejectReason::NonFinite => "non_finite",
            RejectReason::BadMetricName => "bad_metric_name",
            RejectReason::MetricAdmission => "metric_admission_limit",
            RejectReason::CatalogFull => "metric_catalog_full",
            RejectReason::UnsafeField => "unsafe_field",
            RejectReason::LoadRejected => "load_rejected",
        }
    }

    /// What one refusal counts in.
    pub fn unit(self) -> Unit {
        use RejectReason::*;
        match self {
            MalformedJson | Oversize | BadTopic | TooManySamples => Unit::Messages,
            NotAnObject | MissingVin | BadVin | MissingTs | BadTs | TsOutOfRange | BadSeq | MissingValue
            | DuplicateKey | TooManyMetrics | UnknownVehicle | TooLate => Unit::Samples,
            BadValue | NonFinite | BadMetricName | MetricAdmission | CatalogFull => Unit::Readings,
            UnsafeField | LoadRejected => Unit::Rows,
        }
    }

    /// The rule, in a line (the README's table).
    pub fn rule(self) -> &'static str {
        use RejectReason::*;
        match self {
            MalformedJson => "not JSON, or JSON broken off; samples before the break are kept",
            NotAnObject => "a wide payload or sample that is not an object, or `metrics` that is not one",
            Oversize => "payload over `decode.max_payload_bytes`",
            BadTopic => "a narrow topic that does not match `decode.topic_template`",
            TooManySamples => "an array payload of more than `decode.max_samples_per_message` samples",
            MissingVin => "no vin field",
            BadVin => "vin not a string, empty, over `decode.max_vin_bytes`, with a control character, or `\\N`",
            MissingTs => "no event time field",
            BadTs => "event time neither epoch milliseconds nor RFC 3339",
            TsOutOfRange => "event time beyond `decode.max_future` / `decode.max_past` of the receive time",
            BadSeq => "seq not an unsigned integer",
            MissingValue => "a narrow object payload without its value field (`decode.value_field`)",
            DuplicateKey => "a field rockfeed reads, or a metric name, twice in one sample",
            TooManyMetrics => "a sample of more than `decode.max_metrics_per_sample` metrics",
            UnknownVehicle => "vin not in the vehicle dimensions (`enrich.unknown_vehicle = \"dead-letter\"`)",
            TooLate => "event time behind the window's lateness bound (`window.max_lateness`)",
            BadValue => "a value that is not a number, boolean or null",
            NonFinite => "a number that overflows a double",
            BadMetricName => {
                "a metric name empty, over `decode.max_metric_name_bytes`, with a control character, or `\\N`"
            }
            MetricAdmission => {
                "a vehicle introduced more new metric names than `decode.new_metrics_per_vehicle` allows"
            }
            CatalogFull => "a new metric name while the catalog holds `decode.max_metrics` names",
            UnsafeField => "a dimension value the CSV body cannot carry (separator, newline, NUL, `\\N`)",
            LoadRejected => "rows StarRocks refused for what they hold (CSV with its column list, replayable)",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Refusals since start, by reason: how many (in the reason's unit) and
/// the readings they took out of the stream.
#[derive(Debug, Default)]
pub struct Rejections(parking_lot::Mutex<BTreeMap<RejectReason, Counted>>);

/// One reason's counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// Refusals, in the reason's unit (for readings: readings).
    pub count: u64,
    /// Readings refused with them (where they could be counted).
    pub readings: u64,
}

impl Rejections {
    /// Counts `count` refusals of `reason` (in its unit) that took
    /// `readings` readings out of the stream.
    pub fn add(&self, reason: RejectReason, count: u64, readings: u64) {
        let mut m = self.0.lock();
        let c = m.entry(reason).or_default();
        c.count += count;
        c.readings += readings;
    }

    /// The counts by reason.
    pub fn snapshot(&self) -> BTreeMap<RejectReason, Counted> {
        self.0.lock().clone()
    }

    /// Every refusal of every unit.
    pub fn total(&self) -> u64 {
        self.0.lock().values().map(|c| c.count).sum()
    }

    /// One reason's count.
    pub fn of(&self, reason: RejectReason) -> u64 {
        self.0.lock().get(&reason).map(|c| c.count).unwrap_or(0)
    }

    /// Readings refused, all reasons.
    pub fn readings(&self) -> u64 {
        self.0.lock().values().map(|c| c.readings).sum()
    }
}

/// The line before the README's table of reasons.
#[cfg(test)]
const README_MARKER: &str = "<!-- reasons: RejectReason::ALL";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_unique_and_listed_once() {
        let mut codes: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        codes.sort();
        let n = codes.len();
        codes.dedup();
        assert_eq!(codes.len(), n);
    }

    /// The README's table of reasons is the code's: every code, its unit
    /// and rule, in order, and nothing else (the rows after the marker).
    #[test]
    fn the_readme_lists_every_reason_with_its_unit() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let rows: Vec<&str> = readme
            .lines()
            .skip_while(|l| !l.starts_with(README_MARKER))
            .skip(3)
            .take_while(|l| l.starts_with('|'))
            .collect();
        let want: Vec<String> = RejectReason::ALL
            .iter()
            .map(|r| format!("| `{}` | {} | {} |", r.as_str(), r.unit().as_str(), r.rule()))
            .collect();
        assert_eq!(rows, want, "README's reasons table, after {README_MARKER}");
    }
}
