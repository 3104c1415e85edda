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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::Ctx;
use crate::starrocks::sql::{Cursor, Tok, lex};

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
/// A payload of this length continues in the next packet.
const MAX_PACKET: usize = 0xFF_FFFF;
/// The largest statement the emulator reads (a client's `max_allowed_packet`).
const MAX_STATEMENT: usize = 64 << 20;
const NATIVE: &str = "mysql_native_password";
const CLEAR: &str = "mysql_clear_password";
/// The MySQL version StarRocks 3.x reports (`SELECT version()`).
const SERVER_VERSION: &str = "8.0.33";
/// utf8_general_ci.
const CHARSET: u8 = 33;
const SERVER_STATUS_AUTOCOMMIT: u16 = 0x2;

static CONNECTION_ID: AtomicU32 = AtomicU32::new(1);

/// Accepts connections until `shutdown` flips; each is served on its own task.
pub(crate) async fn serve(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<Ctx>,
) {
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "Accept failed.");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (ctx, tls, mut stop) = (ctx.clone(), tls.clone(), shutdown.clone());
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
            }
        }
    }
}

/// Framed packets over one stream: reads reassemble split payloads, writes
/// are buffered until [`Packets::flush`].
struct Packets<S> {
    io: S,
    seq: u8,
    out: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Packets<S> {
    fn new(io: S, seq: u8) -> Self {
        Packets { io, seq, out: Vec::new() }
    }

    /// The next payload, or `None` when the client closed between packets.
    async fn read(&mut self) -> io::Result<Option<Vec<u8>>> {
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

    fn push(&mut self, payload: &[u8]) {
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

    async fn flush(&mut self) -> io::Result<()> {
        self.io.write_all(&self.out).await?;
        self.out.clear();
        self.io.flush().await
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

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

/// A little-endian reader over a payload; `None` when it runs short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn lenenc(&mut self) -> Option<u64> {
        match self.u8()? {
            n @ 0..=250 => Some(n as u64),
            0xfc => self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u64),
            0xfd => self.take(3).map(|b| u32::from_le_bytes([b[0], b[1], b[2], 0]) as u64),
            0xfe => self.take(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))),
            _ => None,
        }
    }
    fn nul_str(&mut self) -> Option<&'a [u8]> {
        let end = self.0.iter().position(|b| *b == 0)?;
        let s = self.take(end)?;
        self.skip(1)?;
        Some(s)
    }
}

/// What a command answers.
enum Reply {
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
    fn err(code: u16, state: &'static str, msg: &str) -> Reply {
        Reply::Err { code, state, msg: msg.to_string() }
    }
}

fn unknown_db(db: &str) -> Reply {
    Reply::err(1049, "42000", &format!("Unknown database '{db}'"))
}

