//! The HTTP/1.1 proxy path over real sockets: route selection, header rules (hop-by-hop,
//! forwarding, request ids, identity stripping) and the gateway's own error answers.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn route(name: &str, host: Option<&str>, path: &str, upstream: &str) -> String {
    let host = host
        .map(|h| format!("host = \"{h}\"\n"))
        .unwrap_or_default();
    format!("[[route]]\nname = \"{name}\"\n{host}path = \"{path}\"\nupstream = \"{upstream}\"\nauth = \"off\"\n\n")
}

const SERVER: &str = "[server]\nlisten = \"127.0.0.1:0\"\n\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_precedence_host_prefix_segments_and_base_path() {
    let any = Echo::named("any").await;
    let api = Echo::named("api").await;
    let shop = Echo::named("shop").await;
    let shopapi = Echo::named("shopapi").await;
    let rewrite = Echo::named("rewrite").await;
    let toml = format!(
        "{SERVER}{}{}{}{}{}",
        route("any", None, "/", &any.url()),
        route("api", None, "/api", &api.url()),
        route("shop", Some("Shop.Example.com"), "/", &shop.url()),
        route(
            "shopapi",
            Some("shop.example.com"),
            "/api/v2",
            &shopapi.url()
        ),
        route("rewrite", None, "/app", &format!("{}/base/", rewrite.url())),
    );
    let gw = start_gateway(&toml).await;
    let c = client();
    // (Host, path) -> (upstream name, path the upstream saw)
    let cases = [
        ("other.example", "/x", "any", "/x"),
        ("other.example", "/api", "api", "/api"),
        ("other.example", "/api/x?q=1", "api", "/api/x?q=1"),
        ("other.example", "/apiary", "any", "/apiary"),
        ("shop.example.com", "/api/x", "shop", "/api/x"),
        ("SHOP.example.com:8443", "/anything", "shop", "/anything"),
        ("shop.example.com", "/api/v2", "shopapi", "/api/v2"),
        ("shop.example.com", "/api/v2/y", "shopapi", "/api/v2/y"),
        ("shop.example.com", "/api/v20", "shop", "/api/v20"),
        ("other.example", "/app/x/y?z=1", "rewrite", "/base/x/y?z=1"),
        ("other.example", "/app", "rewrite", "/base"),
        ("other.example", "/app/", "rewrite", "/base/"),
        ("other.example", "/application", "any", "/application"),
    ];
    for (host, path, want_upstream, want_path) in cases {
        let resp = c
            .get(gw.url(path))
            .header("host", host)
            .send()
            .await
            .unwrap();
        let v = echo_json(resp).await;
        assert_eq!(v["upstream"], want_upstream, "{host}{path}");
        assert_eq!(v["path"], want_path, "{host}{path}");
        assert_eq!(
            echo_header(&v, "host"),
            [host],
            "the upstream sees the original Host"
        );
    }
}

