//! The WeChat silent login, end to end over real sockets: gateway ↔ in-process simulator ↔
//! echo upstream. The happy path, identity headers, header stripping, 401s, detection by
//! User-Agent, session/logout/verify-file endpoints, key rotation, unionid for followers and
//! the single-flight global token.

#[path = "common/gw.rs"]
mod gw;
#[path = "common/sim.rs"]
mod sim;

use std::time::Duration;

use gw::{Browser, GwConfig};
use reqwest::Method;
use wxgate::auth::session::SessionData;
use wxgate::auth::state::LoginState;
use wxgate::simulator::{Fault, DEFAULT_APPID, DEFAULT_OTHER_APPID, DEFAULT_SECRET};

fn enc(s: &str) -> String {
    gw::enc(s)
}

#[tokio::test]
async fn full_silent_login_ends_at_the_upstream_with_identity() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let origin = gw.base.clone();
    let mut b = Browser::wechat();

    // 1. An unauthenticated navigation goes to WeChat's authorize page.
    let start = b.get(&gw.url("/shop/item?id=7&code=stale&state=old")).await;
    assert_eq!(start.status, 302, "{start:?}");
    let loc = start.location().unwrap();
    let state = gw::query_param(&loc, "state").expect("state");
    assert_eq!(state.len(), 32, "{state}");
    assert!(state.bytes().all(|c| c.is_ascii_alphanumeric()), "{state}");
    let expected = format!(
        "{}/connect/oauth2/authorize?appid={DEFAULT_APPID}&redirect_uri={}&response_type=code&scope=snsapi_base&state={state}&connect_redirect=1#wechat_redirect",
        s.url(),
        enc(&format!("{origin}/_wxgate/callback")),
    );
    assert_eq!(loc, expected, "exact authorize URL, parameters in order");
    // redirect_uri is encoded exactly once.
    assert!(!loc.contains("%25"), "double encoding: {loc}");
    // One state cookie per pending login, named after its state.
    let sc = start
        .set_cookie(&format!("wxgate_state_{state}"))
        .expect("state cookie");
    assert_eq!(sc.http_only(), Some(true));
    assert_eq!(sc.same_site(), Some(cookie::SameSite::Lax));
    assert_ne!(sc.secure(), Some(true), "plain HTTP: no Secure");
    assert_eq!(sc.max_age(), Some(cookie::time::Duration::seconds(600)));
    assert_eq!(sc.path(), Some("/"));
    assert!(!sc.value().contains("shop"), "the return path is sealed");
    // The sealed state carries the return path and the same state.
    let ls: LoginState = gw::codec(&[gw::SESSION_SECRET])
        .open("wxgate_state", sc.value())
        .expect("state cookie opens");
    assert_eq!(ls.state, state);
    assert_eq!(ls.return_to, "/shop/item?id=7&code=stale&state=old");
    assert_eq!(ls.round, 1);

    // 2. WeChat calls back.
    let callback = gw::authorize(&mut b, &loc, "alice").await;
    assert!(
        callback.starts_with(&format!("{origin}/_wxgate/callback?code=")),
        "{callback}"
    );
    // 3. The callback sets the session and goes back, without code and state.
    let done = b.get(&callback).await;
    assert_eq!(done.status, 302, "{done:?}");
    assert_eq!(done.location().as_deref(), Some("/shop/item?id=7#"));
    assert_eq!(
        done.header("referrer-policy").as_deref(),
        Some("no-referrer")
    );
    let session = done.set_cookie("wxgate_session").expect("session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.same_site(), Some(cookie::SameSite::Lax));
    assert!(gw::is_removal(
        &done
            .set_cookie(&format!("wxgate_state_{state}"))
            .expect("state cleared")
    ));
    // The session cookie holds the identity, sealed; no WeChat token inside.
    let data: SessionData = gw::codec(&[gw::SESSION_SECRET])
        .open("wxgate_session", session.value())
        .expect("session opens");
    let alice = s.openid("alice", DEFAULT_APPID).unwrap();
    let alice_union = s.unionid("alice", DEFAULT_APPID).unwrap();
    assert_eq!(data.openid, alice);
    assert_eq!(data.unionid.as_deref(), Some(alice_union.as_str()));
    assert_eq!(data.appid, DEFAULT_APPID);
    assert_eq!(data.scope, "snsapi_base");
    assert!(data.expires_at > data.issued_at && data.expires_at - data.issued_at == 3600);
    assert!(!session.value().contains(&alice), "the openid is encrypted");

    // 4. The page itself, with identity headers, gateway cookies stripped.
    b.jar.insert("theme".into(), "dark".into());
    let page = b.get(&gw.url("/shop/item?id=7")).await;
    let seen = page.seen();
    assert_eq!(seen.uri(), "/shop/item?id=7");
    assert_eq!(
        seen.header("x-wechat-openid").as_deref(),
        Some(alice.as_str())
    );
    assert_eq!(
        seen.header("x-wechat-unionid").as_deref(),
        Some(alice_union.as_str())
    );
    let jwt = seen.header("x-wechat-jwt").expect("JWT header");
    assert_eq!(jwt.split('.').count(), 3, "{jwt}");
    assert_eq!(seen.header("cookie").as_deref(), Some("theme=dark"));
    assert!(seen.header("x-wechat-snapshot").is_none());
    // The AppSecret goes to api_base only: not to the browser, not upstream.
    for (what, text) in [
        ("authorize URL", loc.as_str()),
        ("callback URL", callback.as_str()),
        ("upstream request", page.body.as_str()),
    ] {
        assert!(
            !text.contains(DEFAULT_SECRET),
            "the AppSecret leaks into the {what}"
        );
    }

    // The exchange happened exactly once; user/info gave the unionid.
    let stats = s.stats();
    assert_eq!(stats.get("/sns/oauth2/access_token"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("/cgi-bin/user/info"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("/cgi-bin/stable_token"), Some(&1), "{stats:?}");
    gw.stop().await;
}

#[tokio::test]
async fn head_navigation_and_explicit_login_endpoint_redirect() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let mut b = Browser::wechat();
    let head = b.send(Method::HEAD, &gw.url("/x"), &[]).await;
    assert_eq!(head.status, 302);
    assert!(head
        .location()
        .unwrap()
        .contains("/connect/oauth2/authorize?appid="));

    let start = b
        .get(&gw.url("/_wxgate/login?return_to=%2Fdeep%2Fpage%3Fa%3D1"))
        .await;
    assert_eq!(start.status, 302, "{start:?}");
    let loc = start.location().unwrap();
    let l = gw::login_from(&mut b, start, loc, "alice").await;
    assert_eq!(l.done.location().as_deref(), Some("/deep/page?a=1#"));

    // Without return_to: back to "/".
    let mut b2 = Browser::wechat();
    let start = b2.get(&gw.url("/_wxgate/login")).await;
    let loc = start.location().unwrap();
    let l = gw::login_from(&mut b2, start, loc, "bob").await;
    assert_eq!(l.done.location().as_deref(), Some("/#"));
    gw.stop().await;
}

#[tokio::test]
async fn unionid_for_a_follower_and_none_for_a_non_follower() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;

    let mut alice = Browser::wechat();
    gw::logged_in(&mut alice, &gw, "/", "alice").await;
    let info = alice.get(&gw.url("/_wxgate/session")).await;
    assert_eq!(info.status, 200, "{info:?}");
    let j = info.json();
    assert_eq!(j["openid"], s.openid("alice", DEFAULT_APPID).unwrap());
    assert_eq!(j["unionid"], s.unionid("alice", DEFAULT_APPID).unwrap());
    assert_eq!(j["appid"], DEFAULT_APPID);
    assert_eq!(j["scope"], "snsapi_base");

    let mut bob = Browser::wechat();
    gw::logged_in(&mut bob, &gw, "/", "bob").await;
    let j = bob.get(&gw.url("/_wxgate/session")).await.json();
    assert_eq!(j["openid"], s.openid("bob", DEFAULT_APPID).unwrap());
    assert!(j["unionid"].is_null(), "bob follows nothing: {j}");
    let seen = bob.get(&gw.url("/")).await.seen();
    assert_eq!(
        seen.header("x-wechat-openid"),
        s.openid("bob", DEFAULT_APPID)
    );
    assert!(seen.header("x-wechat-unionid").is_none(), "{seen:?}");
    // One global token served both lookups.
    let stats = s.stats();
    assert_eq!(stats.get("/cgi-bin/user/info"), Some(&2), "{stats:?}");
    assert_eq!(stats.get("/cgi-bin/stable_token"), Some(&1), "{stats:?}");
    gw.stop().await;

    // unionid = "off": no lookup at all, no unionid even for a follower.
    let s = sim::start_default().await;
    let gw = gw::start_gateway(
        &s,
        GwConfig {
            unionid: "off",
            ..GwConfig::default()
        },
    )
    .await;
    let mut alice = Browser::wechat();
    gw::logged_in(&mut alice, &gw, "/", "alice").await;
    let seen = alice.get(&gw.url("/")).await.seen();
    assert!(seen.header("x-wechat-openid").is_some());
    assert!(seen.header("x-wechat-unionid").is_none());
    let stats = s.stats();
    assert_eq!(stats.get("/cgi-bin/user/info"), None, "{stats:?}");
    assert_eq!(stats.get("/cgi-bin/stable_token"), None, "{stats:?}");
    gw.stop().await;
}

