//! One WAL record on disk: a received MQTT message.
//!
//! ```text
//! frame := len:u32le crc:u32le body[len]
//! body  := qos:u8 received_ms:i64le topic_len:u16le topic[topic_len] payload
//! ```
//!
//! `crc` is CRC-32 (IEEE) of `body`. A frame is valid only when `len` lies
//! within `MIN_BODY..=MAX_BODY`, the whole body is present and its CRC
//! matches; the first invalid frame of the newest segment is the torn tail
//! a crash left (a zero-filled tail reads as `len = 0`, invalid).

use bytes::Bytes;

/// Frame header: length and CRC.
pub const HEADER: usize = 8;
/// The smallest body: qos, receive time, topic length.
pub const MIN_BODY: usize = 1 + 8 + 2;
/// The largest body: an MQTT packet's largest payload (256 MiB) and topic.
pub const MAX_BODY: usize = MIN_BODY + u16::MAX as usize + (256 << 20);

/// A message as the WAL keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub qos: u8,
    /// Receive time, epoch milliseconds.
    pub received_ms: i64,
    pub topic: String,
    pub payload: Bytes,
}

impl Record {
    /// Bytes the frame takes on disk.
    pub fn frame_len(&self) -> usize {
        HEADER + MIN_BODY + self.topic.len().min(u16::MAX as usize) + self.payload.len()
    }

    /// Appends the frame to `out`. Topics are at most 65,535 bytes in MQTT;
    /// a longer one is cut there (it cannot come from a broker).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let topic = &self.topic.as_bytes()[..self.topic.len().min(u16::MAX as usize)];
        let start = out.len();
        out.extend_from_slice(&[0u8; HEADER]);
        out.push(self.qos);
        out.extend_from_slice(&self.received_ms.to_le_bytes());
        out.extend_from_slice(&(topic.len() as u16).to_le_bytes());
        out.extend_from_slice(topic);
        out.extend_from_slice(&self.payload);
        let body = &out[start + HEADER..];
        let (len, crc) = (body.len() as u32, crc32fast::hash(body));
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a body whose CRC was checked.
    pub fn decode_body(body: &[u8]) -> Option<Record> {
        if body.len() < MIN_BODY {
            return None;
        }
        let qos = body[0];
        let received_ms = i64::from_le_bytes(body[1..9].try_into().ok()?);
        let tlen = u16::from_le_bytes([body[9], body[10]]) as usize;
        let topic = body.get(MIN_BODY..MIN_BODY + tlen)?;
        let topic = String::from_utf8_lossy(topic).into_owned();
        let payload = Bytes::copy_from_slice(&body[MIN_BODY + tlen..]);
        Some(Record { qos, received_ms, topic, payload })
    }
}

/// Reads a frame header: the body length if it is plausible.
pub fn header(h: &[u8; HEADER]) -> Option<(usize, u32)> {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    (MIN_BODY..=MAX_BODY).contains(&len).then_some((len, crc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_its_length_is_what_it_takes() {
        let r = Record { qos: 1, received_ms: 1_700_000_000_123, topic: "t/V1/speed".into(), payload: "42.5".into() };
        let mut out = vec![7u8];
        r.encode(&mut out);
        assert_eq!(out.len() - 1, r.frame_len());
        let (len, crc) = header(out[1..9].try_into().unwrap()).unwrap();
        assert_eq!(len, out.len() - 9);
        assert_eq!(crc, crc32fast::hash(&out[9..]));
        assert_eq!(Record::decode_body(&out[9..]), Some(r));
    }

    #[test]
    fn a_zero_filled_header_is_not_a_frame() {
        assert_eq!(header(&[0; HEADER]), None);
        assert_eq!(header(&[0xff; HEADER]), None);
    }
}
