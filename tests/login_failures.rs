//! What goes wrong in a WeChat login and what the browser sees: state tampering, replay and
//! expiry, code reuse, double callbacks, the loop guard (with and without cookies), snapshot
//! users, and WeChat faults (timeouts, -1, 5xx, dropped connections, config errcodes).

#[path = "common/gw.rs"]
mod gw;
#[path = "common/sim.rs"]
mod sim;

use std::time::{Duration, Instant};

use gw::{Browser, GwConfig, Resp};
use wxgate::auth::state::{LoginState, LoopGuard};
use wxgate::simulator::{Fault, FaultCount, UntilCleared, DEFAULT_APPID};

fn exchanges(s: &wxgate::simulator::SimHandle) -> u64 {
    s.stats()
        .get("/sns/oauth2/access_token")
        .copied()
        .unwrap_or(0)
}

/// A restart: 302 to the authorize page for round `round`.
fn assert_restart(r: &Resp, origin: &str, round: u8, what: &str) -> String {
    assert_eq!(r.status, 302, "{what}: {r:?}");
    let loc = r.location().unwrap();
    assert!(
        loc.contains("/connect/oauth2/authorize?appid="),
        "{what}: {loc}"
    );
    let redirect_uri = gw::query_param(&loc, "redirect_uri").unwrap();
    let expected = if round <= 1 {
        format!("{origin}/_wxgate/callback")
    } else {
        format!("{origin}/_wxgate/callback?wxr={round}")
    };
    assert_eq!(redirect_uri, expected, "{what}");
    assert!(
        r.set_cookie("wxgate_session").is_none(),
        "{what}: no session"
    );
    loc
}

/// The loop guard's end: a 400 page with a "Try again" link, never a redirect.
fn assert_error_page(r: &Resp, return_to_enc: &str, what: &str) {
    assert_eq!(r.status, 400, "{what}: {r:?}");
    assert!(r.location().is_none(), "{what}: no Location");
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.body.contains("Try again"), "{what}: {}", r.body);
    let link = format!("href=\"/_wxgate/login?return_to={return_to_enc}\"");
    assert!(r.body.contains(&link), "{what}: {link} in {}", r.body);
    assert!(r.set_cookie("wxgate_session").is_none());
}

