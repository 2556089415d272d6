//! Header rules of the proxy: hop-by-hop removal, `X-Forwarded-*`/`Forwarded` with the
//! trusted-proxy rule, request ids, the identity headers that only the gateway may set,
//! and the gateway's own cookies that never reach an upstream.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::cookies;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
pub static X_WECHAT_OPENID: HeaderName = HeaderName::from_static("x-wechat-openid");
pub static X_WECHAT_UNIONID: HeaderName = HeaderName::from_static("x-wechat-unionid");
pub static X_WECHAT_SNAPSHOT: HeaderName = HeaderName::from_static("x-wechat-snapshot");

static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// RFC 9110 §7.6.1 plus the legacy ones every proxy drops, and `HTTP2-Settings` (RFC 7540
/// §3.2.1: connection-specific, only meaningful with an h2c upgrade, which is never tunnelled).
/// Prebuilt names: removing by `&str` parses the name again on every call, twice per proxied
/// request.
static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &PROXY_CONNECTION,
    &KEEP_ALIVE,
    &header::TE,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &HTTP2_SETTINGS,
];

/// Removes hop-by-hop headers and every header named in `Connection`. For a tunnelled
/// upgrade the `Connection: upgrade` and `Upgrade` pair is kept, since the next hop needs it.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        // Host is end-to-end and required (RFC 9112 §3.2): `Connection: host` must not send
        // the upstream a request without one (it would pick its default virtual host).
        if name == header::HOST {
            continue;
        }
        headers.remove(&name);
    }
    let upgrade = keep_upgrade
        .then(|| headers.remove(header::UPGRADE))
        .flatten();
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(up) = upgrade {
        headers.insert(header::UPGRADE, up);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether a request asks to switch protocols (WebSocket and friends).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// `X-WeChat-OpenId`, `x_wechat_openid`, `X-WECHAT_OPENID`... all name the same header to
/// some upstream frameworks (CGI, PHP, nginx with underscores_in_headers), so identity
/// headers are compared after folding case and `_` to `-`.
fn normalized_eq_prefix(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.bytes().zip(prefix.bytes()).all(|(a, b)| {
            (if a == b'_' {
                b'-'
            } else {
                a.to_ascii_lowercase()
            }) == b
        })
}

fn normalized_eq(name: &str, other: &str) -> bool {
    name.len() == other.len() && normalized_eq_prefix(name, other)
}

/// Removes every client-sent identity header: any `X-WeChat-*` in any spelling and the
/// configured JWT header (for `Authorization` that is the client's own Authorization).
pub fn strip_identity(headers: &mut HeaderMap, jwt_header: Option<&HeaderName>) {
    let jwt = jwt_header.map(|h| h.as_str());
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            normalized_eq_prefix(k, "x-wechat-") || jwt.is_some_and(|j| normalized_eq(k, j))
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Removes the named cookies from every `Cookie` header, dropping the header if it empties;
/// other cookies are kept byte for byte. A name ending in `*` is a prefix: see [`cookies::strip`].
pub fn strip_cookies<S: AsRef<str>>(headers: &mut HeaderMap, names: &[S]) {
    cookies::strip(headers, names)
}

/// The value of cookie `name` in the request, if present (read as bytes: a foreign cookie
/// that is not UTF-8 does not hide it). See [`cookies::get_str`].
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookies::get_str(headers, name)
}

/// Total size of the request headers as they arrived (name + value + ": " + CRLF).
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

/// A request id as sent by the client, if it is sane; else a fresh one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let ok =
            !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if ok {
            return v.clone();
        }
    }
    let id: u128 = rand::random();
    HeaderValue::from_str(&format!("{id:032x}")).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Where the request really came from, after applying the trusted-proxy rule.
#[derive(Clone, Debug)]
pub struct ClientView {
    pub peer: SocketAddr,
    /// Whether `peer` is a trusted proxy whose X-Forwarded-* headers are believed.
    pub peer_trusted: bool,
    pub client_ip: IpAddr,
    /// "http" or "https", as the browser sees it.
    pub scheme: &'static str,
    /// `host[:port]` as the browser sees it.
    pub authority: String,
    /// Lower-case host without port, for routing.
    pub host: String,
}

