//! Helpers for the login integration tests (`tests/login_*.rs`): an in-process echo upstream,
//! a gateway started from TOML against the in-process WeChat simulator, a small browser with a
//! cookie jar that never follows redirects, and the three-hop silent login.
//! Include with `#[path = "common/gw.rs"] mod gw;` (next to `common/sim.rs`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wxgate::app::Gateway;
use wxgate::auth::session::SessionCodec;
use wxgate::config::Settings;
use wxgate::server::Running;
use wxgate::simulator::{SimHandle, DEFAULT_APPID, DEFAULT_SECRET};

pub const WECHAT_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.59(0x18003b26) NetType/4G Language/zh_CN";
pub const WECOM_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 10_2 like Mac OS X) AppleWebKit/602.3.12 (KHTML, like Gecko) Mobile/14C92 wxwork/2.4.2 MicroMessenger/6.3.22 Language/zh";
pub const DESKTOP_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";
pub const HTML_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// The session secret every test gateway uses unless told otherwise (not base64: used raw).
pub const SESSION_SECRET: &str = "integration-test-session-secret-#1-0123456789";
/// An older key, for rotation tests.
pub const OLD_SESSION_SECRET: &str = "integration-test-session-secret-#0-9876543210";
/// HS256 shared secret.
pub const HS_SECRET: &str = "integration-test-hs256-shared-secret-0123456789";

/// Every wait in these tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Echo upstream
// ---------------------------------------------------------------------------------------------

/// An upstream that answers every request with JSON: method, path-and-query and every header
/// (as `[name, value]` pairs, in arrival order).
pub struct Echo {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn echo() -> Echo {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("echo binds");
    let addr = listener.local_addr().expect("echo addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let headers: Vec<Value> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| {
                            Value::from(vec![
                                k.as_str().to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            ])
                        })
                        .collect();
                    let body = serde_json::json!({
                        "method": req.method().as_str(),
                        "uri": req.uri().to_string(),
                        "headers": headers,
                    });
                    let resp = hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body.to_string())))
                        .expect("echo response");
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Echo { addr, task }
}

/// What the echo upstream saw.
#[derive(Debug, Clone)]
pub struct Seen(pub Value);