fn with_state(callback: &str, state: &str) -> String {
    let mut u = url::Url::parse(callback).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                state.to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

#[tokio::test]
async fn tampered_state_restarts_once_then_shows_an_error_page() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let mut b = Browser::wechat();
    let start = b.get(&gw.url("/page")).await;
    let cb = gw::authorize(&mut b, &start.location().unwrap(), "alice").await;
    let forged = with_state(&cb, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let r = b.get(&forged).await;
    assert_eq!(r.header("referrer-policy").as_deref(), Some("no-referrer"));
    let loc = assert_restart(&r, &gw.base, 2, "round 1 tampered");
    assert_eq!(exchanges(&s), 0, "a mismatched state never spends the code");
    let ls: LoginState = gw::codec(&[gw::SESSION_SECRET])
        .open("wxgate_state", gw::state_cookie(&b, &loc).unwrap())
        .unwrap();
    assert_eq!((ls.round, ls.return_to.as_str()), (2, "/page"));

    // Round 2, tampered again (a one-character change this time): the error page.
    let cb = gw::authorize(&mut b, &loc, "alice").await;
    let state = gw::query_param(&cb, "state").unwrap();
    let mut other = state.clone().into_bytes();
    other[31] = if other[31] == b'a' { b'b' } else { b'a' };
    let r = b
        .get(&with_state(&cb, &String::from_utf8(other).unwrap()))
        .await;
    assert_error_page(&r, "%2Fpage", "round 2 tampered");
    assert_eq!(exchanges(&s), 0);
    // A state of another length, and an empty one, are mismatches too.
    for bad in ["", "short"] {
        let mut b = Browser::wechat();
        let start = b.get(&gw.url("/page")).await;
        let cb = gw::authorize(&mut b, &start.location().unwrap(), "alice").await;
        assert_restart(&b.get(&with_state(&cb, bad)).await, &gw.base, 2, bad);
    }
    assert_eq!(exchanges(&s), 0);
    gw.stop().await;
}

#[tokio::test]
async fn missing_expired_or_future_state_and_missing_code_restart() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let codec = gw::codec(&[gw::SESSION_SECRET]);
    let now = gw::now();

    // No state cookie at all (the callback opened in another browser).
    let mut a = Browser::wechat();
    let start = a.get(&gw.url("/page")).await;
    let cb = gw::authorize(&mut a, &start.location().unwrap(), "alice").await;
    let mut stranger = Browser::wechat();
    assert_restart(&stranger.get(&cb).await, &gw.base, 2, "no state cookie");

    // A state cookie that is older than 10 minutes, or from the future, with the right state.
    for (what, created_at) in [("expired", now - 700), ("future", now + 3600)] {
        let mut b = Browser::wechat();
        let start = b.get(&gw.url("/page")).await;
        let cb = gw::authorize(&mut b, &start.location().unwrap(), "alice").await;
        let state = gw::query_param(&cb, "state").unwrap();
        let crafted = LoginState {
            state,
            return_to: "/page".into(),
            round: 1,
            created_at,
        };
        b.jar.insert(
            format!("wxgate_state_{}", crafted.state),
            codec.seal("wxgate_state", &crafted),
        );
        assert_restart(&b.get(&cb).await, &gw.base, 2, what);
    }
    // Control: the same crafting with a fresh timestamp is accepted (so the above failed on time).
    let mut b = Browser::wechat();
    let start = b.get(&gw.url("/page")).await;
    let cb = gw::authorize(&mut b, &start.location().unwrap(), "alice").await;
    let crafted = LoginState {
        state: gw::query_param(&cb, "state").unwrap(),
        return_to: "/crafted".into(),
        round: 1,
        created_at: now - 60,
    };
    b.jar.insert(
        format!("wxgate_state_{}", crafted.state),
        codec.seal("wxgate_state", &crafted),
    );
    let r = b.get(&cb).await;
    assert_eq!(r.status, 302);
    assert_eq!(r.location().as_deref(), Some("/crafted#"));
    assert_eq!(exchanges(&s), 1, "only the control exchanged its code");

    // A callback without code (e.g. a refused consent): restart, then the error page.
    let mut b = Browser::wechat();
    let start = b.get(&gw.url("/page")).await;
    let cb = gw::authorize(&mut b, &start.location().unwrap(), "alice").await;
    let state = gw::query_param(&cb, "state").unwrap();
    let no_code = gw.url(&format!("/_wxgate/callback?state={state}"));
    let loc = assert_restart(&b.get(&no_code).await, &gw.base, 2, "no code");
    let cb = gw::authorize(&mut b, &loc, "alice").await;
    let state = gw::query_param(&cb, "state").unwrap();
    let r = b
        .get(&gw.url(&format!("/_wxgate/callback?wxr=2&state={state}&code=")))
        .await;
    assert_error_page(&r, "%2Fpage", "empty code, round 2");
    assert_eq!(exchanges(&s), 1);
    gw.stop().await;
}

