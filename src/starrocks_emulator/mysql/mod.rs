//! The FE's MySQL port (StarRocks' `query_port`, 9030), as far as
//! `rockfeed check --connect` and an operator's `mysql` client need it.
//!
//! - **Handshake** as StarRocks' `MysqlHandshakePacket` writes it: protocol
//!   10, a 20-byte scramble, `mysql_native_password`, and StarRocks'
//!   capabilities (PROTOCOL_41, CONNECT_WITH_DB, SECURE_CONNECTION,
//!   PLUGIN_AUTH, LONG_FLAG, CONNECT_ATTRS, PLUGIN_AUTH_LENENC_CLIENT_DATA),
//!   plus SSL when the FE serves TLS (`--fe-tls-cert`: the same certificate,
//!   as StarRocks shares its keystore between the HTTP and MySQL ports).
//! - **Authentication** as `MysqlProto.negotiate`: a client that starts with
//!   another plugin (MySQL 8's `caching_sha2_password`) is sent an
//!   AuthSwitchRequest back to `mysql_native_password`;
//!   `mysql_clear_password` is accepted as sent. A wrong user or password is
//!   ERR 1045 `Access denied for user 'u' (using password: YES)`.
//! - **Statements**: `SHOW CREATE TABLE` (the table as StarRocks 3.3 prints
//!   it, [`TableDef::show_create`]), `ADMIN SHOW FRONTEND CONFIG [LIKE '…']`
//!   (the FE settings the emulator models; ERR 1227 without the OPERATE
//!   privilege, `--no-operate-privilege`), `SHOW DATABASES`, `SHOW TABLES`,
//!   `USE`, `SET …` (accepted, no effect), and `SELECT` of a literal,
//!   `@@variables`, `database()`, `version()` or `current_version()`, which
//!   clients send on connect. Anything else is ERR 1064 naming what the
//!   emulator answers: it has no query engine (read rows through
//!   `GET /_emulator/{db}/{table}`).
//! - **Wire**: text result sets with EOF packets (CLIENT_DEPRECATE_EOF is
//!   not offered, as StarRocks 3.3 does not), packets split and joined at
//!   16 MiB, COM_QUERY, COM_INIT_DB, COM_PING, COM_FIELD_LIST (empty) and
//!   COM_QUIT.
//!
//! [`TableDef::show_create`]: crate::starrocks::ddl::TableDef::show_create

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use sha1::{Digest, Sha1};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use self::statement::{statement, unknown_db, use_db};
use self::wire::{CHARSET, Io, Packets, Reader, Reply, write_reply};
use super::Ctx;

mod statement;
mod wire;

const CLIENT_LONG_FLAG: u32 = 0x4;
const CLIENT_CONNECT_WITH_DB: u32 = 0x8;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
const CLIENT_CONNECT_ATTRS: u32 = 0x10_0000;
const CLIENT_PLUGIN_AUTH_LENENC: u32 = 0x20_0000;
/// StarRocks' `MysqlCapability.DEFAULT_CAPABILITY`.
const CAPABILITIES: u32 = CLIENT_PROTOCOL_41
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_SECURE_CONNECTION
    | CLIENT_PLUGIN_AUTH
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC;
const NATIVE: &str = "mysql_native_password";
const CLEAR: &str = "mysql_clear_password";
/// The MySQL version StarRocks 3.x reports (`SELECT version()`).
const SERVER_VERSION: &str = "8.0.33";
static CONNECTION_ID: AtomicU32 = AtomicU32::new(1);

/// Accepts connections until `shutdown` flips; each is served on its own task.
pub(crate) async fn serve(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<Ctx>,
) {
    let stop = shutdown.clone();
    crate::httpd::accept_loop(listener, &mut shutdown, |stream, peer| {
        let (ctx, tls, mut stop) = (ctx.clone(), tls.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.changed() => {}
                r = session(stream, peer, tls, ctx) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, %peer, "MySQL connection ended.");
                    }
                }
            }
        });
    })
    .await
}

