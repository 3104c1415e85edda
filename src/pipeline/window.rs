//! Tumbling event-time pre-aggregation: a pure state machine, no I/O.
//!
//! Readings are folded into `(vehicle, window start, metric, dims)` keys with
//! count / sum / min / max. The target is a StarRocks *Aggregate* table
//! (`cnt SUM, total SUM, min MIN, max MAX`), which merges partial rows on
//! the server, so the aggregator never holds a window open: every epoch
//! [`WindowAggregator::drain`]s what it has as partial rows, and a late reading
//! simply produces one more partial row for its window. Only readings older
//! than `max_lateness_ms` behind the newest event time seen are refused
//! (dead-lettered by the caller, counted here).
//!
//! Keys carry small integers: vehicles are interned per epoch, metrics come
//! interned from the decoder's catalog, dims are a row of the enrichment
//! snapshot (`NO_DIMS` when the vehicle is unknown). Equal keys fold in any
//! order to the same result, which `merge_is_order_independent` checks.

use std::collections::HashMap;

use compact_str::CompactString;

use crate::decode::Sample;
use crate::model::MetricId;
use crate::model::{Agg, PartialGroup};
use crate::util::hash::FastHash;

pub use crate::model::NO_DIMS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// Window width (default one minute).
    pub width_ms: i64,
    /// Readings older than this behind the newest event time are refused.
    pub max_lateness_ms: i64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig { width_ms: 60_000, max_lateness_ms: 86_400_000 }
    }
}

/// What happened to one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Its readings were folded in.
    Folded(usize),
    /// The sample is older than the lateness bound; nothing was folded.
    TooLate { watermark_ms: i64 },
}

/// The aggregates of one (vehicle, window, dims). A wide sample's readings
/// arrive in the fleet's metric order, so the metric at position p is
/// usually the one already at slot p: a compare instead of a lookup. The
/// index is built only when the order differs (narrow streams, new metrics).
#[derive(Debug)]
struct Group {
    vehicle: u32,
    window_start_ms: i64,
    dims: u32,
    metrics: Vec<MetricId>,
    aggs: Vec<Agg>,
    /// Metric → slot, valid when `indexed`.
    index: HashMap<MetricId, u32, FastHash>,
    indexed: bool,
}

impl Group {
    /// A group for a key, in the memory of a drained one when there is one
    /// (a narrow stream would otherwise grow every group's vectors and
    /// index from empty, every epoch).
    fn new(spare: &mut Vec<Group>, vehicle: u32, window_start_ms: i64, dims: u32) -> Group {
        match spare.pop() {
            Some(mut g) => {
                g.metrics.clear();
                g.aggs.clear();
                g.index.clear();
                g.indexed = false;
                Group { vehicle, window_start_ms, dims, ..g }
            }
            None => Group {
                vehicle,
                window_start_ms,
                dims,
                metrics: Vec::new(),
                aggs: Vec::new(),
                index: HashMap::default(),
                indexed: false,
            },
        }
    }

