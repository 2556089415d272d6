//! Security review (issue #10) of request bodies and upgrades, checked on the bytes an
//! upstream actually receives: request trailers never reach it (HTTP/1.1 chunked and h2c),
//! only the `Upgrade` tokens a route allows are tunnelled, client-side body faults are the
//! client's (4xx, no WARN) while a dead upstream stays a 502, per-route `max_body`, and CORS
//! preflights on API routes (`preflight = "pass" | "auth"`).

mod common;
#[path = "common/gw.rs"]
mod gw;
#[path = "common/sim.rs"]
mod sim;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gw::{Browser, GwConfig};
use http::{HeaderMap, HeaderValue, Request};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wxgate::app::Gateway;
use wxgate::config::Settings;
use wxgate::simulator::SimHandle;

use common::{ChannelBody, WAIT};

// ---------------------------------------------------------------------------------------------
// A byte-logging upstream.
// ---------------------------------------------------------------------------------------------

/// How the byte-logging upstream answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `200 ok` to every request, after reading its whole body.
    Ok,
    /// `101` to any request with an `Upgrade` header (a lenient server that also accepts
    /// h2c), then echoes whatever arrives in the tunnel; `200 ok` to others.
    Lenient101,
    /// `101` to every request, asked for or not.
    Always101,
}

/// One upstream connection: every byte it received, and whether the peer closed it.
#[derive(Default)]
struct Conn {
    bytes: Vec<u8>,
    closed: bool,
}

/// A raw TCP upstream that records the exact bytes it receives, per connection.
struct ByteUpstream {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Arc<Mutex<Conn>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ByteUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ByteUpstream {
    async fn start(mode: Mode) -> ByteUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Arc<Mutex<Conn>>>>> = Arc::default();
        let list = conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let conn = Arc::new(Mutex::new(Conn::default()));
                list.lock().unwrap().push(conn.clone());
                tokio::spawn(serve_raw(stream, conn, mode));
            }
        });
        ByteUpstream { addr, conns, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received on every connection, lower-cased for header searches.
    fn received(&self) -> String {
        let conns = self.conns.lock().unwrap();
        let all: Vec<u8> = conns
            .iter()
            .flat_map(|c| c.lock().unwrap().bytes.clone())
            .collect();
        String::from_utf8_lossy(&all).to_ascii_lowercase()
    }

    fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    fn conn(&self, i: usize) -> Arc<Mutex<Conn>> {
        self.conns.lock().unwrap()[i].clone()
    }

    fn clear(&self) {
        for c in self.conns.lock().unwrap().iter() {
            c.lock().unwrap().bytes.clear();
        }
    }
}

/// Reads from `s` into `buf`, logging the bytes on `conn`. False at EOF or error.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, conn: &Mutex<Conn>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => {
            conn.lock().unwrap().closed = true;
            false
        }
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            conn.lock().unwrap().bytes.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Takes one CRLF-terminated line off the front of `buf`, reading more as needed.
async fn line(s: &mut TcpStream, buf: &mut Vec<u8>, conn: &Mutex<Conn>) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let l = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 2);
            return Some(l);
        }
        if !fill(s, buf, conn).await {
            return None;
        }
    }
}

/// Drops `n` bytes off the front of `buf`, reading more as needed.
async fn skip(s: &mut TcpStream, buf: &mut Vec<u8>, conn: &Mutex<Conn>, n: usize) -> bool {
    while buf.len() < n {
        if !fill(s, buf, conn).await {
            return false;
        }
    }
    buf.drain(..n);
    true
}

