//! HTTP plumbing shared by the FE and BE listeners: the accept loop, body
//! reading with the `100 Continue` timing StarRocks shows, reply builders
//! that print JSON the way StarRocks does (rapidjson `PrettyWriter`: four
//! spaces), and Basic auth parsing.
//!
//! hyper sends `100 Continue` only when a handler first polls the body, so a
//! handler that answers 307 without touching the body never invites it: the
//! client has sent headers only, exactly as with the real FE.

use std::future::Future;
use std::sync::Arc;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value as J;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub type Resp = Response<Full<Bytes>>;

/// A handler's way to drop the connection without a reply (fault injection).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose: {0}")]
pub struct Drop(pub &'static str);

/// Serializes JSON with four-space indentation, as StarRocks' BE does.
pub fn pretty(v: &J) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(v, &mut ser).expect("serializing a JSON value cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// 200 (or `status`) with a pretty JSON body.
pub fn json(status: StatusCode, v: &J) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(pretty(v))));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn text(status: StatusCode, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Marks a reply `Connection: close` (every FE load reply is).
pub fn close(mut r: Resp) -> Resp {
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// 307 Temporary Redirect with an empty body.
pub fn redirect(location: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    close(r)
}

/// `(user, password)` from `Authorization: Basic …`.
pub fn basic_auth(h: &HeaderMap) -> Option<(String, String)> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// What went wrong while reading a body.
#[derive(Debug)]
pub enum BodyError {
    TooLarge(u64),
    Transport(String),
    /// Fault injection: drop the connection now.
    Dropped,
}

/// Reads a request body up to `limit` bytes. `drop_after` drops the
/// connection once that many bytes have arrived (reset-mid-body fault).
pub async fn read_body(mut body: Incoming, limit: u64, drop_after: Option<u64>) -> Result<Bytes, BodyError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Transport(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() as u64 > limit {
                return Err(BodyError::TooLarge(buf.len() as u64));
            }
            if drop_after.is_some_and(|d| buf.len() as u64 >= d) {
                return Err(BodyError::Dropped);
            }
        }
    }
    Ok(buf.freeze())
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
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "Accept failed.");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (h, stop, tls) = (handler.clone(), shutdown.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve_conn(stream, h, stop).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(s) => serve_conn(s, h, stop).await,
                            Err(e) => tracing::debug!(error = %e, "TLS handshake failed."),
                        },
                    }
                });
            }
        }
    }
}

/// Query parameter lookup (no percent-decoding beyond `+`/`%xx`).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_uses_four_spaces_and_keeps_key_order() {
        let v = serde_json::json!({"TxnId": 1, "Label": "l", "Status": "Success"});
        assert_eq!(pretty(&v), "{\n    \"TxnId\": 1,\n    \"Label\": \"l\",\n    \"Status\": \"Success\"\n}");
    }

    #[test]
    fn basic_auth_decodes_user_and_password() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic cm9vdDpwdzpwdw==".parse().unwrap());
        assert_eq!(basic_auth(&h), Some(("root".into(), "pw:pw".into())));
        h.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(basic_auth(&h), None);
    }

    #[test]
    fn query_params_decode() {
        assert_eq!(query_param(Some("a=1&label=x%3Ay+z"), "label").as_deref(), Some("x:y z"));
        assert_eq!(query_param(Some("a=1"), "label"), None);
    }
}
