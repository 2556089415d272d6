//! The simulator's `/_sim/` control API over HTTP: clock, faults (latency, errcode, HTTP
//! status, dropped connections), exact per-endpoint counters under concurrency, reset, and
//! shutdown.

#[path = "common/sim.rs"]
mod sim;

use serde_json::{json, Value};
use sim::*;
use std::time::{Duration, Instant};
use wxgate::simulator::{Fault, FaultCount, DEFAULT_APPID, DEFAULT_SECRET};

async fn post_json(url: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("control API answers")
}

fn token_url(s: &wxgate::simulator::SimHandle) -> String {
    format!("{}/cgi-bin/token?grant_type=client_credential&appid={DEFAULT_APPID}&secret={DEFAULT_SECRET}", s.url())
}

#[tokio::test]
async fn clock_advance_over_http_expires_codes() {
    let s = start_default().await;
    let now: Value = reqwest::get(format!("{}/_sim/clock", s.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t0 = now["now"].as_u64().unwrap();
    let code = code_for(&s, DEFAULT_APPID, "snsapi_base", "alice").await;
    let r = post_json(
        &format!("{}/_sim/clock", s.url()),
        json!({"advance_secs": 301}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let after: Value = r.json().await.unwrap();
    assert!(after["now"].as_u64().unwrap() >= t0 + 301);
    assert_eq!(
        errcode(&exchange(&s, DEFAULT_APPID, DEFAULT_SECRET, &code).await),
        40029
    );
    let bad = post_json(&format!("{}/_sim/clock", s.url()), json!({"advance": 1})).await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn errcode_fault_for_the_next_n_calls() {
    let s = start_default().await;
    let r = post_json(
        &format!("{}/_sim/faults", s.url()),
        json!({"endpoint":"/sns/oauth2/access_token","kind":"errcode","errcode":-1,"count":2}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let code = code_for(&s, DEFAULT_APPID, "snsapi_base", "alice").await;
    for _ in 0..2 {
        let resp = reqwest::get(format!("{}/sns/oauth2/access_token?appid={DEFAULT_APPID}&secret={DEFAULT_SECRET}&code={code}&grant_type=authorization_code", s.url())).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/plain");
        let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert_eq!(errcode(&v), -1);
        assert!(v["errmsg"].as_str().unwrap().starts_with("system error"));
    }
    // The faulted calls never reached the handler: the code is still unused.
    assert_eq!(
        errcode(&exchange(&s, DEFAULT_APPID, DEFAULT_SECRET, &code).await),
        0
    );
    // Library injection, custom errcode with WeChat's message.
    s.inject(Fault::errcode("/cgi-bin/token", 45011, 1));
    let v = cgi_token(&s, DEFAULT_APPID, DEFAULT_SECRET).await;
    assert_eq!(errcode(&v), 45011);
    assert!(v["errmsg"].as_str().unwrap().contains("minute-quota"));
    assert_eq!(
        errcode(&cgi_token(&s, DEFAULT_APPID, DEFAULT_SECRET).await),
        0
    );
}

#[tokio::test]
async fn errcode_fault_on_authorize_shows_the_error_page() {
    let s = start_default().await;
    s.inject(Fault::errcode("/connect/oauth2/authorize", 10009, 1));
    let url = authorize_url(&s.url(), DEFAULT_APPID, CALLBACK, "snsapi_base", "st");
    let r = phone().get(&url).send().await.unwrap();
    assert!(location(&r).is_none());
    let body = r.text().await.unwrap();
    assert!(
        body.contains("错误码: 10009") && body.contains("操作太频繁"),
        "{body}"
    );
    assert_eq!(phone().get(&url).send().await.unwrap().status(), 302);
}

#[tokio::test]
async fn http_status_and_dropped_connection_faults() {
    let s = start_default().await;
    post_json(
        &format!("{}/_sim/faults", s.url()),
        json!({"endpoint":"/cgi-bin/token","kind":"http_status","status":502,"count":1}),
    )
    .await;
    let r = reqwest::get(token_url(&s)).await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(reqwest::get(token_url(&s)).await.unwrap().status(), 200);

    post_json(
        &format!("{}/_sim/faults", s.url()),
        json!({"endpoint":"/cgi-bin/token","kind":"drop","count":1}),
    )
    .await;
    let err = reqwest::get(token_url(&s)).await;
    assert!(
        err.is_err(),
        "a dropped connection gives no answer: {err:?}"
    );
    assert_eq!(reqwest::get(token_url(&s)).await.unwrap().status(), 200);
    // Unknown endpoints and malformed faults are refused.
    let r = post_json(
        &format!("{}/_sim/faults", s.url()),
        json!({"endpoint":"/nope","kind":"drop"}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = post_json(
        &format!("{}/_sim/faults", s.url()),
        json!({"endpoint":"*","kind":"http_status","status":200}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = post_json(
        &format!("{}/_sim/faults", s.url()),
        json!({"endpoint":"*","kind":"explode"}),
    )
    .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn latency_until_cleared_and_delete() {
    let s = start_default().await;
    post_json(
        &format!("{}/_sim/faults", s.url()),
        json!({"endpoint":"*","kind":"latency","ms":300,"count":"until_cleared"}),
    )
    .await;
    for _ in 0..2 {
        let t = Instant::now();
        assert_eq!(
            errcode(&cgi_token(&s, DEFAULT_APPID, DEFAULT_SECRET).await),
            0
        );
        assert!(t.elapsed() >= Duration::from_millis(300), "latency applied");
    }
    let listed: Value = reqwest::get(format!("{}/_sim/faults", s.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let r = reqwest::Client::new()
        .delete(format!("{}/_sim/faults", s.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = Instant::now();
    cgi_token(&s, DEFAULT_APPID, DEFAULT_SECRET).await;
    assert!(t.elapsed() < Duration::from_millis(300));
    // Latency combined with an answer fault: both apply.
    s.inject(Fault::latency("/sns/auth", 200, FaultCount::Calls(1)));
    s.inject(Fault::errcode("/sns/auth", -1, 1));
    let t = Instant::now();
    let v = get_json(&format!("{}/sns/auth?access_token=a&openid=b", s.url())).await;
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(errcode(&v), -1);
}

#[tokio::test]
async fn counters_and_faults_are_exact_under_concurrency() {
    let s = start_default().await;
    s.inject(Fault::errcode("/cgi-bin/token", -1, 10));
    let url = token_url(&s);
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (c, u) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let v: Value = c.get(&u).send().await.unwrap().json().await.unwrap();
            errcode(&v)
        }));
    }
    let mut faulted = 0;
    for t in tasks {
        if t.await.unwrap() == -1 {
            faulted += 1;
        }
    }
    assert_eq!(faulted, 10);
    assert_eq!(s.stats().get("/cgi-bin/token"), Some(&100));
    let over_http: Value = reqwest::get(format!("{}/_sim/stats", s.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http["/cgi-bin/token"], 100);
    assert!(
        over_http.get("/_sim/stats").is_none(),
        "control calls are not counted"
    );
    // Reset forgets counters and tokens.
    let r = post_json(&format!("{}/_sim/reset", s.url()), json!({})).await;
    assert_eq!(r.status(), 200);
    assert!(s.stats().is_empty());
}

#[tokio::test]
async fn world_endpoint_and_shutdown() {
    let s = start_default().await;
    let w: Value = reqwest::get(format!("{}/_sim/world", s.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(w["users"][0]["name"], "alice");
    assert_eq!(
        w["users"][0]["ids"][DEFAULT_APPID]["openid"].as_str(),
        s.openid("alice", DEFAULT_APPID).as_deref()
    );
    assert!(s.url().starts_with("http://127.0.0.1:") && !s.url().ends_with('/'));
    let url = token_url(&s);
    s.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        reqwest::get(&url).await.is_err(),
        "no longer serving after shutdown"
    );
}

#[tokio::test]
async fn run_cli_refuses_a_bad_config_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sim.toml");
    std::fs::write(&p, "[[users]]\nname = \"x\"\nfollows = [\"wxnope\"]\n").unwrap();
    let addr = "127.0.0.1:0".parse().unwrap();
    let e = wxgate::simulator::run_cli(addr, Some(p))
        .await
        .expect_err("invalid world");
    assert!(matches!(e, wxgate::simulator::SimError::Config(_)), "{e}");
    let e = wxgate::simulator::run_cli(addr, Some(dir.path().join("missing.toml")))
        .await
        .expect_err("missing file");
    assert!(e.to_string().contains("missing.toml"), "{e}");
}

#[tokio::test]
async fn run_cli_serves_the_default_world() {
    // Find a free port, then let run_cli bind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let task = tokio::spawn(wxgate::simulator::run_cli(addr, None));
    let url = format!("http://{addr}/cgi-bin/token?grant_type=client_credential&appid={DEFAULT_APPID}&secret={DEFAULT_SECRET}");
    let mut answer = None;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(&url).await {
            answer = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    let v = answer.expect("run_cli serves on the given address");
    assert_eq!(errcode(&v), 0, "{v}");
    assert!(v["access_token"].is_string());
}