/// Serves HTTP/1.1 requests by hand: head, then a Content-Length or chunked body (trailers
/// included), then the answer `mode` calls for.
async fn serve_raw(mut s: TcpStream, conn: Arc<Mutex<Conn>>, mode: Mode) {
    let mut buf = Vec::new();
    loop {
        let mut headers = Vec::new();
        loop {
            let Some(l) = line(&mut s, &mut buf, &conn).await else {
                return;
            };
            if l.is_empty() {
                break;
            }
            headers.push(l.to_ascii_lowercase());
        }
        let value = |name: &str| {
            headers.iter().skip(1).find_map(|h| {
                let (k, v) = h.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let Some(size) = line(&mut s, &mut buf, &conn).await else {
                    return;
                };
                let size = size.split(';').next().unwrap_or("").trim();
                let Ok(n) = usize::from_str_radix(size, 16) else {
                    return;
                };
                if n == 0 {
                    // Trailer fields, up to the empty line.
                    while let Some(l) = line(&mut s, &mut buf, &conn).await {
                        if l.is_empty() {
                            break;
                        }
                    }
                    break;
                }
                if !skip(&mut s, &mut buf, &conn, n + 2).await {
                    return;
                }
            }
        } else if let Some(n) = value("content-length").and_then(|v| v.parse().ok()) {
            if !skip(&mut s, &mut buf, &conn, n).await {
                return;
            }
        }
        let upgrade = value("upgrade");
        let switch = match mode {
            Mode::Ok => None,
            Mode::Lenient101 => upgrade,
            Mode::Always101 => Some(upgrade.unwrap_or_else(|| "h2c".into())),
        };
        match switch {
            None => {
                let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if s.write_all(ok).await.is_err() {
                    return;
                }
            }
            Some(token) => {
                let head = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {token}\r\n\r\n"
                );
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                // The tunnel: echo everything, still logging it.
                let _ = s.write_all(&buf).await;
                loop {
                    buf.clear();
                    if !fill(&mut s, &mut buf, &conn).await || s.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Gateways and clients.
// ---------------------------------------------------------------------------------------------

/// Routes added to the login harness's own (`/` required, `/api` api, `/off` off, ...).
fn extra_routes(up: &str) -> String {
    format!(
        r#"
[[route]]
name = "noupgrade"
path = "/noup"
upstream = "{up}"
auth = "off"
upgrades = []

[[route]]
name = "custom"
path = "/custom"
upstream = "{up}"
auth = "off"
upgrades = ["X-Test/2"]

[[route]]
name = "small"
path = "/small"
upstream = "{up}"
auth = "off"
max_body = "64KiB"

[[route]]
name = "api-auth"
path = "/api-auth"
upstream = "{up}"
api = true
preflight = "auth"
"#
    )
}

/// A login-capable gateway (simulator at `sim`) whose routes all go to `upstream`.
async fn start_gw(sim: &SimHandle, upstream: &str) -> gw::Gw {
    let cfg = GwConfig::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut toml = gw::gateway_toml(&cfg, &sim.url(), upstream, dir.path());
    toml.push_str(&extra_routes(upstream));
    let settings = Settings::from_toml(&toml, Path::new("test.toml"), dir.path(), &|_| None)
        .unwrap_or_else(|e| panic!("test config is valid: {e}\n{toml}"));
    let gateway = Gateway::new(settings).unwrap_or_else(|e| panic!("gateway builds: {e}"));
    let running = wxgate::server::start(Arc::new(gateway))
        .await
        .expect("gateway listens");
    let base = format!("http://{}", running.local_addr());
    gw::Gw {
        running,
        base,
        echo: gw::echo().await,
        cfg,
        toml,
        dir,
    }
}

/// Logs a WeChat browser in as `user`; returns its `Cookie` header value.
async fn session_cookie(g: &gw::Gw, user: &str) -> String {
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, g, "/", user).await;
    b.cookie_header().expect("a session cookie")
}

/// Writes `request` verbatim and reads until the gateway closes; returns the status and the
/// whole answer.
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out
    };
    let out = tokio::time::timeout(WAIT, fut)
        .await
        .expect("the gateway answers in time");
    let text = String::from_utf8_lossy(&out).into_owned();
    (status_of(&text), text)
}

fn status_of(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

/// Sends a request head (ending in a blank line) and reads the answer's head; returns the
/// open connection for whatever comes next (a tunnel).
async fn open(addr: SocketAddr, head: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut byte))
            .await
            .expect("the gateway answers in time")
            .expect("read");
        assert!(
            n == 1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&got)
        );
        got.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&got).into_owned())
}

const FORGED: [(&str, &str); 3] = [
    ("X-WeChat-OpenId", "forged-openid"),
    ("X-WeChat-JWT", "forged-jwt"),
    ("X-Forwarded-For", "6.6.6.6"),
];

