//! Helper for `bench/soak.sh`: an upstream (WebSocket echo, upload sink, small answers) and a
//! bounded-rate mixed-traffic run against a gateway, sampling the gateway's RSS and open file
//! descriptors from /proc and judging them at the end. Loopback only; every loop is bounded
//! in time. The simulator and the gateway's config come from `bench_driver`.
//!
//! ```text
//! soak_driver upstream --listen 127.0.0.1:18281
//! soak_driver run --gateway http://127.0.0.1:18280 --pid 1234 --seconds 600 --rate 200
//! ```

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

/// What a WeChat in-app browser on iOS sends (as bench_driver).
const WECHAT_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.59(0x18003b26) NetType/WIFI Language/zh_CN";
/// Bound on any one operation (a login, a WebSocket session, an upload...).
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// Sessions kept for authenticated traffic; each new login replaces the oldest.
const SESSION_POOL: usize = 64;

#[derive(Parser)]
#[command(about = "wxgate soak driver (see bench/soak.sh)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve as the upstream until killed: `/ws` echoes WebSocket messages, `/upload` counts
    /// the request body and answers `{"received":N}`, anything else answers 200 "ok".
    Upstream {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Mixed traffic at a bounded rate for a fixed time, then the verdict (exit 1 on failure).
    Run {
        /// The gateway, as configured by `bench_driver config` (`/off` open, `/` required).
        #[arg(long)]
        gateway: String,
        /// The gateway's process id, for /proc/PID/status and /proc/PID/fd.
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Operations started per second (most are one request; see `Op`).
        #[arg(long, default_value_t = 180)]
        rate: u32,
        /// Most operations in flight at once; the rate drops rather than exceed it.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        sample_secs: u64,
        /// Seconds excluded from the RSS verdict (default: a fifth of the run, at least 10).
        #[arg(long)]
        warmup_secs: Option<u64>,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Upstream { listen } => upstream(listen).await,
            Cmd::Run {
                gateway,
                pid,
                seconds,
                rate,
                concurrency,
                sample_secs,
                warmup_secs,
            } => {
                let warmup = warmup_secs.unwrap_or((seconds / 5).max(10));
                run(Run {
                    gateway,
                    pid,
                    seconds,
                    rate,
                    concurrency,
                    sample_secs,
                    warmup,
                })
                .await
            }
        }
    });
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("soak_driver: {e}");
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The upstream.
// ---------------------------------------------------------------------------------------------

async fn upstream(listen: SocketAddr) -> Result<bool, String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("upstream on {listen}: {e}"))?;
    println!("upstream http://{listen}");
    let _ = std::io::stdout().flush();
    let serve = async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req| async move {
                    Ok::<_, Infallible>(answer(req).await)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = serve => {},
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    Ok(true)
}

async fn answer(mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let last = req.uri().path().rsplit('/').next().unwrap_or("");
    if last == "ws" && req.headers().contains_key("sec-websocket-key") {
        let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                } else if msg.is_close() {
                    break;
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(Full::new(Bytes::new()))
            .expect("response");
    }
    let upload = last == "upload";
    // Drain the body either way; count it for /upload.
    let mut body = req.into_body();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => received += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let text = if upload {
        format!("{{\"received\":{received}}}")
    } else {
        "ok\n".to_string()
    };
    Response::new(Full::new(Bytes::from(text)))
}

// ---------------------------------------------------------------------------------------------
// The traffic.
// ---------------------------------------------------------------------------------------------

struct Run {
    gateway: String,
    pid: u32,
    seconds: u64,
    rate: u32,
    concurrency: usize,
    sample_secs: u64,
    warmup: u64,
}

/// One unit of traffic. The weights (per 100 operations) are in [`Op::pick`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    /// GET / with a session: forwarded with the identity headers.
    Authenticated,
    /// GET /_wxgate/session with a session: the session JSON.
    SessionInfo,
    /// GET /off/: the open route.
    Open,
    /// GET / without a session: 302 to the simulator's authorize page.
    Redirect,
    /// The three-hop silent login (page → authorize → callback), as tests/common/gw.rs does.
    Login,
    /// A WebSocket session through the gateway: 20 echoed messages, then a close.
    WebSocket,
    /// POST /upload of 1–4 MB with a session.
    Upload,
    /// The request head trickled in small pieces over about 2 s.
    SlowHeaders,
    /// A 256 KiB body trickled in 16 pieces over about 2 s.
    SlowBody,
}

