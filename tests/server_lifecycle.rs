//! The gateway's own endpoints and its life cycle: health and readiness, `/_wxgate/` never
//! forwarded, graceful shutdown in-process and SIGTERM on the real binary.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Empty;

#[tokio::test]
async fn healthz_readyz_and_unknown_gateway_paths_are_never_forwarded() {
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;
    let c = client();

    let resp = c.get(gw.url("/_wxgate/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok\n");
    let resp = c.get(gw.url("/_wxgate/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ready\n");
    assert!(gw.running.gateway().is_ready());

    for path in [
        "/_wxgate",
        "/_wxgate/x",
        "/_wxgate/",
        "/_wxgate/healthz/x",
        "/_wxgate/readyz?x=1/../",
    ] {
        let resp = c.get(gw.url(path)).send().await.unwrap();
        let expect = if path.starts_with("/_wxgate/readyz") {
            200
        } else {
            404
        };
        assert_eq!(resp.status(), expect, "{path}");
    }
    let resp = c
        .get(gw.url("/_wxgate/x"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "not_found");
    let resp = c
        .post(gw.url("/_wxgate/healthz"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);

    assert!(
        up.seen().is_empty(),
        "gateway paths reached the upstream: {:?}",
        up.seen()
    );
    // Control: ordinary paths do reach it.
    assert_eq!(
        c.get(gw.url("/_wxgatex")).send().await.unwrap().status(),
        200
    );
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_never_200_after_begin_shutdown() {
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;
    let host = gw.addr().to_string();
    let readyz = || {
        http::Request::get("/_wxgate/readyz")
            .header("host", &host)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    // A keep-alive connection opened (and used) before the shutdown.
    let mut send = h1_connect::<Empty<Bytes>>(gw.addr()).await;
    let resp = tokio::time::timeout(WAIT, send.send_request(readyz()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);

    gw.running.begin_shutdown();
    let gateway = gw.running.gateway().clone();
    eventually(WAIT, "is_ready() turns false", || !gateway.is_ready()).await;

    // hyper closes idle keep-alive connections when draining starts, so the old connection
    // either answers 503 or is gone; it must never claim to be ready.
    let again = tokio::time::timeout(WAIT, async {
        send.ready().await?;
        send.send_request(readyz()).await
    })
    .await
    .expect("readyz on the old connection hung");
    match again {
        Ok(resp) => {
            eprintln!("old keep-alive connection answered {}", resp.status());
            assert_eq!(resp.status(), 503)
        }
        Err(e) => {
            eprintln!("old keep-alive connection was closed: {e}");
            assert!(
                e.is_closed() || e.is_canceled() || e.is_incomplete_message(),
                "{e:?}"
            )
        }
    }
    tokio::time::timeout(WAIT, gw.running.shutdown())
        .await
        .expect("shutdown hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_a_slow_request_finish_and_refuses_new_connections() {
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;
    let addr = gw.addr();
    let url = gw.url("/slow?ms=2000");
    let in_flight = tokio::spawn(async move {
        let resp = client().get(url).send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    });
    up.wait_for_requests(1).await;
    let seen_at = Instant::now();
    let TestGateway { running, dir: _dir } = gw;
    running.begin_shutdown();

    // The listener goes away at once: new connections are refused.
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
        {
            // A connection caught in the closing listener's backlog is reset; keep trying
            // until the port plainly refuses.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            _ => assert!(
                Instant::now() < deadline,
                "still accepting after begin_shutdown"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !in_flight.is_finished(),
        "the slow request must still be running"
    );

    tokio::time::timeout(WAIT, running.shutdown())
        .await
        .expect("shutdown hung");
    // The upstream answers 2 s after it saw the request; the drain waited for that.
    let drained = seen_at.elapsed();
    assert!(
        drained >= Duration::from_millis(1500),
        "shutdown returned after {drained:?}"
    );
    let (status, body) = tokio::time::timeout(WAIT, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("/slow?ms=2000"), "{body}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_bounds_the_drain() {
    let up = Echo::start().await;
    let toml = simple_config(&up.url()).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nshutdown_timeout = \"500ms\"",
    );
    let gw = start_gateway(&toml).await;
    let url = gw.url("/slow?ms=10000");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    up.wait_for_requests(1).await;
    let started = Instant::now();
    tokio::time::timeout(WAIT, gw.running.shutdown())
        .await
        .expect("shutdown hung");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drop(in_flight);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_exits_0_on_sigterm_after_the_in_flight_request() {
    let up = Echo::start().await;
    let mut bin = spawn_binary(&simple_config(&up.url()));
    let url = format!("http://{}/slow?ms=1500", bin.addr);
    let in_flight = tokio::spawn(async move {
        let resp = client().get(url).send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    });
    up.wait_for_requests(1).await;
    bin.sigterm();
    let (status, body) = tokio::time::timeout(WAIT, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("/slow?ms=1500"), "{body}");
    let exit = tokio::task::block_in_place(|| bin.wait_exit(WAIT));
    assert_eq!(exit.code(), Some(0), "{:?}", bin.stderr_lines());
    let logs = bin.stderr_lines().join("\n");
    assert!(logs.contains("shutting down"), "{logs}");
}