#[tokio::test]
async fn replayed_callbacks_never_log_in_another_browser() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let mut a = Browser::wechat();
    let l = gw::logged_in(&mut a, &gw, "/page?x=1", "alice").await;
    assert_eq!(exchanges(&s), 1);

    // The same browser refreshes the callback page: no second exchange, no new login. The
    // return path left with the spent state cookie, so it lands on "/".
    let r = a.get(&l.callback).await;
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(r.location().as_deref(), Some("/#"));
    assert!(r.set_cookie("wxgate_session").is_none());
    assert!(a.cookie("wxgate_session").is_some(), "the session is kept");
    assert_eq!(exchanges(&s), 1);

    // Another browser replays the whole callback URL: restarted, never alice.
    let mut eve = Browser::wechat();
    assert_restart(&eve.get(&l.callback).await, &gw.base, 2, "replay elsewhere");
    assert!(eve.cookie("wxgate_session").is_none());
    assert_eq!(exchanges(&s), 1);

    // Another browser with a state of its own presents alice's spent code: WeChat says
    // 40163, and the gateway must not hand out the session that code produced earlier.
    let mut eve = Browser::wechat();
    let start = eve.get(&gw.url("/mine")).await;
    let eve_cb = gw::authorize(&mut eve, &start.location().unwrap(), "bob").await;
    let eve_state = gw::query_param(&eve_cb, "state").unwrap();
    let stolen = gw.url(&format!(
        "/_wxgate/callback?code={}&state={eve_state}",
        l.code
    ));
    let r = eve.get(&stolen).await;
    assert!(
        eve.cookie("wxgate_session").is_none(),
        "a spent code logged another browser in as its owner: {r:?}"
    );
    assert_restart(&r, &gw.base, 2, "stolen code");
    assert_eq!(
        exchanges(&s),
        2,
        "the stolen code was tried once and refused"
    );
    let r = eve.get(&gw.url("/_wxgate/session")).await;
    assert_eq!(r.status, 401);
    gw.stop().await;
}

#[tokio::test]
async fn double_callbacks_land_in_the_session() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let alice = s.openid("alice", DEFAULT_APPID).unwrap();

    // Android: two callbacks with different codes and the same state, both carrying the
    // state cookie (the second left before the first's answer arrived).
    let mut b = Browser::wechat();
    let start = b.get(&gw.url("/page?tab=2")).await;
    let authorize = start.location().unwrap();
    let cb1 = gw::authorize(&mut b, &authorize, "alice").await;
    let cb2 = gw::authorize(&mut b, &authorize, "alice").await;
    assert_ne!(gw::query_param(&cb1, "code"), gw::query_param(&cb2, "code"));
    let jar = b.jar.clone();
    let r1 = b.get(&cb1).await;
    let mut b2 = Browser::wechat();
    b2.jar = jar.clone();
    let r2 = b2.get(&cb2).await;
    for (r, br) in [(&r1, &b), (&r2, &b2)] {
        assert_eq!(r.status, 302, "{r:?}");
        assert_eq!(r.location().as_deref(), Some("/page?tab=2#"));
        let seen = {
            let mut x = Browser::wechat();
            x.jar = br.jar.clone();
            x.get(&gw.url("/page")).await.seen()
        };
        assert_eq!(
            seen.header("x-wechat-openid").as_deref(),
            Some(alice.as_str())
        );
    }

    // The same callback delivered twice: the second exchange gets 40163 and still lands in
    // the session the first one made.
    let mut b = Browser::wechat();
    let start = b.get(&gw.url("/twice")).await;
    let cb = gw::authorize(&mut b, &start.location().unwrap(), "alice").await;
    let jar = b.jar.clone();
    let before = exchanges(&s);
    let first = b.get(&cb).await;
    assert_eq!(first.location().as_deref(), Some("/twice#"));
    let mut again = Browser::wechat();
    again.jar = jar;
    let second = again.get(&cb).await;
    assert_eq!(second.status, 302, "{second:?}");
    assert_eq!(second.location().as_deref(), Some("/twice#"));
    assert_eq!(
        exchanges(&s),
        before + 2,
        "the code was exchanged once more (40163)"
    );
    let seen = again.get(&gw.url("/x")).await.seen();
    assert_eq!(
        seen.header("x-wechat-openid").as_deref(),
        Some(alice.as_str())
    );

    // A code WeChat rejects (40029 / 40163 / 41008) for a browser that already has a session:
    // back to the page. Without a session: a restart (round 2).
    for errcode in [40029, 40163, 41008] {
        s.inject(Fault::errcode("/sns/oauth2/access_token", errcode, 1));
        let start = b.get(&gw.url("/_wxgate/login?return_to=%2Fagain")).await;
        let cb = gw::authorize(&mut b, &start.location().unwrap(), "alice").await;
        let r = b.get(&cb).await;
        assert_eq!(r.status, 302, "{errcode}: {r:?}");
        assert_eq!(r.location().as_deref(), Some("/again#"), "{errcode}");
        assert!(b.cookie("wxgate_session").is_some());

        let mut fresh = Browser::wechat();
        s.inject(Fault::errcode("/sns/oauth2/access_token", errcode, 1));
        let start = fresh.get(&gw.url("/again")).await;
        let cb = gw::authorize(&mut fresh, &start.location().unwrap(), "alice").await;
        assert_restart(&fresh.get(&cb).await, &gw.base, 2, &errcode.to_string());
    }
    gw.stop().await;
}

