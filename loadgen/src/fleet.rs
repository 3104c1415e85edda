//! The fleet model: N vehicles, each with the same catalogue of M metrics.
//!
//! The catalogue is realistic in shape, not in physics: names read like a
//! vehicle signal tree (`battery.cell_voltage_0012`), and each metric has a
//! kind that decides how its value moves from one sample to the next:
//!
//! - **gauge**: a random walk in steps of 1/8 (speed, temperatures, voltages);
//! - **counter**: never decreases (odometer, energy, frame counters);
//! - **boolean**: flips now and then (door open, brake pressed), sent as
//!   `true`/`false`;
//! - **sparse**: present in only about one sample in ten (fault codes,
//!   events), so wide payloads do not always carry the same keys.
//!
//! Every value is a multiple of 1/8 well below 2^40, so it is exact in
//! binary floating point and so is any sum of them in any order: the audit
//! can compare sums for equality, not within a tolerance.
//!
//! The first three metrics are `speed`, `soc` and `odometer`, the latest-value
//! columns of the example configuration.

/// How a metric's value evolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Boolean,
    /// A gauge that appears in about one sample in [`SPARSE_ONE_IN`].
    Sparse,
}

/// A sparse metric appears in one sample in this many, on average.
pub const SPARSE_ONE_IN: u32 = 10;

/// One metric of the catalogue.
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub kind: Kind,
}

const SUBSYSTEMS: [&str; 10] =
    ["powertrain", "battery", "chassis", "body", "adas", "hvac", "motor", "tpms", "gnss", "infotainment"];
const GAUGES: [&str; 8] =
    ["temperature", "voltage", "current", "pressure", "torque", "position", "cell_voltage", "flow_rate"];
const COUNTERS: [&str; 3] = ["energy_wh", "frame_count", "cycles"];
const BOOLEANS: [&str; 3] = ["door_open", "fault_active", "switch_on"];
const SPARSE: [&str; 2] = ["dtc_event", "crash_sensor"];

/// The metric catalogue: `m` metrics, deterministic names and kinds.
pub fn catalogue(m: u32) -> Vec<Metric> {
    let fixed =
        [("speed", Kind::Gauge), ("soc", Kind::Gauge), ("odometer", Kind::Counter)].into_iter().take(m as usize);
    let mut out: Vec<Metric> = fixed.map(|(n, k)| Metric { name: n.into(), kind: k }).collect();
    for i in out.len() as u32..m {
        let sub = SUBSYSTEMS[(i as usize / 7) % SUBSYSTEMS.len()];
        // Of every 20 metrics: 14 gauges, 2 counters, 2 booleans, 2 sparse.
        let (kind, names): (Kind, &[&str]) = match i % 20 {
            0 | 10 => (Kind::Counter, &COUNTERS),
            5 | 15 => (Kind::Boolean, &BOOLEANS),
            7 | 17 => (Kind::Sparse, &SPARSE),
            _ => (Kind::Gauge, &GAUGES),
        };
        let name = format!("{sub}.{}_{i:04}", names[i as usize % names.len()]);
        out.push(Metric { name, kind });
    }
    out
}

/// Expected readings per sample for a catalogue (sparse metrics count at
/// their average rate): how a rate in readings/s becomes samples/s.
pub fn readings_per_sample(cat: &[Metric]) -> f64 {
    cat.iter().map(|m| if m.kind == Kind::Sparse { 1.0 / SPARSE_ONE_IN as f64 } else { 1.0 }).sum::<f64>().max(1.0)
}

/// xorshift64*: deterministic and cheap.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * n as u64) >> 32) as u32
    }
}

/// One reading's value: the value in eighths, and whether it is a boolean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Val {
    pub eighths: i64,
    pub is_bool: bool,
}

impl Val {
    /// The value as the pipeline stores it (booleans as 0/1).
    pub fn as_f64(self) -> f64 {
        self.eighths as f64 / 8.0
    }
}

/// The fleet: per-vehicle state (values in eighths, next seq).
pub struct Fleet {
    pub metrics: Vec<Metric>,
    /// `vehicles × metrics` values in eighths, row-major by vehicle.
    state: Vec<i64>,
    seq: Vec<u64>,
    rng: Rng,
    vin_prefix: String,
}

