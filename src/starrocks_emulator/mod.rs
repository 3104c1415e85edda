//! A StarRocks stand-in that speaks Stream Load exactly as the real FE and BE
//! do on the wire (`../shared/starrocks-stream-load.md`, checklist §9).
//!
//! It exists because StarRocks cannot run on the build machines; every sink
//! test, the demo and the benchmarks run against it. What it imitates:
//!
//! - **FE listener**: Basic auth checked first (401 + `WWW-Authenticate`),
//!   the `Expect: 100-continue` requirement on HTTP/1.1 (`Status: FAILED`),
//!   a 307 to a BE *before the body is read*, `Connection: close` on every
//!   load reply, `get_load_state`, the `/api/transaction/*` routing (begin,
//!   load, prepare → the label's coordinator BE; commit/rollback answered by
//!   the FE once the transaction is PREPARED or finished), `_cancel`, and a
//!   follower-FE listener that first redirects transaction calls to the leader.
//! - **BE listeners**: the same load path with `100 Continue`, Content-Length
//!   or chunked bodies, every applicable load header, the exact response JSON
//!   (keys and order), `ErrorURL` logs, and the BE side of the transaction API
//!   with its `TStatusCode` vocabulary.
//! - **Registry and engine**: label states, reuse and retention, timeouts,
//!   the running-transaction cap, typed tables with aggregate/primary-key
//!   merge per version in commit order, CRC-32 bucket assignment, and tablet
//!   version counting that yields genuine `too many versions` errors.
//! - **Faults** switchable at runtime (`faults.rs`), **inspection**
//!   (`GET /_emulator/{db}/{table}`, `GET /_emulator/stats`) and optional
//!   persistence (`--state DIR`, `core.rs`).
//!
//! Use it in-process with [`Emulator::start`] (bind port 0 and read the
//! addresses back) or as `rockfeed starrocks-emulator`.

mod be;
pub mod core;
pub mod engine;
pub mod faults;
mod fe;
pub mod http;
pub mod load;
mod mysql;
pub mod registry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::core::Core;
use self::engine::VersionPolicy;
use self::faults::Faults;
use self::registry::RegistryConfig;
use crate::starrocks::ddl::Catalog;

/// Everything the emulator needs to start.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Leader FE listen address (port 0 picks a free port).
    pub fe: SocketAddr,
    /// BE listen addresses, one listener each.
    pub bes: Vec<SocketAddr>,
    /// Optional follower FE listen address.
    pub follower_fe: Option<SocketAddr>,
    /// The one user the emulator knows.
    pub user: String,
    pub password: String,
    /// Databases and tables (from `--ddl`).
    pub catalog: Catalog,
    /// Persist labels and data here (`--state`).
    pub state_dir: Option<PathBuf>,
    /// Host:port the FE writes into `Location` for each BE, instead of the
    /// bound address (to reproduce the Docker `127.0.0.1` pitfall, or an
    /// unresolvable host).
    pub be_advertise: Vec<String>,
    /// Label retention, running-transaction cap, prepared timeout.
    pub registry: RegistryConfig,
    /// Version limit and compaction rate per tablet.
    pub versions: VersionPolicy,
    /// `streaming_load_max_mb` in bytes.
    pub max_body_bytes: u64,
    /// Where the `redirect_unreachable` fault points.
    pub unreachable: String,
    /// Serve the FE (leader and follower) over HTTPS with this PEM
    /// certificate chain and key. Redirects to BEs stay `http://`, as the
    /// real FE hard-codes the scheme.
    pub fe_tls: Option<(PathBuf, PathBuf)>,
    /// The FE's MySQL port (`query_port`), `None` to serve none. It uses
    /// the FE's TLS certificate when `fe_tls` is set.
    pub query: Option<SocketAddr>,
    /// The user holds OPERATE on SYSTEM: `ADMIN SHOW FRONTEND CONFIG` answers.
    pub operate: bool,
}