#[tokio::test]
async fn loop_guard_stops_after_three_failed_rounds() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    // Every exchange fails as if the code were bad.
    s.inject(Fault {
        endpoint: "/sns/oauth2/access_token".into(),
        kind: wxgate::simulator::FaultKind::Errcode {
            errcode: 40029,
            errmsg: None,
        },
        count: FaultCount::UntilCleared(UntilCleared::UntilCleared),
    });
    let mut b = Browser::wechat();
    let start = b.get(&gw.url("/page?a=1")).await;
    // Round 1 fails: restart with round 2.
    let cb = gw::authorize(&mut b, &start.location().unwrap(), "alice").await;
    let loc = assert_restart(&b.get(&cb).await, &gw.base, 2, "failure 1");
    assert!(
        b.cookie("wxgate_guard").is_some(),
        "the guard counts in a cookie"
    );
    // Round 2 fails: error page.
    let cb = gw::authorize(&mut b, &loc, "alice").await;
    assert!(cb.contains("/_wxgate/callback?wxr=2&code="), "{cb}");
    assert_error_page(&b.get(&cb).await, "%2Fpage%3Fa%3D1", "failure 2");
    // "Try again" starts a new attempt, whose failure is the third in 10 minutes.
    let start = b
        .get(&gw.url("/_wxgate/login?return_to=%2Fpage%3Fa%3D1"))
        .await;
    let loc = assert_restart(&start, &gw.base, 1, "try again");
    let cb = gw::authorize(&mut b, &loc, "alice").await;
    assert_error_page(&b.get(&cb).await, "%2Fpage%3Fa%3D1", "failure 3");
    // From now on: the error page at once, never another redirect.
    for path in ["/_wxgate/login?return_to=%2Fpage%3Fa%3D1", "/page?a=1"] {
        let r = b.get(&gw.url(path)).await;
        assert_error_page(&r, "%2Fpage%3Fa%3D1", path);
    }
    assert_eq!(exchanges(&s), 3);

    // The guard forgets after 10 minutes: a guard cookie whose window started 11 minutes ago.
    let old = LoopGuard {
        failures: 3,
        window_start: gw::now() - 660,
    };
    b.jar.insert(
        "wxgate_guard".into(),
        gw::codec(&[gw::SESSION_SECRET]).seal("wxgate_guard", &old),
    );
    assert_restart(
        &b.get(&gw.url("/page?a=1")).await,
        &gw.base,
        1,
        "window over",
    );
    // A successful login clears the guard.
    s.clear_faults();
    let mut b = Browser::wechat();
    b.jar.insert(
        "wxgate_guard".into(),
        gw::codec(&[gw::SESSION_SECRET]).seal(
            "wxgate_guard",
            &LoopGuard {
                failures: 2,
                window_start: gw::now(),
            },
        ),
    );
    let l = gw::logged_in(&mut b, &gw, "/ok", "alice").await;
    assert!(gw::is_removal(
        &l.done.set_cookie("wxgate_guard").expect("guard cleared")
    ));
    gw.stop().await;
}