impl ClientView {
    pub fn new(
        peer: SocketAddr,
        tls: bool,
        uri: &http::Uri,
        headers: &HeaderMap,
        trusted: &[IpNet],
    ) -> ClientView {
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
        let peer_trusted = is_trusted(&peer.ip());
        let mut scheme = if tls { "https" } else { "http" };
        let mut authority = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| uri.authority().map(|a| a.as_str().to_string()))
            .unwrap_or_default();
        let mut client_ip = peer.ip();
        if peer_trusted {
            if let Some(p) = first_value(headers, &X_FORWARDED_PROTO) {
                if p.eq_ignore_ascii_case("https") {
                    scheme = "https";
                } else if p.eq_ignore_ascii_case("http") {
                    scheme = "http";
                }
            }
            // Checked like Host: an invalid one is ignored, not copied into redirect URIs.
            if let Some(h) = first_value(headers, &X_FORWARDED_HOST) {
                if valid_host(h) {
                    authority = h.to_string();
                }
            }
            // Rightmost address not ours: the hop before the first trusted proxy.
            let chain: Vec<IpAddr> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|s| s.trim().parse().ok())
                .collect();
            if let Some(ip) = chain
                .iter()
                .rev()
                .find(|ip| !is_trusted(ip))
                .or(chain.first())
            {
                client_ip = *ip;
            }
        }
        let host = host_of(&authority);
        ClientView {
            peer,
            peer_trusted,
            client_ip,
            scheme,
            authority,
            host,
        }
    }

    /// `scheme://authority`, the origin the browser is on.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// Sets X-Forwarded-For/-Proto/-Host, X-Real-IP and Forwarded on an upstream request:
    /// appended to when the peer is a trusted proxy, replaced otherwise. First removes every
    /// other header by which a proxy tells an upstream about the client (see
    /// [`is_proxy_header`]): all of them from an untrusted peer, and the `_` spellings (which
    /// no proxy sets, but CGI/PHP-style upstreams read as the real ones) from a trusted one.
    pub fn set_forwarded(&self, headers: &mut HeaderMap) {
        // One pass over the names; `Vec::new` allocates only when something matches.
        let mut doomed = Vec::new();
        for name in headers.keys() {
            let n = name.as_str();
            if (!self.peer_trusted || n.contains('_')) && is_proxy_header(n) {
                doomed.push(name.clone());
            }
        }
        for name in doomed {
            headers.remove(&name);
        }
        let peer_ip = self.peer.ip().to_string();
        let xff = match (self.peer_trusted, joined(headers, &X_FORWARDED_FOR)) {
            (true, Some(prev)) => format!("{prev}, {peer_ip}"),
            _ => peer_ip,
        };
        let for_token = match self.peer.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("\"[{ip}]\""),
        };
        let host_token = if self
            .authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            self.authority.clone()
        } else {
            format!("\"{}\"", self.authority.replace(['"', '\\'], ""))
        };
        // An HTTP/1.0 request may have no host at all; `host=` with an empty value is not
        // valid RFC 7239, so the parameter is left out.
        let element = if self.authority.is_empty() {
            format!("for={for_token};proto={}", self.scheme)
        } else {
            format!("for={for_token};proto={};host={host_token}", self.scheme)
        };
        let fwd = match (self.peer_trusted, joined(headers, &FORWARDED)) {
            (true, Some(prev)) => format!("{prev}, {element}"),
            _ => element,
        };
        set(headers, &X_FORWARDED_FOR, &xff);
        set(headers, &FORWARDED, &fwd);
        set(headers, &X_FORWARDED_PROTO, self.scheme);
        if self.authority.is_empty() {
            headers.remove(&X_FORWARDED_HOST);
        } else {
            set(headers, &X_FORWARDED_HOST, &self.authority);
        }
        set(headers, &X_REAL_IP, &self.client_ip.to_string());
    }
}

