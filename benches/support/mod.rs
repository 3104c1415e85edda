//! Payloads shared by the benches (the shapes rockfeed decodes).
#![allow(dead_code)] // each bench uses a different subset

/// Event time of the generated samples, epoch ms.
pub const NOW: i64 = 1_714_979_289_000;

/// `n` wide samples of `metrics` metrics each (~30 bytes per metric), from
/// `vehicles` vehicles in turn; a vehicle's samples are 20 ms apart.
pub fn wide_payloads(n: usize, metrics: usize, vehicles: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let v = i % vehicles;
            let ts = NOW - (v as i64) * 20;
            let mut s = format!("{{\"vin\":\"RFVIN{v:012}\",\"ts\":{ts},\"seq\":{i},\"metrics\":{{");
            for m in 0..metrics {
                if m > 0 {
                    s.push(',');
                }
                let x = ((i * 31 + m * 17) % 10_000) as f64 / 7.0;
                s.push_str(&format!("\"powertrain.sensor_{m:04}\":{x:.3}"));
            }
            s.push_str("}}");
            s.into_bytes()
        })
        .collect()
}

/// The parse-only baseline: sonic-rs DOM, then the sum of the metric values.
pub fn sum_sonic(p: &[u8]) -> f64 {
    use sonic_rs::{JsonContainerTrait, JsonValueTrait};
    let v: sonic_rs::Value = sonic_rs::from_slice(p).unwrap();
    v.get("metrics").unwrap().as_object().unwrap().iter().filter_map(|(_, x)| x.as_f64()).sum()
}

/// Mean seconds of `runs` calls of `f`: for the side-by-side ratios the
/// benches print next to criterion's numbers.
pub fn mean_secs(runs: u32, mut f: impl FnMut()) -> f64 {
    let t = std::time::Instant::now();
    for _ in 0..runs {
        f();
    }
    t.elapsed().as_secs_f64() / runs as f64
}