/// The spellings a client might use to smuggle identity: any case, `_` for `-`, the JWT header.
const SPOOFS: [(&str, &str); 10] = [
    ("X-WeChat-OpenId", "forged-1"),
    ("x-wechat-openid", "forged-2"),
    ("X-WECHAT-OPENID", "forged-3"),
    ("X_WeChat_OpenId", "forged-4"),
    ("x_wechat_unionid", "forged-5"),
    ("X-WeChat_UnionId", "forged-6"),
    ("X-WeChat-JWT", "forged.jwt.7"),
    ("x_wechat_jwt", "forged.jwt.8"),
    ("X-Wechat-Snapshot", "0"),
    ("X_WECHAT-Role", "admin"),
];

fn spoofed_request(path: &str, host: &str, cookie: Option<&str>) -> String {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {}\r\nAccept: text/html",
        gw::WECHAT_UA
    );
    for (k, v) in SPOOFS {
        head.push_str(&format!("\r\n{k}: {v}"));
    }
    if let Some(c) = cookie {
        head.push_str(&format!("\r\nCookie: {c}"));
    }
    head
}

fn assert_no_forgery(seen: &gw::Seen, what: &str) {
    for (k, v) in seen.headers() {
        assert!(
            !(v.contains("forged") || k.contains("role") && v == "admin"),
            "{what}: client-sent {k}: {v} reached the upstream"
        );
    }
}