impl Fleet {
    /// `vehicles` vehicles with `metrics` metrics; VINs are `{prefix}{i:0w}`
    /// padded to 17 characters.
    pub fn new(vehicles: u32, metrics: u32, seed: u64, vin_prefix: &str) -> Self {
        let metrics = catalogue(metrics);
        let mut rng = Rng::new(seed);
        let mut state = Vec::with_capacity(vehicles as usize * metrics.len());
        for _ in 0..vehicles {
            for m in &metrics {
                state.push(match m.kind {
                    Kind::Gauge | Kind::Sparse => rng.below(800) as i64 * 8,
                    Kind::Counter => rng.below(100_000) as i64 * 8,
                    Kind::Boolean => 0,
                });
            }
        }
        Fleet { metrics, state, seq: vec![0; vehicles as usize], rng, vin_prefix: vin_prefix.into() }
    }

    pub fn vehicles(&self) -> u32 {
        self.seq.len() as u32
    }

    /// The VIN of vehicle `v`: the prefix, then the index, 17 characters when
    /// the prefix is at most 5.
    pub fn vin(&self, v: u32) -> String {
        let width = 17usize.saturating_sub(self.vin_prefix.len()).max(1);
        format!("{}{v:0width$}", self.vin_prefix)
    }

    /// Advances vehicle `v` by one sample: returns its seq and fills `out`
    /// with (metric index, value) for the metrics present in this sample.
    pub fn sample(&mut self, v: u32, out: &mut Vec<(u32, Val)>) -> u64 {
        out.clear();
        let n = self.metrics.len();
        let row = &mut self.state[v as usize * n..(v as usize + 1) * n];
        for (i, (m, x)) in self.metrics.iter().zip(row.iter_mut()).enumerate() {
            let r = self.rng.next_u64();
            match m.kind {
                Kind::Gauge => *x += (r % 17) as i64 - 8,
                Kind::Counter => *x += ((r % 4) * 8) as i64,
                Kind::Boolean => {
                    if r.is_multiple_of(20) {
                        *x = 8 - *x;
                    }
                }
                Kind::Sparse => {
                    if !r.is_multiple_of(SPARSE_ONE_IN as u64) {
                        continue;
                    }
                    *x += ((r >> 8) % 17) as i64 - 8;
                }
            }
            out.push((i as u32, Val { eighths: *x, is_bool: m.kind == Kind::Boolean }));
        }
        let s = self.seq[v as usize];
        self.seq[v as usize] += 1;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_starts_with_the_example_latest_metrics_and_mixes_kinds() {
        let c = catalogue(1000);
        assert_eq!(c.len(), 1000);
        assert_eq!([c[0].name.as_str(), c[1].name.as_str(), c[2].name.as_str()], ["speed", "soc", "odometer"]);
        let count = |k| c.iter().filter(|m| m.kind == k).count();
        assert!(count(Kind::Gauge) > 600 && count(Kind::Counter) > 50);
        assert!(count(Kind::Boolean) > 50 && count(Kind::Sparse) > 50);
        let names: std::collections::HashSet<_> = c.iter().map(|m| &m.name).collect();
        assert_eq!(names.len(), 1000, "names are unique");
    }

    #[test]
    fn counters_never_decrease_booleans_stay_0_or_1_and_sparse_metrics_are_sometimes_absent() {
        let mut f = Fleet::new(3, 40, 7, "RFLG");
        let mut out = Vec::new();
        let mut last = vec![None; 40];
        let mut sparse_seen = 0;
        for _ in 0..200 {
            f.sample(1, &mut out);
            sparse_seen += out.iter().filter(|(i, _)| f.metrics[*i as usize].kind == Kind::Sparse).count();
            for (i, v) in &out {
                match f.metrics[*i as usize].kind {
                    Kind::Counter => assert!(last[*i as usize].is_none_or(|l: i64| v.eighths >= l)),
                    Kind::Boolean => assert!(v.eighths == 0 || v.eighths == 8),
                    _ => {}
                }
                last[*i as usize] = Some(v.eighths);
            }
        }
        // 4 sparse metrics × 200 samples, one in ten present.
        assert!((20..=160).contains(&sparse_seen), "sparse readings: {sparse_seen}");
        assert!(f.vin(1).len() == 17 && f.vin(1).starts_with("RFLG"));
    }

    #[test]
    fn the_same_seed_gives_the_same_fleet() {
        let (mut a, mut b) = (Fleet::new(2, 30, 9, "X"), Fleet::new(2, 30, 9, "X"));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for v in [0, 1, 0] {
            assert_eq!(a.sample(v, &mut x), b.sample(v, &mut y));
            assert_eq!(x, y);
        }
    }
}
