//! The MQTT connection: TCP (or TLS), CONNECT, SUBSCRIBE, then one loop
//! that reads publishes into the WAL and writes their PUBACKs once durable.
//!
//! Per connection:
//! - **Reading**: whatever the socket holds (up to 256 KiB per read), every
//!   whole packet in it parsed at once, at most one read per millisecond.
//!   While appended records wait for their group commit, a read that the
//!   gate held back waits for the commit's wake-up (the acks) instead of a
//!   timer of its own: a steady stream costs about one wake-up per group
//!   commit, acks and the next read together, not one per message. Nor do
//!   the broker's packets wake the runtime meanwhile: the socket's receive
//!   low-water mark is raised while a commit is awaited (`quiet_socket`). A
//!   publish is appended to the WAL (or, while the WAL is full, held; at
//!   `receive_maximum` held, reading pauses: TCP backpressure to the
//!   broker). The ack queue is `acks.rs`, without I/O.
//! - **Acknowledging**: a QoS 1 publish waits with its WAL sequence
//!   number. When the WAL says a group commit is durable, the
//!   PUBACKs of every record it covers go out in receive order (MQTT §4.6)
//!   in one socket write: one write per group commit, not one per message.
//! - **Keep-alive**: a PINGREQ when nothing was written for `keep_alive`
//!   (the broker's Server Keep Alive under MQTT 5); no PINGRESP within the
//!   next interval ends the connection.
//! - **Ends**: any error ends the connection (the caller reconnects with
//!   back-off). What was appended but not acknowledged is redelivered by
//!   the broker under the persistent session, and the WAL's dedup horizon
//!   drops the copies it already holds.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::MqttConfig;
use super::acks::AckQueue;
use super::wire::{In, Wire};
use crate::telemetry::Stats;
use crate::util::now_ms;
use crate::wal::{Record, Wal};

trait Stream: AsyncRead + AsyncWrite + AsRawFd + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + AsRawFd + Unpin + Send> Stream for T {}

/// How a connection ended without an error.
pub(super) enum End {
    /// `shutdown` flipped: acknowledged what was durable, disconnected.
    Stopped,
}

/// What one connection shares with the source.
pub(super) struct Ctx<'a> {
    pub cfg: &'a MqttConfig,
    pub wire: &'a dyn Wire,
    pub tls: Option<&'a tokio_rustls::TlsConnector>,
    pub wal: &'a Arc<Wal>,
    pub stats: &'a Stats,
    pub ready: &'a watch::Sender<bool>,
}

/// The least time between two socket reads (see `serve`).
const READ_GATE: Duration = Duration::from_millis(1);

/// Bounds a network step (connect, handshake, a write).
const IO_TIMEOUT: Duration = Duration::from_secs(10);

async fn timed<T>(what: &str, f: impl Future<Output = std::io::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no progress within {IO_TIMEOUT:?}")),
    }
}

/// One connection, until an error (returned) or `shutdown`.
pub(super) async fn serve(
    ctx: &Ctx<'_>,
    durable: &mut watch::Receiver<u64>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<End, String> {
    let cfg = ctx.cfg;
    let mut out = BytesMut::with_capacity(4096);
    let mut rbuf = BytesMut::with_capacity(256 * 1024);
    let (mut stream, keep_alive) = tokio::select! {
        r = connect(ctx.cfg, ctx.wire, ctx.tls, &mut out, &mut rbuf) => r?,
        _ = shutdown.changed() => return Ok(End::Stopped),
    };
    let mut last_write = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    let mut acks = AckQueue::new(cfg.receive_maximum as usize);
    // The publishes of one read, on their way to the WAL, and how they (and
    // those held while it was full) go in: in order, while it has room.
    let mut burst = VecDeque::new();
    let append = |b: &mut VecDeque<(Record, Option<u16>)>, done: &mut dyn FnMut(u64, Option<u16>)| {
        ctx.wal.append_while_room(b, |a, pkid| done(a.seq(), pkid))
    };
    // Reads are at most one per READ_GATE: a steady stream then costs one
    // wake-up and one read per millisecond, not one per message.
    let mut read_gate = Instant::now();
    // Whether the socket's low-water mark is raised (see `quiet_socket`).
    let mut quiet = false;
    loop {
        // The PUBACKs of everything durable, in receive order, one write.
        out.clear();
        acks.durable(*durable.borrow_and_update(), |pkid| ctx.wire.puback(pkid, &mut out));
        if !out.is_empty() {
            timed("PUBACK", stream.write_all(&out)).await?;
            ctx.stats.mqtt_ack_writes.fetch_add(1, Ordering::Relaxed);
            last_write = Instant::now();
        }
        acks.release_held(append);
        if let Some(e) = ctx.wal.failed() {
            return Err(e);
        }
        let ping_due = match ping_sent {
            Some(at) => at + keep_alive,
            None => last_write + keep_alive,
        };
        let gated = Instant::now() < read_gate;
        // Records wait for a group commit, whose wake-up reads next: the
        // broker's packets need not wake the runtime meanwhile.
        let commit_awaited = acks.awaiting_commit();
        if quiet != commit_awaited {
            quiet = commit_awaited;
            quiet_socket(&*stream, quiet);
        }
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                stop(ctx, &mut *stream, durable, &mut acks).await;
                return Ok(End::Stopped);
            }
            r = durable.changed() => r.map_err(|_| "the WAL writer stopped".to_string())?,
            _ = tokio::time::sleep(Duration::from_millis(50)), if acks.holding() => {}
            // With records waiting, the durable change above comes within a
            // commit interval and reads then; no timer wake-up of its own.
            _ = tokio::time::sleep_until(read_gate), if gated && !commit_awaited => {}
            _ = tokio::time::sleep_until(ping_due) => {
                if ping_sent.is_some() {
                    return Err(format!("no PINGRESP within the keep-alive ({keep_alive:?})"));
                }
                out.clear();
                ctx.wire.pingreq(&mut out);
                timed("PINGREQ", stream.write_all(&out)).await?;
                last_write = Instant::now();
                ping_sent = Some(last_write);
            }
            n = stream.read_buf(&mut rbuf), if acks.may_read() && !gated => {
                if n.map_err(|e| format!("read: {e}"))? == 0 {
                    return Err("the broker closed the connection".into());
                }
                read_gate = Instant::now() + READ_GATE;
                // Every publish of the read goes to the WAL in one call.
                let received_ms = now_ms();
                while let Some(p) = ctx.wire.read(&mut rbuf, cfg.max_packet_bytes)? {
                    on_packet(ctx, p, received_ms, &mut burst, &mut ping_sent)?;
                }
                if !burst.is_empty() {
                    acks.received(&mut burst, append);
                }
            }
        }
    }
}

