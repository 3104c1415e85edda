//! The ledger of what was sent, and its comparison with what landed.
//!
//! Per (vin, window start, metric): count, sum, min and max of the readings
//! sent, exactly the columns of rockfeed's aggregate table, so an audit can
//! say per key whether readings are missing (landed count lower), duplicated
//! (landed count higher) or changed (same count, other values). Per vehicle:
//! the last seq and the newest event time (the `last_ts` of
//! `vehicle_latest_wide`), and the newest value of each latest metric.
//!
//! The sent file is tab-separated text, sorted, one record per line:
//!
//! ```text
//! # loadgen sent v1 window_ms=60000
//! T <vin> <window_start_ms> <metric> <cnt> <sum> <min> <max>
//! V <vin> <last_seq> <last_ts_ms> <samples> <newest value of each latest metric>…
//! ```
//!
//! The latest metrics are the first [`LATEST`] of the catalogue (`speed`,
//! `soc`, `odometer`: dense, so every sample carries them), the columns a
//! `vehicle_latest` table holds.
//!
//! Floats are written in Rust's shortest round-trip form, so reading the
//! file back gives the very same values.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use crate::fleet::Metric;

/// count/sum/min/max of one key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    pub cnt: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Agg {
    pub fn one(v: f64) -> Agg {
        Agg { cnt: 1, sum: v, min: v, max: v }
    }

    pub fn merge(&mut self, o: &Agg) {
        self.cnt += o.cnt;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// How many leading catalogue metrics the ledger keeps the newest value of.
pub const LATEST: usize = 3;

/// Per vehicle: last seq, newest event time, samples, newest values of the
/// latest metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VehicleSent {
    pub last_seq: u64,
    pub last_ts_ms: i64,
    pub samples: u64,
    /// (event time, value) of the newest reading of catalogue metric i.
    pub latest: [Option<(i64, f64)>; LATEST],
    /// The seq of the sample being recorded, and of each newest reading:
    /// ties of event time go to the larger seq, as rockfeed's latest table
    /// orders them (kept in memory only; the sent file holds the outcome).
    pub cur_seq: u64,
    pub latest_seq: [u64; LATEST],
}

/// What was sent.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub window_ms: i64,
    vin_ids: HashMap<String, u32>,
    pub vins: Vec<String>,
    metric_ids: HashMap<String, u32>,
    pub metrics: Vec<String>,
    /// (vin id, window start, metric id) → aggregate.
    pub keys: HashMap<(u32, i64, u32), Agg>,
    /// By vin id.
    pub vehicles: Vec<VehicleSent>,
    readings: u64,
}

fn window_start(ts: i64, w: i64) -> i64 {
    ts - ts.rem_euclid(w)
}

impl Ledger {
    /// An empty ledger for a catalogue, windows of `window_ms`.
    pub fn new(metrics: &[Metric], window_ms: i64) -> Self {
        let mut l = Ledger { window_ms: window_ms.max(1), ..Default::default() };
        for m in metrics {
            l.metric_id(&m.name);
        }
        l
    }

    /// The id of `vin`, interned on first use (the string is hashed once per
    /// sample, not once per reading).
    pub fn vehicle(&mut self, vin: &str) -> u32 {
        if let Some(&i) = self.vin_ids.get(vin) {
            return i;
        }
        let i = self.vins.len() as u32;
        self.vin_ids.insert(vin.to_string(), i);
        self.vins.push(vin.to_string());
        self.vehicles.push(VehicleSent::default());
        i
    }

