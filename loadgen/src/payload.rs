//! Payload profiles, in the decode formats rockfeed accepts:
//!
//! - **wide**: one message per vehicle sample, topic `{prefix}/{vin}`,
//!   `{"vin":…,"ts":…,"seq":…,"metrics":{"speed":12.5,…}}`;
//! - **narrow**: one message per reading, topic `{prefix}/{vin}/{metric}`,
//!   `{"ts":…,"v":…}` (rockfeed's default topic template);
//! - **batched**: K samples of one vehicle in one message, a JSON array of
//!   wide objects, topic `{prefix}/{vin}`; the samples are `batch_gap_ms`
//!   apart and the newest carries the message's event time (a device that
//!   buffers and sends in bursts).
//!
//! The [`Generator`] walks the fleet round-robin and records every reading it
//! emits in the [`Ledger`](crate::ledger::Ledger), so what is audited is
//! exactly what was put on the wire.

use std::collections::VecDeque;

use crate::fleet::{Fleet, Val};
use crate::ledger::Ledger;

/// A message profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Wide,
    Narrow,
    /// K samples per message.
    Batched(u32),
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wide" => Ok(Profile::Wide),
            "narrow" => Ok(Profile::Narrow),
            "batched" => Ok(Profile::Batched(10)),
            _ => match s.strip_prefix("batched:").map(str::parse::<u32>) {
                Some(Ok(k)) if k > 0 => Ok(Profile::Batched(k)),
                _ => Err(format!("unknown profile {s:?}: wide, narrow, batched or batched:K")),
            },
        }
    }
}

impl Profile {
    /// Samples per message (narrow: a sample spreads over many messages).
    pub fn samples_per_message(self) -> u32 {
        match self {
            Profile::Batched(k) => k,
            _ => 1,
        }
    }
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct Message {
    /// Index of the vehicle (picks the connection or partition key).
    pub vehicle: u32,
    /// The vehicle's VIN (the Kafka key).
    pub vin: String,
    pub topic: String,
    pub payload: Vec<u8>,
    /// Readings in the payload.
    pub readings: u32,
    /// Event time of the (newest) sample, epoch ms.
    pub event_ms: i64,
}

/// Writes `v` exactly: eighths have at most three decimals.
pub fn push_value(out: &mut Vec<u8>, v: Val) {
    if v.is_bool {
        out.extend_from_slice(if v.eighths != 0 { b"true" } else { b"false" });
        return;
    }
    if v.eighths < 0 {
        out.push(b'-');
    }
    let a = v.eighths.unsigned_abs();
    out.extend_from_slice(itoa::Buffer::new().format(a / 8).as_bytes());
    const FRAC: [&str; 8] = ["", ".125", ".25", ".375", ".5", ".625", ".75", ".875"];
    out.extend_from_slice(FRAC[(a % 8) as usize].as_bytes());
}

/// Produces messages from the fleet, round-robin over vehicles.
pub struct Generator {
    pub fleet: Fleet,
    profile: Profile,
    prefix: String,
    batch_gap_ms: i64,
    next_vehicle: u32,
    /// Narrow messages of the current sample not handed out yet, each with
    /// what the ledger records when it is: (ledger vehicle id, metric,
    /// value) and, on the sample's first message, its seq.
    pending: VecDeque<(Message, u32, u32, f64, Option<u64>)>,
    scratch: Vec<(u32, Val)>,
    /// Narrow readings as one-reading wide objects (Kafka: no topic per signal).
    narrow_objects: bool,
}

impl Generator {
    pub fn new(fleet: Fleet, profile: Profile, topic_prefix: &str, batch_gap_ms: i64) -> Self {
        Generator {
            fleet,
            profile,
            prefix: topic_prefix.trim_end_matches('/').into(),
            batch_gap_ms,
            next_vehicle: 0,
            pending: VecDeque::new(),
            scratch: Vec::new(),
            narrow_objects: false,
        }
    }

    /// Sends narrow readings as one-reading wide objects, for targets
    /// without a topic per signal (Kafka).
    pub fn narrow_as_objects(mut self, on: bool) -> Self {
        self.narrow_objects = on;
        self
    }

