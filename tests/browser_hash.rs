//! Browser test for hash-routed single-page apps: headless Chromium over WebDriver (the
//! harness of `tests/browser_e2e.rs`) against the demo. A WeChat browser opening `/#/orders`
//! without a session goes through the silent login and ends on `/#/orders` with its identity;
//! one opening `/` ends without WeChat's `#wechat_redirect` marker in the URL.
//!
//! Chromium and chromedriver come from `$WXGATE_CHROMIUM` / `$WXGATE_CHROMEDRIVER` (set by
//! `./scripts/test.sh`), else `/usr/bin/chromium` and `chromedriver` on PATH; when missing the
//! test fails and says how to install them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use wxgate::demo::{self, Demo, DemoOptions};
use wxgate::simulator::DEFAULT_APPID;

/// An iPhone WeChat 8.0.59 User-Agent, as the in-app browser sends it.
const WECHAT_UA: &str =
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 \
(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.59(0x18003b26) NetType/4G Language/zh_CN";
/// Bound on every wait for a page or an element: generous for a loaded 2-core CI machine.
const WAIT: Duration = Duration::from_secs(20);
const AUTHORIZE: &str = "/connect/oauth2/authorize";

type TestResult<T = ()> = Result<T, String>;

/// Where screenshots and the chromedriver log go: `$CARGO_TARGET_DIR/browser-hash`, else
/// `target/browser-hash` in the crate.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("browser-hash");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

const INSTALL_HINT: &str = "run ./scripts/test.sh (it installs them), or \
`apt-get install chromium chromium-driver`";

/// `$WXGATE_CHROMIUM`, else `/usr/bin/chromium`; a missing browser fails the test.
fn chromium_path() -> PathBuf {
    let path = std::env::var_os("WXGATE_CHROMIUM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "Chromium not found at {} (WXGATE_CHROMIUM): {INSTALL_HINT}",
        path.display()
    );
    path
}

/// `$WXGATE_CHROMEDRIVER`, else `chromedriver` on PATH; a missing driver fails the test.
fn chromedriver_path() -> PathBuf {
    if let Some(p) = std::env::var_os("WXGATE_CHROMEDRIVER").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "chromedriver not found at {} (WXGATE_CHROMEDRIVER): {INSTALL_HINT}",
            p.display()
        );
        return p;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromedriver"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("chromedriver not found on PATH: {INSTALL_HINT}"))
}

/// A plain HTTP/1.1 request to chromedriver over a blocking socket (for `Drop`, which cannot
/// await): returns the status line.
fn blocking_http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.lines().next().unwrap_or("").to_string())
}

/// chromedriver, killed when dropped (also when the test panics).
struct ChromeDriver {
    child: Child,
    addr: SocketAddr,
}

impl ChromeDriver {
    /// chromedriver needs an explicit port: take a free one from the OS and retry when another
    /// process grabbed it in between (chromedriver then exits at once).
    async fn start(log: &Path) -> TestResult<ChromeDriver> {
        let bin = chromedriver_path();
        let mut last = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            let child = Command::new(&bin)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run {}: {e} ({INSTALL_HINT})", bin.display()))?;
            let mut driver = ChromeDriver {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            match driver.wait_ready().await {
                Ok(()) => return Ok(driver),
                Err(e) => last = e, // dropping `driver` kills it
            }
        }
        Err(format!("chromedriver did not start: {last}"))
    }

