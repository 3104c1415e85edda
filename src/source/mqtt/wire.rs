//! The two MQTT versions as one small interface: the packets the source
//! sends (CONNECT, SUBSCRIBE, PUBACK, PINGREQ, DISCONNECT) and what it
//! makes of the ones it receives. Encoding and decoding are rumqttc's
//! `mqttbytes` codecs for 3.1.1 and 5; the connection itself is rockfeed's
//! (`session.rs`), so that the PUBACKs of one group commit go out in one
//! socket write.
//!
//! rockfeed subscribes at QoS ≤ 1, so a broker never sends it QoS 2; a
//! QoS 2 PUBLISH is a protocol violation and ends the connection.

use bytes::{Bytes, BytesMut};

use super::MqttConfig;

/// A packet from the broker, as the session needs it.
#[derive(Debug)]
pub(super) enum In {
    ConnAck {
        /// Why the broker refused the connection, if it did.
        refused: Option<String>,
        session_present: bool,
        /// MQTT 5 Server Keep Alive: the interval the client must use.
        keep_alive: Option<u16>,
    },
    /// The refused filters' reasons (empty: all granted).
    SubAck {
        refused: Vec<String>,
    },
    Publish {
        topic: String,
        payload: Bytes,
        qos: u8,
        pkid: u16,
    },
    PingResp,
    /// MQTT 5: the broker closes the connection, with its reason.
    Disconnect {
        reason: String,
    },
    /// Anything a subscriber has no use for.
    Other(&'static str),
}

/// One protocol version.
pub(super) trait Wire: Send + Sync {
    fn connect(&self, cfg: &MqttConfig, password: Option<String>, out: &mut BytesMut) -> Result<(), String>;
    fn subscribe(&self, filters: &[String], qos: u8, pkid: u16, out: &mut BytesMut) -> Result<(), String>;
    /// PUBACK of `pkid`. The same bytes in both versions: MQTT 5 lets a
    /// Success reason with no properties be left out (§3.4.2.1).
    fn puback(&self, pkid: u16, out: &mut BytesMut) {
        // Fixed header 0x40, remaining length 2, packet id.
        out.extend_from_slice(&[0x40, 0x02]);
        out.extend_from_slice(&pkid.to_be_bytes());
    }
    fn pingreq(&self, out: &mut BytesMut) {
        out.extend_from_slice(&[0xC0, 0x00]);
    }
    /// DISCONNECT; in MQTT 5 an empty body is a normal disconnection (0x00).
    fn disconnect(&self, out: &mut BytesMut) {
        out.extend_from_slice(&[0xE0, 0x00]);
    }
    /// The next whole packet in `buf` (consumed), `None` until one is whole.
    fn read(&self, buf: &mut BytesMut, max: usize) -> Result<Option<In>, String>;
}

pub(super) struct V4;

impl Wire for V4 {
    fn connect(&self, cfg: &MqttConfig, password: Option<String>, out: &mut BytesMut) -> Result<(), String> {
        use rumqttc::mqttbytes::v4::{Connect, Login, Packet};
        let mut c = Connect::new(cfg.client_id.clone());
        c.keep_alive = cfg.keep_alive_secs.min(u16::MAX as u64) as u16;
        c.clean_session = cfg.clean_session;
        if let (Some(u), Some(p)) = (&cfg.username, password) {
            c.login = Some(Login::new(u.clone(), p));
        }
        Packet::Connect(c).write(out, usize::MAX).map(drop).map_err(|e| e.to_string())
    }

    fn subscribe(&self, filters: &[String], qos: u8, pkid: u16, out: &mut BytesMut) -> Result<(), String> {
        use rumqttc::mqttbytes::v4::{Packet, Subscribe, SubscribeFilter};
        let q = if qos == 0 { rumqttc::mqttbytes::QoS::AtMostOnce } else { rumqttc::mqttbytes::QoS::AtLeastOnce };
        let mut s = Subscribe::new_many(filters.iter().map(|f| SubscribeFilter::new(f.clone(), q)));
        s.pkid = pkid;
        Packet::Subscribe(s).write(out, usize::MAX).map(drop).map_err(|e| e.to_string())
    }

    fn read(&self, buf: &mut BytesMut, max: usize) -> Result<Option<In>, String> {
        use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, SubscribeReasonCode};
        let p = match Packet::read(buf, max) {
            Ok(p) => p,
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
            Err(e) => return Err(format!("malformed MQTT 3.1.1 packet: {e}")),
        };
        Ok(Some(match p {
            Packet::ConnAck(a) => In::ConnAck {
                refused: (a.code != ConnectReturnCode::Success).then(|| format!("{:?}", a.code)),
                session_present: a.session_present,
                keep_alive: None,
            },
            Packet::SubAck(a) => In::SubAck {
                refused: a
                    .return_codes
                    .iter()
                    .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                    .map(|c| format!("{c:?}"))
                    .collect(),
            },
            Packet::Publish(p) => In::Publish { topic: p.topic, payload: p.payload, qos: p.qos as u8, pkid: p.pkid },
            Packet::PingResp => In::PingResp,
            Packet::Disconnect => In::Disconnect { reason: "DISCONNECT".into() },
            _ => In::Other("unexpected packet"),
        }))
    }
}