    /// The next message, with event time `event_ms` (for narrow, the event
    /// time of the sample the message belongs to). Records its readings.
    pub fn next(&mut self, event_ms: i64, ledger: &mut Ledger) -> Message {
        loop {
            if let Some((m, vid, metric, value, first)) = self.pending.pop_front() {
                if let Some(seq) = first {
                    ledger.sample(vid, seq, m.event_ms);
                }
                ledger.reading(vid, metric, m.event_ms, value);
                return m;
            }
            let v = self.next_vehicle;
            self.next_vehicle = (v + 1) % self.fleet.vehicles();
            let vin = self.fleet.vin(v);
            match self.profile {
                Profile::Wide => return self.wide(v, vin, event_ms, ledger),
                Profile::Batched(k) => return self.batched(v, vin, k, event_ms, ledger),
                Profile::Narrow => {
                    // Interned now, recorded as each message is handed out.
                    let vid = ledger.vehicle(&vin);
                    self.narrow(v, vin, event_ms, vid)
                }
            }
        }
    }

    /// Appends one wide sample object; returns its readings.
    fn push_sample(&mut self, out: &mut Vec<u8>, v: u32, vin: &str, ts: i64, ledger: &mut Ledger) -> u32 {
        let seq = self.fleet.sample(v, &mut self.scratch);
        let vid = ledger.vehicle(vin);
        ledger.sample(vid, seq, ts);
        out.extend_from_slice(b"{\"vin\":\"");
        out.extend_from_slice(vin.as_bytes());
        out.extend_from_slice(b"\",\"ts\":");
        out.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
        out.extend_from_slice(b",\"seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        out.extend_from_slice(b",\"metrics\":{");
        for (j, (m, val)) in self.scratch.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(self.fleet.metrics[*m as usize].name.as_bytes());
            out.extend_from_slice(b"\":");
            push_value(out, *val);
            ledger.reading(vid, *m, ts, val.as_f64());
        }
        out.extend_from_slice(b"}}");
        self.scratch.len() as u32
    }

    fn wide(&mut self, v: u32, vin: String, ts: i64, ledger: &mut Ledger) -> Message {
        let mut payload = Vec::with_capacity(64 + self.fleet.metrics.len() * 32);
        let readings = self.push_sample(&mut payload, v, &vin, ts, ledger);
        Message { vehicle: v, topic: format!("{}/{vin}", self.prefix), vin, payload, readings, event_ms: ts }
    }

    fn batched(&mut self, v: u32, vin: String, k: u32, ts: i64, ledger: &mut Ledger) -> Message {
        let mut payload = Vec::with_capacity(64 + k as usize * self.fleet.metrics.len() * 32);
        payload.push(b'[');
        let mut readings = 0;
        for j in 0..k {
            if j > 0 {
                payload.push(b',');
            }
            let t = ts - (k - 1 - j) as i64 * self.batch_gap_ms;
            readings += self.push_sample(&mut payload, v, &vin, t, ledger);
        }
        payload.push(b']');
        Message { vehicle: v, topic: format!("{}/{vin}", self.prefix), vin, payload, readings, event_ms: ts }
    }