/// None of the trailer fields, nor the `Trailer` header announcing them, reached the upstream.
fn assert_no_trailers(up: &ByteUpstream, what: &str) {
    let got = up.received();
    assert!(
        got.contains("\r\n\r\n"),
        "{what}: the upstream got the request: {got}"
    );
    for needle in ["forged-openid", "forged-jwt", "6.6.6.6", "\r\ntrailer:"] {
        assert!(
            !got.contains(needle),
            "{what}: {needle:?} reached the upstream:\n{got}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Request trailers.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_never_reach_the_upstream_over_http1() {
    let s = sim::start_default().await;
    let up = ByteUpstream::start(Mode::Ok).await;
    let g = start_gw(&s, &up.url()).await;
    let cookie = session_cookie(&g, "alice").await;
    let trailers: String = FORGED
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    for (path, cookie) in [("/off/upload", None), ("/upload", Some(&cookie))] {
        up.clear();
        let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: h5.example.com\r\n{cookie}Transfer-Encoding: chunked\r\n\
             Trailer: X-WeChat-OpenId, X-WeChat-JWT, X-Forwarded-For\r\nTE: trailers\r\n\
             Connection: close\r\n\r\n5\r\nhello\r\n0\r\n{trailers}\r\n"
        );
        let (status, answer) = raw(g.addr(), req.as_bytes()).await;
        assert_eq!(status, 200, "{path}: {answer}");
        assert!(
            answer.ends_with("ok"),
            "{path}: the upstream answered: {answer}"
        );
        assert_no_trailers(&up, path);
        let got = up.received();
        assert!(
            got.contains("hello"),
            "{path}: the body went through: {got}"
        );
        if path == "/upload" {
            // The session's own identity, once: the gateway's, not a trailer's.
            assert_eq!(got.matches("\r\nx-wechat-openid:").count(), 1, "{got}");
        }
    }
    g.stop().await;
}

type Frames = std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>;

/// A body of data frames and then trailers, as an HTTP/2 client sends it.
fn body_with_trailers() -> http_body_util::StreamBody<futures_util::stream::Iter<Frames>> {
    let mut trailers = HeaderMap::new();
    for (k, v) in FORGED {
        trailers.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_static(v),
        );
    }
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::trailers(trailers)),
    ];
    http_body_util::StreamBody::new(futures_util::stream::iter(frames))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_never_reach_the_upstream_over_h2c() {
    let s = sim::start_default().await;
    let up = ByteUpstream::start(Mode::Ok).await;
    let g = start_gw(&s, &up.url()).await;
    let cookie = session_cookie(&g, "alice").await;
    for (path, cookie) in [("/off/upload", None), ("/upload", Some(&cookie))] {
        up.clear();
        let stream = TcpStream::connect(g.addr()).await.expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2c handshake with prior knowledge");
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method("POST")
            .uri(format!("http://h5.example.com{path}"))
            .header("trailer", "x-wechat-openid, x-wechat-jwt, x-forwarded-for");
        if let Some(c) = cookie {
            req = req.header("cookie", c.as_str());
        }
        let req = req.body(body_with_trailers()).unwrap();
        let resp = tokio::time::timeout(WAIT, send.send_request(req))
            .await
            .expect("answer in time")
            .expect("h2 request");
        assert_eq!(resp.status(), 200, "{path}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok", "{path}: the upstream answered");
        assert_no_trailers(&up, path);
        let got = up.received();
        assert!(
            got.contains("hello"),
            "{path}: the body went through: {got}"
        );
        if path == "/upload" {
            assert_eq!(got.matches("\r\nx-wechat-openid:").count(), 1, "{got}");
        }
    }
    g.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Upgrades.
// ---------------------------------------------------------------------------------------------

const H2C_UPGRADE: &str = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
                           HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n";

/// Neither the upgrade request nor its settings reached the upstream.
fn assert_plain(up: &ByteUpstream, what: &str) {
    let got = up.received();
    assert!(
        got.contains("\r\n\r\n"),
        "{what}: the upstream got the request: {got}"
    );
    for needle in ["\r\nupgrade:", "\r\nhttp2-settings:", "connection: upgrade"] {
        assert!(
            !got.contains(needle),
            "{what}: {needle:?} reached the upstream:\n{got}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_is_served_as_an_ordinary_request() {
    let s = sim::start_default().await;
    let up = ByteUpstream::start(Mode::Lenient101).await;
    let g = start_gw(&s, &up.url()).await;
    let cookie = session_cookie(&g, "alice").await;

    // A logged-in user asks for h2c; a lenient upstream would switch and then believe any
    // request inside the tunnel. The gateway serves it as a plain request instead.
    let req = format!(
        "GET /page HTTP/1.1\r\nHost: h5.example.com\r\nCookie: {cookie}\r\n{H2C_UPGRADE}\r\n"
    );
    let (mut conn, head) = open(g.addr(), &req).await;
    assert_eq!(status_of(&head), 200, "not switched: {head}");
    assert_plain(&up, "h2c");
    // The client connection is still plain HTTP/1.1: a second request is served as such.
    up.clear();
    conn.write_all(b"GET /again HTTP/1.1\r\nHost: h5.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, conn.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("HTTP/1.1 "), "a second answer: {rest}");

    // HTTP2-Settings goes even when Connection does not name it, and on routes that would
    // tunnel WebSocket.
    up.clear();
    let req = "GET /off/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\
               HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: close\r\n\r\n";
    let (status, answer) = raw(g.addr(), req.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert_plain(&up, "h2c without Connection naming HTTP2-Settings");

    // Offering h2c beside websocket is refused as a whole: the upstream would pick.
    up.clear();
    let req =
        "GET /off/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket, h2c\r\n\
               Connection: close\r\n\r\n";
    let (status, answer) = raw(g.addr(), req.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert_plain(&up, "websocket, h2c");
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_to_a_refused_upgrade_is_a_bad_gateway() {
    let s = sim::start_default().await;
    let up = ByteUpstream::start(Mode::Always101).await;
    let g = start_gw(&s, &up.url()).await;
    let req = format!("GET /off/x HTTP/1.1\r\nHost: a\r\n{H2C_UPGRADE}Connection: close\r\n\r\n");
    let (status, answer) = raw(g.addr(), req.as_bytes()).await;
    assert_eq!(
        status, 502,
        "an upstream switching unasked is not tunnelled: {answer}"
    );
    assert!(!answer.contains("101"), "{answer}");
    g.stop().await;
}

/// Asks for `upgrade` with `method`/`version` on `path`; if switched, checks the tunnel with a
/// round trip. Returns the status.
async fn try_upgrade(
    addr: SocketAddr,
    method: &str,
    version: &str,
    path: &str,
    upgrade: &str,
) -> u16 {
    let req = format!(
        "{method} {path} {version}\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: {upgrade}\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"
    );
    let (mut s, head) = open(addr, &req).await;
    let status = status_of(&head);
    if status == 101 {
        s.write_all(b"through the tunnel").await.unwrap();
        let mut got = [0u8; 18];
        tokio::time::timeout(WAIT, s.read_exact(&mut got))
            .await
            .expect("tunnel echo in time")
            .expect("tunnel echo");
        assert_eq!(&got, b"through the tunnel");
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_routes_upgrade_tokens_are_tunnelled() {
    let s = sim::start_default().await;
    let up = ByteUpstream::start(Mode::Lenient101).await;
    let g = start_gw(&s, &up.url()).await;
    let a = g.addr();
    // The default, upgrades = ["websocket"]: GET over HTTP/1.1, any case.
    assert_eq!(
        try_upgrade(a, "GET", "HTTP/1.1", "/off/ws", "websocket").await,
        101
    );
    assert_eq!(
        try_upgrade(a, "GET", "HTTP/1.1", "/off/ws", "WebSocket").await,
        101
    );
    // Not on another method, not over HTTP/1.0, not another token.
    for (method, version, path, token) in [
        ("POST", "HTTP/1.1", "/off/ws", "websocket"),
        ("GET", "HTTP/1.0", "/off/ws", "websocket"),
        ("GET", "HTTP/1.1", "/off/ws", "x-test/2"),
        // upgrades = []: nothing at all.
        ("GET", "HTTP/1.1", "/noup/ws", "websocket"),
        // upgrades = ["X-Test/2"]: not websocket there.
        ("GET", "HTTP/1.1", "/custom/ws", "websocket"),
    ] {
        up.clear();
        let status = try_upgrade(a, method, version, path, token).await;
        assert_eq!(
            status, 200,
            "{method} {version} {path} {token}: served as a plain request"
        );
        assert_plain(&up, &format!("{method} {version} {path} {token}"));
    }
    // An operator-allowed token, compared case-insensitively, on any method.
    assert_eq!(
        try_upgrade(a, "POST", "HTTP/1.1", "/custom/x", "x-test/2").await,
        101
    );
    g.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Client faults are not upstream failures.
// ---------------------------------------------------------------------------------------------

/// Waits for the access-log line of `request_id` and returns every log line about it.
async fn lines_for(bin: &common::Binary, request_id: &str) -> Vec<String> {
    let needle = format!("\"request_id\":\"{request_id}\"");
    let mut lines = Vec::new();
    common::eventually(
        WAIT,
        &format!("the access log line of {request_id}"),
        || {
            lines = bin
                .stderr_lines()
                .into_iter()
                .filter(|l| l.contains(&needle))
                .collect();
            lines.iter().any(|l| l.contains("wxgate::access"))
        },
    )
    .await;
    lines
}

fn is_warn(line: &str) -> bool {
    line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_body_faults_are_4xx_and_quiet_while_a_dead_upstream_is_502() {
    let up = ByteUpstream::start(Mode::Ok).await;
    let dead = common::dead_port();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nrequest_timeout = \"1s\"\n\n\
         [[route]]\nname = \"up\"\npath = \"/\"\nupstream = \"{}\"\nauth = \"off\"\n\n\
         [[route]]\nname = \"dead\"\npath = \"/dead\"\nupstream = \"http://{dead}\"\nauth = \"off\"\n",
        up.url()
    );
    let bin = common::spawn_binary_with_log(&toml, "info");

    // A malformed chunk size: the client's fault.
    let req = "POST /x HTTP/1.1\r\nHost: a\r\nX-Request-Id: malformed-1\r\nTransfer-Encoding: chunked\r\n\
               Connection: close\r\n\r\n5\r\nhello\r\nZZZ\r\nxx\r\n0\r\n\r\n";
    let (status, answer) = raw(bin.addr, req.as_bytes()).await;
    assert_eq!(status, 400, "{answer}");
    let lines = lines_for(&bin, "malformed-1").await;
    assert!(!lines.iter().any(|l| is_warn(l)), "no warning: {lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("\"status\":400")),
        "{lines:#?}"
    );

    // A client that gives up mid-upload.
    {
        let mut s = TcpStream::connect(bin.addr).await.unwrap();
        s.write_all(
            b"POST /x HTTP/1.1\r\nHost: a\r\nX-Request-Id: aborted-1\r\nContent-Length: 100000\r\n\r\nonly a little",
        )
        .await
        .unwrap();
        common::eventually(WAIT, "the upload reaches the upstream", || {
            up.received().contains("only a little")
        })
        .await;
    }
    let lines = lines_for(&bin, "aborted-1").await;
    assert!(!lines.iter().any(|l| is_warn(l)), "no warning: {lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("\"status\":502")),
        "{lines:#?}"
    );

    // A client that stops sending: 408 once request_timeout passes, not a 504.
    let mut s = TcpStream::connect(bin.addr).await.unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nX-Request-Id: stalled-1\r\nContent-Length: 100\r\n\r\nten bytes!")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&answer), 408, "{answer}");
    let lines = lines_for(&bin, "stalled-1").await;
    assert!(!lines.iter().any(|l| is_warn(l)), "no warning: {lines:#?}");

    // The upstream's own failure is still a 502, logged at WARN.
    let req = "POST /dead/x HTTP/1.1\r\nHost: a\r\nX-Request-Id: dead-1\r\nContent-Length: 5\r\n\
               Connection: close\r\n\r\nhello";
    let (status, answer) = raw(bin.addr, req.as_bytes()).await;
    assert_eq!(status, 502, "{answer}");
    let lines = lines_for(&bin, "dead-1").await;
    assert!(
        lines
            .iter()
            .any(|l| is_warn(l) && l.contains("upstream unreachable")),
        "a dead upstream is a warning: {lines:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. max_body.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_over_max_body_is_413_without_contacting_the_upstream() {
    let s = sim::start_default().await;
    let up = ByteUpstream::start(Mode::Ok).await;
    let g = start_gw(&s, &up.url()).await;
    // Only the head: the gateway answers before any body byte is sent.
    let req = "POST /small/x HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\n";
    let (_conn, head) = open(g.addr(), req).await;
    assert_eq!(status_of(&head), 413, "{head}");
    // With Expect: 100-continue the client is told before it sends anything.
    let req = "POST /small/x HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\nExpect: 100-continue\r\n\r\n";
    let (_conn, head) = open(g.addr(), req).await;
    assert_eq!(status_of(&head), 413, "{head}");
    assert_eq!(up.connections(), 0, "the upstream was never contacted");
    // At the limit exactly, it goes through; other routes are unlimited.
    for path in ["/small/x", "/off/x"] {
        let body = vec![b'a'; 65536];
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let (status, answer) = raw(g.addr(), &req).await;
        assert_eq!(status, 200, "{path}: {}", &answer[..answer.len().min(300)]);
    }
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_over_max_body_is_cut_with_413() {
    let s = sim::start_default().await;
    let up = ByteUpstream::start(Mode::Ok).await;
    let g = start_gw(&s, &up.url()).await;

    // Under the limit, chunked: through.
    let mut send = common::h1_connect::<ChannelBody>(g.addr()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let req = Request::post("/small/x")
        .header("host", "a")
        .body(ChannelBody::new(rx))
        .unwrap();
    let resp = send.send_request(req);
    tx.send(Bytes::from(vec![b'a'; 60 * 1024])).await.unwrap();
    drop(tx);
    let resp = tokio::time::timeout(WAIT, resp)
        .await
        .expect("in time")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let before = up.connections();
    assert_eq!(before, 1);

    // Over it: 16 KiB at a time until the gateway answers.
    let mut send = common::h1_connect::<ChannelBody>(g.addr()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let req = Request::post("/small/x")
        .header("host", "a")
        .body(ChannelBody::new(rx))
        .unwrap();
    let resp = send.send_request(req);
    tokio::pin!(resp);
    let mut sent = 0usize;
    let resp = tokio::time::timeout(WAIT, async {
        loop {
            tokio::select! {
                r = &mut resp => break r,
                // Up to 1 MiB; the upload then stays open, unfinished.
                _ = tx.send(Bytes::from(vec![0xFF; 16 * 1024])), if sent < 1024 * 1024 => {
                    sent += 16 * 1024;
                }
            }
        }
    })
    .await
    .expect("the gateway answers in time")
    .expect("a response, not a reset");
    assert_eq!(resp.status(), 413);
    // The upstream got part of it, on a connection that is then closed, never reused.
    let conn = up.conn(up.connections() - 1);
    common::eventually(WAIT, "the cut upstream connection is closed", || {
        conn.lock().unwrap().closed
    })
    .await;
    let got = conn
        .lock()
        .unwrap()
        .bytes
        .iter()
        .filter(|&&b| b == 0xFF)
        .count();
    assert!(
        got <= 64 * 1024,
        "at most max_body went upstream ({got} bytes)"
    );
    g.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. CORS preflight on API routes.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_passes_or_authenticates_per_route() {
    let s = sim::start_default().await;
    let echo = gw::echo().await;
    let g = start_gw(&s, &echo.url()).await;
    let preflight = [
        ("origin", "https://other.example.com"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type"),
    ];
    // Browsers send preflights without cookies.
    let mut anon = Browser::cookieless();

    // preflight = "pass" (the default on api routes): forwarded, anonymously.
    let r = anon
        .send(reqwest::Method::OPTIONS, &g.url("/api/items"), &preflight)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = r.seen();
    assert_eq!(seen.method(), "OPTIONS");
    assert!(seen.wechat_headers().is_empty(), "no identity: {seen:?}");
    assert_eq!(
        seen.header("access-control-request-method").as_deref(),
        Some("POST")
    );
    // An OPTIONS that is not a preflight, and other methods, still need a session.
    let r = anon
        .send(reqwest::Method::OPTIONS, &g.url("/api/items"), &[])
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = anon
        .send(reqwest::Method::POST, &g.url("/api/items"), &preflight)
        .await;
    assert_eq!(r.status, 401, "{r:?}");

    // preflight = "auth": authenticated like anything else.
    let r = anon
        .send(
            reqwest::Method::OPTIONS,
            &g.url("/api-auth/items"),
            &preflight,
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &g, "/", "alice").await;
    let r = b
        .send(
            reqwest::Method::OPTIONS,
            &g.url("/api-auth/items"),
            &preflight,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.seen().header("x-wechat-openid").is_some(),
        "with identity"
    );

    // Non-api routes are not affected: a preflight there is authenticated (401 for a
    // cookieless OPTIONS, which is not a navigation).
    let r = anon
        .send(reqwest::Method::OPTIONS, &g.url("/page"), &preflight)
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    g.stop().await;
}