async fn session(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<Ctx>,
) -> io::Result<()> {
    let id = CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
    let scramble = scramble();
    let caps = CAPABILITIES | if tls.is_some() { CLIENT_SSL } else { 0 };
    let mut p = Packets::new(tcp, 0);
    p.push(&handshake(id, &scramble, caps));
    p.flush().await?;
    let Some(first) = p.read().await? else { return Ok(()) };
    let client_caps = Reader(&first).u32().unwrap_or(0);
    let (mut p, response): (Packets<Box<dyn Io>>, Vec<u8>) = match &tls {
        // An SSLRequest is the first 32 bytes of a HandshakeResponse41.
        Some(acceptor) if first.len() == 32 && client_caps & CLIENT_SSL != 0 => {
            let seq = p.seq;
            let stream = acceptor.accept(p.io).await?;
            let mut p = Packets::new(Box::new(stream) as Box<dyn Io>, seq);
            let Some(r) = p.read().await? else { return Ok(()) };
            (p, r)
        }
        _ => (Packets::new(Box::new(p.io) as Box<dyn Io>, p.seq), first),
    };
    let mut db = match authenticate(&mut p, &ctx, &scramble, &response, peer).await? {
        Ok(db) => db,
        Err(reply) => {
            write_reply(&mut p, reply);
            return p.flush().await;
        }
    };
    write_reply(&mut p, Reply::Ok);
    p.flush().await?;
    loop {
        let Some(pkt) = p.read().await? else { return Ok(()) };
        let reply = match pkt.first() {
            Some(0x01) => return Ok(()),
            Some(0x02) => use_db(&ctx, &mut db, &String::from_utf8_lossy(&pkt[1..])),
            Some(0x03) => statement(&ctx, &mut db, id, &String::from_utf8_lossy(&pkt[1..])),
            // COM_FIELD_LIST (the `mysql` client's auto-rehash): no columns.
            Some(0x04) => Reply::Eof,
            Some(0x0e) => Reply::Ok,
            other => Reply::err(1047, "08S01", &format!("Unknown command {:#04x}", other.copied().unwrap_or(0))),
        };
        write_reply(&mut p, reply);
        p.flush().await?;
    }
}

/// 20 bytes of 1..=127: both scramble parts are sent NUL-terminated.
fn scramble() -> [u8; 20] {
    use rand::Rng;
    let mut rng = rand::rng();
    std::array::from_fn(|_| rng.random_range(1..=127u8))
}

fn handshake(id: u32, scramble: &[u8; 20], caps: u32) -> Vec<u8> {
    let mut b = vec![10u8];
    b.extend_from_slice(SERVER_VERSION.as_bytes());
    b.push(0);
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&scramble[..8]);
    b.push(0);
    b.extend_from_slice(&(caps as u16).to_le_bytes());
    b.push(CHARSET);
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    b.push(21);
    b.extend_from_slice(&[0; 10]);
    b.extend_from_slice(&scramble[8..]);
    b.push(0);
    b.extend_from_slice(NATIVE.as_bytes());
    b.push(0);
    b
}