/// Headers that proxies and CDNs set to describe the client or the original request, compared
/// after folding case and `_` to `-`: `X-Forwarded` and `X-Forwarded-*` (For, Proto, Host,
/// Port, Prefix, Ssl, Scheme, Server...), `Forwarded`, `X-Real-IP`, `X-Original-*` (URL, URI,
/// Host...), `X-Rewrite-URL`, `X-Host`, and the client-address headers of CDNs and load
/// balancers. Coming from a client they are lies an upstream may believe: a client address
/// for rate limits or allow-lists, a URL that IIS/Symfony-style routing prefers to the real
/// one. `X-HTTP-Method-Override` is deliberately not here: it is an application contract, and
/// the gateway's decision does not depend on the method.
pub fn is_proxy_header(name: &str) -> bool {
    const PREFIXES: [&str; 3] = ["x-forwarded", "x-original-", "cf-connecting-"];
    const NAMES: [&str; 13] = [
        "forwarded",
        "x-real-ip",
        "x-rewrite-url",
        "x-host",
        "true-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "client-ip",
        "fastly-client-ip",
        "x-originating-ip",
        "x-remote-ip",
        "x-remote-addr",
        "x-proxyuser-ip",
    ];
    // Most names start with none of these letters: one comparison and done.
    matches!(
        name.as_bytes().first().map(u8::to_ascii_lowercase),
        Some(b'x' | b'f' | b't' | b'c')
    ) && (PREFIXES.iter().any(|p| normalized_eq_prefix(name, p))
        || NAMES.iter().any(|n| normalized_eq(name, n)))
}

/// Whether `value` is a valid `Host` (RFC 9110 §7.2): `host[:port]` where host is a
/// reg-name, an IPv4 address or a bracketed IPv6 address, and port is 1–5 digits up to 65535.
/// Stricter than RFC 3986's reg-name on purpose: only letters, digits, `-`, `.`, `_` and `~`
/// (what DNS names use), so no userinfo (`@`), no percent-encoding, no `#`, `/` or `\`, and a
/// Host can be pasted into a URL (the login's `redirect_uri`) without changing its meaning.
pub fn valid_host(value: &str) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("v6", port),
                None => return false,
            },
        }
    } else {
        match value.split_once(':') {
            Some((h, p)) => (h, p),
            None => (value, "1"),
        }
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let port_ok = (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| p <= 65535);
    host_ok && port_ok
}

/// The request's authority must be unambiguous before anything uses it: at most one Host,
/// valid ([`valid_host`]); an authority in the target (absolute-form, HTTP/2 `:authority`)
/// valid too (so no userinfo) and equal to Host when both are present; and a Host or an
/// authority on HTTP/1.1 and later (RFC 9112 §3.2; HTTP/1.0 may have neither). `Err` is the
/// short text of a 400.
pub fn check_host(
    version: http::Version,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Result<(), &'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("The request has more than one Host header.");
    }
    let host = match host {
        None => None,
        Some(v) => match v.to_str() {
            Ok(h) if valid_host(h) => Some(h),
            _ => return Err("The Host header is not a valid host[:port]."),
        },
    };
    match (uri.authority(), host) {
        (Some(a), _) if !valid_host(a.as_str()) => {
            Err("The request target's authority is not a valid host[:port].")
        }
        (Some(a), Some(h)) if !a.as_str().eq_ignore_ascii_case(h) => {
            Err("The Host header does not match the request target.")
        }
        (None, None) if version >= http::Version::HTTP_11 => Err("The request has no Host header."),
        _ => Ok(()),
    }
}

