//! The latest values per vehicle and metric, for the latest table: a
//! PRIMARY KEY table `(vehicle_id, metric) → (ts, seq, event_order, value)`
//! loaded with `merge_condition: event_order`, so StarRocks applies a row
//! only when its event order is ≥ the stored one. A late sample can never
//! overwrite a newer value, whatever the batch, shard or epoch it rides in.
//!
//! - **Event order**: `ts_ms × 2⁶⁴ + seq` (a LARGEINT; seq 0 when the sample
//!   has none), so ties of event time go to the larger seq; equal orders go
//!   to the later load, as StarRocks' ≥ does.
//! - **Rows**: per vehicle, one row per configured metric the batch carried
//!   (the newest reading of it), and one row with the empty metric name
//!   (never a metric: the decoder refuses empty names) for the vehicle's
//!   newest sample of any metric, whose `ts` is the vehicle's last event
//!   time. One row per key per load: the batch keeps only the newest.
//! - A wide view (`rockfeed ddl`) pivots the table back to a row per vehicle.
//!
//! Pure state, no I/O.

use std::collections::HashMap;

use compact_str::CompactString;

use crate::decode::Sample;
use crate::model::MetricId;
use crate::sink::starrocks::encode::{LatestCsv, LatestRow};
use crate::util::hash::FastHash;

/// One key's newest: event time, seq, value (`None` for the any-metric row).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Newest {
    ts_ms: i64,
    seq: Option<u64>,
    value: Option<f64>,
}

impl Newest {
    /// `ts_ms × 2⁶⁴ + seq`: the table's `event_order`.
    fn order(&self) -> i128 {
        (i128::from(self.ts_ms) << 64) | i128::from(self.seq.unwrap_or(0))
    }

    /// Keeps `new` when it is at least as new (the later of equals, as StarRocks does).
    fn fold(cell: &mut Option<Newest>, new: Newest) {
        if cell.is_none_or(|c| new.order() >= c.order()) {
            *cell = Some(new);
        }
    }
}

/// A vehicle's newest sample and, per tracked metric, its newest reading.
type VehicleRow = (Option<Newest>, Vec<Option<Newest>>);

#[derive(Debug, Default)]
pub struct LatestTracker {
    /// Slot of each metric id among the configured metrics (`u16::MAX` = not tracked).
    slots: Vec<u16>,
    names: Vec<String>,
    rows: HashMap<CompactString, VehicleRow, FastHash>,
}

impl LatestTracker {
    pub fn new(metrics: &[String]) -> Self {
        LatestTracker { slots: Vec::new(), names: metrics.to_vec(), rows: HashMap::default() }
    }

    /// Tells the tracker which catalog id a configured metric has.
    pub fn bind(&mut self, name_of: impl Fn(MetricId) -> Option<String>, catalog_len: usize) {
        while self.slots.len() < catalog_len {
            let id = MetricId(self.slots.len() as u32);
            let slot =
                name_of(id).and_then(|n| self.names.iter().position(|m| *m == n)).map(|p| p as u16).unwrap_or(u16::MAX);
            self.slots.push(slot);
        }
    }

    /// Folds a sample in. Call [`LatestTracker::bind`] with the catalog first.
    pub fn add(&mut self, s: &Sample) {
        let n = self.names.len();
        let row = self.rows.entry(s.vin.clone()).or_insert_with(|| (None, vec![None; n]));
        Newest::fold(&mut row.0, Newest { ts_ms: s.ts_ms, seq: s.seq, value: None });
        if n == 0 {
            return;
        }
        for r in &s.readings {
            let Some(&slot) = self.slots.get(r.metric.0 as usize) else { continue };
            if slot == u16::MAX {
                continue;
            }
            Newest::fold(&mut row.1[slot as usize], Newest { ts_ms: s.ts_ms, seq: s.seq, value: Some(r.value) });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Encodes and forgets the batch ([`LatestCsv`]), sorted by vin then
    /// metric (the any-metric row first); returns the body and its rows.
    pub fn drain(&mut self) -> (Vec<u8>, u64) {
        let mut vehicles: Vec<_> = self.rows.drain().collect();
        vehicles.sort_by(|a, b| a.0.cmp(&b.0));
        let mut csv = LatestCsv::default();
        for (vin, (any, values)) in &vehicles {
            let mut cells: Vec<(&str, Newest)> = any.iter().map(|n| ("", *n)).collect();
            cells.extend(self.names.iter().zip(values).filter_map(|(m, v)| v.map(|v| (m.as_str(), v))));
            // "" sorts first.
            cells.sort_by(|x, y| x.0.cmp(y.0));
            for (metric, n) in cells {
                csv.push(&LatestRow {
                    vin,
                    metric,
                    ts_ms: n.ts_ms,
                    seq: n.seq,
                    event_order: n.order(),
                    value: n.value,
                });
            }
        }
        (csv.buf, csv.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Reading;

    fn sample(vin: &str, ts: i64, seq: Option<u64>, vals: &[(u32, f64)]) -> Sample {
        Sample {
            vin: vin.into(),
            ts_ms: ts,
            seq,
            readings: vals.iter().map(|(m, v)| Reading { metric: MetricId(*m), value: *v, is_bool: false }).collect(),
        }
    }

    #[test]
    fn newest_per_metric_by_event_time_then_seq_and_the_vehicles_newest_sample() {
        let mut t = LatestTracker::new(&["speed".into(), "soc".into()]);
        let names = ["rpm", "speed", "soc"];
        t.bind(|id| names.get(id.0 as usize).map(|s| s.to_string()), 3);
        t.add(&sample("B", 2_000, Some(7), &[(1, 10.0)]));
        t.add(&sample("B", 1_000, Some(9), &[(1, 99.0), (2, 50.5)])); // older: speed stays 10, soc from it
        t.add(&sample("B", 2_000, Some(6), &[(1, 11.0)])); // same time, smaller seq: speed stays 10
        t.add(&sample("A", 500, None, &[(0, 3000.0)])); // only an untracked metric
        let (body, rows) = t.drain();
        assert_eq!(rows, 4);
        let o = |ts: i64, seq: u64| ((i128::from(ts) << 64) | i128::from(seq)).to_string();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            format!(
                "A\x01\x011970-01-01 00:00:00.500000\x01\\N\x01{}\x01\\N\n\
                 B\x01\x011970-01-01 00:00:02\x017\x01{}\x01\\N\n\
                 B\x01soc\x011970-01-01 00:00:01\x019\x01{}\x0150.5\n\
                 B\x01speed\x011970-01-01 00:00:02\x017\x01{}\x0110.0\n",
                o(500, 0),
                o(2_000, 7),
                o(1_000, 9),
                o(2_000, 7)
            )
        );
        assert!(t.is_empty());
    }

    #[test]
    fn event_order_sorts_by_time_then_seq_also_before_1970() {
        let n = |ts, seq| Newest { ts_ms: ts, seq, value: None };
        assert!(n(1, Some(0)).order() > n(0, Some(u64::MAX)).order());
        assert!(n(0, Some(1)).order() > n(0, None).order());
        assert!(n(-1, Some(u64::MAX)).order() < n(0, None).order());
    }
}
