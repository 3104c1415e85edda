//! The metric catalog: metric names interned to small integer ids, once.
//!
//! The hot path carries `MetricId`s, never names; a name is hashed only at
//! the catalog lookup of each decoded key. The catalog is bounded
//! (`max_metrics`), and a new name must earn its place:
//! - **Valid**: non-empty, at most `max_name_bytes` (the key column is a
//!   VARCHAR(128)), no control character (the CSV body's separator is one),
//!   not `\N` (NULL in the body). Each rule has its own refusal text.
//! - **Admitted per vehicle**: each vehicle may introduce new names from a
//!   budget of `NewNames::burst`, refilled at `NewNames::per_hour`. A fleet
//!   introduces its metrics once, spread over its vehicles; a vehicle that
//!   invents names (a bug or an attack) is stopped at its budget, so a few
//!   of them cannot fill the catalog for everyone. Known names are never
//!   refused. The budget's clock is the message's receive time.
//! - **Bounded**: at `max_metrics` names, new ones are refused.

use std::collections::HashMap;

use compact_str::CompactString;

use crate::model::MetricId;
use crate::util::hash::FastHash;

/// How many new names a vehicle may introduce (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewNames {
    pub burst: u32,
    pub per_hour: u32,
}

impl Default for NewNames {
    fn default() -> Self {
        NewNames { burst: 5_000, per_hour: 500 }
    }
}

/// The catalog's bounds (`[decode]` keys).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_metrics: usize,
    pub max_name_bytes: usize,
    pub new_names: NewNames,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_metrics: 100_000, max_name_bytes: MAX_METRIC_NAME, new_names: NewNames::default() }
    }
}

/// Vehicles whose budget is tracked at most (past it, vehicles with a full
/// budget are forgotten: they are indistinguishable from new ones).
const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
pub struct MetricCatalog {
    ids: HashMap<Box<str>, MetricId, FastHash>,
    names: Vec<Box<str>>,
    max: usize,
    max_name_bytes: usize,
    new_names: NewNames,
    /// Vehicle → (budget left, at ms).
    budgets: HashMap<CompactString, (f64, i64), FastHash>,
    /// The metric seen at each position of the previous wide sample. A fleet
    /// sends its metrics in a stable order, so comparing the name at the same
    /// position (a short memcmp) usually replaces the hash lookup.
    order: Vec<MetricId>,
}

/// Why a new name was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("metric name '{name}' {rule}")]
    BadName { name: String, rule: String },
    #[error("vin {vin} introduced more new metric names than its budget ({burst}, refilled {per_hour}/h): '{name}'")]
    Admission { vin: String, name: String, burst: u32, per_hour: u32 },
    #[error("the metric catalog is full ({max} names): '{name}'")]
    Full { name: String, max: usize },
}

impl Refused {
    pub fn reason(&self) -> crate::reject::RejectReason {
        use crate::reject::RejectReason;
        match self {
            Refused::BadName { .. } => RejectReason::BadMetricName,
            Refused::Admission { .. } => RejectReason::MetricAdmission,
            Refused::Full { .. } => RejectReason::CatalogFull,
        }
    }
}

/// Longest metric name possible (it becomes a VARCHAR(128) key column).
pub const MAX_METRIC_NAME: usize = 128;

