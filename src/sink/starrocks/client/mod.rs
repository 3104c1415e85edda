//! The Stream Load HTTP client.
//!
//! What it does that a general HTTP client does not (`starrocks-stream-load.md` §1):
//! - **Redirects by hand.** The FE answers every load with `307` to a BE (and a
//!   follower FE first to the leader). reqwest and most clients drop
//!   `Authorization` on a cross-host redirect, which loses the load with `no
//!   valid Basic authorization`; this client re-sends every header, auth
//!   included, to each `Location`, up to `max_redirects` hops. A BE advertised
//!   as a loopback address while the FE was reached by another host is
//!   rewritten to the FE's host (the Docker `127.0.0.1` pitfall).
//! - **`Expect: 100-continue` for real.** The request head goes first; the
//!   body waits until the server's `100 Continue` (or a final reply, which the
//!   FE sends as its 307 without reading the body, or `continue_timeout`, after
//!   which the body is sent anyway as RFC 9110 asks). So a redirected load
//!   never pushes its body into an FE that will not read it.
//! - **Failover** over several FE (or BE) endpoints: a connect failure moves
//!   to the next one; the last good endpoint is tried first next time.
//! - **TLS** (rustls) for `https://` endpoints; redirects to `http://` BEs
//!   follow the scheme the FE writes.
//!
//! Credentials come from config or the environment and never reach a log:
//! [`Credentials`]'s `Debug` prints the user only.
//!
//! `endpoint.rs` holds the credentials, the endpoints and where a redirect
//! points; this file the connection, the exchange and the redirects.

mod endpoint;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use endpoint::redirect_target;
pub use endpoint::{Credentials, Endpoint};

/// Client settings. `Default` gives the Flink connector's timeouts.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// FE (or BE) endpoints, tried in order with failover.
    pub endpoints: Vec<Endpoint>,
    pub credentials: Credentials,
    /// TCP connect (and TLS handshake) limit per hop.
    pub connect_timeout: Duration,
    /// How long the body waits for `100 Continue` before it is sent anyway.
    pub continue_timeout: Duration,
    /// Limit for one hop's whole exchange.
    pub request_timeout: Duration,
    /// Redirect hops allowed (follower FE → leader FE → BE is two).
    pub max_redirects: usize,
    /// Rewrite a loopback BE host in `Location` to the FE's host when the FE
    /// itself was not reached over loopback.
    pub rewrite_loopback_redirects: bool,
    /// PEM bundle of trusted CAs for `https` endpoints; the system bundle
    /// when unset.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl ClientConfig {
    pub fn new(endpoints: Vec<Endpoint>, credentials: Credentials) -> Self {
        ClientConfig {
            endpoints,
            credentials,
            connect_timeout: Duration::from_secs(30),
            continue_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(600),
            max_redirects: 3,
            rewrite_loopback_redirects: true,
            tls_ca_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("HTTP exchange with {endpoint} failed: {reason}")]
    Http { endpoint: String, reason: String },
    #[error("more than {0} redirects (last Location: {1})")]
    TooManyRedirects(usize, String),
    #[error("bad redirect Location '{0}'")]
    BadLocation(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("no endpoints configured")]
    NoEndpoints,
}

/// A reply: status, headers, body (bounded), and the URL that produced it.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub url: String,
}

/// Largest reply body read (Stream Load replies are a few hundred bytes).
const MAX_REPLY: usize = 4 << 20;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct StreamLoadClient {
    cfg: ClientConfig,
    auth: HeaderValue,
    tls: Option<tokio_rustls::TlsConnector>,
    /// Index of the endpoint that answered last.
    preferred: AtomicUsize,
}

impl std::fmt::Debug for StreamLoadClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLoadClient").field("cfg", &self.cfg).finish()
    }
}