impl EmulatorConfig {
    /// A config bound to loopback port 0 with one BE.
    pub fn local(catalog: Catalog, user: &str, password: &str) -> Self {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
        EmulatorConfig {
            fe: any,
            bes: vec![any],
            follower_fe: None,
            user: user.to_string(),
            password: password.to_string(),
            catalog,
            state_dir: None,
            be_advertise: Vec::new(),
            registry: RegistryConfig::default(),
            versions: VersionPolicy::default(),
            max_body_bytes: 10 * 1024 * 1024 * 1024,
            unreachable: "127.0.0.1:1".to_string(),
            fe_tls: None,
            query: None,
            operate: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the state directory: {0}")]
    State(std::io::Error),
    #[error("at least one BE address is needed")]
    NoBackend,
    #[error("FE TLS: {0}")]
    Tls(std::io::Error),
}

/// State shared by all listeners.
pub(crate) struct Ctx {
    pub cfg: EmulatorConfig,
    pub core: Mutex<Core>,
    pub faults: Faults,
    /// `scheme://host:port` of the leader FE, for follower redirects and loops.
    pub fe_base: String,
    /// `host:port` each BE is advertised as in `Location`.
    pub be_locations: Vec<String>,
    /// Round-robin cursor over BEs for stream loads.
    pub rr: AtomicUsize,
    /// Sequence for error-log file names and generated labels.
    pub seq: AtomicU64,
}

/// Milliseconds since the Unix epoch (the registry's clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A running emulator. Dropping it without [`Emulator::shutdown`] leaves
/// the listeners running until the runtime stops.
pub struct Emulator {
    pub fe_addr: SocketAddr,
    pub be_addrs: Vec<SocketAddr>,
    pub follower_addr: Option<SocketAddr>,
    /// The MySQL port's bound address, when one is served.
    pub query_addr: Option<SocketAddr>,
    ctx: Arc<Ctx>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// What `start` binds, before anything serves.
struct Listeners {
    fe: TcpListener,
    follower: Option<TcpListener>,
    bes: Vec<TcpListener>,
    query: Option<TcpListener>,
}

/// Serves every listener (the FEs and the MySQL port with `tls`), and ticks
/// the core (delayed publishes, timeouts) until `rx` flips.
fn serve_all(
    ctx: &Arc<Ctx>,
    listeners: Listeners,
    tls: Option<tokio_rustls::TlsAcceptor>,
    rx: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let Listeners { fe, follower, bes, query } = listeners;
    let mut tasks = Vec::new();
    let c = ctx.clone();
    tasks.push(tokio::spawn(http::serve(
        fe,
        rx.clone(),
        tls.clone(),
        Arc::new(move |req| fe::handle(c.clone(), fe::Role::Leader, req)),
    )));
    if let Some(l) = follower {
        let c = ctx.clone();
        tasks.push(tokio::spawn(http::serve(
            l,
            rx.clone(),
            tls.clone(),
            Arc::new(move |req| fe::handle(c.clone(), fe::Role::Follower, req)),
        )));
    }
    for (i, l) in bes.into_iter().enumerate() {
        let c = ctx.clone();
        tasks.push(tokio::spawn(http::serve(l, rx.clone(), None, Arc::new(move |req| be::handle(c.clone(), i, req)))));
    }
    if let Some(l) = query {
        tasks.push(tokio::spawn(mysql::serve(l, rx.clone(), tls.clone(), ctx.clone())));
    }
    // Publishes delayed commits and enforces timeouts without traffic.
    let c = ctx.clone();
    let mut stop = rx.clone();
    tasks.push(tokio::spawn(async move {
        let mut iv = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = iv.tick() => c.core.lock().tick(now_ms()),
            }
        }
    }));
    tasks
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, EmulatorError> {
    TcpListener::bind(addr).await.map_err(|source| EmulatorError::Bind { addr, source })
}

impl Emulator {
    pub async fn start(cfg: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        if cfg.bes.is_empty() {
            return Err(EmulatorError::NoBackend);
        }
        let fe = bind(cfg.fe).await?;
        let fe_addr = fe.local_addr().map_err(|source| EmulatorError::Bind { addr: cfg.fe, source })?;
        let mut bes = Vec::new();
        for a in &cfg.bes {
            bes.push(bind(*a).await?);
        }
        let be_addrs: Vec<SocketAddr> = bes.iter().filter_map(|l| l.local_addr().ok()).collect();
        let follower = match cfg.follower_fe {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let follower_addr = follower.as_ref().and_then(|l| l.local_addr().ok());
        let query = match cfg.query {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let query_addr = query.as_ref().and_then(|l| l.local_addr().ok());
        let be_locations = be_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| cfg.be_advertise.get(i).cloned().unwrap_or_else(|| a.to_string()))
            .collect();
        let mut core = Core::new(&cfg.catalog, cfg.registry.clone(), cfg.versions);
        if let Some(dir) = &cfg.state_dir {
            let n = core.open_state(dir, now_ms()).map_err(EmulatorError::State)?;
            tracing::info!(dir = %dir.display(), events = n, "Emulator state replayed.");
        }
        let ctx = Arc::new(Ctx {
            core: Mutex::new(core),
            faults: Faults::default(),
            fe_base: format!("{}://{fe_addr}", if cfg.fe_tls.is_some() { "https" } else { "http" }),
            be_locations,
            rr: AtomicUsize::new(0),
            seq: AtomicU64::new(now_ms()),
            cfg,
        });
        let tls = match &ctx.cfg.fe_tls {
            Some((cert, key)) => Some(http::tls_acceptor(cert, key).map_err(EmulatorError::Tls)?),
            None => None,
        };
        let (tx, rx) = watch::channel(false);
        let tasks = serve_all(&ctx, Listeners { fe, follower, bes, query }, tls, rx);
        tracing::info!(fe = %fe_addr, bes = ?be_addrs, follower = ?follower_addr, query = ?query_addr, "StarRocks emulator listening.");
        Ok(Emulator { fe_addr, be_addrs, follower_addr, query_addr, ctx, shutdown: tx, tasks })
    }

    /// `http(s)://host:port` of the leader FE.
    pub fn fe_url(&self) -> String {
        self.ctx.fe_base.clone()
    }

    /// The fault switchboard (same as the admin endpoint).
    pub fn faults(&self) -> &Faults {
        &self.ctx.faults
    }

    /// Runs `f` with the locked state (tests and audits).
    pub fn with_core<R>(&self, f: impl FnOnce(&mut Core) -> R) -> R {
        f(&mut self.ctx.core.lock())
    }

    /// Stops accepting, lets in-flight requests finish, and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}