impl Op {
    const ALL: [Op; 9] = [
        Op::Authenticated,
        Op::SessionInfo,
        Op::Open,
        Op::Redirect,
        Op::Login,
        Op::WebSocket,
        Op::Upload,
        Op::SlowHeaders,
        Op::SlowBody,
    ];

    fn weight(self) -> u32 {
        match self {
            Op::Authenticated => 74,
            Op::SessionInfo => 5,
            Op::Open => 8,
            Op::Redirect => 3,
            Op::Login => 4,
            Op::WebSocket => 3,
            Op::Upload => 1,
            Op::SlowHeaders => 1,
            Op::SlowBody => 1,
        }
    }

    /// HTTP requests (or WebSocket handshakes) the operation makes.
    fn requests(self) -> u64 {
        match self {
            Op::Login => 3,
            _ => 1,
        }
    }

    /// Deterministic spread: operation `n` of every 100 gets the kind whose weight band holds
    /// `n * 37 % 100` (37 is coprime to 100, so kinds interleave instead of coming in runs).
    fn pick(n: u64) -> Op {
        let mut slot = (n * 37 % 100) as u32;
        for op in Op::ALL {
            if slot < op.weight() {
                return op;
            }
            slot -= op.weight();
        }
        Op::Authenticated
    }
}

struct Shared {
    gateway: String,
    addr: String,
    client: reqwest::Client,
    sessions: Mutex<VecDeque<String>>,
    upload: Bytes,
    counts: Mutex<[(u64, u64); 9]>,
    requests: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Shared {
    fn session(&self, n: u64) -> String {
        let s = self.sessions.lock().unwrap();
        s[(n as usize) % s.len()].clone()
    }

    fn record(&self, op: Op, result: Result<(), String>) {
        let i = Op::ALL.iter().position(|o| *o == op).unwrap();
        let mut counts = self.counts.lock().unwrap();
        match result {
            Ok(()) => counts[i].0 += 1,
            Err(e) => {
                counts[i].1 += 1;
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_errors.lock().unwrap();
                if first.len() < 10 {
                    first.push(format!("{op:?}: {e}"));
                }
            }
        }
    }
}

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(WECHAT_UA)
        .timeout(OP_TIMEOUT)
        .pool_max_idle_per_host(32)
        .build()
        .map_err(|e| e.to_string())
}

/// `name=value` of the first Set-Cookie whose name contains `prefix` and whose value is set.
fn set_cookie(resp: &reqwest::Response, prefix: &str) -> Option<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|nv| {
            nv.split_once('=')
                .is_some_and(|(n, v)| n.contains(prefix) && !v.is_empty())
        })
        .map(str::to_string)
}

fn location(resp: &reqwest::Response, step: &str) -> Result<String, String> {
    if resp.status() != reqwest::StatusCode::FOUND {
        return Err(format!("{step}: expected 302, got {}", resp.status()));
    }
    resp.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| l.split('#').next().unwrap_or(l).to_string())
        .ok_or_else(|| format!("{step}: 302 without Location"))
}

/// One silent snsapi_base login; the session cookie as `name=value`.
async fn login(client: &reqwest::Client, gateway: &str) -> Result<String, String> {
    let err = |step: &'static str| move |e: reqwest::Error| format!("{step}: {e}");
    let resp = client
        .get(format!("{gateway}/soak/page"))
        .send()
        .await
        .map_err(err("page"))?;
    let authorize = location(&resp, "page")?;
    let state = set_cookie(&resp, "wxgate_state").ok_or("page: no state cookie")?;
    let resp = client
        .get(&authorize)
        .send()
        .await
        .map_err(err("authorize"))?;
    let callback = location(&resp, "authorize")?;
    let resp = client
        .get(&callback)
        .header(reqwest::header::COOKIE, state)
        .send()
        .await
        .map_err(err("callback"))?;
    let back = location(&resp, "callback")?;
    if back != "/soak/page" {
        return Err(format!("callback: sent back to {back}"));
    }
    set_cookie(&resp, "wxgate_session").ok_or_else(|| "callback: no session cookie".to_string())
}

