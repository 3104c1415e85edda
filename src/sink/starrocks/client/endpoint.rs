//! Where and as whom the client loads: Basic-auth [`Credentials`] (their
//! `Debug` prints the user only), an [`Endpoint`] parsed strictly (a URL
//! that would be changed or ignored is refused with the reason), and where
//! a redirect's `Location` points, with a loopback BE rewritten to the
//! FE's host (the Docker `127.0.0.1` pitfall).

use base64::Engine;
use http::{HeaderValue, Uri};

use super::ClientError;

/// User and password for Basic auth.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

impl Credentials {
    pub(super) fn header(&self) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.user, self.password));
        let mut v = HeaderValue::from_str(&format!("Basic {token}")).unwrap_or_else(|_| HeaderValue::from_static(""));
        v.set_sensitive(true);
        v
    }
}

/// One `http(s)://host:port` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    /// Strict: whatever the URL says that would not be used is refused
    /// (a path, a query, user info), and so is a port outside 1..=65535.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Never echo user info (it may hold a password).
        let shown = match (s.find("://"), s.rfind('@')) {
            (Some(a), Some(b)) if b > a => format!("{}***{}", &s[..a + 3], &s[b..]),
            _ => s.to_string(),
        };
        let bad = |why: String| format!("bad endpoint '{shown}': {why} (expected http(s)://host:port)");
        let uri: Uri = s.parse().map_err(|e| bad(format!("{e}")))?;
        let auth = uri.authority().ok_or_else(|| bad("no host".into()))?;
        if auth.as_str().contains('@') {
            return Err(bad("user info in the URL is not used; set starrocks.user and the password".into()));
        }
        // `Authority::port` hides a port that does not fit a u16: read it.
        let a = auth.as_str();
        let port = match a.rfind(']') {
            Some(b) => a[b + 1..].strip_prefix(':'),
            None => a.rfind(':').map(|i| &a[i + 1..]),
        };
        if let Some(p) = port
            && !matches!(p.parse::<u16>(), Ok(1..))
        {
            return Err(bad(format!("port {p} is not within 1..=65535")));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad(format!(
                "the path '{}' would be ignored: rockfeed calls StarRocks' own paths (/api/…) on host:port",
                uri.path_and_query().map(|p| p.as_str()).unwrap_or("")
            )));
        }
        endpoint_of(&uri).ok_or_else(|| bad("the scheme must be http or https".into()))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

pub(super) fn endpoint_of(uri: &Uri) -> Option<Endpoint> {
    let https = match uri.scheme_str()? {
        "http" => false,
        "https" => true,
        _ => return None,
    };
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Some(Endpoint { https, host, port })
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Where a `Location` points: an absolute URL (host rewritten from loopback
/// to the first hop's host when `rewrite` and the first hop was not
/// loopback) or a path on the current target.
pub(super) fn redirect_target(
    start: &Endpoint,
    current: &Endpoint,
    loc: &str,
    rewrite: bool,
) -> Result<(Endpoint, String), ClientError> {
    let uri: Uri = loc.parse().map_err(|_| ClientError::BadLocation(loc.to_string()))?;
    let target = match endpoint_of(&uri) {
        Some(mut next) => {
            if rewrite && is_loopback(&next.host) && !is_loopback(&start.host) {
                next.host = start.host.clone();
            }
            next
        }
        None if uri.scheme().is_some() => return Err(ClientError::BadLocation(loc.to_string())),
        None => current.clone(),
    };
    let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    Ok((target, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print() {
        let e: Endpoint = "https://fe-1:8030".parse().unwrap();
        assert_eq!(e, Endpoint { https: true, host: "fe-1".into(), port: 8030 });
        assert_eq!(e.to_string(), "https://fe-1:8030");
        assert_eq!("http://[::1]:8040".parse::<Endpoint>().unwrap().host, "::1");
        assert!("ftp://x:1".parse::<Endpoint>().is_err());
        assert_eq!("http://fe".parse::<Endpoint>().unwrap().port, 80);
        assert_eq!("http://fe:8030/".parse::<Endpoint>().unwrap().port, 8030);
    }

    /// What an endpoint URL says must be what rockfeed does: nothing in it
    /// is silently changed or dropped.
    #[test]
    fn endpoints_that_would_be_changed_or_ignored_are_refused_with_a_reason() {
        for (url, why) in [
            ("http://127.0.0.1:99999", "port 99999 is not within 1..=65535"),
            ("http://127.0.0.1:0", "port 0 is not within 1..=65535"),
            ("http://fe:8030/api", "the path '/api' would be ignored"),
            ("http://fe:8030/?x=1", "would be ignored"),
            ("http://root:pw@fe:8030", "user info"),
            ("ftp://fe:21", "http or https"),
        ] {
            let e = url.parse::<Endpoint>().unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
            assert!(!e.contains(":pw"), "a password is never echoed: {e}");
        }
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials { user: "root".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(c.header().is_sensitive());
    }

    #[test]
    fn redirects_resolve_and_rewrite_loopback_bes() {
        let fe: Endpoint = "http://fe.example:8030".parse().unwrap();
        let (t, p) = redirect_target(&fe, &fe, "http://127.0.0.1:8040/api/d/t/_stream_load?x=1", true).unwrap();
        assert_eq!((t.host.as_str(), t.port, p.as_str()), ("fe.example", 8040, "/api/d/t/_stream_load?x=1"));
        let (t, _) = redirect_target(&fe, &fe, "http://127.0.0.1:8040/a", false).unwrap();
        assert_eq!(t.host, "127.0.0.1");
        let local: Endpoint = "http://127.0.0.1:8030".parse().unwrap();
        let (t, _) = redirect_target(&local, &local, "http://localhost:8040/a", true).unwrap();
        assert_eq!(t.host, "localhost", "no rewrite when the FE itself is local");
        let (t, p) = redirect_target(&fe, &fe, "/api/other", true).unwrap();
        assert_eq!((t, p.as_str()), (fe.clone(), "/api/other"));
        assert!(redirect_target(&fe, &fe, "ftp://x/y", true).is_err());
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("127.0.0.1") && is_loopback("localhost") && is_loopback("::1"));
        assert!(!is_loopback("10.0.0.5") && !is_loopback("fe.example"));
    }
}