#[tokio::test]
async fn spoofed_identity_headers_are_stripped_in_every_spelling() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let host = gw.addr().to_string();

    // Unauthenticated, on auth = "off" and "optional": stripped, nothing added.
    for path in ["/off/page", "/opt/page"] {
        let (status, _, body) =
            gw::raw_request(gw.addr(), &spoofed_request(path, &host, None)).await;
        assert_eq!(status, 200, "{path}: {body}");
        let seen = gw::Seen::parse(&body);
        assert_no_forgery(&seen, path);
        assert!(
            seen.wechat_headers().is_empty(),
            "{path}: {:?}",
            seen.wechat_headers()
        );
    }
    // Unauthenticated on a required route: no forwarding at all.
    let (status, _, _) = gw::raw_request(gw.addr(), &spoofed_request("/page", &host, None)).await;
    assert_eq!(status, 302);

    // Authenticated: only the gateway's own identity arrives, once each.
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &gw, "/", "bob").await;
    let cookie = format!(
        "wxgate_session={}; other=1",
        b.cookie("wxgate_session").unwrap()
    );
    for path in ["/page", "/opt/page", "/api/thing"] {
        let (status, _, body) =
            gw::raw_request(gw.addr(), &spoofed_request(path, &host, Some(&cookie))).await;
        assert_eq!(status, 200, "{path}: {body}");
        let seen = gw::Seen::parse(&body);
        assert_no_forgery(&seen, path);
        let mut names: Vec<String> = seen.wechat_headers().into_iter().map(|(k, _)| k).collect();
        names.sort();
        assert_eq!(
            names,
            ["x-wechat-jwt", "x-wechat-openid"],
            "{path}: bob has no unionid"
        );
        assert_eq!(
            seen.header("x-wechat-openid"),
            s.openid("bob", DEFAULT_APPID)
        );
        assert_eq!(seen.header("cookie").as_deref(), Some("other=1"), "{path}");
    }
    // auth = "off" with a session: still nothing added.
    let (_, _, body) =
        gw::raw_request(gw.addr(), &spoofed_request("/off/x", &host, Some(&cookie))).await;
    let seen = gw::Seen::parse(&body);
    assert!(
        seen.wechat_headers().is_empty(),
        "{:?}",
        seen.wechat_headers()
    );
    assert_eq!(seen.header("cookie").as_deref(), Some("other=1"));
    gw.stop().await;
}