#[tokio::test]
async fn loop_guard_holds_for_a_browser_without_cookies() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let mut b = Browser::cookieless();
    // Follow whatever the gateway and WeChat say; it must end on a page within a few hops.
    let mut url = gw.url("/page");
    let mut hops = 0;
    let last = loop {
        hops += 1;
        assert!(hops <= 8, "still redirecting after {hops} hops: {url}");
        let target = if url.contains("/connect/oauth2/authorize?") {
            gw::as_user(&url, "alice")
        } else {
            url.clone()
        };
        let r = b.get(&target).await;
        match r.location() {
            Some(loc) if r.status == 302 => url = loc,
            _ => break r,
        }
    };
    // page → authorize → callback (fails) → authorize (round 2) → callback (fails) → page.
    assert_eq!(hops, 5, "{last:?}");
    assert_error_page(&last, "%2F", "cookie-less");
    assert!(b.jar.is_empty());
    assert_eq!(
        exchanges(&s),
        0,
        "without the state cookie no code is spent"
    );
    assert_eq!(s.stats().get("/connect/oauth2/authorize"), Some(&2));
    gw.stop().await;
}

#[tokio::test]
async fn snapshot_user_gets_no_session() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(&s, GwConfig::default()).await;
    let mut b = Browser::wechat();
    let l = gw::login(&mut b, &gw, "/page", "carol").await;
    assert_eq!(l.done.status, 302, "{:?}", l.done);
    assert_eq!(l.done.location().as_deref(), Some("/page#"));
    assert!(
        l.done.set_cookie("wxgate_session").is_none(),
        "never a session for a virtual openid"
    );
    assert!(b.cookie("wxgate_session").is_none());
    assert!(b.cookie("wxgate_snapshot").is_some());
    // Required route: the 「使用完整服务」 notice, not the upstream, not another redirect.
    let r = b.get(&gw.url("/page")).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("使用完整服务"), "{}", r.body);
    assert!(r.location().is_none());
    assert!(!r.body.contains("\"headers\""), "not forwarded");
    // The same user's XHR to a required route: JSON an app can act on, not the HTML notice.
    let r = b
        .send(
            reqwest::Method::GET,
            &gw.url("/page"),
            &[("x-requested-with", "XMLHttpRequest")],
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("\"wechat_snapshot_mode\""), "{}", r.body);
    // Optional route: forwarded without identity, flagged as snapshot.
    let seen = b.get(&gw.url("/opt/x")).await.seen();
    assert_eq!(seen.header("x-wechat-snapshot").as_deref(), Some("1"));
    assert!(seen.header("x-wechat-openid").is_none());
    assert!(seen.header("x-wechat-jwt").is_none());
    assert!(
        seen.header("cookie").is_none(),
        "the snapshot cookie stays at the gateway"
    );
    assert_eq!(b.get(&gw.url("/_wxgate/session")).await.status, 401);
    // No identity lookups for a virtual account.
    assert_eq!(s.stats().get("/cgi-bin/user/info"), None);
    // A spoofed snapshot flag from a normal browser does not pass through.
    let mut other = Browser::wechat();
    let seen = other
        .send(
            reqwest::Method::GET,
            &gw.url("/opt/x"),
            &[("x-wechat-snapshot", "1")],
        )
        .await
        .seen();
    assert!(seen.header("x-wechat-snapshot").is_none());

    // Leaving snapshot mode: a real login replaces the snapshot marker with a session.
    let start = b.get(&gw.url("/_wxgate/login?return_to=%2Fpage")).await;
    let loc = start.location().unwrap();
    let l = gw::login_from(&mut b, start, loc, "alice").await;
    assert_eq!(l.done.location().as_deref(), Some("/page#"));
    assert!(b.cookie("wxgate_snapshot").is_none());
    let seen = b.get(&gw.url("/page")).await.seen();
    assert_eq!(
        seen.header("x-wechat-openid"),
        s.openid("alice", DEFAULT_APPID)
    );
    assert!(seen.header("x-wechat-snapshot").is_none());
    gw.stop().await;
}