    /// Polls `GET /status` until chromedriver answers "ready", or it exits, or `WAIT` passes.
    async fn wait_ready(&mut self) -> TestResult {
        let url = format!("http://{}/status", self.addr);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("chromedriver exited with {status}"));
            }
            if let Ok(resp) = reqwest::get(&url).await {
                if let Ok(body) = resp.json::<Value>().await {
                    if body["value"]["ready"] == true {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no answer on {url} within {WAIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a browser session presents itself.
struct Profile {
    name: &'static str,
    user_agent: Option<&'static str>,
    accept_insecure_certs: bool,
    window: (u32, u32),
}

/// One Chromium session with its own fresh profile directory (so no cookies are shared
/// between sessions). Dropping it ends the session, so no Chromium outlives a failed test.
struct Browser {
    client: Option<Client>,
    session: Option<String>,
    driver: SocketAddr,
    name: &'static str,
    shots: PathBuf,
    _profile_dir: tempfile::TempDir,
}

impl Browser {
    async fn open(driver: &ChromeDriver, profile: Profile) -> TestResult<Browser> {
        let profile_dir = tempfile::Builder::new()
            .prefix("wxgate-hash-chromium-")
            .tempdir()
            .map_err(|e| format!("cannot create a Chromium profile dir: {e}"))?;
        // Loopback only: nothing in the background may try to reach the network, and the
        // machine runs as root (hence --no-sandbox) with a small /dev/shm.
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            format!("--window-size={},{}", profile.window.0, profile.window.1),
            format!("--user-data-dir={}", profile_dir.path().display()),
        ];
        if let Some(ua) = profile.user_agent {
            args.push(format!("--user-agent={ua}"));
        }
        let caps = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": profile.accept_insecure_certs,
            "pageLoadStrategy": "normal",
            "timeouts": { "pageLoad": WAIT.as_millis() as u64, "script": 10_000 },
            "goog:chromeOptions": {
                "binary": chromium_path(),
                "args": args,
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        // Chromium may be slow to start on a busy machine: one retry.
        let mut attempt = 0;
        let client = loop {
            attempt += 1;
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&driver.url())
                .await
            {
                Ok(c) => break c,
                Err(e) if attempt < 2 => {
                    eprintln!("[{}] new session failed, retrying: {e}", profile.name)
                }
                Err(e) => return Err(format!("[{}] cannot start Chromium: {e}", profile.name)),
            }
        };
        let session = client
            .session_id()
            .await
            .map_err(|e| format!("[{}] no session id: {e}", profile.name))?;
        Ok(Browser {
            client: Some(client),
            session,
            driver: driver.addr,
            name: profile.name,
            shots: artifacts(),
            _profile_dir: profile_dir,
        })
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("browser already closed")
    }

    fn ctx(&self, what: &str, e: impl std::fmt::Display) -> String {
        format!("[{}] {what}: {e}", self.name)
    }

    async fn goto(&self, url: &str) -> TestResult {
        self.c()
            .goto(url)
            .await
            .map_err(|e| self.ctx(&format!("cannot open {url}"), e))
    }

    async fn url(&self) -> TestResult<url::Url> {
        self.c()
            .current_url()
            .await
            .map_err(|e| self.ctx("current URL", e))
    }

    /// Waits (bounded) for `css` and returns its text. On timeout the error carries the URL
    /// and the start of the page, and a `*-timeout.png` screenshot is saved.
    async fn text_of(&self, css: &str) -> TestResult<String> {
        let found = self
            .c()
            .wait()
            .at_most(WAIT)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(el) => el.text().await.map_err(|e| self.ctx(css, e)),
            Err(e) => {
                let url = self.c().current_url().await.map(|u| u.to_string());
                let src = self.c().source().await.unwrap_or_default();
                let _ = self.shot(&format!("{}-timeout", self.name)).await;
                Err(format!(
                    "[{}] no `{css}` within {WAIT:?} ({e}); at {url:?}; page starts: {}",
                    self.name,
                    src.chars().take(600).collect::<String>()
                ))
            }
        }
    }

    async fn shot(&self, name: &str) -> TestResult {
        let png = self
            .c()
            .screenshot()
            .await
            .map_err(|e| self.ctx("screenshot", e))?;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// The cookies the browser holds for the current page's host, by name.
    async fn cookie(&self, name: &str) -> TestResult<Option<fantoccini::cookies::Cookie<'static>>> {
        let all = self
            .c()
            .get_all_cookies()
            .await
            .map_err(|e| self.ctx("cookies", e))?;
        Ok(all.into_iter().find(|c| c.name() == name))
    }

    async fn js(&self, script: &str) -> TestResult<Value> {
        self.c()
            .execute(script, vec![])
            .await
            .map_err(|e| self.ctx(script, e))
    }

    async fn close(mut self) -> TestResult {
        let client = self.client.take().expect("closed twice");
        self.session = None;
        client
            .close()
            .await
            .map_err(|e| format!("[{}] closing the session: {e}", self.name))
    }
}

impl Drop for Browser {
    /// After a failure the client cannot be closed asynchronously here: ask chromedriver to
    /// end the session directly, which quits that Chromium.
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            let _ = blocking_http(self.driver, "DELETE", &format!("/session/{id}"));
        }
    }
}