#[tokio::test]
async fn authorization_as_jwt_header_replaces_the_clients_own() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(
        &s,
        GwConfig {
            jwt_header: "Authorization",
            ..GwConfig::default()
        },
    )
    .await;
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &gw, "/", "alice").await;
    let r = b
        .send(
            Method::GET,
            &gw.url("/x"),
            &[("authorization", "Bearer forged")],
        )
        .await;
    let seen = r.seen();
    let auth = seen.header("authorization").expect("Authorization");
    assert!(auth.starts_with("Bearer ey"), "{auth}");
    assert_ne!(auth, "Bearer forged");
    // Unauthenticated on auth = "off": the client's Authorization is stripped too.
    let mut anon = Browser::wechat();
    let seen = anon
        .send(
            Method::GET,
            &gw.url("/off/x"),
            &[("authorization", "Bearer forged")],
        )
        .await
        .seen();
    assert!(seen.header("authorization").is_none(), "{seen:?}");
    gw.stop().await;
}

#[tokio::test]
async fn apis_xhr_json_and_posts_get_401_with_a_login_url() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let mut b = Browser::wechat();
    type Case<'a> = (Method, &'a str, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (Method::GET, "/api/orders?page=2", vec![]),
        (
            Method::GET,
            "/orders?page=2",
            vec![("x-requested-with", "XMLHttpRequest")],
        ),
        (
            Method::GET,
            "/orders?page=2",
            vec![("accept", "application/json")],
        ),
        (Method::POST, "/orders?page=2", vec![]),
        (Method::DELETE, "/orders?page=2", vec![]),
        (Method::GET, "/logo.png", vec![("accept", "image/png")]),
        // A favicon fetch: Accept has */*, but fetch metadata says it is no navigation.
        (
            Method::GET,
            "/favicon.ico",
            vec![
                ("accept", "image/avif,image/webp,*/*;q=0.8"),
                ("sec-fetch-mode", "no-cors"),
                ("sec-fetch-dest", "image"),
            ],
        ),
    ];
    for (method, path, extra) in cases {
        let r = b.send(method.clone(), &gw.url(path), &extra).await;
        assert_eq!(r.status, 401, "{method} {path} {extra:?}: {r:?}");
        assert!(r.location().is_none());
        let j = r.json();
        assert_eq!(j["error"], "wechat_login_required");
        assert_eq!(
            j["login_url"],
            format!("/_wxgate/login?return_to={}", enc(path)),
            "{method} {path}"
        );
        assert!(b.jar.is_empty(), "no cookie for a 401");
    }
    // A real navigation with fetch metadata still starts the login (through the page that
    // keeps the URL fragment, see tests/security_login.rs).
    let r = b
        .send(
            Method::GET,
            &gw.url("/page"),
            &[
                ("accept", "text/html,*/*;q=0.8"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "document"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains("href=\"/_wxgate/login?return_to=%2Fpage\""),
        "{r:?}"
    );
    // The login_url starts the flow and comes back to the API path.
    let mut b = Browser::wechat();
    let r = b
        .send(Method::POST, &gw.url("/api/orders?page=2"), &[])
        .await;
    let login_url = r.json()["login_url"].as_str().unwrap().to_string();
    let start = b.get(&gw.url(&login_url)).await;
    assert_eq!(start.status, 302);
    let loc = start.location().unwrap();
    let l = gw::login_from(&mut b, start, loc, "alice").await;
    assert_eq!(l.done.location().as_deref(), Some("/api/orders?page=2#"));
    // With the session the API answers.
    let ok = b
        .send(
            Method::POST,
            &gw.url("/api/orders?page=2"),
            &[("x-requested-with", "XMLHttpRequest")],
        )
        .await;
    let seen = ok.seen();
    assert_eq!(seen.method(), "POST");
    assert_eq!(
        seen.header("x-wechat-openid"),
        s.openid("alice", DEFAULT_APPID)
    );
    gw.stop().await;
}

#[tokio::test]
async fn user_agent_picks_the_path_and_never_authenticates() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;

    // A desktop browser on a deny route: the "open in WeChat" page, no redirect, no cookie.
    let mut desk = Browser::new(gw::DESKTOP_UA);
    let r = desk.get(&gw.url("/page")).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("请在微信客户端打开链接"));
    assert!(r.location().is_none() && desk.jar.is_empty());
    // WeCom is not WeChat unless allowed.
    let mut wecom = Browser::new(gw::WECOM_UA);
    assert_eq!(wecom.get(&gw.url("/page")).await.status, 403);
    // non_wechat = "pass": forwarded without identity; a WeChat UA there still logs in.
    let seen = desk.get(&gw.url("/pass/x")).await.seen();
    assert!(seen.wechat_headers().is_empty());
    let mut phone = Browser::wechat();
    assert_eq!(phone.get(&gw.url("/pass/x")).await.status, 302);
    // A WeChat UA alone is no identity: optional routes forward anonymously.
    let seen = phone.get(&gw.url("/opt/x")).await.seen();
    assert!(seen.wechat_headers().is_empty(), "{seen:?}");
    // A session is what authenticates: the same session from a desktop UA is honoured.
    gw::logged_in(&mut phone, &gw, "/", "alice").await;
    desk.jar.insert(
        "wxgate_session".into(),
        phone.cookie("wxgate_session").unwrap().into(),
    );
    let seen = desk.get(&gw.url("/page")).await.seen();
    assert_eq!(
        seen.header("x-wechat-openid"),
        s.openid("alice", DEFAULT_APPID)
    );
    gw.stop().await;

    let gw = gw::start_gateway(
        &s,
        GwConfig {
            allow_wecom: true,
            ..GwConfig::default()
        },
    )
    .await;
    let mut wecom = Browser::new(gw::WECOM_UA);
    let r = wecom.get(&gw.url("/page")).await;
    assert_eq!(r.status, 302, "allow_wecom: WeCom runs the login");
    assert!(r.location().unwrap().contains("/connect/oauth2/authorize?"));
    gw.stop().await;
}