fn lenenc_int(b: &mut Vec<u8>, n: u64) {
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

fn lenenc_str(b: &mut Vec<u8>, s: &[u8]) {
    lenenc_int(b, s.len() as u64);
    b.extend_from_slice(s);
}

fn eof() -> Vec<u8> {
    let mut b = vec![0xfe, 0, 0];
    b.extend_from_slice(&SERVER_STATUS_AUTOCOMMIT.to_le_bytes());
    b
}

fn write_reply<S: AsyncRead + AsyncWrite + Unpin>(p: &mut Packets<S>, reply: Reply) {
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

fn use_db(ctx: &Ctx, db: &mut Option<String>, name: &str) -> Reply {
    if ctx.cfg.catalog.databases.iter().any(|d| d == name) {
        *db = Some(name.to_string());
        Reply::Ok
    } else {
        unknown_db(name)
    }
}

const ANSWERS: &str = "SHOW CREATE TABLE, ADMIN SHOW FRONTEND CONFIG, SHOW DATABASES, SHOW TABLES, USE, SET, \
     and SELECT of literals, @@variables, database(), version() and current_version()";

fn unsupported(sql: &str) -> Reply {
    let shown: String = sql.chars().take(120).collect();
    Reply::err(
        1064,
        "42000",
        &format!(
            "The StarRocks emulator has no query engine; it answers {ANSWERS} (rows: GET /_emulator/{{db}}/{{table}}). Not run: {shown}"
        ),
    )
}

fn one_row(columns: &[&str], values: Vec<Option<String>>) -> Reply {
    Reply::Rows { columns: columns.iter().map(|c| c.to_string()).collect(), rows: vec![values] }
}

fn statement(ctx: &Ctx, db: &mut Option<String>, id: u32, sql: &str) -> Reply {
    let sql = sql.trim().trim_end_matches(';').trim_end();
    if sql.len() >= 6 && sql[..6].eq_ignore_ascii_case("select") {
        return select(ctx, db, id, sql);
    }
    let Ok(toks) = lex(sql, 1) else { return unsupported(sql) };
    let mut c = Cursor::new(&toks);
    if c.eat_kw("SET") {
        return Reply::Ok;
    }
    if c.eat_kw("USE") {
        return match c.ident() {
            Ok(name) if c.at_end() => use_db(ctx, db, &name),
            _ => unsupported(sql),
        };
    }
    if c.eat_kw("ADMIN") {
        if !(c.eat_kw("SHOW") && c.eat_kw("FRONTEND") && c.eat_kw("CONFIG")) {
            return unsupported(sql);
        }
        let pattern = if c.eat_kw("LIKE") {
            match c.advance() {
                Some(Tok::Str(s)) => Some(s.clone()),
                _ => return unsupported(sql),
            }
        } else {
            None
        };
        if !c.at_end() {
            return unsupported(sql);
        }
        return frontend_config(ctx, pattern.as_deref());
    }
    if !c.eat_kw("SHOW") {
        return unsupported(sql);
    }
    if c.eat_kw("DATABASES") && c.at_end() {
        let rows = ctx.cfg.catalog.databases.iter().map(|d| vec![Some(d.clone())]).collect();
        return Reply::Rows { columns: vec!["Database".into()], rows };
    }
    if c.eat_kw("TABLES") {
        let name = if c.eat_kw("FROM") || c.eat_kw("IN") {
            match c.ident() {
                Ok(n) => Some(n),
                Err(_) => return unsupported(sql),
            }
        } else {
            db.clone()
        };
        if !c.at_end() {
            return unsupported(sql);
        }
        let Some(name) = name else { return no_database() };
        if !ctx.cfg.catalog.databases.contains(&name) {
            return unknown_db(&name);
        }
        let cat = &ctx.cfg.catalog;
        let mut names: Vec<String> = cat.tables.iter().filter(|t| t.db == name).map(|t| t.name.clone()).collect();
        names.extend(cat.views.iter().filter(|v| v.db == name).map(|v| v.name.clone()));
        names.sort();
        let rows = names.into_iter().map(|n| vec![Some(n)]).collect();
        return Reply::Rows { columns: vec![format!("Tables_in_{name}")], rows };
    }
    if c.eat_kw("CREATE") && c.eat_kw("TABLE") {
        let Ok(first) = c.ident() else { return unsupported(sql) };
        let (dbname, table) = if c.eat_sym(".") {
            match c.ident() {
                Ok(t) => (Some(first), t),
                Err(_) => return unsupported(sql),
            }
        } else {
            (db.clone(), first)
        };
        if !c.at_end() {
            return unsupported(sql);
        }
        let Some(dbname) = dbname else { return no_database() };
        let cat = &ctx.cfg.catalog;
        if !cat.databases.contains(&dbname) {
            return unknown_db(&dbname);
        }
        if let Some(t) = cat.table(&dbname, &table) {
            return one_row(&["Table", "Create Table"], vec![Some(t.name.clone()), Some(t.show_create())]);
        }
        if let Some(v) = cat.views.iter().find(|v| v.db == dbname && v.name.eq_ignore_ascii_case(&table)) {
            return one_row(
                &["View", "Create View", "character_set_client", "collation_connection"],
                vec![Some(v.name.clone()), Some(v.sql.clone()), Some("utf8".into()), Some("utf8_general_ci".into())],
            );
        }
        return Reply::err(1051, "42S02", &format!("Unknown table '{dbname}.{table}'"));
    }
    unsupported(sql)
}

fn no_database() -> Reply {
    Reply::err(1046, "3D000", "No database selected")
}

/// `ADMIN SHOW FRONTEND CONFIG`: the FE settings the emulator models, with
/// StarRocks' columns. Reading them needs the OPERATE privilege on SYSTEM.
fn frontend_config(ctx: &Ctx, pattern: Option<&str>) -> Reply {
    if !ctx.cfg.operate {
        return Reply::err(
            1227,
            "42000",
            "Access denied; you need (at least one of) the OPERATE privilege(s) on SYSTEM for this operation",
        );
    }
    let r = &ctx.cfg.registry;
    let settings: [(&str, String, &str); 3] = [
        ("label_keep_max_second", (r.label_keep_max_ms / 1000).to_string(), "long"),
        ("max_running_txn_num_per_db", r.max_running_txn_num_per_db.to_string(), "long"),
        ("prepared_transaction_default_timeout_second", (r.prepared_default_timeout_ms / 1000).to_string(), "int"),
    ];
    let rows = settings
        .into_iter()
        .filter(|(k, _, _)| pattern.is_none_or(|p| like(p, k)))
        .map(|(k, v, ty)| {
            [k, "[]", v.as_str(), ty, "true", ""].into_iter().map(|s| Some(s.to_string())).collect::<Vec<_>>()
        })
        .collect();
    Reply::Rows {
        columns: ["Key", "AliasNames", "Value", "Type", "IsMutable", "Comment"].iter().map(|s| s.to_string()).collect(),
        rows,
    }
}

/// SQL LIKE, case-insensitive as StarRocks' config matcher: `%` any run, `_` one character.
fn like(pattern: &str, s: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some(('_', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((c, rest)) => s.first().is_some_and(|x| x.eq_ignore_ascii_case(c)) && go(rest, &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    go(&p, &s)
}

/// `SELECT item, …  [LIMIT n]` where each item is a literal, an
/// `@@variable`, or one of the session functions clients ask on connect.
fn select(ctx: &Ctx, db: &Option<String>, id: u32, sql: &str) -> Reply {
    let body = sql[6..].trim();
    let body = match body.to_ascii_lowercase().rfind(" limit ") {
        Some(i) if body[i + 7..].trim().parse::<u64>().is_ok() => body[..i].trim(),
        _ => body,
    };
    if body.is_empty() {
        return unsupported(sql);
    }
    let mut columns = Vec::new();
    let mut values = Vec::new();
    for item in body.split(',') {
        let item = item.trim();
        // `expr [AS] alias`
        let (expr, alias) = match item.rsplit_once(char::is_whitespace) {
            Some((e, a)) if !e.trim().is_empty() && !a.contains('(') => {
                let e = e.trim();
                let e = e.strip_suffix(" as").or_else(|| e.strip_suffix(" AS")).unwrap_or(e).trim();
                (e, a.trim_matches('`').to_string())
            }
            _ => (item, item.to_string()),
        };
        let lower = expr.to_ascii_lowercase();
        let value = if let Some(var) = lower.strip_prefix("@@") {
            let var = var.strip_prefix("session.").or_else(|| var.strip_prefix("global.")).unwrap_or(var);
            match variable(var) {
                Some(v) => Some(v.to_string()),
                None => return Reply::err(1193, "HY000", &format!("Unknown system variable '{var}'")),
            }
        } else if lower == "database()" || lower == "schema()" {
            db.clone()
        } else if lower == "version()" {
            Some(SERVER_VERSION.to_string())
        } else if lower == "current_version()" {
            Some(format!("rockfeed-emulator-{}", env!("CARGO_PKG_VERSION")))
        } else if lower == "connection_id()" {
            Some(id.to_string())
        } else if lower == "current_user()" || lower == "user()" {
            Some(format!("'{}'@'%'", ctx.cfg.user))
        } else if !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_digit()) {
            Some(lower.clone())
        } else if let Some(s) = expr.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            Some(s.to_string())
        } else {
            return unsupported(sql);
        };
        columns.push(alias);
        values.push(value);
    }
    Reply::Rows { columns, rows: vec![values] }
}

/// The session variables clients read on connect, with StarRocks' values.
fn variable(name: &str) -> Option<&'static str> {
    Some(match name {
        "version_comment" => "StarRocks emulator (rockfeed)",
        "version" => SERVER_VERSION,
        "max_allowed_packet" => "33554432",
        "wait_timeout" => "28800",
        "interactive_timeout" => "3600",
        "net_write_timeout" => "60",
        "autocommit" => "1",
        "tx_isolation" | "transaction_isolation" => "REPEATABLE-READ",
        "sql_mode" => "ONLY_FULL_GROUP_BY",
        "time_zone" | "system_time_zone" => "UTC",
        "lower_case_table_names" => "0",
        "character_set_client" | "character_set_connection" | "character_set_results" | "character_set_server" => {
            "utf8"
        }
        "collation_connection" | "collation_server" => "utf8_general_ci",
        "query_timeout" => "300",
        _ => return None,
    })
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

    #[test]
    fn like_matches_as_sql_does() {
        assert!(like("max_running_txn_num_per_db", "MAX_RUNNING_TXN_NUM_PER_DB"));
        assert!(like("%txn%", "max_running_txn_num_per_db"));
        assert!(like("label_keep_max_secon_", "label_keep_max_second"));
        assert!(!like("txn", "max_running_txn_num_per_db"));
        assert!(like("%", ""));
    }

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