    fn metric_id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.metric_ids.get(name) {
            return i;
        }
        let i = self.metrics.len() as u32;
        self.metric_ids.insert(name.to_string(), i);
        self.metrics.push(name.to_string());
        i
    }

    /// Records a sample header of vehicle `vid` (from [`Ledger::vehicle`]).
    pub fn sample(&mut self, vid: u32, seq: u64, ts_ms: i64) {
        let v = &mut self.vehicles[vid as usize];
        if v.samples == 0 || seq >= v.last_seq {
            v.last_seq = seq;
        }
        v.last_ts_ms = if v.samples == 0 { ts_ms } else { v.last_ts_ms.max(ts_ms) };
        v.cur_seq = seq;
        v.samples += 1;
    }

    /// Records one reading of vehicle `v` (from [`Ledger::vehicle`]) and
    /// metric `metric` (catalogue index).
    pub fn reading(&mut self, v: u32, metric: u32, ts_ms: i64, value: f64) {
        let veh = &mut self.vehicles[v as usize];
        let seq = veh.cur_seq;
        if let Some(l) = veh.latest.get_mut(metric as usize)
            && l.is_none_or(|(t, _)| (ts_ms, seq) >= (t, veh.latest_seq[metric as usize]))
        {
            *l = Some((ts_ms, value));
            veh.latest_seq[metric as usize] = seq;
        }
        let key = (v, window_start(ts_ms, self.window_ms), metric);
        self.keys.entry(key).and_modify(|a| a.merge(&Agg::one(value))).or_insert_with(|| Agg::one(value));
        self.readings += 1;
    }

    /// Readings recorded.
    pub fn readings(&self) -> u64 {
        self.readings
    }

    /// Writes the sent file.
    pub fn save(&self, w: &mut impl Write) -> std::io::Result<()> {
        writeln!(w, "# loadgen sent v1 window_ms={}", self.window_ms)?;
        let mut keys: Vec<_> = self.keys.iter().collect();
        keys.sort_by(|a, b| {
            (&self.vins[a.0.0 as usize], a.0.1, &self.metrics[a.0.2 as usize]).cmp(&(
                &self.vins[b.0.0 as usize],
                b.0.1,
                &self.metrics[b.0.2 as usize],
            ))
        });
        for ((v, win, m), a) in keys {
            let (vin, metric) = (&self.vins[*v as usize], &self.metrics[*m as usize]);
            writeln!(w, "T\t{vin}\t{win}\t{metric}\t{}\t{}\t{}\t{}", a.cnt, a.sum, a.min, a.max)?;
        }
        let mut vs: Vec<usize> = (0..self.vins.len()).collect();
        vs.sort_by(|a, b| self.vins[*a].cmp(&self.vins[*b]));
        for i in vs {
            let v = &self.vehicles[i];
            if v.samples > 0 {
                write!(w, "V\t{}\t{}\t{}\t{}", self.vins[i], v.last_seq, v.last_ts_ms, v.samples)?;
                for l in v.latest {
                    match l {
                        Some((t, x)) => write!(w, "\t{t}:{x}")?,
                        None => write!(w, "\t-")?,
                    }
                }
                writeln!(w)?;
            }
        }
        Ok(())
    }

    /// Reads a sent file back.
    pub fn load(r: impl BufRead) -> Result<Ledger, String> {
        let mut l = Ledger::default();
        for (n, line) in r.lines().enumerate() {
            let line = line.map_err(|e| e.to_string())?;
            let bad = |what: &str| format!("sent file line {}: {what}: {line:?}", n + 1);
            if let Some(h) = line.strip_prefix("# loadgen sent v1 window_ms=") {
                l.window_ms = h.trim().parse().map_err(|_| bad("bad header"))?;
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["T", vin, win, metric, cnt, sum, min, max] => {
                    let num = |s: &str| s.parse::<f64>().map_err(|_| bad("bad number"));
                    let a = Agg {
                        cnt: cnt.parse().map_err(|_| bad("bad count"))?,
                        sum: num(sum)?,
                        min: num(min)?,
                        max: num(max)?,
                    };
                    let key = (l.vehicle(vin), win.parse().map_err(|_| bad("bad window"))?, l.metric_id(metric));
                    l.readings += a.cnt;
                    l.keys.insert(key, a);
                }
                ["V", vin, seq, ts, samples, latest @ ..] if latest.len() == LATEST => {
                    let i = l.vehicle(vin) as usize;
                    let mut v = VehicleSent {
                        last_seq: seq.parse().map_err(|_| bad("bad seq"))?,
                        last_ts_ms: ts.parse().map_err(|_| bad("bad ts"))?,
                        samples: samples.parse().map_err(|_| bad("bad sample count"))?,
                        latest: [None; LATEST],
                        ..Default::default()
                    };
                    for (slot, text) in v.latest.iter_mut().zip(latest) {
                        if *text != "-" {
                            let (t, x) = text.split_once(':').ok_or_else(|| bad("bad latest value"))?;
                            *slot =
                                Some((t.parse().map_err(|_| bad("bad ts"))?, x.parse().map_err(|_| bad("bad value"))?));
                        }
                    }
                    l.vehicles[i] = v;
                }
                [""] => {}
                _ => return Err(bad("unknown record")),
            }
        }
        if l.window_ms == 0 {
            return Err("sent file has no `# loadgen sent v1` header".into());
        }
        Ok(l)
    }
}

