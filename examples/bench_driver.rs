//! Helper for `bench/run.sh`: runs the WeChat simulator, makes JWT keys, performs logins
//! through a running gateway and holds idle keep-alive connections. Loopback only; every
//! loop is bounded in time.
//!
//! ```text
//! bench_driver config --dir DIR --listen 127.0.0.1:18080 --sim http://127.0.0.1:18090 --upstream http://127.0.0.1:18081
//! bench_driver sim --listen 127.0.0.1:18090
//! bench_driver login-cookie --gateway http://127.0.0.1:18080 --path /app/
//! bench_driver logins --gateway http://127.0.0.1:18080 --path /app/ --seconds 10 --concurrency 16
//! bench_driver idle --addr 127.0.0.1:18080 --path /off/ --connections 10000 --hold 30
//! ```

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures_util::stream::{self, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// What a WeChat in-app browser on iOS sends.
const WECHAT_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.59(0x18003b26) NetType/WIFI Language/zh_CN";

#[derive(Parser)]
#[command(about = "wxgate benchmark driver (see bench/README.md)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write DIR/gateway.toml (routes `/off` with auth = "off" and `/` with auth =
    /// "required", logins against the simulator's default account) and a fresh ES256 key.
    Config {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        sim: String,
        #[arg(long)]
        upstream: String,
    },
    /// Run the in-process WeChat simulator (default world) until killed.
    Sim {
        #[arg(long, default_value = "127.0.0.1:18090")]
        listen: SocketAddr,
    },
    /// Log in once through the gateway and print the session cookie (`name=value`).
    LoginCookie {
        #[arg(long)]
        gateway: String,
        #[arg(long, default_value = "/")]
        path: String,
    },
    /// Full logins (page → authorize → callback → code exchange) for a fixed time.
    Logins {
        #[arg(long)]
        gateway: String,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Open N keep-alive connections, send one request on each, hold them.
    Idle {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Seconds to hold the connections open after printing `ready`.
        #[arg(long, default_value_t = 30)]
        hold: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Config {
                dir,
                listen,
                sim,
                upstream,
            } => config(&dir, listen, &sim, &upstream),
            Cmd::Sim { listen } => sim(listen).await,
            Cmd::LoginCookie { gateway, path } => {
                let client = client()?;
                let cookie = login(&client, &gateway, &path).await?;
                println!("{cookie}");
                Ok(())
            }
            Cmd::Logins {
                gateway,
                path,
                seconds,
                concurrency,
            } => logins(&gateway, &path, seconds, concurrency).await,
            Cmd::Idle {
                addr,
                path,
                connections,
                hold,
            } => idle(addr, &path, connections, hold).await,
        }
    });
    if let Err(e) = result {
        eprintln!("bench_driver: {e}");
        std::process::exit(1);
    }
}

fn config(
    dir: &std::path::Path,
    listen: SocketAddr,
    sim: &str,
    upstream: &str,
) -> Result<(), String> {
    use base64::Engine as _;
    let pem = wxgate::auth::jwt::generate_pem(wxgate::auth::jwt::Alg::ES256)?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write("jwt.pem", &pem)?;
    let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let toml = format!(
        r#"# Written by bench_driver config for bench/run.sh: a throwaway gateway for benchmarks.
[server]
listen = "{listen}"

[wechat]
appid = "{appid}"
secret = "{app_secret}"
api_base = "{sim}"
open_base = "{sim}"
unionid = "follower"

[session]
secret = "{secret}"

[jwt]
algorithm = "ES256"
private_key = "jwt.pem"

[[route]]
name = "off"
path = "/off"
upstream = "{upstream}"
auth = "off"

[[route]]
name = "app"
path = "/"
upstream = "{upstream}"
auth = "required"
"#,
        appid = wxgate::simulator::DEFAULT_APPID,
        app_secret = wxgate::simulator::DEFAULT_SECRET,
    );
    write("gateway.toml", &toml)
}

