//! Bodies stream through the gateway without buffering: 1 GiB each way through the real
//! binary with its peak RSS (VmHWM) bounded, and first bytes forwarded before the other side
//! has finished producing.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};

const GIB: u64 = 1 << 30;
/// Peak resident memory allowed to the gateway process while moving 2 GiB.
const RSS_LIMIT_KB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_through_the_binary_with_bounded_memory() {
    let up = Echo::start().await;
    let mut bin = spawn_binary(&simple_config(&up.url()));
    let host = bin.addr.to_string();
    let baseline_kb = bin.proc_status_kb("VmRSS");

    // Download: the upstream generates 1 GiB on the fly; the client counts it.
    let started = Instant::now();
    let mut send = h1_connect::<Empty<Bytes>>(bin.addr).await;
    let req = http::Request::get(format!("/download?bytes={GIB}"))
        .header("host", &host)
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut received: u64 = 0;
    let download = async {
        while let Some(frame) = body.frame().await {
            received += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
        }
    };
    tokio::time::timeout(Duration::from_secs(120), download)
        .await
        .expect("download took over 120 s");
    let download_time = started.elapsed();
    assert_eq!(received, GIB);

    // Upload: the client generates 1 GiB on the fly; the upstream counts it.
    let started = Instant::now();
    let mut send = h1_connect::<GeneratedBody>(bin.addr).await;
    let req = http::Request::post("/upload")
        .header("host", &host)
        .body(GeneratedBody::new(GIB))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(120), async {
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap().to_bytes()
    })
    .await
    .expect("upload took over 120 s");
    let upload_time = started.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(v["received"], GIB);

    let hwm_kb = bin.proc_status_kb("VmHWM");
    let rss_kb = bin.proc_status_kb("VmRSS");
    eprintln!(
        "1 GiB download {download_time:?}, 1 GiB upload {upload_time:?}; gateway RSS baseline {baseline_kb} kB, \
         peak (VmHWM) {hwm_kb} kB, after {rss_kb} kB"
    );
    assert!(
        hwm_kb < RSS_LIMIT_KB,
        "gateway peak RSS {hwm_kb} kB ≥ {RSS_LIMIT_KB} kB"
    );
    assert!(rss_kb < RSS_LIMIT_KB, "gateway RSS after {rss_kb} kB");

    // The process is still healthy and exits cleanly.
    bin.sigterm();
    assert!(bin.wait_exit(WAIT).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_first_bytes_arrive_before_the_upstream_finishes() {
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;
    let mut send = h1_connect::<Empty<Bytes>>(gw.addr()).await;
    let req = http::Request::get("/hold")
        .header("host", gw.addr().to_string())
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first chunk was held back until the upstream finished")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first-chunk");
    // Nothing more comes until the upstream is released.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), body.frame())
            .await
            .is_err()
    );
    up.release();
    let rest = tokio::time::timeout(WAIT, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "rest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_reaches_the_upstream_before_the_client_finishes() {
    let up = Echo::start().await;
    let gw = start_gateway(&simple_config(&up.url())).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let mut send = h1_connect::<ChannelBody>(gw.addr()).await;
    let req = http::Request::post("/upload")
        .header("host", gw.addr().to_string())
        .header("transfer-encoding", "chunked")
        .body(ChannelBody::new(rx))
        .unwrap();
    let pending = tokio::spawn(async move { send.send_request(req).await });
    tx.send(Bytes::from(vec![1u8; 1000])).await.unwrap();
    // The request is at the upstream while the client's body is still open.
    up.wait_for_requests(1).await;
    assert!(!pending.is_finished());
    tx.send(Bytes::from(vec![2u8; 234])).await.unwrap();
    drop(tx);
    let resp = tokio::time::timeout(WAIT, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["received"], 1234);
}