    #[inline]
    fn add(&mut self, pos: usize, metric: MetricId, v: f64) -> bool {
        if self.metrics.get(pos) == Some(&metric) {
            self.aggs[pos].add(v);
            return false;
        }
        if !self.indexed {
            self.index.extend(self.metrics.iter().enumerate().map(|(i, m)| (*m, i as u32)));
            self.indexed = true;
        }
        let index = &mut self.index;
        match index.get(&metric) {
            Some(&i) => {
                self.aggs[i as usize].add(v);
                false
            }
            None => {
                index.insert(metric, self.metrics.len() as u32);
                self.metrics.push(metric);
                self.aggs.push(Agg::one(v));
                true
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct WindowAggregator {
    cfg: WindowConfig,
    groups: Vec<Group>,
    /// Drained groups, their memory kept for the next epoch's.
    spare: Vec<Group>,
    by_key: HashMap<(u32, i64, u32), u32, FastHash>,
    vehicles: HashMap<CompactString, u32, FastHash>,
    vins: Vec<CompactString>,
    /// Distinct keys (partial rows) held.
    keys: usize,
    /// Newest event time seen (kept across epochs).
    max_ts_ms: i64,
    /// Readings folded since the last drain.
    pub readings: u64,
}

/// Start of the tumbling window containing `ts_ms`.
pub fn window_start(ts_ms: i64, width_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(width_ms)
}

impl WindowAggregator {
    pub fn new(cfg: WindowConfig) -> Self {
        WindowAggregator { cfg, max_ts_ms: i64::MIN, ..Default::default() }
    }

    /// The newest event time seen (`i64::MIN`: none): the lateness
    /// watermark a decision records for a rebuild of the next epoch.
    pub fn newest_ms(&self) -> i64 {
        self.max_ts_ms
    }

    /// Starts from a recorded watermark (a rebuild of a decided epoch
    /// refuses as too late exactly what the first run refused).
    pub fn seed(&mut self, newest_ms: i64) {
        self.max_ts_ms = self.max_ts_ms.max(newest_ms);
    }

    /// Folds a sample's readings in, with its dims row.
    pub fn add(&mut self, s: &Sample, dims: u32) -> Added {
        if self.max_ts_ms != i64::MIN && s.ts_ms < self.max_ts_ms - self.cfg.max_lateness_ms {
            return Added::TooLate { watermark_ms: self.max_ts_ms - self.cfg.max_lateness_ms };
        }
        self.max_ts_ms = self.max_ts_ms.max(s.ts_ms);
        let vehicle = match self.vehicles.get(s.vin.as_str()) {
            Some(v) => *v,
            None => {
                let v = self.vins.len() as u32;
                self.vins.push(s.vin.clone());
                self.vehicles.insert(s.vin.clone(), v);
                v
            }
        };
        let window_start_ms = window_start(s.ts_ms, self.cfg.width_ms);
        let (groups, spare) = (&mut self.groups, &mut self.spare);
        let g = *self.by_key.entry((vehicle, window_start_ms, dims)).or_insert_with(|| {
            groups.push(Group::new(spare, vehicle, window_start_ms, dims));
            (groups.len() - 1) as u32
        });
        let group = &mut self.groups[g as usize];
        for (pos, r) in s.readings.iter().enumerate() {
            if group.add(pos, r.metric, r.value) {
                self.keys += 1;
            }
        }
        self.readings += s.readings.len() as u64;
        Added::Folded(s.readings.len())
    }

    /// Distinct keys (partial rows) held.
    pub fn len(&self) -> usize {
        self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// Calls `emit` for every group of partial rows, then forgets them (the
    /// epoch's vehicles too). Groups come sorted by (vin, window, dims) and
    /// rows in arrival order of their metrics, so a body is a deterministic
    /// function of the input.
    pub fn drain(&mut self, mut emit: impl FnMut(PartialGroup<'_>)) {
        let vins = &self.vins;
        self.groups.sort_unstable_by(|a, b| {
            (vins[a.vehicle as usize].as_str(), a.window_start_ms, a.dims).cmp(&(
                vins[b.vehicle as usize].as_str(),
                b.window_start_ms,
                b.dims,
            ))
        });
        for g in &self.groups {
            if g.aggs.is_empty() {
                continue;
            }
            emit(PartialGroup {
                vin: &vins[g.vehicle as usize],
                window_start_ms: g.window_start_ms,
                dims: g.dims,
                metrics: &g.metrics,
                aggs: &g.aggs,
            });
        }
        // Kept for the next epoch: as many as this one used, no more.
        self.spare.clear();
        self.spare.append(&mut self.groups);
        self.by_key.clear();
        self.vehicles.clear();
        self.vins.clear();
        self.keys = 0;
        self.readings = 0;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::decode::Reading;

    fn sample(vin: &str, ts: i64, vals: &[(u32, f64)]) -> Sample {
        Sample {
            vin: vin.into(),
            ts_ms: ts,
            seq: None,
            readings: vals.iter().map(|(m, v)| Reading { metric: MetricId(*m), value: *v, is_bool: false }).collect(),
        }
    }

    fn drained(a: &mut WindowAggregator) -> Vec<(String, i64, u32, Agg)> {
        let mut out = Vec::new();
        a.drain(|g| {
            for (m, agg) in g.metrics.iter().zip(g.aggs) {
                out.push((g.vin.to_string(), g.window_start_ms, m.0, *agg));
            }
        });
        out
    }

    #[test]
    fn readings_fold_per_vehicle_window_and_metric() {
        let mut a = WindowAggregator::new(WindowConfig::default());
        a.add(&sample("A", 60_000, &[(0, 1.0), (1, 10.0)]), NO_DIMS);
        // Another order of metrics in the same group: found through the index.
        a.add(&sample("A", 119_999, &[(1, 0.5), (0, 3.0)]), NO_DIMS);
        a.add(&sample("A", 120_000, &[(0, 5.0)]), NO_DIMS);
        a.add(&sample("B", 60_500, &[(0, -2.0)]), NO_DIMS);
        let rows = drained(&mut a);
        assert_eq!(
            rows,
            vec![
                ("A".into(), 60_000, 0, Agg { cnt: 2, sum: 4.0, min: 1.0, max: 3.0 }),
                ("A".into(), 60_000, 1, Agg { cnt: 2, sum: 10.5, min: 0.5, max: 10.0 }),
                ("A".into(), 120_000, 0, Agg { cnt: 1, sum: 5.0, min: 5.0, max: 5.0 }),
                ("B".into(), 60_000, 0, Agg { cnt: 1, sum: -2.0, min: -2.0, max: -2.0 }),
            ]
        );
        assert!(a.is_empty());
    }

    #[test]
    fn keys_count_distinct_partial_rows() {
        let mut a = WindowAggregator::new(WindowConfig::default());
        a.add(&sample("A", 0, &[(0, 1.0), (1, 1.0)]), NO_DIMS);
        a.add(&sample("A", 1, &[(0, 1.0), (1, 1.0), (2, 1.0)]), NO_DIMS);
        a.add(&sample("A", 2, &[(0, 1.0)]), 3);
        assert_eq!((a.len(), a.readings), (4, 6));
    }

    #[test]
    fn late_readings_make_extra_partial_rows_until_the_bound() {
        let mut a = WindowAggregator::new(WindowConfig { width_ms: 60_000, max_lateness_ms: 600_000 });
        a.add(&sample("A", 1_000_000, &[(0, 1.0)]), NO_DIMS);
        drained(&mut a);
        // Same window again in a later epoch: one more partial row.
        assert_eq!(a.add(&sample("A", 1_000_001, &[(0, 2.0)]), NO_DIMS), Added::Folded(1));
        assert_eq!(drained(&mut a).len(), 1);
        // Older than the bound behind the newest event time: refused.
        assert_eq!(a.add(&sample("A", 399_999, &[(0, 9.0)]), NO_DIMS), Added::TooLate { watermark_ms: 400_001 });
    }

    #[test]
    fn merge_is_order_independent() {
        // Folding in any order, and merging partials, gives the same aggregate.
        let vals = [3.5, -1.0, 8.25, 0.0, 2.0, 7.75];
        let mut whole = WindowAggregator::new(WindowConfig::default());
        for v in vals {
            whole.add(&sample("A", 0, &[(0, v)]), 7);
        }
        let w = drained(&mut whole)[0].3;
        let mut rev = WindowAggregator::new(WindowConfig::default());
        for v in vals.iter().rev() {
            rev.add(&sample("A", 0, &[(0, *v)]), 7);
        }
        assert_eq!(drained(&mut rev)[0].3, w);
        let mut parts = WindowAggregator::new(WindowConfig::default());
        let mut merged: Option<Agg> = None;
        for chunk in vals.chunks(2) {
            for v in chunk {
                parts.add(&sample("A", 0, &[(0, *v)]), 7);
            }
            let p = drained(&mut parts)[0].3;
            merged.get_or_insert(Agg { cnt: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY }).merge(&p);
        }
        assert_eq!(merged.unwrap(), w);
    }

    proptest! {
        /// Any readings, folded in any order and drained at any points (the
        /// epochs), merge on the table into the aggregates of one in-order
        /// fold. Values are whole numbers, so sums are exact in any order.
        #[test]
        fn partial_rows_merge_to_the_same_aggregates_in_any_order_and_epochs(
            readings in prop::collection::vec((0u8..4, 0i64..300_000, 0u32..5, -1000i32..1000), 1..200)
                .prop_flat_map(|r| (Just(r.clone()), Just(r).prop_shuffle())),
            cuts in prop::collection::vec(0usize..200, 0..6),
        ) {
            let (ordered, shuffled) = readings;
            let fold = |rs: &[(u8, i64, u32, i32)], cuts: &[usize]| {
                let mut a = WindowAggregator::new(WindowConfig::default());
                let mut table: std::collections::BTreeMap<(String, i64, u32), Agg> = Default::default();
                let mut put = |a: &mut WindowAggregator| {
                    for (vin, w, m, agg) in drained(a) {
                        table
                            .entry((vin, w, m))
                            .or_insert(Agg { cnt: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY })
                            .merge(&agg);
                    }
                };
                for (i, (vin, ts, m, v)) in rs.iter().enumerate() {
                    if cuts.contains(&i) {
                        put(&mut a);
                    }
                    a.add(&sample(&format!("V{vin}"), *ts, &[(*m, *v as f64)]), NO_DIMS);
                }
                put(&mut a);
                table
            };
            prop_assert_eq!(fold(&shuffled, &cuts), fold(&ordered, &[]));
        }
    }

    #[test]
    fn window_start_handles_negative_times() {
        assert_eq!(window_start(-1, 60_000), -60_000);
        assert_eq!(window_start(59_999, 60_000), 0);
    }
}
