//! Helpers shared by the simulator's integration tests (`tests/sim_*.rs`): starting the
//! simulator on port 0, a WeChat-UA HTTP client that never follows redirects, and the
//! authorize → code → exchange steps.
#![allow(dead_code)]

use std::net::SocketAddr;

use serde_json::Value;
use wxgate::simulator::{self, SimConfig, SimHandle};

pub const WECHAT_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.59(0x18003b26) NetType/4G Language/zh_CN";
pub const DESKTOP_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";
pub const CALLBACK: &str = "http://localhost:8080/cb";

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub async fn start_default() -> SimHandle {
    start_with(SimConfig::default()).await
}

pub async fn start_with(cfg: SimConfig) -> SimHandle {
    simulator::start(cfg, local())
        .await
        .expect("simulator starts on 127.0.0.1:0")
}

/// A phone: WeChat User-Agent, no redirect following.
pub fn phone() -> reqwest::Client {
    client_with_ua(WECHAT_UA)
}

/// A desktop browser: non-WeChat User-Agent, no redirect following.
pub fn desktop() -> reqwest::Client {
    client_with_ua(DESKTOP_UA)
}

pub fn client_with_ua(ua: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(ua)
        .build()
        .expect("reqwest client")
}

pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The authorize URL exactly as the reference spells it (the fragment never reaches a server).
pub fn authorize_url(base: &str, appid: &str, redirect: &str, scope: &str, state: &str) -> String {
    format!(
        "{base}/connect/oauth2/authorize?appid={appid}&redirect_uri={}&response_type=code&scope={scope}&state={state}#wechat_redirect",
        enc(redirect)
    )
}

pub fn qrconnect_url(base: &str, appid: &str, redirect: &str, scope: &str, state: &str) -> String {
    format!(
        "{base}/connect/qrconnect?appid={appid}&redirect_uri={}&response_type=code&scope={scope}&state={state}#wechat_redirect",
        enc(redirect)
    )
}

pub fn location(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Query parameter `key` of an absolute URL.
pub fn query_param(url: &str, key: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    u.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Runs a silent authorization (no consent page expected) and returns the code.
pub async fn code_for(sim: &SimHandle, appid: &str, scope: &str, user: &str) -> String {
    let url = format!(
        "{}&sim_user={user}",
        authorize_url(&sim.url(), appid, CALLBACK, scope, "st1").replace("#wechat_redirect", "")
    );
    let resp = phone().get(&url).send().await.expect("authorize answers");
    assert_eq!(resp.status(), 302, "authorize should call back at once");
    let loc = location(&resp).expect("Location");
    assert!(loc.starts_with(CALLBACK), "callback target: {loc}");
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st1"));
    query_param(&loc, "code").expect("code in callback")
}

pub async fn get_json(url: &str) -> Value {
    let resp = reqwest::get(url).await.expect("request");
    assert_eq!(resp.status(), 200, "WeChat APIs always answer HTTP 200");
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON body expected ({e}): {text}"))
}

pub async fn exchange(sim: &SimHandle, appid: &str, secret: &str, code: &str) -> Value {
    get_json(&format!(
        "{}/sns/oauth2/access_token?appid={appid}&secret={secret}&code={code}&grant_type=authorization_code",
        sim.url()
    ))
    .await
}

pub fn errcode(v: &Value) -> i64 {
    v.get("errcode").and_then(Value::as_i64).unwrap_or(0)
}

pub async fn cgi_token(sim: &SimHandle, appid: &str, secret: &str) -> Value {
    get_json(&format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid={appid}&secret={secret}",
        sim.url()
    ))
    .await
}

pub async fn stable_token(sim: &SimHandle, appid: &str, secret: &str, force: bool) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{}/cgi-bin/stable_token", sim.url()))
        .json(&serde_json::json!({"grant_type":"client_credential","appid":appid,"secret":secret,"force_refresh":force}))
        .send()
        .await
        .expect("stable_token");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("JSON")
}

pub async fn user_info(sim: &SimHandle, token: &str, openid: &str) -> Value {
    get_json(&format!(
        "{}/cgi-bin/user/info?access_token={token}&openid={openid}&lang=zh_CN",
        sim.url()
    ))
    .await
}

/// Sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// The Python that runs the clients nobody here wrote (wechatpy, PyJWT): `$WXGATE_TEST_PYTHON`,
/// else the venv `./scripts/test.sh` creates (if present), else `python3`.
pub fn python() -> String {
    if let Ok(p) = std::env::var("WXGATE_TEST_PYTHON") {
        return p;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyenv/bin/python");
    if std::path::Path::new(venv).exists() {
        return venv.to_string();
    }
    "python3".to_string()
}

/// Fails (never skips) with `hint` when `python()` cannot import `modules`.
pub fn require_python_modules(modules: &str, hint: &str) {
    let py = python();
    let out = std::process::Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}. {hint}"));
    assert!(
        out.status.success(),
        "{hint}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