/// One packet from the broker: a publish joins the read's burst (for the
/// WAL), a granted SUBACK makes the source ready; a refusal, a DISCONNECT
/// or a second CONNACK ends the connection.
fn on_packet(
    ctx: &Ctx<'_>,
    p: In,
    received_ms: i64,
    burst: &mut VecDeque<(Record, Option<u16>)>,
    ping_sent: &mut Option<Instant>,
) -> Result<(), String> {
    let cfg = ctx.cfg;
    match p {
        In::Publish { topic, payload, qos, pkid } => {
            if qos > 1 {
                return Err(format!("a QoS {qos} publish on {topic}, though rockfeed subscribed at QoS {}", cfg.qos));
            }
            ctx.stats.mqtt_received.fetch_add(1, Ordering::Relaxed);
            ctx.stats.mqtt_payload_bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
            let r = Record { qos, received_ms, topic, payload };
            burst.push_back((r, (qos == 1).then_some(pkid)));
        }
        In::SubAck { refused } if refused.is_empty() => {
            let _ = ctx.ready.send(true);
        }
        In::SubAck { refused } => {
            return Err(format!("the broker refused the subscription of {:?}: {refused:?}", cfg.topics));
        }
        In::PingResp => *ping_sent = None,
        In::Disconnect { reason } => return Err(format!("the broker disconnected: {reason}")),
        In::ConnAck { .. } => return Err("a second CONNACK".into()),
        In::Other(what) => tracing::debug!(what, "Ignored an MQTT packet."),
    }
    Ok(())
}

/// TCP (or TLS), CONNECT, CONNACK, SUBSCRIBE: the stream and the keep-alive
/// to use.
async fn connect(
    cfg: &MqttConfig,
    wire: &dyn Wire,
    tls: Option<&tokio_rustls::TlsConnector>,
    out: &mut BytesMut,
    rbuf: &mut BytesMut,
) -> Result<(Box<dyn Stream>, Duration), String> {
    let tcp = timed("connect", tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port))).await?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut stream: Box<dyn Stream> = match tls {
        None => Box::new(tcp),
        Some(c) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(cfg.host.clone())
                .map_err(|e| format!("TLS server name {}: {e}", cfg.host))?;
            Box::new(timed("TLS handshake", c.connect(name, tcp)).await?)
        }
    };
    out.clear();
    wire.connect(cfg, cfg.password(), out)?;
    timed("CONNECT", stream.write_all(out)).await?;
    let keep_alive = match timed("CONNACK", next_packet(cfg, wire, &mut *stream, rbuf)).await? {
        In::ConnAck { refused: Some(r), .. } => return Err(format!("the broker refused the connection: {r}")),
        In::ConnAck { keep_alive, session_present, .. } => {
            tracing::info!(host = %cfg.host, port = cfg.port, protocol = %cfg.protocol, session_present, "MQTT connected; subscribing.");
            Duration::from_secs(keep_alive.map(u64::from).unwrap_or(cfg.keep_alive_secs).max(1))
        }
        other => return Err(format!("expected CONNACK, got {other:?}")),
    };
    out.clear();
    wire.subscribe(&cfg.topics, cfg.qos, 1, out)?;
    timed("SUBSCRIBE", stream.write_all(out)).await?;
    Ok((stream, keep_alive))
}

