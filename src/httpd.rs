//! A small HTTP/1.1 server over hyper: the accept loop (plain or TLS) with
//! a graceful stop, and the reply type. `/metrics` (the telemetry module)
//! and the StarRocks emulator's FE and BE listeners are served with it.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub type Resp = Response<Full<Bytes>>;

/// A handler's way to drop the connection without a reply (fault injection).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose: {0}")]
pub struct Drop(pub &'static str);

/// A plain-text reply.
pub fn text(status: StatusCode, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Loads a PEM certificate chain and private key into a TLS acceptor.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| std::io::Error::other(format!("{what}: {e}"));
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(&format!("cannot read certificate {}", cert.display()), &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("bad certificate PEM", &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(&format!("cannot read key {}", key.display()), &e))?;
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("certificate and key do not fit", &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg)))
}

/// Serves one connection (plain or TLS) until it ends or `stop` flips.
async fn serve_conn<IO, H, F>(io: IO, handler: Arc<H>, mut stop: watch::Receiver<bool>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Resp, Drop>> + Send + 'static,
{
    let svc = service_fn(move |req| {
        let h = handler.clone();
        async move { h(req).await }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => { conn.as_mut().graceful_shutdown(); let _ = conn.await; }
    }
}

/// Accepts connections until `shutdown` flips, serving each with `handler`,
/// over TLS when an acceptor is given.
pub async fn serve<H, F>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: Arc<H>,
) where
    H: Fn(hyper::Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Resp, Drop>> + Send + 'static,
{
    let stop = shutdown.clone();
    accept_loop(listener, &mut shutdown, |stream, _| {
        let (h, stop, tls) = (handler.clone(), stop.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_conn(stream, h, stop).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => serve_conn(s, h, stop).await,
                    Err(e) => tracing::debug!(error = %e, "TLS handshake failed."),
                },
            }
        });
    })
    .await
}

/// Accepts TCP connections (no Nagle) until `shutdown` flips, handing each
/// to `on_conn`, which spawns what serves it. A failed accept (out of file
/// descriptors) is logged and retried after 10 ms.
pub async fn accept_loop(
    listener: TcpListener,
    shutdown: &mut watch::Receiver<bool>,
    mut on_conn: impl FnMut(tokio::net::TcpStream, std::net::SocketAddr),
) {
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    on_conn(stream, peer);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
}