#[tokio::test]
async fn session_endpoint_logout_jwks_and_verify_files() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(
        &s,
        GwConfig {
            wechat_extra: r#"verify_files = { "MP_verify_Zx81Test.txt" = "Zx81Test" }"#.into(),
            ..GwConfig::default()
        },
    )
    .await;
    let mut b = Browser::wechat();
    let r = b.get(&gw.url("/_wxgate/session")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "wechat_login_required");

    gw::logged_in(&mut b, &gw, "/", "alice").await;
    let j = b.get(&gw.url("/_wxgate/session")).await.json();
    assert_eq!(j["openid"], s.openid("alice", DEFAULT_APPID).unwrap());
    let (iat, exp) = (
        j["issued_at"].as_u64().unwrap(),
        j["expires_at"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 3600);
    assert!(iat.abs_diff(gw::now()) < 60);

    let out = b.get(&gw.url("/_wxgate/logout?return_to=%2Fbye")).await;
    assert_eq!(out.status, 302);
    assert_eq!(out.location().as_deref(), Some("/bye"));
    assert!(gw::is_removal(
        &out.set_cookie("wxgate_session").expect("cleared")
    ));
    assert!(b.cookie("wxgate_session").is_none());
    assert_eq!(b.get(&gw.url("/_wxgate/session")).await.status, 401);
    assert_eq!(
        b.get(&gw.url("/page")).await.status,
        302,
        "logged out: login again"
    );

    let jwks = b.get(&gw.url("/_wxgate/jwks.json")).await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.json()["keys"].as_array().map(Vec::len), Some(1));

    // Served at the root to anyone (WeChat's checker is no WeChat browser).
    let mut desktop = Browser::new(gw::DESKTOP_UA);
    let v = desktop.get(&gw.url("/MP_verify_Zx81Test.txt")).await;
    assert_eq!(v.status, 200);
    assert_eq!(v.body, "Zx81Test");
    assert!(v.header("content-type").unwrap().starts_with("text/plain"));
    // Other names at the root are ordinary (authenticated) paths.
    assert_eq!(b.get(&gw.url("/MP_verify_other.txt")).await.status, 302);
    gw.stop().await;
}

