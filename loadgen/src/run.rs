//! One load run: the generator paced by the open-loop schedule into a
//! target, with live progress and a summary.
//!
//! Rates are in **records** (readings) per second, the unit rockfeed is sized
//! in. The schedule is per message: a wide message carries about
//! [`readings_per_sample`](crate::fleet::readings_per_sample) readings, a
//! batched one K times that, a narrow one exactly one; the summary reports
//! the readings actually sent. Each message's event time is its due time on
//! the schedule (equal to the send time when the sender keeps up).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::fleet::readings_per_sample;
use crate::kafka::KafkaSender;
use crate::ledger::Ledger;
use crate::mqtt::MqttSender;
use crate::payload::{Generator, Profile};
use crate::rate::{Pacer, Schedule};

/// Where messages go.
pub enum Target {
    Mqtt(MqttSender),
    Kafka(KafkaSender),
}

impl Target {
    async fn send(&mut self, m: crate::payload::Message) -> Result<(), String> {
        match self {
            Target::Mqtt(s) => s.send(m).await,
            Target::Kafka(s) => s.send(m).await,
        }
    }

    fn delivered(&self) -> u64 {
        match self {
            Target::Mqtt(s) => s.delivered(),
            Target::Kafka(s) => s.delivered(),
        }
    }

    /// Waits for the outstanding acknowledgements; returns the messages
    /// delivered (a failed Kafka delivery report is an error).
    async fn finish(self, limit: Duration) -> Result<u64, String> {
        match self {
            Target::Mqtt(s) => Ok(s.finish(limit).await),
            Target::Kafka(s) => s.finish(limit).await,
        }
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// One updating line on a terminal, log lines otherwise.
    Auto,
    Lines,
    Off,
}

/// Run settings.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Records (readings) per second; 0 = as fast as the target takes them.
    pub rate: f64,
    pub duration: Option<Duration>,
    /// Stop after this many records.
    pub count: Option<u64>,
    /// Sent but not measured.
    pub warmup: Duration,
    pub progress: ProgressMode,
    /// How long to wait for the last acknowledgements.
    pub ack_timeout: Duration,
}