#[tokio::test]
async fn unknown_route_is_a_404_page_or_json_and_never_forwarded() {
    let up = Echo::start().await;
    let gw = start_gateway(&format!(
        "{SERVER}{}",
        route("api", None, "/api", &up.url())
    ))
    .await;
    let c = client();

    let resp = c.get(gw.url("/apiary")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = resp.text().await.unwrap();
    assert!(body.contains("<h1>404 Not Found</h1>"), "{body}");
    assert!(body.contains(&rid), "the page names the request id");

    let resp = c
        .get(gw.url("/"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "not_found");
    assert!(v["request_id"].as_str().is_some_and(|s| !s.is_empty()));

    assert!(
        up.seen().is_empty(),
        "nothing may reach the upstream: {:?}",
        up.seen()
    );
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_removed_and_host_kept() {
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;
    let req = "GET /echo HTTP/1.1\r\n\
        Host: Original.Example:8443\r\n\
        Connection: close, X-Secret-Hop\r\n\
        X-Secret-Hop: 1\r\n\
        Keep-Alive: timeout=5\r\n\
        TE: trailers\r\n\
        Proxy-Authorization: Basic eDp5\r\n\
        Proxy-Connection: keep-alive\r\n\
        Upgrade: websocket\r\n\
        X-Keep: yes\r\n\
        \r\n";
    let (status, _, _) = raw_request(gw.addr(), req.as_bytes()).await;
    assert_eq!(status, 200);
    let seen = up.last();
    for name in [
        "connection",
        "x-secret-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            seen.header(name).is_none(),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.header("x-keep"), Some("yes"));
    assert_eq!(seen.header_all("host"), ["Original.Example:8443"]);
    assert_eq!(seen.version, "HTTP/1.1");
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_removed() {
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;
    // Control: the upstream itself does send them.
    let direct = format!(
        "GET /hop HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        up.addr
    );
    let (_, direct_headers, _) = raw_request(up.addr, direct.as_bytes()).await;
    for name in [
        "x-up-hop",
        "keep-alive",
        "proxy-authenticate",
        "upgrade",
        "te",
    ] {
        assert!(
            direct_headers.iter().any(|(k, _)| k == name),
            "control: {name} missing"
        );
    }
    let req = format!(
        "GET /hop HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        gw.addr()
    );
    let (status, headers, body) = raw_request(gw.addr(), req.as_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(body, b"hop");
    let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    for name in [
        "x-up-hop",
        "keep-alive",
        "proxy-authenticate",
        "upgrade",
        "te",
        "proxy-connection",
    ] {
        assert!(
            !names.contains(&name),
            "{name} reached the client: {headers:?}"
        );
    }
    // The only Connection header the client may see is the gateway's own `close`.
    for (k, v) in &headers {
        if k == "connection" {
            assert!(
                v.eq_ignore_ascii_case("close"),
                "upstream's Connection leaked: {v}"
            );
        }
    }
    assert!(names.contains(&"x-kept"), "{headers:?}");
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_replaced() {
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;
    let resp = client()
        .get(gw.url("/f"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=203.0.113.9;proto=https")
        .header("x-real-ip", "6.6.6.6")
        .send()
        .await
        .unwrap();
    let v = echo_json(resp).await;
    let authority = gw.addr().to_string();
    assert_eq!(echo_header(&v, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(echo_header(&v, "x-forwarded-proto"), ["http"]);
    assert_eq!(echo_header(&v, "x-forwarded-host"), [authority.as_str()]);
    assert_eq!(echo_header(&v, "x-real-ip"), ["127.0.0.1"]);
    assert_eq!(
        echo_header(&v, "forwarded"),
        [format!("for=127.0.0.1;proto=http;host=\"{authority}\"").as_str()]
    );
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_peer_are_appended() {
    let up = Echo::start().await;
    let toml = simple_config(&up.url()).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]",
    );
    let gw = start_gateway(&toml).await;
    let resp = client()
        .get(gw.url("/f"))
        .header("x-forwarded-for", "203.0.113.9, 198.51.100.1")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "h5.example.com")
        .header("forwarded", "for=203.0.113.9")
        .header("x-real-ip", "6.6.6.6")
        .send()
        .await
        .unwrap();
    let v = echo_json(resp).await;
    assert_eq!(
        echo_header(&v, "x-forwarded-for"),
        ["203.0.113.9, 198.51.100.1, 127.0.0.1"]
    );
    assert_eq!(echo_header(&v, "x-forwarded-proto"), ["https"]);
    assert_eq!(echo_header(&v, "x-forwarded-host"), ["h5.example.com"]);
    assert_eq!(
        echo_header(&v, "x-real-ip"),
        ["198.51.100.1"],
        "rightmost untrusted hop"
    );
    assert_eq!(
        echo_header(&v, "forwarded"),
        ["for=203.0.113.9, for=127.0.0.1;proto=https;host=h5.example.com"]
    );
}

#[tokio::test]
async fn request_id_is_kept_or_generated_and_sent_both_ways() {
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;
    let c = client();

    let resp = c
        .get(gw.url("/a"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let v = echo_json(resp).await;
    assert_eq!(echo_header(&v, "x-request-id"), ["abc-123"]);

    let mut ids = Vec::new();
    for sent in [None, Some("has space")] {
        let mut req = c.get(gw.url("/b"));
        if let Some(s) = sent {
            req = req.header("x-request-id", s);
        }
        let resp = req.send().await.unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 32, "generated id: {id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        let v = echo_json(resp).await;
        assert_eq!(
            echo_header(&v, "x-request-id"),
            [id.as_str()],
            "the upstream gets the same id"
        );
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "ids are fresh per request");
}

const SPOOFED: [&str; 12] = [
    "X-WeChat-OpenId",
    "x_wechat_openid",
    "X-WECHAT-UNIONID",
    "X-WeChat-JWT",
    "X_WECHAT_UNIONID",
    "x-wechat-snapshot",
    "X-Wechat_Jwt",
    "x_WeChat-OpenId",
    "X-WECHAT_OPENID",
    "x-wechat-session",
    "X_Wechat_Anything",
    "x-WeChat-UnionId",
];

fn assert_no_identity(seen: &Seen) {
    for (k, v) in &seen.headers {
        let folded = k.to_ascii_lowercase().replace('_', "-");
        assert!(
            !folded.starts_with("x-wechat-"),
            "{k}: {v} reached the upstream"
        );
        assert!(!v.starts_with("spoof"), "{k}: {v} reached the upstream");
    }
    assert_eq!(
        seen.header("x-wechatty"),
        Some("keep"),
        "unrelated headers pass"
    );
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;

    // HTTP/1.1, names exactly as written.
    let mut req = format!(
        "GET /me HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        gw.addr()
    );
    for (i, name) in SPOOFED.iter().enumerate() {
        req.push_str(&format!("{name}: spoof{i}\r\n"));
    }
    req.push_str("X-Wechatty: keep\r\n\r\n");
    let (status, _, _) = raw_request(gw.addr(), req.as_bytes()).await;
    assert_eq!(status, 200);
    assert_no_identity(&up.last());

    // HTTP/2 (h2c), where names arrive lower-case.
    let c = client_builder().http2_prior_knowledge().build().unwrap();
    let mut req = c.get(gw.url("/me")).header("x-wechatty", "keep");
    for (i, name) in SPOOFED.iter().enumerate() {
        req = req.header(*name, format!("spoof{i}"));
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    up.wait_for_requests(2).await;
    assert_no_identity(&up.last());
}

async fn assert_error_page(resp: reqwest::Response, status: u16, title: &str, leak: &str) {
    assert_eq!(resp.status(), status);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        resp.headers()
    );
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = resp.text().await.unwrap();
    assert!(body.len() < 4096, "a short page, got {} bytes", body.len());
    assert!(
        body.contains(&format!("<h1>{status} {title}</h1>")),
        "{body}"
    );
    assert!(body.contains(&rid));
    assert!(!body.contains(leak), "the page leaks {leak}: {body}");
}

async fn assert_error_json(resp: reqwest::Response, status: u16, code: &str, leak: &str) {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let text = resp.text().await.unwrap();
    assert!(!text.contains(leak), "the JSON leaks {leak}: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"], code);
    assert_eq!(v["request_id"], rid.as_str());
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn refused_upstream_is_502() {
    let dead = dead_port();
    let gw = start_gateway(&simple_config(&format!("http://{dead}"))).await;
    let c = client();
    let leak = dead.port().to_string();
    assert_error_page(
        c.get(gw.url("/x")).send().await.unwrap(),
        502,
        "Bad Gateway",
        &leak,
    )
    .await;
    let resp = c
        .get(gw.url("/x"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_error_json(resp, 502, "bad_gateway", &leak).await;
}

#[tokio::test]
async fn upstream_reset_mid_headers_is_502() {
    let (addr, _task) = resetting_upstream().await;
    let gw = start_gateway(&simple_config(&format!("http://{addr}"))).await;
    let c = client();
    let leak = addr.port().to_string();
    assert_error_page(
        c.get(gw.url("/x")).send().await.unwrap(),
        502,
        "Bad Gateway",
        &leak,
    )
    .await;
    let resp = c
        .get(gw.url("/x"))
        .header("x-requested-with", "XMLHttpRequest")
        .send()
        .await
        .unwrap();
    assert_error_json(resp, 502, "bad_gateway", &leak).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504_after_request_timeout() {
    let up = Echo::start().await;
    let toml = simple_config(&up.url()).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nrequest_timeout = \"1s\"",
    );
    let gw = start_gateway(&toml).await;
    let c = client();
    let leak = up.addr.port().to_string();
    let t = Instant::now();
    let resp = c.get(gw.url("/slow?ms=3000")).send().await.unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    assert_error_page(resp, 504, "Gateway Timeout", &leak).await;
    let resp = c
        .get(gw.url("/slow?ms=3000"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_error_json(resp, 504, "gateway_timeout", &leak).await;
    // A fast request on the same gateway is unaffected.
    let v = echo_json(c.get(gw.url("/slow?ms=10")).send().await.unwrap()).await;
    assert_eq!(v["path"], "/slow?ms=10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upload_outlasting_request_timeout_is_not_cut() {
    // A phone uploading slowly is progress, not a hung upstream: the timeout runs from the
    // last byte the client sent.
    let up = Echo::start().await;
    let toml = simple_config(&up.url()).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nrequest_timeout = \"1s\"",
    );
    let gw = start_gateway(&toml).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut send = h1_connect::<ChannelBody>(gw.addr()).await;
    let req = hyper::Request::post("/upload")
        .header("host", "upload.test")
        .body(ChannelBody::new(rx))
        .unwrap();
    let feeder = tokio::spawn(async move {
        for _ in 0..8 {
            tx.send(bytes::Bytes::from(vec![b'x'; 1000])).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let t = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(20), send.send_request(req))
        .await
        .expect("answer within 20 s")
        .expect("response");
    assert!(
        t.elapsed() >= Duration::from_millis(2000),
        "the upload took 2.4 s"
    );
    assert_eq!(
        resp.status(),
        200,
        "a 2.4 s upload under a 1 s timeout completes"
    );
    feeder.await.unwrap();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("8000"), "{body:?}");
}

#[tokio::test]
async fn oversized_headers_are_431_and_not_forwarded() {
    let up = Echo::start().await;
    let toml = simple_config(&up.url()).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nmax_request_header_bytes = 1024",
    );
    let gw = start_gateway(&toml).await;
    let c = client();
    let big = "a".repeat(2000);
    let resp = c
        .get(gw.url("/x"))
        .header("x-big", &big)
        .send()
        .await
        .unwrap();
    assert_error_page(resp, 431, "Request Header Fields Too Large", &big).await;
    let resp = c
        .get(gw.url("/x"))
        .header("x-big", &big)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_error_json(resp, 431, "request_header_fields_too_large", &big).await;
    // Just under the limit passes.
    let resp = c
        .get(gw.url("/x"))
        .header("x-small", "a".repeat(500))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.seen().len(), 1, "only the small request was forwarded");
}

#[tokio::test]
async fn request_body_and_method_pass_through() {
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;
    let resp = client()
        .put(gw.url("/items/7?x=1"))
        .body(vec![7u8; 100_000])
        .send()
        .await
        .unwrap();
    let v = echo_json(resp).await;
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["path"], "/items/7?x=1");
    assert_eq!(v["body_len"], 100_000);
}

#[tokio::test]
async fn expect_100_continue_upload_goes_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        gw.addr()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("no 100 Continue: the client would wait forever")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"hello").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let (status, _, body) = parse_response(&out);
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), r#"{"received":5}"#);
}

#[tokio::test]
async fn far_oversized_headers_get_hyper_431_not_a_hang() {
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;
    let big = "a".repeat(64 * 1024);
    let req = format!("GET /x HTTP/1.1\r\nHost: h\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let (status, _, _) = raw_request(gw.addr(), req.as_bytes()).await;
    assert_eq!(status, 431);
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn http10_request_without_host_gets_valid_forwarded_headers() {
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;
    let req = "GET /old HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n";
    let (status, _, _) = raw_request(gw.addr(), req.as_bytes()).await;
    assert_eq!(status, 200);
    let seen = up.last();
    assert_eq!(seen.path, "/old");
    assert_eq!(seen.header_all("forwarded"), ["for=127.0.0.1;proto=http"]);
    assert!(
        seen.header("x-forwarded-host").is_none(),
        "{:?}",
        seen.headers
    );
    // With a Host it is named in both.
    let req = "GET /old HTTP/1.0\r\nHost: a.example\r\n\r\n";
    let (status, _, _) = raw_request(gw.addr(), req.as_bytes()).await;
    assert_eq!(status, 200);
    let seen = up.last();
    assert_eq!(
        seen.header_all("forwarded"),
        ["for=127.0.0.1;proto=http;host=a.example"]
    );
    assert_eq!(seen.header_all("x-forwarded-host"), ["a.example"]);
}