fn sealed_session(secret: &str, data: &SessionData) -> String {
    gw::codec(&[secret]).seal("wxgate_session", data)
}

fn session_for(openid: &str, appid: &str, issued_at: u64, expires_at: u64) -> SessionData {
    SessionData {
        openid: openid.into(),
        unionid: None,
        appid: appid.into(),
        scope: "snsapi_base".into(),
        issued_at,
        expires_at,
    }
}

#[tokio::test]
async fn session_key_rotation_expiry_and_forgeries() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(
        &s,
        GwConfig {
            secrets: vec![gw::SESSION_SECRET.into(), gw::OLD_SESSION_SECRET.into()],
            ..GwConfig::default()
        },
    )
    .await;
    let now = gw::now();
    let alice = s.openid("alice", DEFAULT_APPID).unwrap();

    let visit = |cookie: String| {
        let url = gw.url("/page");
        async move {
            let mut b = Browser::wechat();
            b.jar.insert("wxgate_session".into(), cookie);
            b.get(&url).await
        }
    };

    // Sealed under the old key: still accepted.
    let old = sealed_session(
        gw::OLD_SESSION_SECRET,
        &session_for(&alice, DEFAULT_APPID, now - 10, now + 600),
    );
    let seen = visit(old).await.seen();
    assert_eq!(
        seen.header("x-wechat-openid").as_deref(),
        Some(alice.as_str())
    );
    // Sealed under the current key: accepted.
    let cur = sealed_session(
        gw::SESSION_SECRET,
        &session_for(&alice, DEFAULT_APPID, now - 10, now + 600),
    );
    assert!(visit(cur).await.seen().header("x-wechat-openid").is_some());

    // Refused, each sent to log in again (302 to WeChat, never upstream):
    let unknown_key = sealed_session(
        "a-key-this-gateway-has-never-heard-of-0123456789",
        &session_for(&alice, DEFAULT_APPID, now - 10, now + 600),
    );
    let expired = sealed_session(
        gw::SESSION_SECRET,
        &session_for(&alice, DEFAULT_APPID, now - 7200, now - 1),
    );
    let future = sealed_session(
        gw::SESSION_SECRET,
        &session_for(&alice, DEFAULT_APPID, now + 3600, now + 7200),
    );
    let other_app = sealed_session(
        gw::SESSION_SECRET,
        &session_for(&alice, DEFAULT_OTHER_APPID, now - 10, now + 600),
    );
    // A state cookie replayed as a session (same key, other purpose).
    let wrong_purpose = gw::codec(&[gw::SESSION_SECRET]).seal(
        "wxgate_state",
        &session_for(&alice, DEFAULT_APPID, now - 10, now + 600),
    );
    let mut tampered = sealed_session(
        gw::SESSION_SECRET,
        &session_for(&alice, DEFAULT_APPID, now - 10, now + 600),
    );
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for (name, cookie) in [
        ("unknown key", unknown_key),
        ("expired", expired),
        ("issued in the future", future),
        ("another appid", other_app),
        ("state cookie as session", wrong_purpose),
        ("tampered", tampered),
        ("garbage", "not-a-sealed-value".to_string()),
    ] {
        let r = visit(cookie).await;
        assert_eq!(r.status, 302, "{name}: {r:?}");
        assert!(
            r.location().unwrap().contains("/connect/oauth2/authorize?"),
            "{name}"
        );
    }
    // New sessions are sealed with the first (current) key only.
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &gw, "/", "alice").await;
    let v = b.cookie("wxgate_session").unwrap();
    assert!(gw::codec(&[gw::SESSION_SECRET])
        .open::<SessionData>("wxgate_session", v)
        .is_some());
    assert!(gw::codec(&[gw::OLD_SESSION_SECRET])
        .open::<SessionData>("wxgate_session", v)
        .is_none());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_logins_fetch_one_global_token() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(
        &s,
        GwConfig {
            timeout: "10s",
            ..GwConfig::default()
        },
    )
    .await;
    // Slow the token endpoint down so that every login is waiting while the fetch runs.
    s.inject(Fault::latency(
        "/cgi-bin/stable_token",
        300,
        wxgate::simulator::FaultCount::Calls(1),
    ));
    let union = s.unionid("alice", DEFAULT_APPID).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let base = gw.base.clone();
        tasks.push(tokio::spawn(async move {
            let mut b = Browser::wechat();
            let start = b.get(&format!("{base}/p")).await;
            assert_eq!(start.status, 302);
            let loc = start.location().unwrap();
            let l = gw::login_from(&mut b, start, loc, "alice").await;
            assert_eq!(l.done.status, 302, "{:?}", l.done);
            b.get(&format!("{base}/_wxgate/session")).await.json()
        }));
    }
    let results = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(tasks),
    )
    .await
    .expect("100 logins finish in time");
    for r in results {
        let j = r.expect("login task");
        assert_eq!(j["unionid"], union, "{j}");
    }
    let stats = s.stats();
    assert_eq!(
        stats.get("/cgi-bin/stable_token"),
        Some(&1),
        "single flight: {stats:?}"
    );
    assert_eq!(
        stats.get("/sns/oauth2/access_token"),
        Some(&100),
        "{stats:?}"
    );
    assert_eq!(stats.get("/cgi-bin/user/info"), Some(&100), "{stats:?}");
    assert_eq!(stats.get("/cgi-bin/token"), None, "{stats:?}");
    gw.stop().await;
}