async fn expect_status(
    req: reqwest::RequestBuilder,
    want: reqwest::StatusCode,
) -> Result<Bytes, String> {
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
    if status != want {
        return Err(format!(
            "expected {want}, got {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    Ok(body)
}

async fn op(shared: &Shared, op: Op, n: u64) -> Result<(), String> {
    let c = &shared.client;
    let g = &shared.gateway;
    match op {
        Op::Authenticated => {
            let body = expect_status(
                c.get(format!("{g}/app/{n}"))
                    .header(reqwest::header::COOKIE, shared.session(n)),
                reqwest::StatusCode::OK,
            )
            .await?;
            (body.as_ref() == b"ok\n")
                .then_some(())
                .ok_or_else(|| "unexpected body".to_string())
        }
        Op::SessionInfo => {
            let body = expect_status(
                c.get(format!("{g}/_wxgate/session"))
                    .header(reqwest::header::COOKIE, shared.session(n)),
                reqwest::StatusCode::OK,
            )
            .await?;
            let text = String::from_utf8_lossy(&body);
            text.contains("openid")
                .then_some(())
                .ok_or_else(|| format!("session JSON without openid: {text}"))
        }
        Op::Open => expect_status(c.get(format!("{g}/off/{n}")), reqwest::StatusCode::OK)
            .await
            .map(drop),
        Op::Redirect => {
            let resp = c
                .get(format!("{g}/app/{n}"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let to = location(&resp, "redirect")?;
            to.contains("/connect/oauth2/authorize")
                .then_some(())
                .ok_or_else(|| format!("redirected to {to}"))
        }
        Op::Login => {
            let cookie = login(c, g).await?;
            let mut s = shared.sessions.lock().unwrap();
            if s.len() >= SESSION_POOL {
                s.pop_front();
            }
            s.push_back(cookie);
            Ok(())
        }
        Op::WebSocket => websocket(shared, n).await,
        Op::Upload => {
            let len = 1_000_000 + (n as usize * 7919) % 3_000_000;
            let body = expect_status(
                c.post(format!("{g}/files/upload"))
                    .header(reqwest::header::COOKIE, shared.session(n))
                    .body(shared.upload.slice(..len)),
                reqwest::StatusCode::OK,
            )
            .await?;
            let want = format!("{{\"received\":{len}}}");
            (body.as_ref() == want.as_bytes())
                .then_some(())
                .ok_or_else(|| format!("upload answered {}", String::from_utf8_lossy(&body)))
        }
        Op::SlowHeaders => {
            let head = format!(
                "GET /off/slow/{n} HTTP/1.1\r\nHost: {}\r\nUser-Agent: soak-slow\r\nX-Padding: {}\r\nConnection: close\r\n\r\n",
                shared.addr,
                "p".repeat(200)
            );
            slow_request(&shared.addr, head.as_bytes(), &[], "HTTP/1.1 200").await
        }
        Op::SlowBody => {
            let body = vec![b'x'; 256 * 1024];
            let head = format!(
                "POST /files/upload HTTP/1.1\r\nHost: {}\r\nUser-Agent: {WECHAT_UA}\r\nCookie: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                shared.addr,
                shared.session(n),
                body.len()
            );
            slow_request(&shared.addr, head.as_bytes(), &body, "HTTP/1.1 200").await?;
            Ok(())
        }
    }
}

/// Sends `head` in 10 pieces and `body` in 16, about 125 ms apart (so the connection goes
/// idle, and the gateway parks it, between pieces), then reads one answer by its
/// Content-Length. Not to end of stream: after a park the gateway keeps the connection open
/// despite `Connection: close` (see bench/RESULTS.md, "Soak"), which is not what this checks.
async fn slow_request(addr: &str, head: &[u8], body: &[u8], want: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let pause = Duration::from_millis(125);
    let (head_piece, body_piece) = (head.len().div_ceil(10), body.len().div_ceil(16).max(1));
    let pieces = head.chunks(head_piece).chain(body.chunks(body_piece));
    for piece in pieces {
        s.write_all(piece)
            .await
            .map_err(|e| format!("write: {e}"))?;
        tokio::time::sleep(pause).await;
    }
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the answer ended".into());
        }
        answer.extend_from_slice(&chunk[..n]);
        let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or("answer without content-length")?;
        if answer.len() < end + 4 + len {
            continue;
        }
        if !head.starts_with(&want.to_ascii_lowercase()) {
            return Err(format!(
                "answer {:?}",
                head.lines().next().unwrap_or_default()
            ));
        }
        let got = &answer[end + 4..end + 4 + len];
        if !body.is_empty() && got != format!("{{\"received\":{}}}", body.len()).as_bytes() {
            return Err("the upstream did not receive the whole body".into());
        }
        return Ok(());
    }
}

async fn websocket(shared: &Shared, n: u64) -> Result<(), String> {
    let url = format!("{}/live/ws", shared.gateway.replacen("http", "ws", 1));
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    let h = req.headers_mut();
    h.insert("user-agent", WECHAT_UA.parse().expect("ua"));
    h.insert(
        "cookie",
        shared.session(n).parse().map_err(|_| "cookie header")?,
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!("handshake answered {}", resp.status()));
    }
    for i in 0..20u64 {
        let msg = if i % 2 == 0 {
            Message::text(format!(
                "soak {n} message {i} {}",
                "t".repeat((i * 50) as usize)
            ))
        } else {
            Message::binary(vec![(i & 0xff) as u8; 1 + (i as usize * 1021) % 16_384])
        };
        ws.send(msg.clone())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let back = ws
            .next()
            .await
            .ok_or("closed before the echo")?
            .map_err(|e| format!("receive: {e}"))?;
        if back != msg {
            return Err(format!("message {i} came back different"));
        }
    }
    ws.close(None).await.map_err(|e| format!("close: {e}"))?;
    // Read until the close handshake completes (bounded by OP_TIMEOUT around the op).
    while let Some(m) = ws.next().await {
        if m.is_err() {
            break;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Sampling and the verdict.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Sample {
    t: u64,
    rss_kb: u64,
    fds: u64,
}

fn sample(pid: u32, t: u64) -> Result<Sample, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e} (did the gateway exit?)"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or("no VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("/proc/{pid}/fd: {e}"))?
        .count() as u64;
    Ok(Sample { t, rss_kb, fds })
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

async fn run(cfg: Run) -> Result<bool, String> {
    let addr = cfg
        .gateway
        .strip_prefix("http://")
        .ok_or("--gateway must be http://host:port")?
        .trim_end_matches('/')
        .to_string();
    let client = client()?;
    // Sessions to start from; more come from the Login operations.
    let mut sessions = VecDeque::new();
    for _ in 0..8 {
        sessions.push_back(login(&client, &cfg.gateway).await?);
    }
    let upload: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let shared = Arc::new(Shared {
        gateway: cfg.gateway.trim_end_matches('/').to_string(),
        addr,
        client,
        sessions: Mutex::new(sessions),
        upload: Bytes::from(upload),
        counts: Mutex::new([(0, 0); 9]),
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_errors: Mutex::new(Vec::new()),
    });

    let started = Instant::now();
    let mut samples = vec![sample(cfg.pid, 0)?];
    println!(
        "soak: {} s at {} operations/s (at most {} in flight), sampling every {} s, warm-up {} s",
        cfg.seconds, cfg.rate, cfg.concurrency, cfg.sample_secs, cfg.warmup
    );
    println!(
        "t=0s rss_mb={:.1} fds={}",
        samples[0].rss_kb as f64 / 1024.0,
        samples[0].fds
    );
    let _ = std::io::stdout().flush();

    let stop = Arc::new(AtomicBool::new(false));
    let limit = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency.max(1)));
    let dispatcher = {
        let (shared, stop, limit) = (shared.clone(), stop.clone(), limit.clone());
        let period = Duration::from_secs_f64(1.0 / f64::from(cfg.rate.max(1)));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            let mut tasks = tokio::task::JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let permit = limit.clone().acquire_owned().await.expect("semaphore");
                let kind = Op::pick(n);
                let shared = shared.clone();
                tasks.spawn(async move {
                    let result = tokio::time::timeout(OP_TIMEOUT, op(&shared, kind, n))
                        .await
                        .unwrap_or_else(|_| Err(format!("timed out after {OP_TIMEOUT:?}")));
                    shared
                        .requests
                        .fetch_add(kind.requests(), Ordering::Relaxed);
                    shared.record(kind, result);
                    drop(permit);
                });
                n += 1;
                // Reap finished tasks so the set stays small.
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
            n
        })
    };

    let mut next = cfg.sample_secs;
    while next <= cfg.seconds {
        tokio::time::sleep_until((started + Duration::from_secs(next)).into()).await;
        let s = sample(cfg.pid, next)?;
        println!(
            "t={}s rss_mb={:.1} fds={} requests={} errors={}",
            s.t,
            s.rss_kb as f64 / 1024.0,
            s.fds,
            shared.requests.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed)
        );
        let _ = std::io::stdout().flush();
        samples.push(s);
        next += cfg.sample_secs;
    }
    tokio::time::sleep_until((started + Duration::from_secs(cfg.seconds)).into()).await;
    stop.store(true, Ordering::Relaxed);
    let ops = dispatcher.await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed().as_secs_f64();

    let requests = shared.requests.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    println!();
    println!("| operation | ok | errors |");
    println!("|---|---:|---:|");
    for (op, (ok, err)) in Op::ALL.iter().zip(shared.counts.lock().unwrap().iter()) {
        println!("| {op:?} | {ok} | {err} |");
    }
    println!(
        "\noperations={ops} requests={requests} seconds={elapsed:.1} requests_per_sec={:.1} errors={errors}",
        requests as f64 / elapsed
    );
    for e in shared.first_errors.lock().unwrap().iter() {
        println!("error: {e}");
    }

    Ok(verdict(&samples, cfg.warmup, errors))
}

