//! Protocols on the client side of the gateway: WebSocket tunnelling, HTTP/2 with prior
//! knowledge (h2c), and TLS with ALPN h2 and http/1.1 using a self-signed certificate.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_gateway() {
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;
    let url = format!("ws://{}/ws", gw.addr());
    let (mut ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake timed out")
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    assert!(resp.headers().contains_key("x-request-id"));

    ws.send(Message::text("hello through wxgate"))
        .await
        .unwrap();
    let big = vec![0xA5u8; 200_000];
    ws.send(Message::binary(big.clone())).await.unwrap();
    let first = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("echo timed out")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_text().unwrap().as_str(), "hello through wxgate");
    let second = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("echo timed out")
        .unwrap()
        .unwrap();
    assert_eq!(second.into_data().as_ref(), &big[..]);
    ws.close(None).await.unwrap();

    let seen = up.last();
    assert_eq!(seen.path, "/ws");
    assert_eq!(seen.header("upgrade"), Some("websocket"));
    assert_eq!(seen.header("connection"), Some("upgrade"));
    assert!(seen.header("sec-websocket-key").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_to_the_gateway() {
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;
    let c = client_builder().http2_prior_knowledge().build().unwrap();

    let resp = c.get(gw.url("/h2?x=1")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert!(resp.headers().contains_key("x-request-id"));
    let v = echo_json(resp).await;
    assert_eq!(v["path"], "/h2?x=1");
    assert_eq!(v["version"], "HTTP/1.1", "upstreams get HTTP/1.1");
    let authority = gw.addr().to_string();
    assert_eq!(
        echo_header(&v, "host"),
        [authority.as_str()],
        ":authority becomes Host"
    );

    let resp = c
        .post(gw.url("/post"))
        .body(vec![1u8; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(echo_json(resp).await["body_len"], 1 << 20);

    // Connection-specific headers from the upstream would be illegal in HTTP/2.
    let resp = c.get(gw.url("/hop")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    for name in [
        "connection",
        "x-up-hop",
        "keep-alive",
        "proxy-authenticate",
        "upgrade",
        "te",
    ] {
        assert!(
            !resp.headers().contains_key(name),
            "{name}: {:?}",
            resp.headers()
        );
    }
    assert_eq!(resp.headers()["x-kept"], "1");
    assert_eq!(resp.text().await.unwrap(), "hop");

    // Streams on one connection are served concurrently: 16 requests of 300 ms each.
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let c = c.clone();
        let url = gw.url("/slow?ms=300");
        tasks.push(tokio::spawn(async move {
            c.get(url).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// A gateway with `[server.tls]` from a fresh self-signed certificate; returns its PEM too.
async fn tls_gateway(upstream: &str) -> (TestGateway, String) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = wxgate::tls::self_signed(&["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("server.crt"), &cert).unwrap();
    std::fs::write(dir.path().join("server.key"), &key).unwrap();
    let toml = format!(
        "{}\n[server.tls]\ncert = \"server.crt\"\nkey = \"server.key\"\n",
        simple_config(upstream)
    );
    (start_gateway_in(&toml, dir).await, cert)
}

fn tls_client(gw: &TestGateway, cert: &str, http1: bool) -> reqwest::Client {
    let mut b = client_builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .resolve("localhost", gw.addr())
        .https_only(true);
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_end_to_end_with_alpn_h2_and_http1() {
    let up = Echo::start().await;
    let (gw, cert) = tls_gateway(&up.url()).await;
    let url = format!("https://localhost:{}/secure?q=1", gw.addr().port());

    let resp = tls_client(&gw, &cert, false)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN picks h2");
    let v = echo_json(resp).await;
    assert_eq!(v["path"], "/secure?q=1");
    assert_eq!(echo_header(&v, "x-forwarded-proto"), ["https"]);
    let host = format!("localhost:{}", gw.addr().port());
    assert_eq!(echo_header(&v, "host"), [host.as_str()]);
    assert!(echo_header(&v, "forwarded")[0].contains("proto=https"));

    let resp = tls_client(&gw, &cert, true).get(&url).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(
        echo_header(&echo_json(resp).await, "x-forwarded-proto"),
        ["https"]
    );

    // Control: a client that does not trust the certificate is refused, and plain HTTP
    // on the TLS port gets no HTTP answer.
    let untrusting = client_builder()
        .resolve("localhost", gw.addr())
        .build()
        .unwrap();
    assert!(untrusting.get(&url).send().await.is_err());
    let plain = client().get(gw.url("/secure")).send().await;
    assert!(plain.is_err(), "plain HTTP on the TLS port: {plain:?}");
    assert_eq!(up.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_h2_error_answer_is_json() {
    let dead = dead_port();
    let (gw, cert) = tls_gateway(&format!("http://{dead}")).await;
    let url = format!("https://localhost:{}/x", gw.addr().port());
    let resp = tls_client(&gw, &cert, false)
        .get(&url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "bad_gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstream_host_is_the_client_authority_even_behind_a_trusted_proxy() {
    let up = Echo::start().await;
    let toml = simple_config(&up.url()).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]",
    );
    let gw = start_gateway(&toml).await;
    let authority = gw.addr().to_string();
    for http2 in [false, true] {
        let mut b = client_builder();
        if http2 {
            b = b.http2_prior_knowledge();
        }
        let resp = b
            .build()
            .unwrap()
            .get(gw.url("/h"))
            .header("x-forwarded-host", "h5.example.com")
            .header("x-forwarded-proto", "https")
            .send()
            .await
            .unwrap();
        let v = echo_json(resp).await;
        // HTTP/1.1 and HTTP/2 clients alike: Host is what the client sent, the browser's
        // view travels in X-Forwarded-Host.
        assert_eq!(
            echo_header(&v, "host"),
            [authority.as_str()],
            "http2={http2}"
        );
        assert_eq!(
            echo_header(&v, "x-forwarded-host"),
            ["h5.example.com"],
            "http2={http2}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_tls() {
    let up = Echo::start().await;
    let (gw, cert) = tls_gateway(&up.url()).await;
    wxgate::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut cert.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    let url = format!("wss://localhost:{}/ws", gw.addr().port());
    let (mut ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tls))
        .await
        .expect("handshake timed out")
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("over tls")).await.unwrap();
    let echoed = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("echo timed out")
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "over tls");
    ws.close(None).await.unwrap();
    assert_eq!(up.last().header("x-forwarded-proto"), Some("https"));
}

/// An https upstream with a self-signed certificate for `localhost`; returns its port and PEM.
async fn tls_upstream() -> (u16, String) {
    let (cert, key) = wxgate::tls::self_signed(&["localhost".to_string()]).unwrap();
    let config = wxgate::tls::server_config_from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let body = format!("secure upstream saw {} {}", host, req.uri().path());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_trusted_through_upstream_ca() {
    let (port, cert) = tls_upstream().await;
    let upstream = format!("https://localhost:{port}");

    // Trusting the upstream's CA: the request goes through over rustls, Host kept.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &cert).unwrap();
    let toml = simple_config(&upstream).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nupstream_ca = \"ca.pem\"",
    );
    let gw = start_gateway_in(&toml, dir).await;
    let resp = client()
        .get(gw.url("/x"))
        .header("host", "shop.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        "secure upstream saw shop.test /x"
    );

    // Without it the self-signed upstream is not trusted: 502, not a silent downgrade.
    let gw = start_gateway(&simple_config(&upstream)).await;
    let resp = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
}
