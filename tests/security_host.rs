//! Issue #10, findings 2 and 3: the request's authority is validated before anything uses it
//! (the login's `redirect_uri` is built from it when `public_url` is not set), `Connection`
//! cannot remove Host, and headers by which proxies describe the client only reach an
//! upstream from a trusted proxy.

#[path = "common/gw.rs"]
mod gw;
#[path = "common/sim.rs"]
mod sim;

use gw::{Gw, GwConfig, Seen, HTML_ACCEPT, WECHAT_UA};

/// The default test routes: `/` required (a login builds `redirect_uri` from the Host),
/// `/off` forwarded without auth.
async fn gateway(s: &wxgate::simulator::SimHandle) -> Gw {
    gw::start_gateway(s, GwConfig::default()).await
}

/// Sends `head` (request line and headers, no blank line) as is.
async fn raw(gw: &Gw, head: &str) -> (u16, String, String) {
    gw::raw_request(gw.addr(), head).await
}

fn location(head: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn redirect_uri(head: &str) -> String {
    gw::query_param(&location(head), "redirect_uri").expect("redirect_uri in the Location")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_is_not_host_port_is_refused() {
    let s = sim::start_default().await;
    let gw = gateway(&s).await;
    let page = format!("User-Agent: {WECHAT_UA}\r\nAccept: {HTML_ACCEPT}");
    // The sane case first: the login's redirect_uri is on the Host the browser used.
    let (status, head, _) = raw(
        &gw,
        &format!("GET / HTTP/1.1\r\nHost: {}\r\n{page}", gw.addr()),
    )
    .await;
    assert_eq!(status, 302, "{head}");
    assert_eq!(
        redirect_uri(&head),
        format!("http://{}/_wxgate/callback", gw.addr())
    );
    for host in [
        "127.0.0.1#@evil.example",
        "127.0.0.1@evil.example",
        "user:pw@127.0.0.1",
        "evil.example\\@127.0.0.1",
        "evil.example/x",
        "127.0.0.1:80#",
        "127.0.0.1:abc",
        "127.0.0.1:99999",
        "a.example,b.example",
        "%65vil.example",
        "[::1",
        "",
    ] {
        let (status, head, body) =
            raw(&gw, &format!("GET / HTTP/1.1\r\nHost: {host}\r\n{page}")).await;
        assert_eq!(status, 400, "Host {host:?}: {head}\n{body}");
        assert!(!location(&head).contains("evil"), "Host {host:?}: {head}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_must_be_single_present_and_agree_with_the_target() {
    let s = sim::start_default().await;
    let gw = gateway(&s).await;
    let a = gw.addr();
    let refused = [
        format!("GET /off/x HTTP/1.1\r\nHost: {a}\r\nHost: evil.example"),
        format!("GET /off/x HTTP/1.1\r\nHost: {a}\r\nHost: {a}"),
        "GET /off/x HTTP/1.1\r\nUser-Agent: t".to_string(),
        format!("GET http://evil.example/off/x HTTP/1.1\r\nHost: {a}"),
        format!("GET http://{a}/off/x HTTP/1.1\r\nHost: evil.example"),
        format!("GET http://user@{a}/off/x HTTP/1.1\r\nHost: {a}"),
        format!("GET http://user:pw@{a}/off/x HTTP/1.1\r\nHost: user:pw@{a}"),
    ];
    for head in &refused {
        let (status, _, body) = raw(&gw, head).await;
        assert_eq!(status, 400, "{head:?}: {body}");
        assert!(!body.contains("\"uri\""), "{head:?} reached the upstream");
    }
    // Accepted: a matching absolute-form target, and HTTP/1.0 without any Host.
    let (status, _, body) = raw(&gw, &format!("GET http://{a}/off/x HTTP/1.1\r\nHost: {a}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(Seen::parse(&body).header("host"), Some(a.to_string()));
    let (status, _, body) = raw(&gw, "GET /off/x HTTP/1.0").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_with_userinfo_is_refused() {
    let s = sim::start_default().await;
    let gw = gateway(&s).await;
    let a = gw.addr();
    let (status, _, body) = gw::h2c_get(a, &format!("http://user:pw@{a}/off/x"), &[]).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) =
        gw::h2c_get(a, &format!("http://{a}/off/x"), &[("host", "evil.example")]).await;
    assert_eq!(status, 400, "a Host that disagrees with :authority: {body}");
    let (status, _, body) = gw::h2c_get(a, &format!("http://{a}/off/x"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(Seen::parse(&body).header("host"), Some(a.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_remove_host() {
    let s = sim::start_default().await;
    let gw = gateway(&s).await;
    let a = gw.addr();
    for connection in ["host", "Host, x-drop", "keep-alive, HOST"] {
        let (status, _, body) = raw(
            &gw,
            &format!("GET /off/x HTTP/1.1\r\nHost: {a}\r\nConnection: {connection}\r\nX-Drop: 1"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let seen = Seen::parse(&body);
        assert_eq!(
            seen.header("host"),
            Some(a.to_string()),
            "Connection: {connection}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_forwarded_host_from_a_trusted_proxy_is_ignored() {
    let s = sim::start_default().await;
    let routes = r#"
[[route]]
name = "main"
path = "/"
upstream = UPSTREAM
auth = "required"
"#;
    let gw = gw::start_gateway_with_routes(
        &s,
        GwConfig::default(),
        routes,
        "trusted_proxies = [\"127.0.0.0/8\"]",
    )
    .await;
    let a = gw.addr();
    let page = format!("User-Agent: {WECHAT_UA}\r\nAccept: {HTML_ACCEPT}");
    let (status, head, _) = raw(
        &gw,
        &format!("GET / HTTP/1.1\r\nHost: {a}\r\nX-Forwarded-Host: h5.example.com\r\n{page}"),
    )
    .await;
    assert_eq!(status, 302);
    assert_eq!(
        redirect_uri(&head),
        "http://h5.example.com/_wxgate/callback"
    );
    let (status, head, _) = raw(
        &gw,
        &format!("GET / HTTP/1.1\r\nHost: {a}\r\nX-Forwarded-Host: h5.example.com#@evil.example\r\n{page}"),
    )
    .await;
    assert_eq!(status, 302);
    assert_eq!(redirect_uri(&head), format!("http://{a}/_wxgate/callback"));
}

/// Every spelling a client may use for a header that a proxy sets.
const LOOKALIKES: &[&str] = &[
    "X_Forwarded_For",
    "X-Real_IP",
    "x_forwarded_host",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "X-Forwarded-Ssl",
    "X-Forwarded-Scheme",
    "X_Forwarded_Proto",
    "X-Forwarded-Server",
    "X-Original-URL",
    "X_Original_URI",
    "X-Rewrite-URL",
    "True-Client-IP",
    "CF-Connecting-IP",
    "X-Client-IP",
    "X-Cluster-Client-IP",
    "Client-IP",
    "X-Host",
    "Fastly-Client-IP",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_from_untrusted_peers_never_reach_the_upstream() {
    let s = sim::start_default().await;
    let gw = gateway(&s).await;
    let mut head = format!("GET /off/x HTTP/1.1\r\nHost: {}\r\nX-Kept: 1", gw.addr());
    for name in LOOKALIKES {
        head.push_str(&format!("\r\n{name}: 6.6.6.6"));
    }
    head.push_str("\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6");
    let (status, _, body) = raw(&gw, &head).await;
    assert_eq!(status, 200, "{body}");
    let seen = Seen::parse(&body);
    for (name, value) in seen.headers() {
        assert!(
            !value.contains("6.6.6.6"),
            "{name}: {value} reached the upstream"
        );
    }
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.header("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.header("x-kept").as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_keep_their_headers_but_not_underscore_spellings() {
    let s = sim::start_default().await;
    let routes = r#"
[[route]]
name = "main"
path = "/"
upstream = UPSTREAM
auth = "off"
"#;
    let gw = gw::start_gateway_with_routes(
        &s,
        GwConfig::default(),
        routes,
        "trusted_proxies = [\"127.0.0.0/8\"]",
    )
    .await;
    let head = format!(
        "GET /x HTTP/1.1\r\nHost: {}\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Port: 443\r\n\
         X-Original-URL: /from-proxy\r\nX_Forwarded_For: 6.6.6.6\r\nX-Real_IP: 6.6.6.6",
        gw.addr()
    );
    let (status, _, body) = raw(&gw, &head).await;
    assert_eq!(status, 200, "{body}");
    let seen = Seen::parse(&body);
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-real-ip").as_deref(), Some("203.0.113.9"));
    assert_eq!(seen.header("x-forwarded-port").as_deref(), Some("443"));
    assert_eq!(
        seen.header("x-original-url").as_deref(),
        Some("/from-proxy")
    );
    assert!(seen.header("x_forwarded_for").is_none());
    assert!(seen.header("x-real_ip").is_none());
}