#[tokio::test]
async fn classic_token_refetched_once_after_40001() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(
        &s,
        GwConfig {
            token_endpoint: "classic",
            ..GwConfig::default()
        },
    )
    .await;
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &gw, "/", "alice").await;
    assert_eq!(s.stats().get("/cgi-bin/token"), Some(&1));

    // WeChat says the cached token is not the latest: one re-fetch, one retry.
    s.inject(Fault::errcode("/cgi-bin/user/info", 40001, 1));
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &gw, "/", "alice").await;
    let j = b.get(&gw.url("/_wxgate/session")).await.json();
    assert_eq!(
        j["unionid"],
        s.unionid("alice", DEFAULT_APPID).unwrap(),
        "{j}"
    );
    let stats = s.stats();
    assert_eq!(stats.get("/cgi-bin/token"), Some(&2), "{stats:?}");
    assert_eq!(stats.get("/cgi-bin/user/info"), Some(&3), "{stats:?}");
    assert_eq!(stats.get("/cgi-bin/stable_token"), None, "{stats:?}");

    // The next login uses the new token without fetching again.
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &gw, "/", "alice").await;
    assert_eq!(s.stats().get("/cgi-bin/token"), Some(&2));

    // A 40001 that persists: one re-fetch only, then the session comes without unionid.
    s.inject(Fault::errcode("/cgi-bin/user/info", 40001, 2));
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &gw, "/", "alice").await;
    let j = b.get(&gw.url("/_wxgate/session")).await.json();
    assert!(j["unionid"].is_null(), "{j}");
    assert_eq!(s.stats().get("/cgi-bin/token"), Some(&3));
    gw.stop().await;
}