fn set(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name.clone(), v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

fn first_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Lower-case host of `host[:port]` or `[v6]:port`.
pub fn host_of(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        a.rsplit_once(':').map_or(a, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                a
            }
        })
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether the client prefers a JSON answer (API clients, XHR).
pub fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let xhr = headers
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"));
    xhr || (accept.contains("application/json") && !accept.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
            ("x-keep", "1"),
        ]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn upgrade_pair_is_kept_for_tunnels() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("keep-alive", "1"),
            ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ]);
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert!(!h.contains_key("http2-settings"), "even on a kept upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!h.contains_key("keep-alive"));
    }

    #[test]
    fn identity_headers_in_every_spelling() {
        let mut h = map(&[
            ("x-wechat-openid", "a"),
            ("X_WECHAT_OPENID", "b"),
            ("x_wechat-unionid", "c"),
            ("X-Wechat_Jwt", "d"),
            ("x-wechat-snapshot", "1"),
            ("x-wechatty", "keep"),
            ("authorization", "Bearer client"),
            ("x-other", "keep"),
        ]);
        strip_identity(&mut h, Some(&header::AUTHORIZATION));
        // HeaderMap iterates in hash order, not insertion order.
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-other", "x-wechatty"]);
    }

    #[test]
    fn gateway_cookies_are_removed() {
        let mut h = map(&[
            ("cookie", "a=1; wxgate_session=SECRET; b=2"),
            ("cookie", "__Host-wxgate_state=x"),
        ]);
        strip_cookies(&mut h, &["wxgate_session", "__Host-wxgate_state"]);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");
        let mut h = map(&[("cookie", "wxgate_session=x")]);
        strip_cookies(&mut h, &["wxgate_session"]);
        assert!(!h.contains_key("cookie"));
    }

    #[test]
    fn forwarded_untrusted_peer_replaces() {
        let h = map(&[
            ("host", "Shop.Example.com:8443"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ]);
        let peer: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        let v = ClientView::new(peer, false, &"/".parse().unwrap(), &h, &[]);
        assert_eq!(v.client_ip.to_string(), "192.0.2.7");
        assert_eq!(v.scheme, "http");
        assert_eq!(v.host, "shop.example.com");
        let mut out = h.clone();
        v.set_forwarded(&mut out);
        assert_eq!(out["x-forwarded-for"], "192.0.2.7");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(
            out["forwarded"],
            "for=192.0.2.7;proto=http;host=\"Shop.Example.com:8443\""
        );
    }

    #[test]
    fn forwarded_trusted_peer_appends() {
        let h = map(&[
            ("host", "internal"),
            ("x-forwarded-for", "203.0.113.9, 10.0.0.3"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "h5.example.com"),
            ("forwarded", "for=203.0.113.9"),
        ]);
        let peer: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let v = ClientView::new(peer, false, &"/".parse().unwrap(), &h, &trusted);
        assert_eq!(v.client_ip.to_string(), "203.0.113.9");
        assert_eq!(v.scheme, "https");
        assert_eq!(v.origin(), "https://h5.example.com");
        let mut out = h.clone();
        v.set_forwarded(&mut out);
        assert_eq!(out["x-forwarded-for"], "203.0.113.9, 10.0.0.3, 10.0.0.2");
        assert_eq!(
            out["forwarded"],
            "for=203.0.113.9, for=10.0.0.2;proto=https;host=h5.example.com"
        );
    }

    #[test]
    fn host_parsing() {
        assert_eq!(host_of("Example.COM:80"), "example.com");
        assert_eq!(host_of("[::1]:8080"), "::1");
        assert_eq!(host_of("example.com."), "example.com");
    }

    #[test]
    fn connection_never_removes_host() {
        let mut h = map(&[
            ("host", "a.example"),
            ("connection", "host, x-hop"),
            ("x-hop", "1"),
        ]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h["host"], "a.example");
        assert!(!h.contains_key("x-hop"));
    }

    #[test]
    fn host_values() {
        for ok in [
            "a.example",
            "A.Example:8443",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::7]:443",
            "localhost",
            "under_score.example",
            "example.com.",
            "h:65535",
        ] {
            assert!(valid_host(ok), "{ok:?} is valid");
        }
        for bad in [
            "",
            ":80",
            "127.0.0.1#@evil.example",
            "user@a.example",
            "user:pw@a.example:80",
            "a.example:",
            "a.example:65536",
            "a.example:123456",
            "a.example:8a",
            "a.example:80:80",
            "a.example/x",
            "a.example\\x",
            "a b",
            "a%2eexample",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[v1.x]",
            "[127.0.0.1]",
            "a.example,b.example",
            "é.example",
        ] {
            assert!(!valid_host(bad), "{bad:?} is refused");
        }
        assert!(!valid_host(&"a".repeat(254)));
    }

    #[test]
    fn host_rules() {
        use http::Version;
        let uri = |s: &str| -> http::Uri { s.parse().unwrap() };
        let h11 = Version::HTTP_11;
        let ok = |v, u: &str, pairs: &[(&str, &str)]| check_host(v, &uri(u), &map(pairs));
        assert_eq!(ok(h11, "/", &[("host", "a.example")]), Ok(()));
        assert!(ok(h11, "/", &[("host", "a.example"), ("host", "b.example")]).is_err());
        assert!(ok(h11, "/", &[("host", "a.example"), ("host", "a.example")]).is_err());
        assert!(ok(h11, "/", &[]).is_err(), "HTTP/1.1 needs a Host");
        assert_eq!(ok(Version::HTTP_10, "/", &[]), Ok(()));
        assert!(ok(h11, "/", &[("host", "127.0.0.1#@evil.example")]).is_err());
        assert_eq!(
            ok(h11, "http://A.example/x", &[("host", "a.example")]),
            Ok(())
        );
        assert!(ok(h11, "http://b.example/x", &[("host", "a.example")]).is_err());
        assert!(ok(h11, "http://u@a.example/x", &[("host", "a.example")]).is_err());
        // HTTP/2: :authority is the uri's authority.
        assert_eq!(ok(Version::HTTP_2, "http://a.example/x", &[]), Ok(()));
        assert!(ok(Version::HTTP_2, "http://u:p@a.example/x", &[]).is_err());
        assert!(ok(Version::HTTP_2, "/x", &[]).is_err());
    }

    #[test]
    fn lookalike_forwarded_headers_from_untrusted_peers() {
        let doomed = [
            "X_Forwarded_For",
            "X-Real_IP",
            "x_forwarded_host",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-ssl",
            "x-forwarded-scheme",
            "x-forwarded",
            "X-Original-URL",
            "x_original_uri",
            "X-Rewrite-URL",
            "True-Client-IP",
            "CF-Connecting-IP",
            "cf_connecting_ipv6",
            "X-Client-IP",
            "X-Cluster-Client-IP",
            "Client-IP",
            "X-Host",
            "Forwarded",
            "forwarded",
        ];
        let mut pairs: Vec<(&str, &str)> = doomed.iter().map(|n| (*n, "6.6.6.6")).collect();
        pairs.extend([
            ("host", "a.example"),
            ("x-kept", "1"),
            ("x-http-method-override", "PUT"),
        ]);
        let h = map(&pairs);
        let peer: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        let v = ClientView::new(peer, false, &"/".parse().unwrap(), &h, &[]);
        let mut out = h.clone();
        v.set_forwarded(&mut out);
        let mut left: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "forwarded",
                "host",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-http-method-override",
                "x-kept",
                "x-real-ip"
            ]
        );
        for name in ["x-forwarded-for", "x-real-ip"] {
            assert_eq!(out[name], "192.0.2.7");
        }
        assert_eq!(out["forwarded"], "for=192.0.2.7;proto=http;host=a.example");
        assert!(!is_proxy_header("x-request-id"));
        assert!(!is_proxy_header("cookie"));
    }

    #[test]
    fn trusted_peers_keep_canonical_proxy_headers_only() {
        let h = map(&[
            ("host", "internal"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-port", "443"),
            ("x-original-url", "/from-proxy"),
            ("x_forwarded_for", "6.6.6.6"),
            ("x_real_ip", "6.6.6.6"),
        ]);
        let peer: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let v = ClientView::new(peer, false, &"/".parse().unwrap(), &h, &trusted);
        let mut out = h.clone();
        v.set_forwarded(&mut out);
        assert_eq!(out["x-forwarded-for"], "203.0.113.9, 10.0.0.2");
        assert_eq!(out["x-forwarded-port"], "443");
        assert_eq!(out["x-original-url"], "/from-proxy");
        assert!(!out.contains_key("x_forwarded_for"));
        assert!(!out.contains_key("x_real_ip"));
    }

    #[test]
    fn invalid_forwarded_host_from_a_trusted_proxy_is_ignored() {
        let h = map(&[
            ("host", "a.example"),
            ("x-forwarded-host", "a.example#@evil.example"),
        ]);
        let peer: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let v = ClientView::new(peer, false, &"/".parse().unwrap(), &h, &trusted);
        assert_eq!(v.origin(), "http://a.example");
    }

    #[test]
    fn request_id_kept_or_made() {
        let h = map(&[("x-request-id", "abc-123")]);
        assert_eq!(request_id(&h), "abc-123");
        let h = map(&[("x-request-id", "has space")]);
        assert_eq!(request_id(&h).len(), 32);
    }
}