/// Why `name` cannot be a metric name (or a vin: the same rules keep the
/// CSV body sound), `None` when it can.
pub fn name_rule(name: &str, max_bytes: usize) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > max_bytes {
        return Some(format!("is {} bytes, over the limit of {max_bytes}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Some(format!("holds the control character U+{:04X}", c as u32));
    }
    if name == "\\N" {
        return Some("is \\N, which the CSV body reads as NULL".into());
    }
    None
}

fn shown(name: &str) -> String {
    visible(name, MAX_METRIC_NAME)
}

/// At most `max` characters of `s` for a refusal's detail, control
/// characters written as escapes (`\t`, `\u{1}`): a detail goes to log
/// lines and dead letters, where a raw tab or newline would mislead.
pub fn visible(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars().take(max) {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

impl MetricCatalog {
    /// A catalog of at most `max_metrics` names with the default name rules
    /// and per-vehicle budget.
    pub fn new(max_metrics: usize) -> Self {
        Self::with_limits(Limits { max_metrics, ..Limits::default() })
    }

    pub fn with_limits(l: Limits) -> Self {
        MetricCatalog {
            ids: HashMap::default(),
            names: Vec::new(),
            max: l.max_metrics,
            max_name_bytes: l.max_name_bytes.min(MAX_METRIC_NAME),
            new_names: l.new_names,
            budgets: HashMap::default(),
            order: Vec::new(),
        }
    }

    /// The id of a known name.
    pub fn get(&self, name: &str) -> Option<MetricId> {
        self.ids.get(name).copied()
    }

    /// Like [`MetricCatalog::get`] for the metric at position `pos` of a
    /// wide sample, predicting it from the previous sample's order.
    pub fn get_at(&mut self, pos: usize, name: &str) -> Option<MetricId> {
        if let Some(&id) = self.order.get(pos)
            && &*self.names[id.0 as usize] == name
        {
            return Some(id);
        }
        let id = self.get(name)?;
        self.remember_at(pos, id);
        Some(id)
    }

    fn remember_at(&mut self, pos: usize, id: MetricId) {
        if pos < self.order.len() {
            self.order[pos] = id;
        } else if pos == self.order.len() && pos < 65_536 {
            self.order.push(id);
        }
    }

    /// The id of `name` for vehicle `vin` at `now_ms`: a known name, or a
    /// new one admitted (see the module doc).
    pub fn admit(&mut self, vin: &str, name: &str, now_ms: i64) -> Result<MetricId, Refused> {
        if let Some(id) = self.get(name) {
            return Ok(id);
        }
        if let Some(rule) = name_rule(name, self.max_name_bytes) {
            return Err(Refused::BadName { name: shown(name), rule });
        }
        if self.names.len() >= self.max {
            return Err(Refused::Full { name: shown(name), max: self.max });
        }
        let NewNames { burst, per_hour } = self.new_names;
        if self.budgets.len() >= MAX_TRACKED && !self.budgets.contains_key(vin) {
            // Forget vehicles whose budget has refilled.
            let full = |&(left, at): &(f64, i64)| left + (now_ms - at).max(0) as f64 * per_hour as f64 / 3.6e6;
            self.budgets.retain(|_, b| full(b) < burst as f64);
        }
        let b = self.budgets.entry(CompactString::from(vin)).or_insert((burst as f64, now_ms));
        let refill = (now_ms - b.1).max(0) as f64 * per_hour as f64 / 3.6e6;
        *b = ((b.0 + refill).min(burst as f64), now_ms.max(b.1));
        if b.0 < 1.0 {
            return Err(Refused::Admission { vin: vin.into(), name: shown(name), burst, per_hour });
        }
        b.0 -= 1.0;
        let id = MetricId(self.names.len() as u32);
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        Ok(id)
    }

    /// [`MetricCatalog::admit`], then remembered at position `pos`.
    pub fn admit_at(&mut self, pos: usize, vin: &str, name: &str, now_ms: i64) -> Result<MetricId, Refused> {
        let id = self.admit(vin, name, now_ms)?;
        self.remember_at(pos, id);
        Ok(id)
    }

    pub fn name(&self, id: MetricId) -> &str {
        &self.names[id.0 as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_intern_to_stable_ids_and_the_catalog_is_bounded() {
        let mut c = MetricCatalog::new(2);
        let a = c.admit("V", "speed", 0).unwrap();
        assert_eq!(c.admit("W", "speed", 0).unwrap(), a);
        let b = c.admit("V", "rpm", 0).unwrap();
        assert_ne!(a, b);
        assert_eq!(c.name(b), "rpm");
        assert!(matches!(c.admit("V", "soc", 0), Err(Refused::Full { max: 2, .. })));
        assert_eq!(c.admit("V", "speed", 0).unwrap(), a, "known names still resolve when full");
    }

    #[test]
    fn each_bad_name_is_refused_for_the_rule_it_breaks() {
        let mut c = MetricCatalog::new(10);
        for (name, rule) in [
            ("", "is empty"),
            (&"x".repeat(129)[..], "is 129 bytes, over the limit of 128"),
            ("tab\there", "holds the control character U+0009"),
            ("bad\x01name", "holds the control character U+0001"),
            ("line\nbreak", "holds the control character U+000A"),
            ("\\N", "is \\N, which the CSV body reads as NULL"),
        ] {
            match c.admit("V", name, 0) {
                Err(Refused::BadName { rule: r, .. }) => assert_eq!(r, rule, "{name:?}"),
                other => panic!("{name:?}: {other:?}"),
            }
        }
        // Quotes, spaces and non-ASCII letters are fine in a metric name.
        for ok in ["door \"front\"", "température", "a,b;c"] {
            c.admit("V", ok, 0).unwrap();
        }
        assert!(c.len() == 3);
        let mut short = MetricCatalog::with_limits(Limits { max_name_bytes: 8, ..Limits::default() });
        assert!(matches!(short.admit("V", "ninebytes", 0), Err(Refused::BadName { .. })));
    }

    /// A few vehicles inventing names cannot fill the catalog for the fleet:
    /// each is stopped at its budget, and another vehicle's new metric loads.
    #[test]
    fn a_flood_of_names_from_a_few_vehicles_spends_only_their_budget() {
        let new_names = NewNames { burst: 100, per_hour: 10 };
        let mut c = MetricCatalog::with_limits(Limits { max_metrics: 1_000, max_name_bytes: 128, new_names });
        for vin in ["JUNK1", "JUNK2", "JUNK3"] {
            let admitted = (0..5_000).filter(|i| c.admit(vin, &format!("{vin}_{i}"), 0).is_ok()).count();
            assert_eq!(admitted, 100, "{vin}");
            assert!(matches!(c.admit(vin, "one_more", 0), Err(Refused::Admission { burst: 100, .. })));
        }
        assert_eq!(c.len(), 300);
        c.admit("GOOD", "battery.soc", 0).expect("a legitimate new metric from another vehicle");
        // Known names are never refused, whatever the budget.
        assert!(c.admit("JUNK1", "battery.soc", 0).is_ok());
        // The budget refills: 10 an hour.
        assert!(c.admit("JUNK1", "later", 360_000 - 1).is_err());
        assert!(c.admit("JUNK1", "later", 360_000).is_ok());
    }

    #[test]
    fn positional_prediction_agrees_with_the_hash_lookup() {
        let mut c = MetricCatalog::new(100);
        let order1 = ["a", "b", "c"];
        let ids1: Vec<MetricId> = order1.iter().enumerate().map(|(i, n)| c.admit_at(i, "V", n, 0).unwrap()).collect();
        // Same order: predicted; shuffled order: still the same ids.
        let again: Vec<MetricId> = order1.iter().enumerate().map(|(i, n)| c.get_at(i, n).unwrap()).collect();
        assert_eq!(ids1, again);
        for (i, n) in ["c", "a", "d", "b"].iter().enumerate() {
            assert_eq!(c.admit_at(i, "V", n, 0).unwrap(), c.get(n).unwrap());
        }
    }
}
