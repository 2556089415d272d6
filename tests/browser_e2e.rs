//! Browser end-to-end test: Debian's Chromium, headless, driven over WebDriver (chromedriver +
//! fantoccini), against the demo (simulator + demo upstream + gateway) started in-process.
//!
//! With a WeChat User-Agent: protected page → the simulator's authorize → the callback → the
//! upstream page showing the simulated user's openid; a reload keeps the session without a new
//! authorization (simulator counters); the session cookie is HttpOnly and SameSite=Lax; logout
//! forces a new authorization; a second simulated user in a fresh browser gets another openid.
//! With a desktop User-Agent: the "open in WeChat" page with its QR code. Then the same flow
//! over HTTPS (a self-signed certificate made here), where the cookie is `__Host-` and Secure.
//!
//! Screenshots of every page land in `target/browser-e2e/`. Chromium and chromedriver come from
//! `$WXGATE_CHROMIUM` / `$WXGATE_CHROMEDRIVER` (set by `./scripts/test.sh`), else
//! `/usr/bin/chromium` and `chromedriver` on PATH. When they are missing the test fails and
//! says how to install them: it is never skipped.

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
const EXCHANGE: &str = "/sns/oauth2/access_token";

type TestResult<T = ()> = Result<T, String>;

/// Where screenshots and the chromedriver log go: `$CARGO_TARGET_DIR/browser-e2e`, else
/// `target/browser-e2e` in the crate.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("browser-e2e");
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
            .prefix("wxgate-e2e-chromium-")
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

    async fn source(&self) -> TestResult<String> {
        self.c()
            .source()
            .await
            .map_err(|e| self.ctx("page source", e))
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

/// Asserts the session cookie's attributes as the browser stored them.
fn check_session_cookie(c: &fantoccini::cookies::Cookie<'static>, secure: bool) -> TestResult {
    let same_site = c.same_site().map(|s| s.to_string());
    if c.http_only() != Some(true) || same_site.as_deref() != Some("Lax") {
        return Err(format!(
            "{} should be HttpOnly and SameSite=Lax, the browser has http_only={:?} same_site={same_site:?}",
            c.name(),
            c.http_only()
        ));
    }
    if c.secure().unwrap_or(false) != secure || c.path() != Some("/") {
        return Err(format!(
            "{}: expected secure={secure} and path /, the browser has secure={:?} path={:?}",
            c.name(),
            c.secure(),
            c.path()
        ));
    }
    Ok(())
}

/// Opens `/` with a WeChat User-Agent and follows the silent login to the upstream page;
/// returns the openid the upstream shows. Checks that the JWT verified at the upstream.
async fn login_and_read_openid(b: &Browser, gateway: &str) -> TestResult<String> {
    b.goto(&format!("{gateway}/")).await?;
    let openid = b.text_of("#openid").await?;
    let verdict = b.text_of("#verdict").await?;
    if !verdict.contains("signature verified") {
        return Err(format!(
            "[{}] the upstream did not verify the JWT: {verdict}",
            b.name
        ));
    }
    let here = b.url().await?;
    if !here.as_str().starts_with(gateway) || here.path() != "/" {
        return Err(format!(
            "[{}] expected to end on {gateway}/, at {here}",
            b.name
        ));
    }
    Ok(openid)
}

/// The whole plain-HTTP part against one demo.
async fn http_flow(driver: &ChromeDriver, demo: &Demo) -> TestResult {
    let gw = demo.url();
    let sim = demo.simulator.url();
    let alice = demo
        .simulator
        .openid("alice", DEFAULT_APPID)
        .ok_or("the default world has no alice")?;
    let bob = demo
        .simulator
        .openid("bob", DEFAULT_APPID)
        .ok_or("the default world has no bob")?;
    assert_ne!(alice, bob, "the simulator derives openids per user");

    // 1. WeChat UA, no session: gateway → simulator authorize → callback → upstream.
    let b = Browser::open(driver, wechat("alice")).await?;
    let (auth0, ex0) = (counter(demo, AUTHORIZE), counter(demo, EXCHANGE));
    let openid = login_and_read_openid(&b, &gw).await?;
    b.shot("01-http-upstream-alice").await?;
    assert_eq!(
        openid, alice,
        "the upstream shows the default simulated user's openid"
    );
    assert_eq!(counter(demo, AUTHORIZE), auth0 + 1, "one authorization");
    assert_eq!(counter(demo, EXCHANGE), ex0 + 1, "one code exchange");

    // 2. The session cookie: HttpOnly, SameSite=Lax, not Secure on HTTP, invisible to scripts.
    let cookie = b
        .cookie("wxgate_session")
        .await?
        .ok_or("no wxgate_session cookie after the login")?;
    check_session_cookie(&cookie, false)?;
    let visible = b.js("return document.cookie").await?;
    assert!(
        !visible.as_str().unwrap_or("").contains("wxgate_session"),
        "HttpOnly: scripts must not see the session cookie, document.cookie = {visible}"
    );
    assert!(
        b.cookie("__Host-wxgate_session").await?.is_none(),
        "no __Host- cookie over plain HTTP"
    );

    // 3. Reload: a new document from the upstream, with no new authorization. The marker
    // proves the page really reloaded (it dies with the old document).
    b.js("window.__wxgateMarker = 1; return null").await?;
    let (auth1, ex1) = (counter(demo, AUTHORIZE), counter(demo, EXCHANGE));
    b.c().refresh().await.map_err(|e| b.ctx("reload", e))?;
    assert_eq!(b.text_of("#openid").await?, alice, "same user after reload");
    assert_eq!(
        b.js("return window.__wxgateMarker === undefined").await?,
        Value::Bool(true),
        "the reload produced a new document"
    );
    b.shot("02-http-after-reload").await?;
    assert_eq!(
        counter(demo, AUTHORIZE),
        auth1,
        "reload: no new authorization"
    );
    assert_eq!(counter(demo, EXCHANGE), ex1, "reload: no new code exchange");

    // 4. Logout clears the session; coming back to / needs a new authorization.
    b.goto(&format!("{gw}/_wxgate/logout?return_to=/")).await?;
    assert_eq!(
        b.text_of("#openid").await?,
        alice,
        "logged in again after logout"
    );
    b.shot("03-http-after-logout").await?;
    assert_eq!(
        counter(demo, AUTHORIZE),
        auth1 + 1,
        "logout: a new authorization"
    );
    assert_eq!(
        counter(demo, EXCHANGE),
        ex1 + 1,
        "logout: a new code exchange"
    );
    b.close().await?;

    // 5. A second simulated user in a fresh browser: pick bob on the simulator (which sets
    // its sim_user cookie), then the same silent login yields bob's openid.
    let b = Browser::open(driver, wechat("bob")).await?;
    let gw_root = format!("{gw}/");
    let picker = url::Url::parse_with_params(&format!("{sim}/_sim/users"), [("return", &gw_root)])
        .map_err(|e| e.to_string())?;
    b.goto(picker.as_str()).await?;
    b.text_of("a[href*='user=bob']").await?;
    b.shot("04-sim-user-picker").await?;
    let auth2 = counter(demo, AUTHORIZE);
    b.c()
        .find(Locator::Css("a[href*='user=bob']"))
        .await
        .map_err(|e| b.ctx("bob's link", e))?
        .click()
        .await
        .map_err(|e| b.ctx("clicking bob", e))?;
    let openid = b.text_of("#openid").await?;
    b.shot("05-http-upstream-bob").await?;
    assert_eq!(openid, bob, "the upstream shows bob's openid");
    assert_ne!(openid, alice, "a different user, a different openid");
    assert_eq!(
        b.text_of("#unionid").await?,
        "(none: not a follower)",
        "bob follows nothing, so the follower-mode gateway has no unionid for him"
    );
    assert_eq!(
        counter(demo, AUTHORIZE),
        auth2 + 1,
        "bob's own authorization"
    );
    b.close().await?;

    // 6. Outside WeChat, a non_wechat = "deny" route shows the "open in WeChat" page with a
    // QR code of the URL, and never starts an authorization.
    let b = Browser::open(
        driver,
        Profile {
            name: "desktop",
            user_agent: None,
            accept_insecure_certs: false,
            window: (1024, 900),
        },
    )
    .await?;
    let page = format!("{gw}/wechat-only");
    b.goto(&page).await?;
    let title = b.text_of("h1").await?;
    b.shot("06-desktop-open-in-wechat").await?;
    assert_eq!(title, "请在微信客户端打开链接");
    b.text_of(".qr").await?;
    let svg = b
        .js("const s = document.querySelector('.qr svg'); \
             return s ? [s.getBoundingClientRect().width, s.getBoundingClientRect().height] : null")
        .await?;
    let size: Vec<f64> = svg
        .as_array()
        .ok_or_else(|| format!("no <svg> QR code on the page: {svg}"))?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(
        size.len() == 2 && size.iter().all(|&d| d >= 200.0),
        "the QR code is rendered at least 200 px square, got {size:?}"
    );
    assert!(
        b.source().await?.contains(&page),
        "the page shows its own URL {page} under the QR code"
    );
    assert_eq!(b.url().await?.as_str(), page, "no redirect outside WeChat");
    // The gateway answered the navigation itself, with 403. (The simulator's counters cannot
    // show this: Chromium then fetches /favicon.ico, which falls on the demo's `/` route with
    // non_wechat = "login" and is sent to the authorize page.)
    let nav = b
        .js("const n = performance.getEntriesByType('navigation')[0]; \
             return [n.responseStatus, n.redirectCount]")
        .await?;
    assert_eq!(
        nav,
        json!([403, 0]),
        "[status, redirects] of the navigation"
    );
    b.close().await?;
    Ok(())
}

/// The HTTPS part: the same flow against a gateway with a self-signed certificate.
async fn https_flow(driver: &ChromeDriver, demo: &Demo) -> TestResult {
    let gw = demo.url();
    assert!(gw.starts_with("https://"), "an HTTPS gateway: {gw}");
    let alice = demo
        .simulator
        .openid("alice", DEFAULT_APPID)
        .ok_or("the default world has no alice")?;
    let b = Browser::open(
        driver,
        Profile {
            accept_insecure_certs: true,
            ..wechat("https")
        },
    )
    .await?;
    let auth0 = counter(demo, AUTHORIZE);
    let openid = login_and_read_openid(&b, &gw).await?;
    b.shot("07-https-upstream-alice").await?;
    assert_eq!(openid, alice);
    assert_eq!(
        counter(demo, AUTHORIZE),
        auth0 + 1,
        "one authorization over HTTPS"
    );
    let cookie = b
        .cookie("__Host-wxgate_session")
        .await?
        .ok_or("no __Host-wxgate_session cookie over HTTPS")?;
    // Chromium only accepts a __Host- cookie that is Secure, has Path=/ and no Domain, so its
    // presence already proves the attributes; check them anyway.
    check_session_cookie(&cookie, true)?;
    assert!(
        b.cookie("wxgate_session").await?.is_none(),
        "over HTTPS only the __Host- cookie is set"
    );
    let auth1 = counter(demo, AUTHORIZE);
    b.c().refresh().await.map_err(|e| b.ctx("reload", e))?;
    assert_eq!(b.text_of("#openid").await?, alice, "same user after reload");
    assert_eq!(
        counter(demo, AUTHORIZE),
        auth1,
        "HTTPS reload: no new authorization"
    );
    b.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_e2e() {
    let started = Instant::now();
    let dir = artifacts();
    // Fail early (never skip) when the browser is missing.
    chromium_path();
    let driver = ChromeDriver::start(&dir.join("chromedriver.log"))
        .await
        .unwrap_or_else(|e| panic!("{e}; see {}", dir.join("chromedriver.log").display()));
    let any = || DemoOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        sim_listen: "127.0.0.1:0".parse().unwrap(),
    };

    // A bound on the whole run, so a wedged browser fails the test instead of hanging CI.
    let outcome = tokio::time::timeout(Duration::from_secs(240), async {
        let demo = demo::start(any()).await?;
        let result = http_flow(&driver, &demo).await;
        demo.shutdown().await;
        result?;

        let certs = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (cert, key) = wxgate::tls::self_signed(&["localhost".into(), "127.0.0.1".into()])?;
        let (cert_path, key_path) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
        std::fs::write(&cert_path, cert).map_err(|e| e.to_string())?;
        std::fs::write(&key_path, key).map_err(|e| e.to_string())?;
        let demo = demo::start_with(any(), Some((cert_path, key_path))).await?;
        let result = https_flow(&driver, &demo).await;
        demo.shutdown().await;
        result
    })
    .await;
    match outcome {
        Ok(Ok(())) => eprintln!(
            "browser e2e passed in {:.1?}; screenshots in {}",
            started.elapsed(),
            dir.display()
        ),
        Ok(Err(e)) => panic!(
            "{e}\n(screenshots and chromedriver.log in {})",
            dir.display()
        ),
        Err(_) => panic!("the browser test took over 240 s; see {}", dir.display()),
    }
}