async fn sim(listen: SocketAddr) -> Result<(), String> {
    let handle = wxgate::simulator::start(wxgate::simulator::SimConfig::default(), listen)
        .await
        .map_err(|e| format!("simulator on {listen}: {e}"))?;
    println!("simulator {}", handle.url());
    let _ = std::io::stdout().flush();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    handle.shutdown();
    Ok(())
}

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(WECHAT_UA)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// `name=value` of the first Set-Cookie whose name starts with `prefix` and is not empty.
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

/// One silent snsapi_base login; returns the session cookie as `name=value`.
async fn login(client: &reqwest::Client, gateway: &str, path: &str) -> Result<String, String> {
    let err = |step: &'static str| move |e: reqwest::Error| format!("{step}: {e}");
    // 1. The page without a session: 302 to authorize, with the sealed state cookie.
    let resp = client
        .get(format!("{gateway}{path}"))
        .send()
        .await
        .map_err(err("page"))?;
    let authorize = location(&resp, "page")?;
    let state = set_cookie(&resp, "wxgate_state").ok_or("page: no state cookie")?;
    // 2. WeChat's authorize (the simulator): silent for snsapi_base, 302 to the callback.
    let resp = client
        .get(&authorize)
        .send()
        .await
        .map_err(err("authorize"))?;
    let callback = location(&resp, "authorize")?;
    // 3. The callback: the gateway exchanges the code and sets the session cookie.
    let resp = client
        .get(&callback)
        .header(reqwest::header::COOKIE, state)
        .send()
        .await
        .map_err(err("callback"))?;
    location(&resp, "callback")?;
    set_cookie(&resp, "wxgate_session").ok_or_else(|| "callback: no session cookie".to_string())
}

async fn logins(gateway: &str, path: &str, seconds: u64, concurrency: usize) -> Result<(), String> {
    let client = client()?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, gateway, path, stop) = (
            client.clone(),
            gateway.to_string(),
            path.to_string(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match login(&client, &gateway, &path).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (l, e, f) = t.await.map_err(|e| e.to_string())?;
        lat.extend(l);
        errors += e;
        first_error = first_error.or(f);
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "logins ok={} errors={} seconds={:.2} per_sec={:.1} p50_ms={:.2} p99_ms={:.2}",
        lat.len(),
        errors,
        elapsed,
        lat.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
    if let Some(e) = first_error {
        eprintln!("first login error: {e}");
    }
    Ok(())
}

/// Connects, sends one keep-alive request and reads the whole response.
async fn open_one(addr: SocketAddr, request: Arc<Vec<u8>>) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(&request).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the response ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                if !head.starts_with("http/1.1 200") {
                    return Err(format!(
                        "unexpected response: {}",
                        head.lines().next().unwrap_or("")
                    ));
                }
                return Ok(s);
            }
        }
    }
}

async fn idle(addr: SocketAddr, path: &str, n: usize, hold: u64) -> Result<(), String> {
    let request = Arc::new(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: bench_driver\r\n\r\n")
            .into_bytes(),
    );
    let started = Instant::now();
    let deadline = Duration::from_secs(60);
    let results: Vec<Result<TcpStream, String>> = tokio::time::timeout(
        deadline,
        stream::iter(0..n)
            .map(|_| open_one(addr, request.clone()))
            .buffer_unordered(128)
            .collect(),
    )
    .await
    .map_err(|_| format!("opening {n} connections took over {deadline:?}"))?;
    let mut open = Vec::with_capacity(n);
    let mut first_error = None;
    for r in results {
        match r {
            Ok(s) => open.push(s),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    println!(
        "ready open={} failed={} seconds={:.2}",
        open.len(),
        n - open.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::stdout().flush();
    if let Some(e) = first_error {
        eprintln!("first connection error: {e}");
    }
    tokio::time::sleep(Duration::from_secs(hold)).await;
    drop(open);
    Ok(())
}