impl Seen {
    pub fn parse(body: &str) -> Seen {
        Seen(
            serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("the echo upstream answers JSON ({e}); got: {body}")),
        )
    }

    /// Every `(name, value)` the upstream received (names lower-case, as HTTP/1 parsers give).
    pub fn headers(&self) -> Vec<(String, String)> {
        self.0["headers"]
            .as_array()
            .expect("headers array")
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap_or_default().to_string(),
                    p[1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// All values of header `name` (case-insensitive).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers()
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    /// The single value of header `name`; panics when it is there more than once.
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} sent upstream {} times", all.len());
        all.into_iter().next()
    }

    pub fn uri(&self) -> String {
        self.0["uri"].as_str().unwrap_or_default().to_string()
    }

    pub fn method(&self) -> String {
        self.0["method"].as_str().unwrap_or_default().to_string()
    }

    /// Header names that fold (case, `_` → `-`) to something starting with `x-wechat-`.
    pub fn wechat_headers(&self) -> Vec<(String, String)> {
        self.headers()
            .into_iter()
            .filter(|(k, _)| {
                k.to_ascii_lowercase()
                    .replace('_', "-")
                    .starts_with("x-wechat-")
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------------

/// Knobs for the test gateway's TOML. `Default` is a working `unionid = "follower"`, ES256
/// gateway whose routes all go to the echo upstream:
/// `/` required, `/api` api, `/opt` optional, `/off` off, `/pass` non_wechat = "pass".
#[derive(Clone)]
pub struct GwConfig {
    pub unionid: &'static str,
    pub token_endpoint: &'static str,
    pub timeout: &'static str,
    pub allow_wecom: bool,
    pub secrets: Vec<String>,
    pub session_ttl: &'static str,
    /// HS256 | RS256 | ES256 | EdDSA.
    pub algorithm: &'static str,
    pub jwt_header: &'static str,
    pub jwt_ttl: &'static str,
    pub public_url: Option<String>,
    /// Extra TOML appended inside `[wechat]` (e.g. verify_files).
    pub wechat_extra: String,
}

impl Default for GwConfig {
    fn default() -> Self {
        GwConfig {
            unionid: "follower",
            token_endpoint: "stable",
            timeout: "2s",
            allow_wecom: false,
            secrets: vec![SESSION_SECRET.to_string()],
            session_ttl: "1h",
            algorithm: "ES256",
            jwt_header: "X-WeChat-JWT",
            jwt_ttl: "5m",
            public_url: None,
            wechat_extra: String::new(),
        }
    }
}

fn toml_str(s: &str) -> String {
    Value::from(s).to_string()
}

/// The JWT key line(s) for `alg`, writing generated keys into `dir`.
fn jwt_key_toml(alg: &str, dir: &Path) -> String {
    match alg {
        "HS256" => format!("secret = {}", toml_str(HS_SECRET)),
        "RS256" => {
            let p =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt/rsa-test-only.pem");
            format!("private_key = {}", toml_str(&p.to_string_lossy()))
        }
        "ES256" | "EdDSA" => {
            let a = if alg == "ES256" {
                wxgate::auth::jwt::Alg::ES256
            } else {
                wxgate::auth::jwt::Alg::EdDSA
            };
            let pem = wxgate::auth::jwt::generate_pem(a).expect("key generation");
            let p = dir.join(format!("jwt-{alg}.pem"));
            std::fs::write(&p, pem).expect("write key");
            format!("private_key = {}", toml_str(&p.to_string_lossy()))
        }
        other => panic!("unknown algorithm {other}"),
    }
}

/// The full TOML for a gateway on 127.0.0.1:0 in front of `upstream`, logging in via `sim_url`.
pub fn gateway_toml(cfg: &GwConfig, sim_url: &str, upstream: &str, dir: &Path) -> String {
    let secrets: Vec<String> = cfg.secrets.iter().map(|s| toml_str(s)).collect();
    let public_url = cfg
        .public_url
        .as_ref()
        .map(|u| format!("public_url = {}\n", toml_str(u)))
        .unwrap_or_default();
    let up = toml_str(upstream);
    format!(
        r#"[server]
listen = "127.0.0.1:0"
{public_url}
[wechat]
appid = "{DEFAULT_APPID}"
secret = "{DEFAULT_SECRET}"
api_base = {sim}
open_base = {sim}
unionid = "{unionid}"
token_endpoint = "{token_endpoint}"
allow_wecom = {allow_wecom}
timeout = "{timeout}"
{wechat_extra}

[session]
secret = [{secrets}]
ttl = "{session_ttl}"

[jwt]
header = {jwt_header}
algorithm = "{algorithm}"
{key}
issuer = "wxgate-test"
audience = "echo-upstream"
ttl = "{jwt_ttl}"

[[route]]
name = "main"
path = "/"
upstream = {up}
auth = "required"

[[route]]
name = "api"
path = "/api"
upstream = {up}
api = true

[[route]]
name = "opt"
path = "/opt"
upstream = {up}
auth = "optional"

[[route]]
name = "off"
path = "/off"
upstream = {up}
auth = "off"

[[route]]
name = "pass"
path = "/pass"
upstream = {up}
non_wechat = "pass"
"#,
        sim = toml_str(sim_url),
        unionid = cfg.unionid,
        token_endpoint = cfg.token_endpoint,
        allow_wecom = cfg.allow_wecom,
        timeout = cfg.timeout,
        wechat_extra = cfg.wechat_extra,
        secrets = secrets.join(", "),
        session_ttl = cfg.session_ttl,
        jwt_header = toml_str(cfg.jwt_header),
        algorithm = cfg.algorithm,
        key = jwt_key_toml(cfg.algorithm, dir),
        jwt_ttl = cfg.jwt_ttl,
    )
}

/// A running gateway (in-process) with its echo upstream.
pub struct Gw {
    pub running: Running,
    pub base: String,
    pub echo: Echo,
    pub cfg: GwConfig,
    pub toml: String,
    pub dir: tempfile::TempDir,
}

impl Gw {
    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.local_addr()
    }

    pub async fn stop(self) {
        tokio::time::timeout(LIMIT, self.running.shutdown())
            .await
            .expect("gateway shuts down");
    }
}

pub async fn start_gateway(sim: &SimHandle, cfg: GwConfig) -> Gw {
    let echo = echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = gateway_toml(&cfg, &sim.url(), &echo.url(), dir.path());
    let settings = Settings::from_toml(&toml, Path::new("test.toml"), dir.path(), &|_| None)
        .unwrap_or_else(|e| panic!("test config is valid: {e}\n{toml}"));
    let gw = Gateway::new(settings).unwrap_or_else(|e| panic!("gateway builds: {e}"));
    let running = wxgate::server::start(Arc::new(gw))
        .await
        .expect("gateway listens");
    let base = format!("http://{}", running.local_addr());
    Gw {
        running,
        base,
        echo,
        cfg,
        toml,
        dir,
    }
}

/// The codec the gateway uses for `secrets` (same parsing as the config loader).
pub fn codec(secrets: &[&str]) -> SessionCodec {
    let keys: Vec<Vec<u8>> = secrets
        .iter()
        .map(|s| wxgate::config::parse_secret(s).expect("secret"))
        .collect();
    SessionCodec::new(&keys).expect("codec")
}

pub fn now() -> u64 {
    wxgate::auth::now()
}

// ---------------------------------------------------------------------------------------------
// Browser
// ---------------------------------------------------------------------------------------------

/// One answer, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn location(&self) -> Option<String> {
        self.headers
            .get(LOCATION)
            .map(|v| v.to_str().expect("ASCII Location").to_string())
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// Every Set-Cookie, parsed.
    pub fn set_cookies(&self) -> Vec<cookie::Cookie<'static>> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| {
                let s = v.to_str().expect("ASCII Set-Cookie").to_string();
                cookie::Cookie::parse(s.clone())
                    .unwrap_or_else(|e| panic!("bad Set-Cookie {s:?}: {e}"))
            })
            .collect()
    }

    pub fn set_cookie(&self, name: &str) -> Option<cookie::Cookie<'static>> {
        self.set_cookies().into_iter().find(|c| c.name() == name)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!("JSON expected ({e}), status {}: {}", self.status, self.body)
        })
    }

    pub fn seen(&self) -> Seen {
        assert_eq!(self.status, 200, "expected the upstream's answer: {self:?}");
        Seen::parse(&self.body)
    }
}