pub(super) struct V5;

impl Wire for V5 {
    fn connect(&self, cfg: &MqttConfig, password: Option<String>, out: &mut BytesMut) -> Result<(), String> {
        use rumqttc::v5::mqttbytes::v5::{Connect, ConnectProperties, Login, Packet};
        let mut props = ConnectProperties::new();
        props.receive_maximum = Some(cfg.receive_maximum);
        props.max_packet_size = Some(cfg.max_packet_bytes.min(u32::MAX as usize) as u32);
        // Keep the session after disconnects, unless asked for a clean one.
        props.session_expiry_interval = (!cfg.clean_session).then_some(u32::MAX);
        let c = Connect {
            keep_alive: cfg.keep_alive_secs.min(u16::MAX as u64) as u16,
            client_id: cfg.client_id.clone(),
            clean_start: cfg.clean_session,
            properties: Some(props),
        };
        let login = match (&cfg.username, password) {
            (Some(u), Some(p)) => Some(Login::new(u.clone(), p)),
            _ => None,
        };
        Packet::Connect(c, None, login).write(out, None).map(drop).map_err(|e| e.to_string())
    }

    fn subscribe(&self, filters: &[String], qos: u8, pkid: u16, out: &mut BytesMut) -> Result<(), String> {
        use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Subscribe};
        let q =
            if qos == 0 { rumqttc::v5::mqttbytes::QoS::AtMostOnce } else { rumqttc::v5::mqttbytes::QoS::AtLeastOnce };
        let mut s = Subscribe::new_many(filters.iter().map(|f| Filter::new(f.clone(), q)), None);
        s.pkid = pkid;
        Packet::Subscribe(s).write(out, None).map(drop).map_err(|e| e.to_string())
    }

    fn read(&self, buf: &mut BytesMut, max: usize) -> Result<Option<In>, String> {
        use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, SubscribeReasonCode};
        let p = match Packet::read(buf, Some(max.min(u32::MAX as usize) as u32)) {
            Ok(p) => p,
            Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
            Err(e) => return Err(format!("malformed MQTT 5 packet: {e}")),
        };
        Ok(Some(match p {
            Packet::ConnAck(a) => In::ConnAck {
                refused: (a.code != ConnectReturnCode::Success).then(|| format!("{:?}", a.code)),
                session_present: a.session_present,
                keep_alive: a.properties.and_then(|p| p.server_keep_alive),
            },
            Packet::SubAck(a) => In::SubAck {
                refused: a
                    .return_codes
                    .iter()
                    .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                    .map(|c| format!("{c:?}"))
                    .collect(),
            },
            Packet::Publish(p) => In::Publish {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload,
                qos: p.qos as u8,
                pkid: p.pkid,
            },
            Packet::PingResp(_) => In::PingResp,
            Packet::Disconnect(d) => In::Disconnect { reason: format!("{:?}", d.reason_code) },
            Packet::Auth(_) => In::Other("AUTH (enhanced authentication is not supported)"),
            _ => In::Other("unexpected packet"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubacks_are_the_four_bytes_both_versions_define() {
        for w in [&V4 as &dyn Wire, &V5] {
            let mut out = BytesMut::new();
            w.puback(0x1234, &mut out);
            assert_eq!(&out[..], &[0x40, 0x02, 0x12, 0x34]);
        }
        // And rumqttc's decoders read them as PUBACKs of that packet id.
        let mut b = BytesMut::from(&[0x40u8, 0x02, 0x12, 0x34][..]);
        assert!(matches!(
            rumqttc::mqttbytes::v4::Packet::read(&mut b, 16).unwrap(),
            rumqttc::mqttbytes::v4::Packet::PubAck(p) if p.pkid == 0x1234
        ));
        let mut b = BytesMut::from(&[0x40u8, 0x02, 0x12, 0x34][..]);
        assert!(matches!(
            rumqttc::v5::mqttbytes::v5::Packet::read(&mut b, None).unwrap(),
            rumqttc::v5::mqttbytes::v5::Packet::PubAck(p) if p.pkid == 0x1234
        ));
    }

    #[test]
    fn a_packet_split_across_reads_waits_for_its_end() {
        use rumqttc::mqttbytes::v4::{Packet, Publish};
        let mut whole = BytesMut::new();
        let mut p = Publish::new("telemetry/V1/speed", rumqttc::mqttbytes::QoS::AtLeastOnce, "42");
        p.pkid = 7;
        Packet::Publish(p).write(&mut whole, usize::MAX).unwrap();
        let mut buf = BytesMut::from(&whole[..5]);
        assert!(V4.read(&mut buf, 1 << 20).unwrap().is_none());
        buf.extend_from_slice(&whole[5..]);
        match V4.read(&mut buf, 1 << 20).unwrap() {
            Some(In::Publish { topic, payload, qos: 1, pkid: 7 }) => {
                assert_eq!((topic.as_str(), &payload[..]), ("telemetry/V1/speed", &b"42"[..]))
            }
            other => panic!("{other:?}"),
        }
        assert!(buf.is_empty());
    }
}
