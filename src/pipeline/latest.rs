//! The latest value per vehicle, for the `vehicle_latest` table: `last_ts`
//! (MAX) and one REPLACE_IF_NOT_NULL column per configured metric.
//!
//! Per batch, each vehicle's row carries the newest event time seen and, for
//! each configured metric, the value with the newest event time in the batch
//! (`\N` for metrics the batch did not carry, so the table keeps the stored
//! value: sparse writes). Across batches the table applies versions in commit
//! order, so a late sample loaded in a later batch overwrites a newer value
//! it carries; `last_ts` stays right (MAX). Pure state, no I/O.

use std::collections::HashMap;

use compact_str::CompactString;

use crate::decode::Sample;
use crate::decode::catalog::MetricId;
use crate::starrocks::types::write_datetime;

use crate::sink::starrocks::encode::SEPARATOR;

/// A vehicle's newest event time and, per tracked metric, (event time, value).
type LatestRow = (i64, Vec<Option<(i64, f64)>>);

#[derive(Debug, Default)]
pub struct LatestTracker {
    /// Slot of each metric id among the configured metrics (`u16::MAX` = not tracked).
    slots: Vec<u16>,
    names: Vec<String>,
    rows: HashMap<CompactString, LatestRow>,
}

impl LatestTracker {
    pub fn new(metrics: &[String]) -> Self {
        LatestTracker { slots: Vec::new(), names: metrics.to_vec(), rows: HashMap::new() }
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
        let row = self.rows.entry(s.vin.clone()).or_insert_with(|| (i64::MIN, vec![None; n]));
        row.0 = row.0.max(s.ts_ms);
        if n == 0 {
            return;
        }
        for r in &s.readings {
            let Some(&slot) = self.slots.get(r.metric.0 as usize) else { continue };
            if slot == u16::MAX {
                continue;
            }
            let cell = &mut row.1[slot as usize];
            if cell.is_none_or(|(t, _)| s.ts_ms >= t) {
                *cell = Some((s.ts_ms, r.value));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The `columns` header.
    pub fn columns(&self) -> String {
        let mut c = vec!["`vehicle_id`".to_string(), "`last_ts`".into()];
        c.extend(self.names.iter().map(|n| format!("`{n}`")));
        c.join(",")
    }

    /// Encodes and forgets the batch: one CSV row per vehicle, sorted by vin.
    pub fn drain(&mut self) -> (Vec<u8>, u64) {
        let mut rows: Vec<_> = self.rows.drain().collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut b = Vec::new();
        for (vin, (ts, values)) in &rows {
            b.extend_from_slice(vin.as_bytes());
            b.push(SEPARATOR);
            let mut t = [0u8; 26];
            let n = write_datetime(&mut t, ts * 1000);
            b.extend_from_slice(&t[..n]);
            for v in values {
                b.push(SEPARATOR);
                match v {
                    Some((_, x)) => b.extend_from_slice(ryu::Buffer::new().format_finite(*x).as_bytes()),
                    None => b.extend_from_slice(b"\\N"),
                }
            }
            b.push(b'\n');
        }
        (b, rows.len() as u64)
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn newest_value_per_metric_and_null_for_absent_ones() {
        let mut t = LatestTracker::new(&["speed".into(), "soc".into()]);
        let names = ["rpm", "speed", "soc"];
        t.bind(|id| names.get(id.0 as usize).map(|s| s.to_string()), 3);
        t.add(&sample("B", 2_000, &[(1, 10.0)]));
        t.add(&sample("B", 1_000, &[(1, 99.0), (2, 50.5)])); // older: speed stays 10, soc from it
        t.add(&sample("A", 500, &[(0, 3000.0)])); // only an untracked metric
        assert_eq!(t.columns(), "`vehicle_id`,`last_ts`,`speed`,`soc`");
        let (body, rows) = t.drain();
        assert_eq!(rows, 2);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "A\x011970-01-01 00:00:00.500000\x01\\N\x01\\N\nB\x011970-01-01 00:00:02\x0110.0\x0150.5\n"
        );
        assert!(t.is_empty());
    }
}
