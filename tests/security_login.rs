//! Regression tests for the auth-layer security review (issue #10): Cookie headers that are not
//! UTF-8, parallel logins from one browser, the session seal bound to the cookie name, and
//! hash-routed single-page apps keeping their fragment across the login.

#[path = "common/gw.rs"]
mod gw;
#[path = "common/sim.rs"]
mod sim;

use std::path::Path;
use std::sync::{Arc, Mutex};

use gw::{Browser, Gw, GwConfig};
use reqwest::header::{HeaderValue, COOKIE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wxgate::app::Gateway;
use wxgate::config::Settings;
use wxgate::simulator::SimHandle;

/// An upstream that records each request head as raw bytes and answers `200 ok`: the echo
/// upstream reports header values as text, which cannot show that bytes went through exactly.
struct RawUpstream {
    addr: std::net::SocketAddr,
    heads: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn raw_upstream() -> RawUpstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("upstream binds");
    let addr = listener.local_addr().expect("addr");
    let heads: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let seen = heads.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        seen.lock().unwrap().push(head);
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    RawUpstream { addr, heads, task }
}

/// The raw value of every `cookie:` line of a recorded request head.
fn cookie_lines(head: &[u8]) -> Vec<Vec<u8>> {
    head.split(|&b| b == b'\n')
        .filter(|l| l.len() > 7 && l[..7].eq_ignore_ascii_case(b"cookie:"))
        .map(|l| {
            let v = &l[7..];
            let v = v.strip_suffix(b"\r").unwrap_or(v);
            v.strip_prefix(b" ").unwrap_or(v).to_vec()
        })
        .collect()
}

/// A gateway like [`gw::start_gateway`] in front of `upstream`, with `extra` TOML appended to
/// `[session]`.
async fn gateway_to(sim: &SimHandle, upstream: &str, session_extra: &str) -> Gw {
    let cfg = GwConfig::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut toml = gw::gateway_toml(&cfg, &sim.url(), upstream, dir.path());
    if !session_extra.is_empty() {
        toml = toml.replacen("[session]\n", &format!("[session]\n{session_extra}\n"), 1);
    }
    let settings = Settings::from_toml(&toml, Path::new("test.toml"), dir.path(), &|_| None)
        .unwrap_or_else(|e| panic!("test config is valid: {e}\n{toml}"));
    let gateway = Gateway::new(settings).unwrap_or_else(|e| panic!("gateway builds: {e}"));
    let running = wxgate::server::start(Arc::new(gateway))
        .await
        .expect("gateway listens");
    let base = format!("http://{}", running.local_addr());
    Gw {
        running,
        base,
        echo: gw::echo().await,
        cfg,
        toml,
        dir,
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(gw::WECHAT_UA)
        .timeout(gw::LIMIT)
        .build()
        .expect("client")
}

// ---------------------------------------------------------------------------------------------
// 1. A Cookie header that is not UTF-8
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_non_utf8_cookie_does_not_hide_the_session_and_goes_upstream_byte_exact() {
    let s = sim::start_default().await;
    let up = raw_upstream().await;
    let gw = gateway_to(&s, &format!("http://{}", up.addr), "").await;
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &gw, "/", "alice").await;
    let session = b.cookie("wxgate_session").expect("session").to_string();
    up.heads.lock().unwrap().clear();

    // What a browser sends when some other page set `x=é` (UTF-8 bytes, not visible ASCII)
    // and a cookie with a Latin-1 byte: the header as a whole is not a `str`.
    let mut raw = b"x=\xc3\xa9; wxgate_session=".to_vec();
    raw.extend_from_slice(session.as_bytes());
    raw.extend_from_slice(b"; lang=\xff1;theme=dark");
    let client = no_redirects();
    for path in ["/page", "/api/orders"] {
        let r = client
            .get(gw.url(path))
            .header("accept", gw::HTML_ACCEPT)
            .header(COOKIE, HeaderValue::from_bytes(&raw).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}: the session is read: {r:?}");
    }
    // HTTP/2 style: one Cookie header per cookie.
    let r = client
        .get(gw.url("/h2"))
        .header("accept", gw::HTML_ACCEPT)
        .header(COOKIE, HeaderValue::from_bytes(b"x=\xc3\xa9").unwrap())
        .header(
            COOKIE,
            HeaderValue::from_str(&format!("wxgate_session={session}")).unwrap(),
        )
        .header(COOKIE, HeaderValue::from_bytes(b"lang=\xff1").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "several Cookie headers: {r:?}");

    let heads = up.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "three requests reached the upstream");
    for head in &heads[..2] {
        assert_eq!(
            cookie_lines(head),
            vec![b"x=\xc3\xa9; lang=\xff1;theme=dark".to_vec()],
            "other cookies unchanged, the session cookie removed: {}",
            String::from_utf8_lossy(head)
        );
        assert!(
            String::from_utf8_lossy(head).contains("x-wechat-openid:"),
            "forwarded with identity"
        );
    }
    assert_eq!(
        cookie_lines(&heads[2]),
        vec![b"x=\xc3\xa9; lang=\xff1".to_vec()],
        "joined into one header for HTTP/1.1"
    );
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. The session seal binds the configured cookie name
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_session_sealed_under_another_cookie_name_is_refused() {
    let s = sim::start_default().await;
    // Same secret, same appid, same simulator: only the cookie name differs.
    let other_up = gw::echo().await;
    let other = gateway_to(&s, &other_up.url(), "cookie_name = \"other_session\"").await;
    let mine = gw::start_gateway(&s, GwConfig::default()).await;

    let mut b = Browser::wechat();
    let l = gw::login(&mut b, &other, "/", "alice").await;
    assert_eq!(l.done.status, 302, "{:?}", l.done);
    let minted = b
        .cookie("other_session")
        .expect("other gateway's session")
        .to_string();
    // It is a working session where it was minted...
    let client = no_redirects();
    let r = client
        .get(other.url("/api/me"))
        .header(COOKIE, format!("other_session={minted}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "accepted under its own name");

    // ...and nothing under another name, on another gateway or on the same one.
    for (gw, name) in [(&mine, "wxgate_session"), (&other, "wxgate_session")] {
        let r = client
            .get(gw.url("/api/me"))
            .header(COOKIE, format!("{name}={minted}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{name} on {}: refused", gw.base);
        let r = client
            .get(gw.url("/_wxgate/session"))
            .header(COOKIE, format!("{name}={minted}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "no session info either");
    }
    // The other gateway also refuses a default-named gateway's session under its name.
    let mut b2 = Browser::wechat();
    gw::logged_in(&mut b2, &mine, "/", "bob").await;
    let r = client
        .get(other.url("/api/me"))
        .header(
            COOKIE,
            format!("other_session={}", b2.cookie("wxgate_session").unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    other.stop().await;
    mine.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Several logins pending in one browser
// ---------------------------------------------------------------------------------------------

/// Cookie names in the browser's jar that start with `wxgate_state`.
fn state_cookies(b: &Browser) -> Vec<String> {
    b.jar
        .keys()
        .filter(|k| k.starts_with("wxgate_state"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn two_logins_started_together_both_complete_to_their_own_paths() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let mut b = Browser::wechat();
    // Two tabs open two pages before either comes back from WeChat.
    let a = b.get(&gw.url("/orders?tab=a")).await;
    let c = b.get(&gw.url("/cart")).await;
    assert_eq!((a.status, c.status), (302, 302));
    let (auth_a, auth_c) = (a.location().unwrap(), c.location().unwrap());

    // WeChat answers both; the callbacks arrive in the other order than the starts.
    let cb_c = gw::authorize(&mut b, &auth_c, "alice").await;
    let cb_a = gw::authorize(&mut b, &auth_a, "alice").await;
    let done_c = b.get(&cb_c).await;
    assert_eq!(done_c.status, 302, "{done_c:?}");
    assert_eq!(done_c.location().as_deref(), Some("/cart#"));
    let done_a = b.get(&cb_a).await;
    assert_eq!(done_a.status, 302, "{done_a:?}");
    assert_eq!(done_a.location().as_deref(), Some("/orders?tab=a#"));
    assert!(
        state_cookies(&b).is_empty(),
        "each callback spent its own: {:?}",
        b.jar.keys()
    );
    assert_eq!(
        s.stats().get("/sns/oauth2/access_token").copied(),
        Some(2),
        "both codes were exchanged, no restart"
    );
    let page = b.get(&gw.url("/orders?tab=a")).await;
    assert_eq!(page.status, 200);
    assert!(page.seen().header("x-wechat-openid").is_some());
    gw.stop().await;
}

#[tokio::test]
async fn pending_logins_are_capped_and_never_reach_the_upstream() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &gw, "/", "alice").await;
    // Logged in, yet holding pending logins (started before, in other tabs): a page that
    // starts logins over and over keeps at most four state cookies.
    let mut starts = Vec::new();
    for i in 0..7 {
        let r = b
            .get(&gw.url(&format!("/_wxgate/login?return_to=/p{i}")))
            .await;
        assert_eq!(r.status, 302);
        starts.push(r.location().unwrap());
        assert!(state_cookies(&b).len() <= 4, "{:?}", state_cookies(&b));
    }
    assert_eq!(state_cookies(&b).len(), 4);
    // The newest is always kept, and completes.
    let last = starts.last().unwrap();
    assert!(gw::state_cookie(&b, last).is_some());

    // With state cookies in the jar, the upstream sees none of them, nor the session.
    b.jar.insert("app".into(), "1".into());
    let page = b.get(&gw.url("/x")).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(page.seen().header("cookie").as_deref(), Some("app=1"));
    // The same on HTTP/2-style split Cookie headers, and for __Host- names.
    let client = no_redirects();
    let mut req = client.get(gw.url("/x")).header("accept", gw::HTML_ACCEPT);
    for (k, v) in &b.jar {
        req = req.header(COOKIE, format!("{k}={v}"));
    }
    let r = req
        .header(COOKIE, "__Host-wxgate_state_abc=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = gw::Seen::parse(&r.text().await.unwrap());
    assert_eq!(seen.header("cookie").as_deref(), Some("app=1"));

    let cb = gw::authorize(&mut b, last, "alice").await;
    let done = b.get(&cb).await;
    assert_eq!(done.location().as_deref(), Some("/p6#"));
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Hash-routed single-page apps
// ---------------------------------------------------------------------------------------------

const NAVIGATION: [(&str, &str); 3] = [
    ("accept", gw::HTML_ACCEPT),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-dest", "document"),
];

/// What the page's script does: the link's href plus `encodeURIComponent(location.hash)`.
fn page_login_href(body: &str) -> String {
    let start = body.find("id=\"login\" href=\"").expect("login link") + 17;
    let end = start + body[start..].find('"').expect("href end");
    body[start..end].replace("&amp;", "&")
}

#[tokio::test]
async fn a_navigation_keeps_its_fragment_across_the_login() {
    use base64::Engine as _;
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let mut b = Browser::wechat();

    let page = b
        .send(reqwest::Method::GET, &gw.url("/app?v=2"), &NAVIGATION)
        .await;
    assert_eq!(page.status, 200, "a page, not a 302: {page:?}");
    assert!(
        b.jar.is_empty(),
        "no login state before the fragment is known"
    );
    // The page: a strict CSP whose hash allows exactly the inline script, nothing external.
    let body = &page.body;
    let script_start = body.find("<script>").expect("script") + 8;
    let script =
        &body[script_start..script_start + body[script_start..].find("</script>").unwrap()];
    let digest = ring::digest::digest(&ring::digest::SHA256, script.as_bytes());
    let csp = page.header("content-security-policy").expect("CSP");
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-")
            && csp.contains(&base64::engine::general_purpose::STANDARD.encode(digest.as_ref())),
        "{csp}"
    );
    assert!(!body.contains(" src="), "no external resource: {body}");
    assert!(script.contains("location.hash"), "{script}");
    let href = page_login_href(body);
    assert_eq!(href, "/_wxgate/login?return_to=%2Fapp%3Fv%3D2");
    // Without JavaScript: a meta refresh to the same login.
    assert!(body.contains(&format!(
        "<noscript><meta http-equiv=\"refresh\" content=\"0;url={href}\">"
    )));

    // The script appends the fragment; the login comes back to it.
    let start = b
        .get(&gw.url(&format!("{href}{}", gw::enc("#/orders?id=7"))))
        .await;
    assert_eq!(start.status, 302, "{start:?}");
    let l = {
        let loc = start.location().unwrap();
        gw::login_from(&mut b, start, loc, "alice")
    }
    .await;
    assert_eq!(l.done.status, 302, "{:?}", l.done);
    assert_eq!(l.done.location().as_deref(), Some("/app?v=2#/orders?id=7"));

    // The no-JavaScript path works too, and ends on an explicit empty fragment, so the
    // `#wechat_redirect` the browser carries from WeChat's authorize URL is not inherited.
    let mut b = Browser::wechat();
    let start = b.get(&gw.url(&href)).await;
    let l = {
        let loc = start.location().unwrap();
        gw::login_from(&mut b, start, loc, "alice")
    }
    .await;
    assert_eq!(l.done.location().as_deref(), Some("/app?v=2#"));

    // A fragment cannot turn the return path into another origin.
    for frag in [
        "#//evil.example",
        "#\\\\evil.example",
        "#@evil.example",
        "#\t//evil",
    ] {
        let mut b = Browser::wechat();
        let start = b.get(&gw.url(&format!("{href}{}", gw::enc(frag)))).await;
        let l = {
            let loc = start.location().unwrap();
            gw::login_from(&mut b, start, loc, "alice")
        }
        .await;
        let fin = l.done.location().unwrap();
        gw::assert_same_origin(&gw.base, &fin, frag);
        assert!(fin.starts_with("/app?v=2#") || fin == "/#", "{frag}: {fin}");
    }

    // Clients without fetch metadata (API tools, old WebViews) still get the direct 302.
    let mut b = Browser::wechat();
    assert_eq!(b.get(&gw.url("/app")).await.status, 302);
    gw.stop().await;
}