/// The verdict: no errors, and RSS flat after warm-up. Flat: of the samples taken after the
/// warm-up, the median of the last third exceeds the median of the first third by at most
/// 10% or 5 MiB, whichever is larger. File descriptors likewise must not grow by more than
/// 10% or 32. At least three samples after warm-up are needed.
fn verdict(samples: &[Sample], warmup: u64, errors: u64) -> bool {
    let after: Vec<Sample> = samples.iter().copied().filter(|s| s.t > warmup).collect();
    println!(
        "\nsamples (t s, VmRSS MiB, fds): {}",
        samples
            .iter()
            .map(|s| format!("{}:{:.1}:{}", s.t, s.rss_kb as f64 / 1024.0, s.fds))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut ok = true;
    if errors != 0 {
        println!("FAIL errors: {errors} (must be 0)");
        ok = false;
    } else {
        println!("ok   errors: 0");
    }
    if after.len() < 3 {
        println!(
            "FAIL only {} sample(s) after the {warmup} s warm-up; run longer or sample more often",
            after.len()
        );
        return false;
    }
    let third = after.len().div_ceil(3);
    let first = &after[..third];
    let last = &after[after.len() - third..];
    let check = |what: &str, unit: &str, scale: f64, slack: u64, get: fn(&Sample) -> u64| {
        let a = median(first.iter().map(get).collect());
        let b = median(last.iter().map(get).collect());
        let allowed = (a / 10).max(slack);
        let pass = b <= a + allowed;
        println!(
            "{} {what}: first-third median {:.1} {unit}, last-third median {:.1} {unit}, growth {:+.1} {unit} (allowed {:.1})",
            if pass { "ok  " } else { "FAIL" },
            a as f64 / scale,
            b as f64 / scale,
            (b as f64 - a as f64) / scale,
            allowed as f64 / scale
        );
        pass
    };
    ok &= check("RSS", "MiB", 1024.0, 5 * 1024, |s| s.rss_kb);
    ok &= check("open fds", "", 1.0, 32, |s| s.fds);
    println!("verdict: {}", if ok { "PASS" } else { "FAIL" });
    ok
}
