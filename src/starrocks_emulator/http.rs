//! HTTP plumbing shared by the FE and BE listeners (the server itself is
//! [`crate::httpd`]): body reading with the `100 Continue` timing StarRocks shows, reply builders
//! that print JSON the way StarRocks does (rapidjson `PrettyWriter`: four
//! spaces), and Basic auth parsing.
//!
//! hyper sends `100 Continue` only when a handler first polls the body, so a
//! handler that answers 307 without touching the body never invites it: the
//! client has sent headers only, exactly as with the real FE.

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value as J;

pub use crate::httpd::{Drop, Resp, serve, text, tls_acceptor};

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