/// Checks the HandshakeResponse41; the database it names is the session's.
async fn authenticate(
    p: &mut Packets<Box<dyn Io>>,
    ctx: &Ctx,
    scramble: &[u8; 20],
    response: &[u8],
    peer: SocketAddr,
) -> io::Result<Result<Option<String>, Reply>> {
    let bad = || Reply::err(1043, "08S01", "Bad handshake");
    let mut r = Reader(response);
    let Some(caps) = r.u32() else { return Ok(Err(bad())) };
    if caps & CLIENT_PROTOCOL_41 == 0 {
        return Ok(Err(Reply::err(
            1251,
            "08004",
            "Client does not support the 4.1 protocol; upgrade the MySQL client",
        )));
    }
    let parsed = (|| {
        r.skip(4 + 1 + 23)?;
        let user = String::from_utf8_lossy(r.nul_str()?).into_owned();
        let auth = if caps & CLIENT_PLUGIN_AUTH_LENENC != 0 {
            let n = r.lenenc()? as usize;
            r.take(n)?.to_vec()
        } else if caps & CLIENT_SECURE_CONNECTION != 0 {
            let n = r.u8()? as usize;
            r.take(n)?.to_vec()
        } else {
            r.nul_str()?.to_vec()
        };
        let db = if caps & CLIENT_CONNECT_WITH_DB != 0 && !r.0.is_empty() {
            Some(String::from_utf8_lossy(r.nul_str()?).into_owned()).filter(|d| !d.is_empty())
        } else {
            None
        };
        let plugin = if caps & CLIENT_PLUGIN_AUTH != 0 && !r.0.is_empty() {
            Some(String::from_utf8_lossy(r.nul_str()?).into_owned())
        } else {
            None
        };
        Some((user, auth, db, plugin))
    })();
    let Some((user, mut auth, db, plugin)) = parsed else { return Ok(Err(bad())) };
    let clear = plugin.as_deref() == Some(CLEAR);
    if plugin.as_deref().is_some_and(|pl| pl != NATIVE && pl != CLEAR) {
        // Back to the plugin StarRocks speaks, with the same scramble.
        let mut sw = vec![0xfe];
        sw.extend_from_slice(NATIVE.as_bytes());
        sw.push(0);
        sw.extend_from_slice(scramble);
        sw.push(0);
        p.push(&sw);
        p.flush().await?;
        match p.read().await? {
            Some(a) => auth = a,
            None => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the auth switch")),
        }
    }
    let password_ok = if clear {
        let sent = auth.strip_suffix(&[0]).unwrap_or(&auth);
        sent == ctx.cfg.password.as_bytes()
    } else {
        native_password_ok(&ctx.cfg.password, scramble, &auth)
    };
    if user != ctx.cfg.user || !password_ok {
        tracing::debug!(%user, %peer, "MySQL login refused.");
        let using = if auth.is_empty() { "NO" } else { "YES" };
        return Ok(Err(Reply::err(
            1045,
            "28000",
            &format!("Access denied for user '{user}' (using password: {using})"),
        )));
    }
    match db {
        Some(d) if !ctx.cfg.catalog.databases.contains(&d) => Ok(Err(unknown_db(&d))),
        db => Ok(Ok(db)),
    }
}

/// `mysql_native_password`: the client sends SHA1(pw) XOR SHA1(scramble ‖ SHA1(SHA1(pw))).
fn native_password_ok(password: &str, scramble: &[u8], response: &[u8]) -> bool {
    if password.is_empty() {
        return response.is_empty();
    }
    if response.len() != 20 {
        return false;
    }
    let h1 = Sha1::digest(password.as_bytes());
    let h2 = Sha1::digest(h1);
    let mut m = Sha1::new();
    m.update(scramble);
    m.update(h2);
    let h3 = m.finalize();
    response.iter().zip(h3.iter()).zip(h1.iter()).all(|((r, x), h)| r ^ x == *h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_password_answers_the_scramble() {
        let scramble = *b"abcdefghijklmnopqrst";
        let h1 = Sha1::digest(b"pw");
        let h2 = Sha1::digest(h1);
        let h3 = Sha1::digest([&scramble[..], &h2[..]].concat());
        let response: Vec<u8> = h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect();
        assert!(native_password_ok("pw", &scramble, &response));
        assert!(!native_password_ok("other", &scramble, &response));
        assert!(!native_password_ok("pw", b"ABCDEFGHIJKLMNOPQRST", &response));
        assert!(native_password_ok("", &scramble, b""));
        assert!(!native_password_ok("pw", &scramble, b""));
    }
}
