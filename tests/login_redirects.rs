//! Open redirects over HTTP: every vector of oauth2-proxy's table and payload list (see
//! `tests/fixtures/open-redirects/`) given as `return_to` to `/_wxgate/logout` and
//! `/_wxgate/login` must keep the browser on the gateway's origin. For login that is proved by
//! completing the WeChat callback and checking where it finally sends the browser.

#[path = "common/gw.rs"]
mod gw;
#[path = "common/redirect_vectors.rs"]
mod redirect_vectors;
#[path = "common/sim.rs"]
mod sim;

use gw::{Browser, Gw, GwConfig};
use redirect_vectors::{payloads, query_unescape, table_vectors, PAYLOAD_LINES, TABLE_LEN};
use wxgate::auth::state::LoginState;

/// The ways a `return_to` value reaches the gateway: percent-encoded once (what a careful
/// link builder sends), and pasted raw into the URL (what a crafted link contains), when that
/// still makes a URL.
fn logout_urls(gw: &Gw, value: &str) -> Vec<String> {
    let mut urls = vec![gw.url(&format!("/_wxgate/logout?return_to={}", gw::enc(value)))];
    if let Ok(u) = url::Url::parse(&gw.url(&format!("/_wxgate/logout?return_to={value}"))) {
        if u.path() == "/_wxgate/logout" {
            urls.push(u.to_string());
        }
    }
    urls
}

async fn check_logout(b: &mut Browser, gw: &Gw, value: &str) -> Vec<String> {
    let mut locations = Vec::new();
    for url in logout_urls(gw, value) {
        let r = b.get(&url).await;
        assert_eq!(r.status, 302, "logout {value:?} via {url}: {r:?}");
        let loc = r.location().expect("Location");
        gw::assert_same_origin(&gw.base, &loc, &format!("logout {value:?} via {url}"));
        locations.push(loc);
    }
    locations
}

/// Starts a login with `return_to = value`, checks the authorize redirect and the sealed
/// return path, completes the callback and returns the final Location (checked same-origin).
async fn check_login(s: &wxgate::simulator::SimHandle, gw: &Gw, value: &str) -> String {
    let mut b = Browser::wechat();
    let start = b
        .get(&gw.url(&format!("/_wxgate/login?return_to={}", gw::enc(value))))
        .await;
    assert_eq!(start.status, 302, "login {value:?}: {start:?}");
    let loc = start.location().unwrap();
    assert!(
        loc.starts_with(&format!("{}/connect/oauth2/authorize?appid=", s.url())),
        "login {value:?} leaves for {loc}"
    );
    assert_eq!(
        gw::query_param(&loc, "redirect_uri").as_deref(),
        Some(format!("{}/_wxgate/callback", gw.base).as_str()),
        "login {value:?}"
    );
    let sealed: LoginState = gw::codec(&[gw::SESSION_SECRET])
        .open(
            "wxgate_state",
            gw::state_cookie(&b, &loc).expect("state cookie"),
        )
        .expect("state opens");
    gw::assert_same_origin(
        &gw.base,
        &wxgate::auth::redirect::encode_for_location(&sealed.return_to),
        &format!("sealed return_to for {value:?}"),
    );
    let l = gw::login_from(&mut b, start, loc, "alice").await;
    assert_eq!(l.done.status, 302, "callback for {value:?}: {:?}", l.done);
    let fin = l.done.location().expect("final Location");
    gw::assert_same_origin(&gw.base, &fin, &format!("login {value:?}"));
    // A return path without a fragment comes back with an explicit empty one (so WeChat's
    // `#wechat_redirect` is not inherited); compare the path itself.
    match fin.strip_suffix('#') {
        Some(path) if !path.contains('#') => path.to_string(),
        _ => fin,
    }
}

#[tokio::test]
async fn table_vectors_stay_on_the_gateway_for_login_and_logout() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let vectors = table_vectors();
    assert_eq!(vectors.len(), TABLE_LEN);
    let mut b = Browser::wechat();
    let mut honoured = Vec::new();
    for (name, value) in &vectors {
        let logout = check_logout(&mut b, &gw, value).await;
        let login = check_login(&s, &gw, value).await;
        // Only a same-origin path is honoured as given; everything else falls back to "/".
        if login != "/" {
            honoured.push(name.clone());
            assert_eq!(login, *value, "{name}");
        }
        assert_eq!(logout[0], login, "{name}: login and logout agree");
    }
    assert_eq!(
        honoured,
        ["Single Slash"],
        "only /redirect is a same-origin path"
    );
    assert_eq!(
        s.stats().get("/sns/oauth2/access_token"),
        Some(&(TABLE_LEN as u64)),
        "every table vector completed a real callback"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_list_stays_on_the_gateway() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let lines = payloads();
    assert_eq!(lines.len(), PAYLOAD_LINES);
    let mut b = Browser::wechat();
    let mut logouts = 0;
    let mut logins = 0;
    for (i, line) in lines.iter().enumerate() {
        // Raw, and unescaped once as oauth2-proxy's tests do.
        let unescaped = query_unescape(line).unwrap_or_else(|| line.clone());
        for value in [line.as_str(), unescaped.as_str()] {
            logouts += check_logout(&mut b, &gw, value).await.len();
        }
        // The full login for a sample (every 8th line, both forms).
        if i % 8 == 0 {
            check_login(&s, &gw, line).await;
            check_login(&s, &gw, &unescaped).await;
            logins += 2;
        }
    }
    assert!(logouts >= 2 * PAYLOAD_LINES, "{logouts}");
    assert_eq!(logins, 2 * PAYLOAD_LINES.div_ceil(8));
    gw.stop().await;
}

#[tokio::test]
async fn return_to_rules() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let refused = [
        "https://evil.example/",
        "http:evil.example",
        "//evil.example/a",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/a\\b",
        "/\t/evil.example",
        "/a\r\nSet-Cookie: x=1",
        "/a\u{0}",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "javascript:alert(1)",
        "evil.example",
        "",
    ];
    for value in refused {
        assert_eq!(check_login(&s, &gw, value).await, "/", "{value:?}");
        let mut b = Browser::wechat();
        // Encoded: refused outright. (Pasted raw, the URL parser may first drop tabs, newlines
        // and trailing controls; whatever arrives was checked same-origin above.)
        let locs = check_logout(&mut b, &gw, value).await;
        assert_eq!(locs[0], "/", "{value:?}");
    }
    let kept = [
        ("/orders?id=5&tab=paid", "/orders?id=5&tab=paid"),
        ("/a?next=//evil.example", "/a?next=//evil.example"),
        ("/x?code=1&state=2&keep=3", "/x?keep=3"),
        (
            "/商品/详情?q=中",
            "/%E5%95%86%E5%93%81/%E8%AF%A6%E6%83%85?q=%E4%B8%AD",
        ),
        ("/spa#/route", "/spa#/route"),
    ];
    for (value, want) in kept {
        assert_eq!(check_login(&s, &gw, value).await, want, "{value:?}");
    }
    gw.stop().await;
}