/// Whether a Set-Cookie deletes its cookie.
pub fn is_removal(c: &cookie::Cookie<'_>) -> bool {
    c.max_age().is_some_and(|a| a.is_zero() || a.is_negative())
        || c.expires_datetime()
            .is_some_and(|t| t < cookie::time::OffsetDateTime::now_utc())
}

/// A browser: fixed User-Agent, a cookie jar (host-agnostic, as browsers share cookies across
/// ports of one host), never follows redirects.
pub struct Browser {
    client: reqwest::Client,
    pub jar: BTreeMap<String, String>,
    /// A browser that drops every cookie.
    pub keep_cookies: bool,
    pub accept: Option<&'static str>,
}

impl Browser {
    pub fn new(ua: &str) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(ua)
                .timeout(LIMIT)
                .build()
                .expect("reqwest client"),
            jar: BTreeMap::new(),
            keep_cookies: true,
            accept: Some(HTML_ACCEPT),
        }
    }

    pub fn wechat() -> Browser {
        Browser::new(WECHAT_UA)
    }

    pub fn cookieless() -> Browser {
        let mut b = Browser::wechat();
        b.keep_cookies = false;
        b
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.jar.get(name).map(String::as_str)
    }

    pub fn cookie_header(&self) -> Option<String> {
        if self.jar.is_empty() {
            return None;
        }
        Some(
            self.jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    pub async fn get(&mut self, url: &str) -> Resp {
        self.send(reqwest::Method::GET, url, &[]).await
    }

    /// Sends with the jar's cookies and `extra` headers, then files the answer's Set-Cookies.
    pub async fn send(
        &mut self,
        method: reqwest::Method,
        url: &str,
        extra: &[(&str, &str)],
    ) -> Resp {
        let mut rb = self.client.request(method, url);
        let overrides_accept = extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept"));
        if let (Some(a), false) = (self.accept, overrides_accept) {
            rb = rb.header("accept", a);
        }
        if let Some(c) = self.cookie_header() {
            rb = rb.header("cookie", c);
        }
        for (k, v) in extra {
            rb = rb.header(*k, *v);
        }
        let resp = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {url} failed: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.expect("body");
        let r = Resp {
            status,
            headers,
            body,
        };
        if self.keep_cookies {
            for c in r.set_cookies() {
                if is_removal(&c) {
                    self.jar.remove(c.name());
                } else {
                    self.jar.insert(c.name().to_string(), c.value().to_string());
                }
            }
        }
        r
    }
}

// ---------------------------------------------------------------------------------------------
// The login
// ---------------------------------------------------------------------------------------------

/// The authorize URL the gateway sent, made fetchable for the simulator: the fragment (which a
/// browser never sends) dropped and `sim_user` (the simulator's "who is in the phone") added.
pub fn as_user(authorize: &str, user: &str) -> String {
    let no_frag = authorize.split('#').next().expect("split");
    format!("{no_frag}&sim_user={user}")
}

/// Like Python's `quote(s, safe="")`: everything but letters, digits and `-._~` encoded.
pub fn enc(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

pub fn query_param(url: &str, key: &str) -> Option<String> {
    let u = url::Url::parse(url)
        .or_else(|_| url::Url::parse("http://x.invalid").and_then(|b| b.join(url)))
        .ok()?;
    u.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The hops of one login.
#[derive(Debug)]
pub struct Login {
    /// The gateway's answer to the page (302 to WeChat's authorize page).
    pub start: Resp,
    /// The authorize URL (the gateway's Location).
    pub authorize: String,
    /// The simulator's callback URL (its Location).
    pub callback: String,
    pub code: String,
    pub state: String,
    /// The gateway's answer to the callback.
    pub done: Resp,
}

/// Asks WeChat (the simulator) to authorize as `user`; returns the callback URL.
pub async fn authorize(b: &mut Browser, authorize: &str, user: &str) -> String {
    let r = b.get(&as_user(authorize, user)).await;
    assert_eq!(r.status, 302, "the simulator calls back at once: {r:?}");
    r.location().expect("callback Location")
}

/// Opens `path` on the gateway and walks the silent login as `user`, up to the callback's answer.
pub async fn login(b: &mut Browser, gw: &Gw, path: &str, user: &str) -> Login {
    let start = b.get(&gw.url(path)).await;
    assert_eq!(start.status, 302, "login starts with a redirect: {start:?}");
    let authorize_url = start.location().expect("Location");
    login_from(b, start, authorize_url, user).await
}

/// Like [`login`] from `/_wxgate/login?return_to=…` or any other start.
pub async fn login_from(b: &mut Browser, start: Resp, authorize_url: String, user: &str) -> Login {
    let callback = authorize(b, &authorize_url, user).await;
    let code = query_param(&callback, "code").expect("code");
    let state = query_param(&callback, "state").expect("state");
    let done = b.get(&callback).await;
    Login {
        start,
        authorize: authorize_url,
        callback,
        code,
        state,
        done,
    }
}

/// A successful login: the browser ends holding a session and is sent back to `path`.
pub async fn logged_in(b: &mut Browser, gw: &Gw, path: &str, user: &str) -> Login {
    let l = login(b, gw, path, user).await;
    assert_eq!(l.done.status, 302, "callback answers 302: {:?}", l.done);
    assert!(b.cookie("wxgate_session").is_some(), "session cookie set");
    l
}

/// The Location must be a path on the gateway's own origin: a single `/` not followed by `/`
/// or `\`, no scheme, and resolving (as is, and decoded once more) to `origin`'s host.
pub fn assert_same_origin(origin: &str, loc: &str, what: &str) {
    let b = loc.as_bytes();
    assert!(
        loc == "/" || (b.len() >= 2 && b[0] == b'/' && b[1] != b'/' && b[1] != b'\\'),
        "{what}: Location {loc:?} is not a same-origin path"
    );
    assert!(!loc.contains('\\'), "{what}: backslash in {loc:?}");
    assert!(
        loc.bytes().all(|c| c.is_ascii_graphic()),
        "{what}: control or non-ASCII byte in {loc:?}"
    );
    let base = url::Url::parse(&format!("{origin}/a/b?c=d")).expect("origin");
    let decoded = percent_encoding::percent_decode_str(loc)
        .decode_utf8_lossy()
        .into_owned();
    for candidate in [loc.to_string(), decoded] {
        let joined = base
            .join(&candidate)
            .unwrap_or_else(|e| panic!("{what}: {candidate:?} does not resolve: {e}"));
        assert_eq!(
            joined.origin(),
            base.origin(),
            "{what}: {candidate:?} leaves the origin"
        );
        assert_eq!(joined.username(), "", "{what}: {candidate:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1, for header spellings a client library would normalise
// ---------------------------------------------------------------------------------------------

/// Sends `head` (request line and headers, `\r\n`-separated, without the final blank line) to
/// `addr` with `Connection: close`; returns (status, header block, body), de-chunked.
pub async fn raw_request(addr: SocketAddr, head: &str) -> (u16, String, String) {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("{}\r\nConnection: close\r\n\r\n", head.trim_end());
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        buf
    };
    let buf = tokio::time::timeout(LIMIT, fut)
        .await
        .expect("raw request answers in time");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a full HTTP answer");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Gateways with other routes (security tests)
// ---------------------------------------------------------------------------------------------

/// Like [`start_gateway`], with `routes` (TOML `[[route]]` tables, `UPSTREAM` standing for the
/// echo upstream's quoted URL) instead of the default ones, and `server_extra` (TOML lines)
/// added to `[server]`.
pub async fn start_gateway_with_routes(
    sim: &SimHandle,
    cfg: GwConfig,
    routes: &str,
    server_extra: &str,
) -> Gw {
    let echo = echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let full = gateway_toml(&cfg, &sim.url(), &echo.url(), dir.path());
    let head = full.split("[[route]]").next().expect("routes");
    let head = head.replacen(
        "listen = \"127.0.0.1:0\"\n",
        &format!("listen = \"127.0.0.1:0\"\n{server_extra}\n"),
        1,
    );
    let toml = format!(
        "{head}{}",
        routes.replace("UPSTREAM", &toml_str(&echo.url()))
    );
    let settings = Settings::from_toml(&toml, Path::new("test.toml"), dir.path(), &|_| None)
        .unwrap_or_else(|e| panic!("test config is valid: {e}\n{toml}"));
    let gw = Gateway::new(settings).unwrap_or_else(|e| panic!("gateway builds: {e}"));
    let running = wxgate::server::start(Arc::new(gw))
        .await
        .expect("gateway listens");
    let base = format!("http://{}", running.local_addr());
    Gw {
        running,
        base,
        echo,
        cfg,
        toml,
        dir,
    }
}

/// Sends one request over HTTP/2 with prior knowledge (h2c) to `addr`; `uri` must be absolute
/// (its authority becomes `:authority`, its path `:path`, both as written). Returns (status,
/// Location, body).
pub async fn h2c_get(
    addr: SocketAddr,
    uri: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, String) {
    use http_body_util::{BodyExt, Empty};
    let fut = async {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .expect("h2c handshake");
        tokio::spawn(conn);
        let mut req = hyper::Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = send
            .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
            .await
            .expect("h2c response");
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().expect("ASCII Location").to_string());
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            location,
            String::from_utf8_lossy(&body).into_owned(),
        )
    };
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("h2c answers in time")
}

/// The browser's state cookie for the login that `authorize_url` (the gateway's redirect to
/// WeChat) started: one cookie per pending login, `wxgate_state_<state>`.
pub fn state_cookie<'a>(b: &'a Browser, authorize_url: &str) -> Option<&'a str> {
    let state = query_param(authorize_url, "state")?;
    b.cookie(&format!("wxgate_state_{state}"))
}