#[tokio::test]
async fn https_public_url_uses_secure_host_cookies() {
    let s = sim::start_default().await;
    let public = "https://h5.example.test";
    let gw = gw::start_gateway(
        &s,
        GwConfig {
            public_url: Some(public.into()),
            ..GwConfig::default()
        },
    )
    .await;
    let mut b = Browser::wechat();
    let start = b.get(&gw.url("/shop")).await;
    assert_eq!(start.status, 302);
    let loc = start.location().unwrap();
    assert_eq!(
        gw::query_param(&loc, "redirect_uri").as_deref(),
        Some("https://h5.example.test/_wxgate/callback"),
        "the callback is on public_url, not on the address the request came to"
    );
    let state = gw::query_param(&loc, "state").unwrap();
    let sc = start
        .set_cookie(&format!("__Host-wxgate_state_{state}"))
        .expect("__Host- state cookie");
    assert_eq!(sc.secure(), Some(true));
    assert_eq!(sc.http_only(), Some(true));
    assert_eq!(sc.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(sc.path(), Some("/"));
    assert!(sc.domain().is_none());
    assert!(start.set_cookie(&format!("wxgate_state_{state}")).is_none());

    // WeChat would call back on the public host; deliver that callback to this gateway.
    let code = sim::code_for(&s, DEFAULT_APPID, "snsapi_base", "alice").await;
    let done = b
        .get(&gw.url(&format!("/_wxgate/callback?code={code}&state={state}")))
        .await;
    assert_eq!(done.status, 302, "{done:?}");
    assert_eq!(done.location().as_deref(), Some("/shop#"));
    let session = done
        .set_cookie("__Host-wxgate_session")
        .expect("__Host- session");
    assert_eq!(session.secure(), Some(true));
    assert!(done.set_cookie("wxgate_session").is_none());

    let seen = b.get(&gw.url("/shop")).await.seen();
    assert_eq!(
        seen.header("x-wechat-openid"),
        s.openid("alice", DEFAULT_APPID)
    );
    assert!(
        seen.header("cookie").is_none(),
        "__Host- cookies stay at the gateway"
    );
    // On HTTPS only the __Host- name counts: the same value under the plain name is no session.
    let mut plain = Browser::wechat();
    plain
        .jar
        .insert("wxgate_session".into(), session.value().to_string());
    assert_eq!(plain.get(&gw.url("/shop")).await.status, 302);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_global_token_is_refetched_once_for_a_crowd() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(
        &s,
        GwConfig {
            timeout: "10s",
            ..GwConfig::default()
        },
    )
    .await;
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &gw, "/", "alice").await;
    assert_eq!(s.stats().get("/cgi-bin/stable_token"), Some(&1));
    // Past the token's 7200 s on WeChat's clock: user/info answers 42001 for the cached token.
    s.advance_clock(Duration::from_secs(7300));
    let union = s.unionid("alice", DEFAULT_APPID).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let base = gw.base.clone();
        tasks.push(tokio::spawn(async move {
            let mut b = Browser::wechat();
            let start = b.get(&format!("{base}/p")).await;
            let loc = start.location().unwrap();
            let l = gw::login_from(&mut b, start, loc, "alice").await;
            assert_eq!(l.done.status, 302, "{:?}", l.done);
            b.get(&format!("{base}/_wxgate/session")).await.json()
        }));
    }
    let results = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(tasks),
    )
    .await
    .expect("logins finish in time");
    for r in results {
        assert_eq!(r.expect("task")["unionid"], union);
    }
    let stats = s.stats();
    assert_eq!(
        stats.get("/cgi-bin/stable_token"),
        Some(&2),
        "one re-fetch for the whole crowd: {stats:?}"
    );
    gw.stop().await;
}
