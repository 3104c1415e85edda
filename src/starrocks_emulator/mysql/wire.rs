//! The MySQL wire format: framed packets (split and joined at 16 MiB),
//! little-endian reads of a client's packets, and the replies (OK, EOF,
//! ERR, text result sets).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A payload of this length continues in the next packet.
pub(super) const MAX_PACKET: usize = 0xFF_FFFF;
/// The largest statement the emulator reads (a client's `max_allowed_packet`).
pub(super) const MAX_STATEMENT: usize = 64 << 20;
/// utf8_general_ci.
pub(super) const CHARSET: u8 = 33;
pub(super) const SERVER_STATUS_AUTOCOMMIT: u16 = 0x2;

/// Framed packets over one stream: reads reassemble split payloads, writes
/// are buffered until [`Packets::flush`].
pub(super) struct Packets<S> {
    pub(super) io: S,
    pub(super) seq: u8,
    out: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Packets<S> {
    pub(super) fn new(io: S, seq: u8) -> Self {
        Packets { io, seq, out: Vec::new() }
    }

    /// The next payload, or `None` when the client closed between packets.
    pub(super) async fn read(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut payload = Vec::new();
        loop {
            let mut h = [0u8; 4];
            match self.io.read_exact(&mut h).await {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && payload.is_empty() => return Ok(None),
                Err(e) => return Err(e),
            }
            let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
            self.seq = h[3].wrapping_add(1);
            if payload.len() + len > MAX_STATEMENT {
                return Err(io::Error::other(format!("packet larger than {MAX_STATEMENT} bytes")));
            }
            let start = payload.len();
            payload.resize(start + len, 0);
            self.io.read_exact(&mut payload[start..]).await?;
            if len < MAX_PACKET {
                return Ok(Some(payload));
            }
        }
    }

    pub(super) fn push(&mut self, payload: &[u8]) {
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_PACKET);
            self.out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
            self.out.push(self.seq);
            self.seq = self.seq.wrapping_add(1);
            self.out.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            // A payload of exactly 16 MiB ends with an empty packet.
            if n < MAX_PACKET {
                break;
            }
        }
    }

    pub(super) async fn flush(&mut self) -> io::Result<()> {
        self.io.write_all(&self.out).await?;
        self.out.clear();
        self.io.flush().await
    }
}

pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A little-endian reader over a payload; `None` when it runs short.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub(super) fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(super) fn lenenc(&mut self) -> Option<u64> {
        match self.u8()? {
            n @ 0..=250 => Some(n as u64),
            0xfc => self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u64),
            0xfd => self.take(3).map(|b| u32::from_le_bytes([b[0], b[1], b[2], 0]) as u64),
            0xfe => self.take(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))),
            _ => None,
        }
    }
    pub(super) fn nul_str(&mut self) -> Option<&'a [u8]> {
        let end = self.0.iter().position(|b| *b == 0)?;
        let s = self.take(end)?;
        self.skip(1)?;
        Some(s)
    }
}

/// What a command answers.
pub(super) enum Reply {
    Ok,
    /// A bare EOF packet (COM_FIELD_LIST's end).
    Eof,
    Err {
        code: u16,
        state: &'static str,
        msg: String,
    },
    Rows {
        columns: Vec<String>,
        rows: Vec<Vec<Option<String>>>,
    },
}

impl Reply {
    pub(super) fn err(code: u16, state: &'static str, msg: &str) -> Reply {
        Reply::Err { code, state, msg: msg.to_string() }
    }
}

pub(super) fn lenenc_int(b: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => b.push(n as u8),
        251..=0xffff => {
            b.push(0xfc);
            b.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            b.push(0xfd);
            b.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            b.push(0xfe);
            b.extend_from_slice(&n.to_le_bytes());
        }
    }
}

pub(super) fn lenenc_str(b: &mut Vec<u8>, s: &[u8]) {
    lenenc_int(b, s.len() as u64);
    b.extend_from_slice(s);
}

pub(super) fn eof() -> Vec<u8> {
    let mut b = vec![0xfe, 0, 0];
    b.extend_from_slice(&SERVER_STATUS_AUTOCOMMIT.to_le_bytes());
    b
}

pub(super) fn write_reply<S: AsyncRead + AsyncWrite + Unpin>(p: &mut Packets<S>, reply: Reply) {
    match reply {
        Reply::Ok => {
            let mut b = vec![0, 0, 0];
            b.extend_from_slice(&SERVER_STATUS_AUTOCOMMIT.to_le_bytes());
            b.extend_from_slice(&0u16.to_le_bytes());
            p.push(&b);
        }
        Reply::Eof => p.push(&eof()),
        Reply::Err { code, state, msg } => {
            let mut b = vec![0xff];
            b.extend_from_slice(&code.to_le_bytes());
            b.push(b'#');
            b.extend_from_slice(state.as_bytes());
            b.extend_from_slice(msg.as_bytes());
            p.push(&b);
        }
        Reply::Rows { columns, rows } => {
            let mut b = Vec::new();
            lenenc_int(&mut b, columns.len() as u64);
            p.push(&b);
            for (i, name) in columns.iter().enumerate() {
                let width = rows.iter().filter_map(|r| r[i].as_ref()).map(|v| v.len()).max().unwrap_or(0).max(1);
                let mut b = Vec::new();
                lenenc_str(&mut b, b"def");
                for part in ["", "", ""] {
                    lenenc_str(&mut b, part.as_bytes());
                }
                lenenc_str(&mut b, name.as_bytes());
                lenenc_str(&mut b, name.as_bytes());
                b.push(0x0c);
                b.extend_from_slice(&(CHARSET as u16).to_le_bytes());
                b.extend_from_slice(&(width as u32).to_le_bytes());
                b.push(0xfd); // VAR_STRING
                b.extend_from_slice(&0u16.to_le_bytes());
                b.push(0);
                b.extend_from_slice(&[0, 0]);
                p.push(&b);
            }
            p.push(&eof());
            for row in rows {
                let mut b = Vec::new();
                for v in row {
                    match v {
                        Some(v) => lenenc_str(&mut b, v.as_bytes()),
                        None => b.push(0xfb),
                    }
                }
                p.push(&b);
            }
            p.push(&eof());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_16_mib_payload_is_split_and_ends_with_an_empty_packet() {
        let mut p = Packets::new(tokio::io::empty(), 3);
        p.push(&vec![7u8; MAX_PACKET]);
        assert_eq!(p.out.len(), 4 + MAX_PACKET + 4);
        assert_eq!(&p.out[..4], &[0xff, 0xff, 0xff, 3]);
        assert_eq!(&p.out[4 + MAX_PACKET..], &[0, 0, 0, 4]);
        assert_eq!(p.seq, 5);
    }
}
