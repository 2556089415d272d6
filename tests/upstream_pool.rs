//! The upstream connection pool (`src/upstream.rs`): connections are reused across requests
//! and client connections, a response abandoned mid-body does not return its connection, and
//! an upstream that closes idle connections costs no failed request.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

fn config(upstream: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[[route]]\nname = \"all\"\npath = \"/\"\nupstream = \"{upstream}\"\nauth = \"off\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_share_one_upstream_connection() {
    let up = Echo::start().await;
    let gw = start_gateway(&config(&up.url())).await;
    for i in 0..6 {
        // A new client connection each time: the pool is the gateway's, not the client's.
        let resp = client()
            .get(gw.url(&format!("/r{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    let peers: HashSet<_> = up.seen().iter().map(|s| s.peer).collect();
    assert_eq!(up.seen().len(), 6);
    assert_eq!(peers.len(), 1, "upstream connections: {peers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_get_their_own_connections_then_reuse_them() {
    let up = Echo::start().await;
    let gw = start_gateway(&config(&up.url())).await;
    let c = client();
    let hits = (0..8).map(|i| {
        let c = c.clone();
        let url = gw.url(&format!("/slow?ms=200&i={i}"));
        async move { c.get(url).send().await.unwrap().status() }
    });
    for status in futures_util::future::join_all(hits).await {
        assert_eq!(status, 200);
    }
    let first: HashSet<_> = up.seen().iter().map(|s| s.peer).collect();
    assert_eq!(
        first.len(),
        8,
        "eight requests in flight need eight connections"
    );
    for _ in 0..4 {
        assert_eq!(c.get(gw.url("/again")).send().await.unwrap().status(), 200);
    }
    let all: HashSet<_> = up.seen().iter().map(|s| s.peer).collect();
    assert_eq!(all, first, "later requests reuse the idle connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_abandoned_mid_body_does_not_return_its_connection() {
    let up = Echo::start().await;
    let gw = start_gateway(&config(&up.url())).await;

    // Start a large download and hang up after the first bytes.
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /download?bytes=50000000 HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(n > 0);
    drop(s);
    let abandoned = up.last().peer;

    // The next request gets a clean connection and a whole answer.
    let resp = client().get(gw.url("/after")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["path"], "/after");
    assert_ne!(
        up.last().peer,
        abandoned,
        "a half-read connection was reused"
    );
}

/// An upstream that answers one request per connection and then closes it, without saying
/// `Connection: close`: every pooled connection is dead by the time it is used again.
async fn closing_upstream() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_idle_connections_costs_no_failed_request() {
    let (url, _task) = closing_upstream().await;
    let gw = start_gateway(&config(&url)).await;
    let c = client();
    for i in 0..30 {
        let resp = c.get(gw.url(&format!("/n{i}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.text().await.unwrap(), "ok");
        if i % 3 == 0 {
            // Sometimes give the gateway time to see the close, sometimes not.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An upstream that answers as soon as it has the request head, then reads (and drops) a
/// chunked request body to its end before taking the next request on the connection.
async fn early_answer_upstream() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                loop {
                    // The head.
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    buf.drain(..end);
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    // The body, if chunked: up to the last chunk.
                    if head.contains("transfer-encoding: chunked") {
                        loop {
                            if let Some(i) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                                buf.drain(..i + 5);
                                break;
                            }
                            match s.read(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&b[..n]),
                            }
                        }
                    }
                }
            });
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_sending_a_request_body_is_not_lent_out() {
    let (url, _task) = early_answer_upstream().await;
    let gw = start_gateway(&config(&url)).await;

    // An upload whose response comes back before its body is done.
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let mut upload = h1_connect::<ChannelBody>(gw.addr()).await;
    let req = hyper::Request::post("/upload")
        .header("host", "gw.test")
        .body(ChannelBody::new(rx))
        .unwrap();
    tx.send(bytes::Bytes::from_static(b"part one"))
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), upload.send_request(req))
        .await
        .expect("the early answer")
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Meanwhile other requests are served at once, on another connection: the busy one
    // must not be handed out (it would wait for the upload to finish).
    for i in 0..3 {
        let resp = tokio::time::timeout(
            Duration::from_secs(3),
            client().get(gw.url(&format!("/other{i}"))).send(),
        )
        .await
        .expect("a request waited on the busy upstream connection")
        .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "early");
    }

    // The upload finishes; everything still works afterwards.
    tx.send(bytes::Bytes::from_static(b"part two"))
        .await
        .unwrap();
    drop(tx);
    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    let resp = client().get(gw.url("/last")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_close_after_upstream_idle_timeout_without_traffic() {
    // An upstream that answers one request and reports when the gateway closes the
    // connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut b = [0u8; 4096];
        let _ = s.read(&mut b).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .unwrap();
        let answered = std::time::Instant::now();
        while !matches!(s.read(&mut b).await, Ok(0) | Err(_)) {}
        let _ = closed_tx.send(answered.elapsed());
    });
    let toml = config(&url).replace(
        "workers = 1\n",
        "workers = 1\nupstream_idle_timeout = \"1s\"\n",
    );
    let gw = start_gateway(&toml).await;
    let resp = client().get(gw.url("/once")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "ok");
    // No further request: the pool's sweeper must close the connection on its own.
    let after = tokio::time::timeout(Duration::from_secs(6), closed_rx)
        .await
        .expect("the idle upstream connection was never closed")
        .unwrap();
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}, before upstream_idle_timeout"
    );
}