    /// Queues one message per reading; the ledger records each as it is
    /// handed out, so a run that stops mid-sample records only what it sent.
    fn narrow(&mut self, v: u32, vin: String, ts: i64, vid: u32) {
        let seq = self.fleet.sample(v, &mut self.scratch);
        for (j, (m, val)) in self.scratch.iter().enumerate() {
            let name = &self.fleet.metrics[*m as usize].name;
            let mut payload = Vec::with_capacity(80);
            if self.narrow_objects {
                payload.extend_from_slice(b"{\"vin\":\"");
                payload.extend_from_slice(vin.as_bytes());
                payload.extend_from_slice(b"\",\"ts\":");
                payload.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
                payload.extend_from_slice(b",\"seq\":");
                payload.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
                payload.extend_from_slice(b",\"metrics\":{\"");
                payload.extend_from_slice(name.as_bytes());
                payload.extend_from_slice(b"\":");
                push_value(&mut payload, *val);
                payload.extend_from_slice(b"}}");
            } else {
                payload.extend_from_slice(b"{\"ts\":");
                payload.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
                payload.extend_from_slice(b",\"v\":");
                push_value(&mut payload, *val);
                payload.push(b'}');
            }
            let msg = Message {
                vehicle: v,
                vin: vin.clone(),
                topic: format!("{}/{vin}/{name}", self.prefix),
                payload,
                readings: 1,
                event_ms: ts,
            };
            self.pending.push_back((msg, vid, *m, val.as_f64(), (j == 0).then_some(seq)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;

    fn parse(p: &[u8]) -> serde_json::Value {
        serde_json::from_slice(p).expect("generated payloads are JSON")
    }

    #[test]
    fn values_are_written_exactly_and_booleans_as_words() {
        let mut out = Vec::new();
        for (e, want) in [(0, "0"), (1, "0.125"), (-12, "-1.5"), (8003, "1000.375")] {
            out.clear();
            push_value(&mut out, Val { eighths: e, is_bool: false });
            assert_eq!(std::str::from_utf8(&out).unwrap(), want);
            assert_eq!(want.parse::<f64>().unwrap(), e as f64 / 8.0);
        }
        out.clear();
        push_value(&mut out, Val { eighths: 8, is_bool: true });
        assert_eq!(out, b"true");
    }

    #[test]
    fn a_wide_message_carries_one_sample_and_the_ledger_counts_its_readings() {
        let mut g = Generator::new(Fleet::new(2, 30, 1, "RF"), Profile::Wide, "telemetry", 100);
        let mut l = Ledger::new(&g.fleet.metrics, 60_000);
        let m = g.next(1_700_000_000_000, &mut l);
        let j = parse(&m.payload);
        assert_eq!(j["vin"], m.vin.as_str());
        assert_eq!(m.topic, format!("telemetry/{}", m.vin));
        assert_eq!(j["metrics"].as_object().unwrap().len() as u32, m.readings);
        assert_eq!(l.readings(), m.readings as u64);
        assert_eq!(g.next(1_700_000_000_000, &mut l).vehicle, 1, "round-robin");
    }

    #[test]
    fn narrow_messages_are_one_reading_each_on_a_topic_per_signal() {
        let mut g = Generator::new(Fleet::new(1, 5, 1, "RF"), Profile::Narrow, "t", 100);
        let mut l = Ledger::new(&g.fleet.metrics, 60_000);
        let first = g.next(5_000, &mut l);
        assert_eq!(first.topic, format!("t/{}/speed", first.vin));
        assert!(parse(&first.payload)["v"].is_number());
        assert_eq!(l.readings(), 1, "the ledger records only what was handed out");
        // Five dense metrics: the sample's other four readings, then the next sample.
        for n in 2..=5 {
            assert_eq!(g.next(9_000, &mut l).event_ms, 5_000, "a sample's readings share its event time");
            assert_eq!(l.readings(), n);
        }
        assert_eq!(g.next(9_000, &mut l).event_ms, 9_000, "then the next sample starts");
        assert_eq!(l.vehicles[0].samples, 2);
    }

    #[test]
    fn narrow_readings_as_objects_are_one_reading_wide_samples() {
        let mut g = Generator::new(Fleet::new(1, 5, 1, "RF"), Profile::Narrow, "t", 100).narrow_as_objects(true);
        let mut l = Ledger::new(&g.fleet.metrics, 60_000);
        let m = g.next(5_000, &mut l);
        let j = parse(&m.payload);
        assert_eq!(
            (j["vin"].as_str(), j["ts"].as_i64(), j["seq"].as_u64()),
            (Some(m.vin.as_str()), Some(5_000), Some(0))
        );
        assert_eq!(j["metrics"].as_object().unwrap().len(), 1);
        assert!(j["metrics"]["speed"].is_number());
    }

    #[test]
    fn a_batched_message_is_an_array_of_k_samples_ending_at_its_event_time() {
        let mut g = Generator::new(Fleet::new(1, 10, 1, "RF"), Profile::Batched(4), "t", 250);
        let mut l = Ledger::new(&g.fleet.metrics, 60_000);
        let m = g.next(10_000, &mut l);
        let j = parse(&m.payload);
        let ts: Vec<i64> = j.as_array().unwrap().iter().map(|s| s["ts"].as_i64().unwrap()).collect();
        assert_eq!(ts, [9_250, 9_500, 9_750, 10_000]);
        let seqs: Vec<u64> = j.as_array().unwrap().iter().map(|s| s["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
        assert_eq!(l.readings(), m.readings as u64);
        assert!("batched:7".parse::<Profile>() == Ok(Profile::Batched(7)) && "x".parse::<Profile>().is_err());
    }
}