/// The preflight (`rockfeed check --connect`): CONNECT and SUBSCRIBE as
/// [`serve`] does, wait for the SUBACK, then DISCONNECT.
pub(super) async fn probe(
    cfg: &MqttConfig,
    wire: &dyn Wire,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<(), String> {
    let (mut out, mut rbuf) = (BytesMut::new(), BytesMut::new());
    let (mut stream, _) = connect(cfg, wire, tls, &mut out, &mut rbuf).await?;
    loop {
        match timed("SUBACK", next_packet(cfg, wire, &mut *stream, &mut rbuf)).await? {
            In::SubAck { refused } if refused.is_empty() => break,
            In::SubAck { refused } => {
                return Err(format!("the broker refused the subscription of {:?}: {refused:?}", cfg.topics));
            }
            In::Disconnect { reason } => return Err(format!("the broker disconnected: {reason}")),
            // Retained messages may come first; a clean session drops them.
            _ => {}
        }
    }
    out.clear();
    wire.disconnect(&mut out);
    let _ = timed("DISCONNECT", stream.write_all(&out)).await;
    let _ = stream.shutdown().await;
    Ok(())
}

/// Reads until one whole packet is in `rbuf`.
async fn next_packet(
    cfg: &MqttConfig,
    wire: &dyn Wire,
    stream: &mut dyn Stream,
    rbuf: &mut BytesMut,
) -> std::io::Result<In> {
    loop {
        if let Some(p) = wire.read(rbuf, cfg.max_packet_bytes).map_err(std::io::Error::other)? {
            return Ok(p);
        }
        if stream.read_buf(rbuf).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed by the broker"));
        }
    }
}

/// Stopping: what was appended becomes durable within a commit interval;
/// acknowledge it, then DISCONNECT (up to 2 s). What is left unacknowledged
/// is redelivered at the next start, and the WAL drops the copies.
async fn stop(ctx: &Ctx<'_>, stream: &mut dyn Stream, durable: &mut watch::Receiver<u64>, acks: &mut AckQueue) {
    if let Some(last) = acks.last_waiting() {
        let _ = tokio::time::timeout(Duration::from_secs(2), durable.wait_for(|&d| d > last)).await;
    }
    let mut out = BytesMut::new();
    acks.durable(*durable.borrow(), |pkid| ctx.wire.puback(pkid, &mut out));
    ctx.wire.disconnect(&mut out);
    // Then read until the broker closes: closing a socket with unread data
    // makes the kernel send RST, and the broker would drop the PUBACKs it
    // has not read yet (they would all be redelivered).
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(&out).await?;
        stream.shutdown().await?;
        let mut sink = vec![0u8; 64 * 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
    if acks.unacked() > 0 {
        tracing::warn!(unacked = acks.unacked(), "Stopped with acks unsent; the broker will redeliver those messages.");
    }
}

/// While records wait for their group commit, the socket's receive
/// low-water mark (`SO_RCVLOWAT`) is raised to [`QUIET_LOWAT`]; back to 1
/// byte otherwise. A broker writes one packet per message, and every
/// arrival on a socket with a low mark of 1 wakes the runtime's poller
/// (measured: about 2,000 wake-ups/s at 30k msg/s, for reads the gate holds
/// back anyway). With the mark raised they wake nobody: the commit's
/// wake-up reads what came, and a reader that does find 64 KiB waiting is
/// woken at once. Lowering the mark signals data already there (Linux
/// `tcp_set_rcvlowat`), so nothing waits past the commit. A failure only
/// costs those wake-ups; it is logged once.
fn quiet_socket(stream: &dyn Stream, quiet: bool) {
    static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let mark: libc::c_int = if quiet { QUIET_LOWAT } else { 1 };
    if let Err(e) = set_rcvlowat(stream.as_raw_fd(), mark)
        && !REPORTED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(error = %e, "Cannot set SO_RCVLOWAT on the MQTT socket; every packet will wake the reader (more CPU, nothing else).");
    }
}

/// The raised low-water mark: far above what arrives within a commit
/// interval at the rates the appliance takes (10 MB/s brings 20 KiB per
/// 2 ms), and half of Linux's default receive buffer (`tcp_rmem`, 128 KiB),
/// the most it accepts without growing the buffer for it.
const QUIET_LOWAT: libc::c_int = 64 * 1024;

#[allow(unsafe_code)]
fn set_rcvlowat(fd: std::os::fd::RawFd, mark: libc::c_int) -> std::io::Result<()> {
    // SAFETY: `fd` is the live socket of a stream the caller borrows; the
    // option value is a c_int on the stack, passed with its exact size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&mark as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}