/// Runs one login whose code exchange meets `fault`; returns the callback's answer and how
/// long it took.
async fn faulted_login(
    s: &wxgate::simulator::SimHandle,
    gw: &gw::Gw,
    fault: Fault,
) -> (Resp, Duration) {
    let mut b = Browser::wechat();
    let start = b.get(&gw.url("/page")).await;
    let cb = gw::authorize(&mut b, &start.location().unwrap(), "alice").await;
    s.inject(fault);
    let t = Instant::now();
    let r = tokio::time::timeout(gw::LIMIT, b.get(&cb))
        .await
        .expect("no hang");
    let took = t.elapsed();
    s.clear_faults();
    assert!(b.cookie("wxgate_session").is_none(), "{r:?}");
    (r, took)
}

fn assert_clean_error(r: &Resp, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {r:?}");
    assert!(r.location().is_none(), "{what}");
    assert!(
        r.header("content-type").unwrap().starts_with("text/html"),
        "{what}"
    );
    assert!(r.body.contains("<h1>"), "{what}: {}", r.body);
    assert!(
        !r.body.contains("errcode"),
        "{what}: no internals on the page: {}",
        r.body
    );
    assert_eq!(
        r.header("referrer-policy").as_deref(),
        Some("no-referrer"),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_faults_become_clean_error_pages() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(
        &s,
        GwConfig {
            timeout: "1s",
            ..GwConfig::default()
        },
    )
    .await;
    let ep = "/sns/oauth2/access_token";
    let cases: Vec<(&str, Fault, u16)> = vec![
        (
            "latency past the timeout",
            Fault::latency(ep, 3000, FaultCount::Calls(1)),
            503,
        ),
        ("system error -1", Fault::errcode(ep, -1, 1), 503),
        ("HTTP 502", Fault::http_status(ep, 502, 1), 503),
        ("HTTP 500", Fault::http_status(ep, 500, 1), 503),
        ("dropped connection", Fault::drop_connection(ep, 1), 503),
        ("daily quota 45009", Fault::errcode(ep, 45009, 1), 503),
        ("IP whitelist 40164", Fault::errcode(ep, 40164, 1), 502),
        ("IP whitelist 61004", Fault::errcode(ep, 61004, 1), 502),
        ("invalid appid 40013", Fault::errcode(ep, 40013, 1), 502),
        ("invalid secret 40125", Fault::errcode(ep, 40125, 1), 502),
    ];
    for (what, fault, status) in cases {
        let before = exchanges(&s);
        let (r, took) = faulted_login(&s, &gw, fault).await;
        assert_clean_error(&r, status, what);
        assert!(took < Duration::from_millis(2500), "{what}: took {took:?}");
        // A code exchange is never retried, not even after -1.
        assert_eq!(exchanges(&s), before + 1, "{what}");
    }
    // The gateway is fine afterwards.
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &gw, "/", "alice").await;

    // Faults on the unionid lookup degrade to a session without unionid, in bounded time.
    for (what, fault) in [
        (
            "token latency",
            Fault::latency("/cgi-bin/stable_token", 3000, FaultCount::Calls(1)),
        ),
        (
            "user/info 503",
            Fault::http_status("/cgi-bin/user/info", 503, 1),
        ),
    ] {
        let mut b = Browser::wechat();
        let start = b.get(&gw.url("/page")).await;
        let cb = gw::authorize(&mut b, &start.location().unwrap(), "alice").await;
        if what == "token latency" {
            // The token is cached by now: make the cache useless with a fresh gateway.
            let fresh = gw::start_gateway(
                &s,
                GwConfig {
                    timeout: "1s",
                    ..GwConfig::default()
                },
            )
            .await;
            let mut b = Browser::wechat();
            let start = b.get(&fresh.url("/page")).await;
            let cb = gw::authorize(&mut b, &start.location().unwrap(), "alice").await;
            s.inject(fault.clone());
            let t = Instant::now();
            let r = b.get(&cb).await;
            assert!(t.elapsed() < Duration::from_millis(2500), "{what}");
            assert_eq!(r.status, 302, "{what}: {r:?}");
            let j = b.get(&fresh.url("/_wxgate/session")).await.json();
            assert!(j["unionid"].is_null(), "{what}: {j}");
            assert!(j["openid"].is_string());
            s.clear_faults();
            fresh.stop().await;
            continue;
        }
        s.inject(fault);
        let r = b.get(&cb).await;
        s.clear_faults();
        assert_eq!(r.status, 302, "{what}: {r:?}");
        let j = b.get(&gw.url("/_wxgate/session")).await.json();
        assert!(j["unionid"].is_null(), "{what}: {j}");
    }
    gw.stop().await;
}