/// One aggregate row as it landed (dims already summed over).
#[derive(Debug, Clone, PartialEq)]
pub struct LandedRow {
    pub vin: String,
    pub window_ms: i64,
    pub metric: String,
    pub agg: Agg,
}

/// The comparison of one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableAudit {
    pub table: String,
    pub keys_sent: u64,
    pub records_sent: u64,
    pub records_landed: u64,
    /// Readings sent but not landed (summed over keys whose count fell short).
    pub missing: u64,
    /// Readings landed more often than sent.
    pub duplicated: u64,
    /// Keys with the right count and other sum/min/max, or keys never sent.
    pub mismatched: u64,
    /// The first differences, for the operator.
    pub examples: Vec<String>,
}

impl TableAudit {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicated == 0 && self.mismatched == 0
    }

    fn note(&mut self, s: String) {
        if self.examples.len() < 20 {
            self.examples.push(s);
        }
    }
}

impl std::fmt::Display for TableAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} keys, {} records sent, {} landed, {} missing, {} duplicated, {} mismatched: {}",
            self.table,
            self.keys_sent,
            self.records_sent,
            self.records_landed,
            self.missing,
            self.duplicated,
            self.mismatched,
            if self.ok() { "OK" } else { "MISMATCH" }
        )
    }
}

/// Compares the aggregate table's rows with the ledger.
pub fn audit_aggregates(table: &str, sent: &Ledger, rows: impl IntoIterator<Item = LandedRow>) -> TableAudit {
    let mut landed: HashMap<(String, i64, String), Agg> = HashMap::new();
    for r in rows {
        landed.entry((r.vin, r.window_ms, r.metric)).and_modify(|a| a.merge(&r.agg)).or_insert(r.agg);
    }
    let mut a = TableAudit { table: table.into(), keys_sent: sent.keys.len() as u64, ..Default::default() };
    a.records_landed = landed.values().map(|x| x.cnt).sum();
    for ((v, win, m), want) in &sent.keys {
        a.records_sent += want.cnt;
        let key = (sent.vins[*v as usize].clone(), *win, sent.metrics[*m as usize].clone());
        match landed.remove(&key) {
            None => {
                a.missing += want.cnt;
                a.note(format!("missing {key:?}: {} readings", want.cnt));
            }
            Some(got) if got.cnt < want.cnt => {
                a.missing += want.cnt - got.cnt;
                a.note(format!("{key:?}: {} of {} readings landed", got.cnt, want.cnt));
            }
            Some(got) if got.cnt > want.cnt => {
                a.duplicated += got.cnt - want.cnt;
                a.note(format!("{key:?}: {} readings landed, {} sent", got.cnt, want.cnt));
            }
            Some(got) if got != *want => {
                a.mismatched += 1;
                a.note(format!("{key:?}: landed {got:?}, sent {want:?}"));
            }
            Some(_) => {}
        }
    }
    for (key, got) in landed {
        a.mismatched += 1;
        a.duplicated += got.cnt;
        a.note(format!("{key:?}: landed {} readings that were never sent", got.cnt));
    }
    a
}

/// One `vehicle_latest` row: vin, `last_ts` (ms) and the metric columns it has.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestRow {
    pub vin: String,
    pub last_ts_ms: i64,
    pub values: Vec<(String, Option<f64>)>,
}

