//! Connection handling: worker threads, idle HTTP/1 connections parking (giving hyper's
//! buffers back) and waking up, `server.keepalive_timeout`, and draining parked connections.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Longer than the gateway's park delay (0.5 s of no traffic, checked every 0.5 s).
const PARKS_AFTER: Duration = Duration::from_millis(1600);

fn config(upstream: &str, extra_server: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{extra_server}\n\n[[route]]\nname = \"all\"\npath = \"/\"\nupstream = \"{upstream}\"\nauth = \"off\"\n"
    )
}

/// Reads one response with a Content-Length body from a keep-alive connection: the head byte
/// by byte, so that a pipelined next response stays in the socket.
async fn read_response(s: &mut TcpStream) -> (u16, Vec<u8>) {
    let fut = async {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut b).await.expect("read");
            assert!(n > 0, "connection closed before a whole response");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("content-length");
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.expect("body");
        (head[9..12].parse().unwrap(), body)
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("response timed out")
}

/// Waits until the gateway reports `n` parked connections.
async fn parked(gw: &TestGateway, n: usize) {
    eventually(Duration::from_secs(5), "connections to park", || {
        gw.running.parked_connections() == n
    })
    .await;
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n\r\n").into_bytes()
}

/// Waits for the peer to close; returns how long it took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Duration {
    let t = Instant::now();
    let mut b = [0u8; 64];
    match tokio::time::timeout(limit, s.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => t.elapsed(),
        Ok(Ok(n)) => panic!("expected a close, read {n} bytes"),
        Err(_) => panic!("the connection was still open after {limit:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_connection_parks_and_serves_the_next_request() {
    let up = Echo::start().await;
    let gw = start_gateway(&config(&up.url(), "")).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();

    s.write_all(&get("/one")).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    // Busy connections do not park.
    assert_eq!(gw.running.parked_connections(), 0);
    parked(&gw, 1).await;

    // The parked connection is the same keep-alive connection and still works.
    s.write_all(&get("/two")).await.unwrap();
    let (status, body) = read_response(&mut s).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("/two"));
    assert_eq!(gw.running.parked_connections(), 0);
    assert_eq!(up.seen().len(), 2);
    // And it parks again.
    parked(&gw, 1).await;
    s.write_all(&get("/three")).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_half_sent_across_a_park_is_served_whole() {
    let up = Echo::start().await;
    let gw = start_gateway(&config(&up.url(), "")).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(&get("/first")).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);

    // Half a request, then silence long enough for the connection to be parked: the bytes
    // hyper had already read must be replayed, not lost.
    s.write_all(b"GET /split HTTP/1.1\r\nHost: gw.test\r\nX-Part: one")
        .await
        .unwrap();
    tokio::time::sleep(PARKS_AFTER).await;
    s.write_all(b"\r\nX-Other: two\r\n\r\n").await.unwrap();
    let (status, body) = read_response(&mut s).await;
    assert_eq!(status, 200);
    let body = String::from_utf8_lossy(&body).to_string();
    assert!(body.contains("/split"), "{body}");
    let seen = up.last();
    assert_eq!(seen.header("x-part"), Some("one"));
    assert_eq!(seen.header("x-other"), Some("two"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_in_order() {
    let up = Echo::start().await;
    let gw = start_gateway(&config(&up.url(), "")).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let mut both = get("/a");
    both.extend_from_slice(&get("/b"));
    s.write_all(&both).await.unwrap();
    for path in ["/a", "/b"] {
        let (status, body) = read_response(&mut s).await;
        assert_eq!(status, 200);
        let body = String::from_utf8_lossy(&body).to_string();
        assert!(body.contains(&format!("\"{path}\"")), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_timeout_closes_idle_connections_parked_or_not() {
    let up = Echo::start().await;
    let gw = start_gateway(&config(&up.url(), "keepalive_timeout = \"2s\"")).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(&get("/")).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    let took = closed_within(&mut s, Duration::from_secs(6)).await;
    assert!(
        took >= Duration::from_millis(1500),
        "closed after {took:?}, before keepalive_timeout"
    );
    assert_eq!(gw.running.parked_connections(), 0);

    // Shorter than the park delay: closed without parking.
    let gw = start_gateway(&config(&up.url(), "keepalive_timeout = \"300ms\"")).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(&get("/")).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    closed_within(&mut s, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_parked_connections_at_once() {
    let up = Echo::start().await;
    let gw = start_gateway(&config(&up.url(), "shutdown_timeout = \"20s\"")).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(&get("/")).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    parked(&gw, 1).await;
    let t = Instant::now();
    gw.running.shutdown().await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "drain waited {:?} for an idle connection",
        t.elapsed()
    );
    closed_within(&mut s, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_serves_its_share_of_connections() {
    let up = Echo::start().await;
    let gw = start_gateway(&config(&up.url(), "workers = 3")).await;
    // Connections are handed out round-robin; each one must be served, whichever worker
    // thread it lands on, and each worker uses its own upstream pool.
    let mut conns = Vec::new();
    for i in 0..9 {
        let mut s = TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(&get(&format!("/c{i}"))).await.unwrap();
        let (status, body) = read_response(&mut s).await;
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains(&format!("/c{i}")));
        conns.push(s);
    }
    // Three pools, so at least three upstream connections (one per worker).
    let peers: std::collections::HashSet<_> = up.seen().iter().map(|s| s.peer).collect();
    assert!(peers.len() >= 3, "upstream connections: {peers:?}");
    gw.running.shutdown().await;
}