/// Logs `n` browsers in as alice at once; returns each session's JSON and the time it took.
async fn crowd_login(gw: &gw::Gw, n: usize) -> (Vec<serde_json::Value>, Duration) {
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
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
    .expect("the crowd finishes");
    let sessions = results.into_iter().map(|r| r.expect("task")).collect();
    (sessions, t.elapsed())
}

/// When the token endpoint is down, the logins waiting for the one in-flight fetch share its
/// failure (and get sessions without unionid) instead of queueing one slow fetch each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_outage_is_shared_by_the_waiting_logins() {
    let s = sim::start_default().await;
    let gw = gw::start_gateway(
        &s,
        GwConfig {
            timeout: "1s",
            ..GwConfig::default()
        },
    )
    .await;
    // Slower than the timeout, every time.
    s.inject(Fault {
        endpoint: "/cgi-bin/stable_token".into(),
        kind: wxgate::simulator::FaultKind::Latency { ms: 3000 },
        count: FaultCount::UntilCleared(UntilCleared::UntilCleared),
    });
    let (sessions, took) = crowd_login(&gw, 20).await;
    for j in &sessions {
        assert!(j["openid"].is_string() && j["unionid"].is_null(), "{j}");
    }
    let calls = s.stats().get("/cgi-bin/stable_token").copied().unwrap_or(0);
    assert!(calls <= 3, "{calls} token fetches for one outage");
    assert!(took < Duration::from_secs(8), "the crowd took {took:?}");
    s.clear_faults();

    // -1 on every call: one flight retries (3 calls), the others share its answer.
    let gw2 = gw::start_gateway(&s, GwConfig::default()).await;
    let before = s.stats().get("/cgi-bin/stable_token").copied().unwrap_or(0);
    s.inject(Fault {
        endpoint: "/cgi-bin/stable_token".into(),
        kind: wxgate::simulator::FaultKind::Latency { ms: 300 },
        count: FaultCount::UntilCleared(UntilCleared::UntilCleared),
    });
    s.inject(Fault {
        endpoint: "/cgi-bin/stable_token".into(),
        kind: wxgate::simulator::FaultKind::Errcode {
            errcode: -1,
            errmsg: None,
        },
        count: FaultCount::UntilCleared(UntilCleared::UntilCleared),
    });
    let (sessions, _) = crowd_login(&gw2, 20).await;
    assert!(sessions.iter().all(|j| j["unionid"].is_null()));
    let calls = s.stats().get("/cgi-bin/stable_token").copied().unwrap_or(0) - before;
    assert!(calls <= 6, "{calls} token fetches for one -1 outage");
    s.clear_faults();

    // Once WeChat is back, the next login fetches a token and gets the unionid.
    let mut b = Browser::wechat();
    gw::logged_in(&mut b, &gw, "/", "alice").await;
    let j = b.get(&gw.url("/_wxgate/session")).await.json();
    assert_eq!(j["unionid"], s.unionid("alice", DEFAULT_APPID).unwrap());
    gw.stop().await;
    gw2.stop().await;
}