/// Compares `vehicle_latest` with the ledger: per vehicle the newest event
/// time, and for each latest metric the table has a column for, the newest
/// value sent.
pub fn audit_latest(table: &str, sent: &Ledger, rows: impl IntoIterator<Item = LatestRow>) -> TableAudit {
    let mut landed: HashMap<String, LatestRow> = rows.into_iter().map(|r| (r.vin.clone(), r)).collect();
    // The metrics the table tracks: any it holds a value of (a vehicle
    // without a row for one of them has no value of it).
    let tracked: std::collections::HashSet<String> =
        landed.values().flat_map(|r| r.values.iter().map(|(c, _)| c.clone())).collect();
    let mut a = TableAudit { table: table.into(), records_landed: landed.len() as u64, ..Default::default() };
    for (i, v) in sent.vehicles.iter().enumerate().filter(|(_, v)| v.samples > 0) {
        a.keys_sent += 1;
        a.records_sent += 1;
        let vin = &sent.vins[i];
        let Some(row) = landed.remove(vin) else {
            a.missing += 1;
            a.note(format!("{vin}: no row"));
            continue;
        };
        if row.last_ts_ms != v.last_ts_ms {
            a.mismatched += 1;
            a.note(format!("{vin}: last_ts {}, newest sent {}", row.last_ts_ms, v.last_ts_ms));
            continue;
        }
        for (m, newest) in v.latest.iter().enumerate() {
            let Some(name) = sent.metrics.get(m) else { continue };
            if !tracked.contains(name) {
                continue;
            }
            let got = row.values.iter().find(|(c, _)| c == name).and_then(|(_, v)| *v);
            if got != newest.map(|(_, x)| x) {
                a.mismatched += 1;
                a.note(format!("{vin}.{name}: {got:?}, newest sent {:?}", newest.map(|(_, x)| x)));
            }
        }
    }
    for (vin, _) in landed {
        a.mismatched += 1;
        a.note(format!("{vin}: a row for a vehicle that sent nothing"));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::catalogue;

    fn ledger() -> Ledger {
        let mut l = Ledger::new(&catalogue(3), 60_000);
        let v1 = l.vehicle("V1");
        for (i, ts) in [59_000, 61_000, 62_000].into_iter().enumerate() {
            l.sample(v1, i as u64, ts);
            l.reading(v1, 0, ts, 1.5 * (i + 1) as f64);
            l.reading(v1, 2, ts, 10.0);
        }
        let v2 = l.vehicle("V2");
        l.sample(v2, 0, 1_000);
        l.reading(v2, 1, 1_000, -0.125);
        l
    }

    fn rows_of(l: &Ledger) -> Vec<LandedRow> {
        l.keys
            .iter()
            .map(|((v, w, m), a)| LandedRow {
                vin: l.vins[*v as usize].clone(),
                window_ms: *w,
                metric: l.metrics[*m as usize].clone(),
                agg: *a,
            })
            .collect()
    }

    #[test]
    fn readings_fold_per_vin_window_and_metric() {
        let l = ledger();
        assert_eq!(l.readings(), 7);
        assert_eq!(l.keys.len(), 5);
        assert_eq!(l.keys[&(0, 60_000, 0)], Agg { cnt: 2, sum: 7.5, min: 3.0, max: 4.5 });
        let v = l.vehicles[0];
        assert_eq!((v.last_seq, v.last_ts_ms, v.samples), (2, 62_000, 3));
    }

    #[test]
    fn the_sent_file_reads_back_identically() {
        let l = ledger();
        let mut buf = Vec::new();
        l.save(&mut buf).unwrap();
        let back = Ledger::load(&buf[..]).unwrap();
        assert_eq!(back.window_ms, 60_000);
        assert_eq!(back.readings(), 7);
        let a = audit_aggregates("t", &back, rows_of(&l));
        assert!(a.ok(), "{a}");
        assert_eq!(back.vehicles[back.vin_ids["V1"] as usize].last_ts_ms, 62_000);
        assert!(Ledger::load(&b"T\tx\n"[..]).is_err());
    }

    #[test]
    fn the_audit_passes_when_rows_split_over_dims_add_up() {
        let l = ledger();
        let mut rows = rows_of(&l);
        // The same key in two dims rows (e.g. a vehicle file reload between loads).
        let r = rows.iter().position(|r| r.agg.cnt == 2 && r.metric == "speed").unwrap();
        let mut half = rows[r].clone();
        half.agg = Agg::one(3.0);
        rows[r].agg = Agg::one(4.5);
        rows.push(half);
        assert!(audit_aggregates("t", &l, rows).ok());
    }

    #[test]
    fn the_audit_catches_a_dropped_reading() {
        let l = ledger();
        let mut rows = rows_of(&l);
        let r = rows.iter().position(|r| r.agg.cnt == 2 && r.metric == "speed").unwrap();
        rows[r].agg = Agg::one(3.0);
        let a = audit_aggregates("t", &l, rows);
        assert_eq!((a.missing, a.duplicated, a.mismatched), (1, 0, 0), "{a}");
        assert!(!a.ok());
        let mut rows = rows_of(&l);
        rows.pop();
        assert!(audit_aggregates("t", &l, rows).missing >= 1);
    }

    #[test]
    fn the_audit_catches_a_duplicated_reading() {
        let l = ledger();
        let mut rows = rows_of(&l);
        let again = rows.iter().find(|r| r.agg.cnt == 1).unwrap().clone();
        rows.push(again);
        let a = audit_aggregates("t", &l, rows);
        assert_eq!((a.missing, a.duplicated), (0, 1), "{a}");
        assert!(!a.ok());
    }

    #[test]
    fn the_audit_catches_a_changed_value_and_a_foreign_row() {
        let l = ledger();
        let mut rows = rows_of(&l);
        rows[0].agg.sum += 0.125;
        let a = audit_aggregates("t", &l, rows.clone());
        assert_eq!(a.mismatched, 1, "{a}");
        rows[0] = rows_of(&l)[0].clone();
        rows.push(LandedRow { vin: "X".into(), window_ms: 0, metric: "speed".into(), agg: Agg::one(1.0) });
        assert!(!audit_aggregates("t", &l, rows).ok());
    }

    fn latest(vin: &str, ts: i64, speed: Option<f64>) -> LatestRow {
        LatestRow { vin: vin.into(), last_ts_ms: ts, values: vec![("speed".into(), speed)] }
    }

    #[test]
    fn the_newest_reading_breaks_ties_of_event_time_by_seq() {
        let mut l = Ledger::new(&catalogue(3), 60_000);
        let v = l.vehicle("V1");
        for (seq, ts, x) in [(5, 1_000, 1.0), (3, 1_000, 2.0), (9, 900, 3.0), (6, 1_000, 4.0)] {
            l.sample(v, seq, ts);
            l.reading(v, 0, ts, x);
        }
        assert_eq!(l.vehicles[0].latest[0], Some((1_000, 4.0)), "(1000, seq 6) is the newest");
    }

    #[test]
    fn the_latest_audit_wants_the_newest_event_time_and_values_per_vehicle() {
        let l = ledger();
        assert_eq!(l.vehicles[0].latest[0], Some((62_000, 4.5)));
        assert!(audit_latest("l", &l, [latest("V1", 62_000, Some(4.5)), latest("V2", 1_000, None)]).ok());
        let a = audit_latest("l", &l, [latest("V1", 61_000, Some(4.5))]);
        assert_eq!((a.missing, a.mismatched), (1, 1));
        let a = audit_latest("l", &l, [latest("V1", 62_000, Some(3.0)), latest("V2", 1_000, None)]);
        assert_eq!((a.missing, a.mismatched), (0, 1), "a stale value is caught");
        let mut buf = Vec::new();
        l.save(&mut buf).unwrap();
        let back = Ledger::load(&buf[..]).unwrap();
        assert_eq!(back.vehicles[back.vin_ids["V1"] as usize].latest, l.vehicles[0].latest);
    }
}