impl StreamLoadClient {
    pub fn new(cfg: ClientConfig) -> Result<Self, ClientError> {
        if cfg.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let tls = if cfg.endpoints.iter().any(|e| e.https) || cfg.tls_ca_file.is_some() {
            Some(tls_connector(cfg.tls_ca_file.as_deref())?)
        } else {
            None
        };
        Ok(StreamLoadClient { auth: cfg.credentials.header(), cfg, tls, preferred: AtomicUsize::new(0) })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Sends `method path` with `headers` (+ auth, + `Expect` when there is a
    /// body) to the preferred endpoint, following redirects by hand; fails
    /// over to the next endpoint when one cannot be reached.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<HttpReply, ClientError> {
        let n = self.cfg.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut last_err = None;
        for i in 0..n {
            let idx = (first + i) % n;
            match self.follow(&self.cfg.endpoints[idx], &method, path, headers, &body).await {
                Ok(r) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(r);
                }
                Err(e @ ClientError::Connect { .. }) => {
                    // Only when there is a next one: the caller reports the
                    // last (StarRocks' health logs an outage once).
                    if i + 1 < n {
                        tracing::warn!(endpoint = %self.cfg.endpoints[idx], error = %e, "StarRocks endpoint unreachable; trying the next one.");
                    } else {
                        tracing::debug!(endpoint = %self.cfg.endpoints[idx], error = %e, "StarRocks endpoint unreachable.");
                    }
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or(ClientError::NoEndpoints))
    }

    async fn follow(
        &self,
        start: &Endpoint,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<HttpReply, ClientError> {
        let mut target = start.clone();
        let mut path = path.to_string();
        for hop in 0..=self.cfg.max_redirects {
            let reply = self.exchange(&target, method, &path, headers, body).await;
            let reply = match reply {
                // Only a failure to reach the *first* hop is a failover case.
                Err(ClientError::Connect { endpoint, reason }) if hop > 0 => {
                    return Err(ClientError::Http {
                        endpoint,
                        reason: format!("redirect target unreachable: {reason}"),
                    });
                }
                other => other?,
            };
            if !matches!(reply.status, 301 | 302 | 303 | 307 | 308) {
                return Ok(reply);
            }
            let loc = reply.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            if hop == self.cfg.max_redirects {
                return Err(ClientError::TooManyRedirects(self.cfg.max_redirects, loc));
            }
            (target, path) = redirect_target(start, &target, &loc, self.cfg.rewrite_loopback_redirects)?;
            tracing::debug!(hop = hop + 1, to = %target, "Following StarRocks redirect.");
        }
        unreachable!("the loop returns on its last hop")
    }

    async fn connect(&self, ep: &Endpoint) -> Result<Box<dyn Io>, ClientError> {
        let addr = format!("{}:{}", ep.host, ep.port);
        let err = |reason: String| ClientError::Connect { endpoint: ep.to_string(), reason };
        let tcp = tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| err(format!("connect timed out after {:?}", self.cfg.connect_timeout)))?
            .map_err(|e| err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        if !ep.https {
            return Ok(Box::new(tcp));
        }
        let tls = self.tls.as_ref().ok_or_else(|| err("https endpoint without TLS configuration".into()))?;
        let name =
            tokio_rustls::rustls::pki_types::ServerName::try_from(ep.host.clone()).map_err(|e| err(e.to_string()))?;
        let s = tokio::time::timeout(self.cfg.connect_timeout, tls.connect(name, tcp))
            .await
            .map_err(|_| err("TLS handshake timed out".into()))?
            .map_err(|e| err(format!("TLS handshake: {e}")))?;
        Ok(Box::new(s))
    }

    /// One request/response on a fresh connection.
    async fn exchange(
        &self,
        ep: &Endpoint,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<HttpReply, ClientError> {
        let io = self.connect(ep).await?;
        let http_err = |reason: String| ClientError::Http { endpoint: ep.to_string(), reason };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| http_err(e.to_string()))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let gate = Arc::new(Notify::new());
        let body = ContinueBody::new(body.clone(), gate.clone(), self.cfg.continue_timeout);
        let has_body = body.len() > 0;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .body(body)
            .map_err(|e| http_err(format!("bad request: {e}")))?;
        let h = req.headers_mut();
        for (k, v) in headers {
            h.append(k.clone(), v.clone());
        }
        let host = if ep.host.contains(':') {
            format!("[{}]:{}", ep.host, ep.port)
        } else {
            format!("{}:{}", ep.host, ep.port)
        };
        if let Ok(v) = HeaderValue::from_str(&host) {
            h.insert(header::HOST, v);
        }
        h.insert(header::AUTHORIZATION, self.auth.clone());
        if has_body {
            h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        } else if *method == Method::PUT || *method == Method::POST {
            // The FE insists on the header for loads even without a body.
            h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        let release = gate.clone();
        hyper::ext::on_informational(&mut req, move |res| {
            if res.status() == http::StatusCode::CONTINUE {
                release.notify_one();
            }
        });
        let exchange = async {
            let resp = sender.send_request(req).await.map_err(|e| http_err(e.to_string()))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let limited = http_body_util::Limited::new(resp.into_body(), MAX_REPLY);
            let body = limited.collect().await.map_err(|e| http_err(format!("reading the reply: {e}")))?.to_bytes();
            Ok::<_, ClientError>((status, headers, body))
        };
        let res = tokio::time::timeout(self.cfg.request_timeout, exchange).await;
        conn.abort();
        let (status, headers, body) =
            res.map_err(|_| ClientError::Timeout { what: "exchange", after: self.cfg.request_timeout })??;
        Ok(HttpReply { status, headers, body, url: format!("{ep}{path}") })
    }
}

/// A request body that waits for `100 Continue` (signalled through `gate`)
/// or `timeout` before yielding its bytes.
struct ContinueBody {
    data: Option<Bytes>,
    len: u64,
    wait: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl ContinueBody {
    fn new(data: Bytes, gate: Arc<Notify>, timeout: Duration) -> Self {
        let len = data.len() as u64;
        let wait: Pin<Box<dyn std::future::Future<Output = ()> + Send>> = Box::pin(async move {
            let _ = tokio::time::timeout(timeout, gate.notified()).await;
        });
        ContinueBody { data: (len > 0).then_some(data), len, wait: Some(wait) }
    }

    fn len(&self) -> u64 {
        self.len
    }
}

impl Body for ContinueBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.data.is_none() {
            return Poll::Ready(None);
        }
        if let Some(w) = self.wait.as_mut() {
            match w.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => self.wait = None,
            }
        }
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

/// A rustls connector trusting `ca_file` (else the system bundle); the MQTT
/// source uses it too.
pub(crate) fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<tokio_rustls::TlsConnector, ClientError> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let system = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];
    let files: Vec<std::path::PathBuf> = match ca_file {
        Some(p) => vec![p.to_path_buf()],
        None => system.iter().map(std::path::PathBuf::from).filter(|p| p.exists()).take(1).collect(),
    };
    for f in &files {
        let certs = CertificateDer::pem_file_iter(f).map_err(|e| ClientError::Tls(format!("{}: {e}", f.display())))?;
        for c in certs {
            let c = c.map_err(|e| ClientError::Tls(format!("{}: {e}", f.display())))?;
            // A bundle may hold certificates rustls rejects; skip those.
            let _ = roots.add(c);
        }
    }
    if roots.is_empty() {
        return Err(ClientError::Tls("no trusted CA certificates (set tls_ca_file)".into()));
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let cfg = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}
