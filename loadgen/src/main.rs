//! loadgen: drives rockfeed with vehicle telemetry.
//!
//! For now it has one subcommand, `sample`, which writes a deterministic
//! fleet's wide samples as JSON lines (the decode format rockfeed accepts:
//! `{"vin","ts","seq","metrics":{…}}`). Rate control, MQTT/Kafka targets and
//! the audit follow with the load-generator issue.

use std::io::{BufWriter, Write};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "loadgen", version, about = "Load generator for rockfeed")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write wide samples as JSON lines to stdout.
    Sample {
        /// Vehicles in the fleet.
        #[arg(long, default_value_t = 10)]
        vehicles: u32,
        /// Metrics per sample.
        #[arg(long, default_value_t = 1000)]
        metrics: u32,
        /// Samples per vehicle.
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Event time of the first sample, epoch milliseconds.
        #[arg(long, default_value_t = 1_714_978_800_000)]
        start_ms: u64,
        /// Seed of the value generator.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

/// xorshift64*: deterministic, fast, good enough for gauge noise.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn main() -> std::io::Result<()> {
    let Cli { command: Cmd::Sample { vehicles, metrics, count, start_ms, seed } } = Cli::parse();
    let mut rng = Rng(seed.max(1));
    let mut values = vec![vec![0.0f64; metrics as usize]; vehicles as usize];
    let out = std::io::stdout();
    let mut w = BufWriter::new(out.lock());
    for seq in 0..count {
        for (v, state) in values.iter_mut().enumerate() {
            write!(
                w,
                "{{\"vin\":\"{}\",\"ts\":{},\"seq\":{seq},\"metrics\":{{",
                rockfeed_vin(v as u32),
                start_ms + seq * 1000
            )?;
            for (m, x) in state.iter_mut().enumerate() {
                *x += rng.next_f64() - 0.5;
                let sep = if m == 0 { "" } else { "," };
                write!(w, "{sep}\"m{m:04}\":{:.3}", *x)?;
            }
            writeln!(w, "}}}}")?;
        }
    }
    w.flush()
}

/// A 17-character VIN-shaped id for vehicle `i`.
fn rockfeed_vin(i: u32) -> String {
    format!("RFVIN{i:012}")
}