fn counter(demo: &Demo, endpoint: &str) -> u64 {
    demo.simulator.stats().get(endpoint).copied().unwrap_or(0)
}

fn wechat(name: &'static str) -> Profile {
    Profile {
        name,
        user_agent: Some(WECHAT_UA),
        accept_insecure_certs: false,
        window: (414, 896),
    }
}

/// Opens `start` on the gateway, waits for the upstream page with the user's openid, and
/// returns where the browser ended.
async fn land(b: &Browser, gateway: &str, start: &str) -> TestResult<(url::Url, String)> {
    b.goto(&format!("{gateway}{start}")).await?;
    let openid = b.text_of("#openid").await?;
    Ok((b.url().await?, openid))
}

async fn hash_flow(driver: &ChromeDriver, demo: &Demo) -> TestResult {
    let gw = demo.url();
    let alice = demo
        .simulator
        .openid("alice", DEFAULT_APPID)
        .ok_or("the default world has no alice")?;

    // A hash route, no session: the fragment survives the trip to WeChat and back.
    let b = Browser::open(driver, wechat("hash")).await?;
    let before = counter(demo, AUTHORIZE);
    let (here, openid) = land(&b, &gw, "/#/orders").await?;
    b.shot("01-hash-route-after-login").await?;
    if counter(demo, AUTHORIZE) != before + 1 {
        return Err(format!(
            "expected one authorization, the simulator counted {}",
            counter(demo, AUTHORIZE) - before
        ));
    }
    if openid != alice {
        return Err(format!(
            "expected alice's openid {alice}, the upstream shows {openid}"
        ));
    }
    if !here.as_str().starts_with(&gw) || here.path() != "/" || here.fragment() != Some("/orders") {
        return Err(format!("expected to end on {gw}/#/orders, at {here}"));
    }
    if b.cookie("wxgate_session").await?.is_none() {
        return Err("no session cookie after the login".into());
    }
    // A hash route with a query inside the fragment, with the session now: straight through.
    let (here, _) = land(&b, &gw, "/#/orders?id=7").await?;
    if here.fragment() != Some("/orders?id=7") || counter(demo, AUTHORIZE) != before + 1 {
        return Err(format!(
            "with a session: expected /#/orders?id=7 and no new login, at {here}"
        ));
    }
    b.close().await?;

    // No fragment at the start: WeChat's `#wechat_redirect` must not be inherited.
    let b = Browser::open(driver, wechat("plain")).await?;
    let (here, _) = land(&b, &gw, "/").await?;
    b.shot("02-plain-after-login").await?;
    if here.path() != "/" || here.fragment().is_some_and(|f| !f.is_empty()) {
        return Err(format!(
            "expected {gw}/ without a fragment route, at {here}"
        ));
    }
    let hash = b.js("return location.hash").await?;
    if hash != "" {
        return Err(format!("location.hash should be empty, is {hash}"));
    }
    b.close().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_hash() {
    let dir = artifacts();
    chromium_path();
    let driver = ChromeDriver::start(&dir.join("chromedriver.log"))
        .await
        .unwrap_or_else(|e| panic!("{e}; see {}", dir.join("chromedriver.log").display()));
    let options = DemoOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        sim_listen: "127.0.0.1:0".parse().unwrap(),
    };
    let outcome = tokio::time::timeout(Duration::from_secs(180), async {
        let demo = demo::start(options).await?;
        let result = hash_flow(&driver, &demo).await;
        demo.shutdown().await;
        result
    })
    .await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!(
            "{e}\n(screenshots and chromedriver.log in {})",
            dir.display()
        ),
        Err(_) => panic!("the browser test took over 180 s; see {}", dir.display()),
    }
}