impl RunOptions {
    /// `rate` records/s for `duration`: no count, no warm-up, no progress
    /// output, 30 s for the last acknowledgements.
    pub fn timed(rate: f64, duration: Duration) -> Self {
        RunOptions {
            rate,
            duration: Some(duration),
            count: None,
            warmup: Duration::ZERO,
            progress: ProgressMode::Off,
            ack_timeout: Duration::from_secs(30),
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct RunSummary {
    pub messages: u64,
    pub readings: u64,
    /// Messages the target acknowledged (QoS 0: queued).
    pub delivered: u64,
    /// Send phase, start to last message.
    pub elapsed: Duration,
    /// Readings per second after the warm-up.
    pub measured_rate: f64,
    /// Target rate in messages per second (0: unlimited).
    pub message_rate: f64,
    /// Send lag per message (µs), after the warm-up.
    pub lag_us: Histogram<u64>,
    /// The furthest the sender fell behind the schedule.
    pub max_behind: Duration,
}

impl RunSummary {
    /// Everything sent was acknowledged.
    pub fn complete(&self) -> bool {
        self.delivered >= self.messages
    }
}

/// Messages per second for `rate` records per second.
pub fn message_rate(rate: f64, profile: Profile, generator: &Generator) -> f64 {
    let per_sample = readings_per_sample(&generator.fleet.metrics);
    let per_message = match profile {
        Profile::Narrow => 1.0,
        p => per_sample * p.samples_per_message() as f64,
    };
    if rate <= 0.0 { 0.0 } else { rate / per_message }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Drives `generator` into `target` on the schedule until the duration or count
/// is reached or `stop` is set.
pub async fn run(
    generator: &mut Generator,
    profile: Profile,
    ledger: &mut Ledger,
    mut target: Target,
    o: &RunOptions,
    stop: &AtomicBool,
) -> Result<RunSummary, String> {
    let msg_rate = message_rate(o.rate, profile, generator);
    let mut pacer = Pacer::new(Schedule { per_sec: msg_rate, end: o.duration }, o.warmup);
    let tty = o.progress == ProgressMode::Auto && std::io::stderr().is_terminal();
    let start = Instant::now();
    let start_ms = wall_ms();
    let (mut readings, mut warm_readings) = (0u64, 0u64);
    let mut max_behind = Duration::ZERO;
    let (mut last_report, mut last_readings) = (Duration::ZERO, 0u64);
    let count = o.count.unwrap_or(u64::MAX);
    'run: loop {
        let now = start.elapsed();
        let due = pacer.backlog(now);
        max_behind = max_behind.max(pacer.behind(now));
        for _ in 0..due {
            if readings >= count || stop.load(Ordering::Relaxed) {
                break 'run;
            }
            let due_at = pacer.schedule.due_at(pacer.sent);
            let event_ms = if msg_rate > 0.0 { start_ms + due_at.as_millis() as i64 } else { wall_ms() };
            let m = generator.next(event_ms, ledger);
            readings += m.readings as u64;
            if due_at < o.warmup {
                warm_readings += m.readings as u64;
            }
            target.send(m).await?;
            pacer.sent_one(start.elapsed());
            if pacer.sent.is_multiple_of(1024) && start.elapsed() >= last_report + Duration::from_secs(1) {
                break;
            }
        }
        let now = start.elapsed();
        if o.progress != ProgressMode::Off && now >= last_report + Duration::from_secs(1) {
            let dt = (now - last_report).as_secs_f64();
            let line = format!(
                "loadgen {:>6.1}s  sent {} rec  {} rec/s  {} msg total  behind {:.1} ms  delivered {} msg",
                now.as_secs_f64(),
                group(readings),
                group(((readings - last_readings) as f64 / dt) as u64),
                group(pacer.sent),
                pacer.behind(now).as_secs_f64() * 1e3,
                group(target.delivered()),
            );
            if tty {
                eprint!("\r\x1b[K{line}");
            } else {
                eprintln!("{line}");
            }
            (last_report, last_readings) = (now, readings);
        }
        if readings >= count || stop.load(Ordering::Relaxed) {
            break;
        }
        // Unlimited rate: the schedule has no total, the duration ends it.
        if msg_rate <= 0.0 && o.duration.is_some_and(|d| now >= d) {
            break;
        }
        match pacer.next_due() {
            None => break,
            Some(next) if next > now => tokio::time::sleep_until((start + next).into()).await,
            // Behind (or unlimited): yield so the connections' event loops run.
            Some(_) => tokio::task::yield_now().await,
        }
    }
    let elapsed = start.elapsed();
    if tty {
        eprintln!();
    }
    let measured = elapsed.saturating_sub(o.warmup).as_secs_f64();
    let messages = pacer.sent;
    let delivered = target.finish(o.ack_timeout).await?;
    Ok(RunSummary {
        messages,
        readings,
        delivered,
        elapsed,
        measured_rate: if measured > 0.0 { (readings - warm_readings) as f64 / measured } else { 0.0 },
        message_rate: msg_rate,
        lag_us: pacer.lag_us,
        max_behind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;

    #[test]
    fn record_rates_become_message_rates_per_profile() {
        let g = Generator::new(Fleet::new(1, 20, 1, "X"), Profile::Wide, "t", 100);
        // 20 metrics, 2 of them sparse (one in ten): 18.2 readings per sample.
        let per_sample = readings_per_sample(&g.fleet.metrics);
        assert!((per_sample - 18.2).abs() < 1e-9, "{per_sample}");
        assert!((message_rate(18_200.0, Profile::Wide, &g) - 1000.0).abs() < 1e-6);
        assert!((message_rate(18_200.0, Profile::Batched(10), &g) - 100.0).abs() < 1e-6);
        assert_eq!(message_rate(5000.0, Profile::Narrow, &g), 5000.0);
        assert_eq!(message_rate(0.0, Profile::Narrow, &g), 0.0);
        assert_eq!(group(1_234_567), "1,234,567");
    }
}
