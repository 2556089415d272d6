//! The api.weixin.qq.com part of the simulator over HTTP: code exchange rules, token fields,
//! refresh, userinfo, sns/auth, the global token (overlap, expiry, quota), stable_token,
//! user/info and the IP whitelist.

#[path = "common/sim.rs"]
mod sim;

use serde_json::json;
use sim::*;
use std::time::Duration;
use wxgate::simulator::{
    SimConfig, DEFAULT_APPID, DEFAULT_OTHER_APPID, DEFAULT_OTHER_SECRET, DEFAULT_SECRET,
    DEFAULT_WEBSITE_APPID, DEFAULT_WEBSITE_SECRET,
};

#[tokio::test]
async fn exchange_fields_are_exactly_wechats() {
    let s = start_default().await;
    let base = [
        "access_token",
        "expires_in",
        "openid",
        "refresh_token",
        "scope",
    ];
    // snsapi_base: never a unionid, even for a bound account.
    let code = code_for(&s, DEFAULT_APPID, "snsapi_base", "alice").await;
    let t = exchange(&s, DEFAULT_APPID, DEFAULT_SECRET, &code).await;
    assert_eq!(keys(&t), base);
    assert_eq!(t["expires_in"], 7200);
    assert_eq!(t["scope"], "snsapi_base");
    assert_eq!(
        t["openid"].as_str(),
        s.openid("alice", DEFAULT_APPID).as_deref()
    );
    // snsapi_userinfo on a bound account: unionid.
    let code = code_for(&s, DEFAULT_APPID, "snsapi_userinfo", "alice").await;
    let t = exchange(&s, DEFAULT_APPID, DEFAULT_SECRET, &code).await;
    let mut with_union = base.to_vec();
    with_union.push("unionid");
    with_union.sort();
    assert_eq!(keys(&t), with_union);
    assert_eq!(
        t["unionid"].as_str(),
        s.unionid("alice", DEFAULT_APPID).as_deref()
    );
    // Snapshot user: is_snapshotuser = 1 and nothing else extra under snsapi_base.
    let code = code_for(&s, DEFAULT_APPID, "snsapi_base", "carol").await;
    let t = exchange(&s, DEFAULT_APPID, DEFAULT_SECRET, &code).await;
    let mut snap = base.to_vec();
    snap.push("is_snapshotuser");
    snap.sort();
    assert_eq!(keys(&t), snap);
    assert_eq!(t["is_snapshotuser"], 1);
}

#[tokio::test]
async fn unbound_account_has_no_unionid_and_openids_differ_per_app() {
    let s = start_default().await;
    // alice does not follow the other account; carol skips consent (snapshot) — use a consented path:
    // bob is asked for consent, so go through the follower-free snapshot user instead.
    let code = code_for(&s, DEFAULT_OTHER_APPID, "snsapi_userinfo", "carol").await;
    let t = exchange(&s, DEFAULT_OTHER_APPID, DEFAULT_OTHER_SECRET, &code).await;
    assert!(t.get("unionid").is_none(), "unbound account: {t}");
    assert_eq!(t["is_snapshotuser"], 1);
    let a1 = s.openid("alice", DEFAULT_APPID).unwrap();
    let a2 = s.openid("alice", DEFAULT_OTHER_APPID).unwrap();
    assert_ne!(a1, a2);
    assert_eq!(a1.len(), 28);
    assert!(a1.starts_with('o'));
    assert_eq!(
        s.unionid("alice", DEFAULT_APPID),
        s.unionid("alice", DEFAULT_WEBSITE_APPID)
    );
    assert_ne!(
        s.unionid("alice", DEFAULT_APPID),
        s.unionid("bob", DEFAULT_APPID)
    );
    assert_eq!(s.unionid("alice", DEFAULT_OTHER_APPID), None);
    // Stable across restarts.
    let s2 = start_default().await;
    assert_eq!(s2.openid("alice", DEFAULT_APPID), Some(a1));
}

#[tokio::test]
async fn codes_are_single_use_expire_and_belong_to_one_appid() {
    let s = start_default().await;
    let code = code_for(&s, DEFAULT_APPID, "snsapi_base", "bob").await;
    assert_eq!(
        errcode(&exchange(&s, DEFAULT_APPID, DEFAULT_SECRET, &code).await),
        0
    );
    let again = exchange(&s, DEFAULT_APPID, DEFAULT_SECRET, &code).await;
    assert_eq!(errcode(&again), 40163);
    assert!(again["errmsg"]
        .as_str()
        .unwrap()
        .starts_with("code been used"));
    // Another appid's code.
    let code = code_for(&s, DEFAULT_APPID, "snsapi_base", "bob").await;
    assert_eq!(
        errcode(&exchange(&s, DEFAULT_OTHER_APPID, DEFAULT_OTHER_SECRET, &code).await),
        40029
    );
    // ...and that failed attempt did not use it up.
    assert_eq!(
        errcode(&exchange(&s, DEFAULT_APPID, DEFAULT_SECRET, &code).await),
        0
    );
    // Unknown code.
    assert_eq!(
        errcode(&exchange(&s, DEFAULT_APPID, DEFAULT_SECRET, "nope").await),
        40029
    );
    // Expiry: fine at 4m59s, dead at 5m.
    let c1 = code_for(&s, DEFAULT_APPID, "snsapi_base", "bob").await;
    let c2 = code_for(&s, DEFAULT_APPID, "snsapi_base", "bob").await;
    s.advance_clock(Duration::from_secs(299));
    assert_eq!(
        errcode(&exchange(&s, DEFAULT_APPID, DEFAULT_SECRET, &c1).await),
        0
    );
    s.advance_clock(Duration::from_secs(2));
    let dead = exchange(&s, DEFAULT_APPID, DEFAULT_SECRET, &c2).await;
    assert_eq!(errcode(&dead), 40029);
    assert!(dead["errmsg"].as_str().unwrap().starts_with("invalid code"));
}

#[tokio::test]
async fn exchange_parameter_errors() {
    let s = start_default().await;
    let code = code_for(&s, DEFAULT_APPID, "snsapi_base", "bob").await;
    let u = s.url();
    let cases = [
        (format!("{u}/sns/oauth2/access_token?appid={DEFAULT_APPID}&secret=wrong&code={code}&grant_type=authorization_code"), 40125),
        (format!("{u}/sns/oauth2/access_token?appid={DEFAULT_APPID}&secret={DEFAULT_SECRET}&grant_type=authorization_code"), 41008),
        (format!("{u}/sns/oauth2/access_token?appid={DEFAULT_APPID}&secret={DEFAULT_SECRET}&code=&grant_type=authorization_code"), 41008),
        (format!("{u}/sns/oauth2/access_token?appid={DEFAULT_APPID}&secret={DEFAULT_SECRET}&code={code}&grant_type=client_credential"), 40002),
        (format!("{u}/sns/oauth2/access_token?appid=wxnope&secret={DEFAULT_SECRET}&code={code}&grant_type=authorization_code"), 40013),
        (format!("{u}/sns/oauth2/access_token?secret={DEFAULT_SECRET}&code={code}&grant_type=authorization_code"), 41002),
        (format!("{u}/sns/oauth2/access_token?appid={DEFAULT_APPID}&code={code}&grant_type=authorization_code"), 41004),
    ];
    for (url, want) in cases {
        let v = get_json(&url).await;
        assert_eq!(errcode(&v), want, "{url}: {v}");
        assert!(v["errmsg"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(keys(&v), ["errcode", "errmsg"]);
    }
    // None of those consumed the code.
    assert_eq!(
        errcode(&exchange(&s, DEFAULT_APPID, DEFAULT_SECRET, &code).await),
        0
    );
}

#[tokio::test]
async fn sns_answers_are_text_plain_and_cgi_bin_json() {
    let s = start_default().await;
    let r = reqwest::get(format!("{}/sns/oauth2/access_token?appid=x", s.url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain");
    let r = reqwest::get(format!("{}/sns/auth?access_token=x&openid=y", s.url()))
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/plain");
    let r = reqwest::get(format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid=x&secret=y",
        s.url()
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
}

#[tokio::test]
async fn userinfo_needs_userinfo_scope_and_auth_checks_tokens() {
    let s = start_default().await;
    let u = s.url();
    let t = exchange(
        &s,
        DEFAULT_APPID,
        DEFAULT_SECRET,
        &code_for(&s, DEFAULT_APPID, "snsapi_base", "alice").await,
    )
    .await;
    let (at, oid) = (
        t["access_token"].as_str().unwrap(),
        t["openid"].as_str().unwrap(),
    );
    let v = get_json(&format!(
        "{u}/sns/userinfo?access_token={at}&openid={oid}&lang=zh_CN"
    ))
    .await;
    assert_eq!(errcode(&v), 48001);
    // sns/auth accepts a base token.
    let v = get_json(&format!("{u}/sns/auth?access_token={at}&openid={oid}")).await;
    assert_eq!(v, json!({"errcode":0,"errmsg":"ok"}));
    let bob = s.openid("bob", DEFAULT_APPID).unwrap();
    assert_eq!(
        errcode(&get_json(&format!("{u}/sns/auth?access_token={at}&openid={bob}")).await),
        40003
    );
    assert_eq!(
        errcode(&get_json(&format!("{u}/sns/auth?access_token=bogus&openid={oid}")).await),
        40001
    );

    let t = exchange(
        &s,
        DEFAULT_APPID,
        DEFAULT_SECRET,
        &code_for(&s, DEFAULT_APPID, "snsapi_userinfo", "alice").await,
    )
    .await;
    let at = t["access_token"].as_str().unwrap();
    let v = get_json(&format!(
        "{u}/sns/userinfo?access_token={at}&openid={oid}&lang=zh_CN"
    ))
    .await;
    assert_eq!(
        keys(&v),
        [
            "city",
            "country",
            "headimgurl",
            "nickname",
            "openid",
            "privilege",
            "province",
            "sex",
            "unionid"
        ]
    );
    assert_eq!(v["nickname"], "Alice");
    assert_eq!(v["openid"], oid);
    assert_eq!(
        v["unionid"].as_str(),
        s.unionid("alice", DEFAULT_APPID).as_deref()
    );
    assert!(v["headimgurl"].as_str().unwrap().ends_with("/132"));
    // Expired after 7200 s: 42001 on both.
    s.advance_clock(Duration::from_secs(7200));
    assert_eq!(
        errcode(&get_json(&format!("{u}/sns/userinfo?access_token={at}&openid={oid}")).await),
        42001
    );
    assert_eq!(
        errcode(&get_json(&format!("{u}/sns/auth?access_token={at}&openid={oid}")).await),
        42001
    );
}

#[tokio::test]
async fn refresh_tokens_renew_and_last_thirty_days() {
    let s = start_default().await;
    let u = s.url();
    let t = exchange(
        &s,
        DEFAULT_APPID,
        DEFAULT_SECRET,
        &code_for(&s, DEFAULT_APPID, "snsapi_userinfo", "alice").await,
    )
    .await;
    let rt = t["refresh_token"].as_str().unwrap().to_string();
    let refresh = |appid: &'static str, rt: String| {
        let u = u.clone();
        async move {
            get_json(&format!("{u}/sns/oauth2/refresh_token?appid={appid}&grant_type=refresh_token&refresh_token={rt}")).await
        }
    };
    s.advance_clock(Duration::from_secs(7300));
    let r = refresh(DEFAULT_APPID, rt.clone()).await;
    assert_eq!(
        keys(&r),
        [
            "access_token",
            "expires_in",
            "openid",
            "refresh_token",
            "scope"
        ]
    );
    assert_eq!(r["scope"], "snsapi_userinfo");
    assert_eq!(r["openid"], t["openid"]);
    let at = r["access_token"].as_str().unwrap();
    let oid = r["openid"].as_str().unwrap();
    assert_eq!(
        errcode(&get_json(&format!("{u}/sns/userinfo?access_token={at}&openid={oid}")).await),
        0
    );
    assert_eq!(
        errcode(&refresh(DEFAULT_OTHER_APPID, rt.clone()).await),
        40030
    );
    assert_eq!(
        errcode(&refresh(DEFAULT_APPID, "bogus".into()).await),
        40030
    );
    assert_eq!(
        errcode(
            &get_json(&format!(
                "{u}/sns/oauth2/refresh_token?appid={DEFAULT_APPID}&grant_type=refresh_token"
            ))
            .await
        ),
        41003
    );
    assert_eq!(errcode(&get_json(&format!("{u}/sns/oauth2/refresh_token?appid={DEFAULT_APPID}&grant_type=x&refresh_token={rt}")).await), 40002);
    // 30 days after issue it is dead.
    s.advance_clock(Duration::from_secs(30 * 86400 - 7300 - 10));
    assert_eq!(errcode(&refresh(DEFAULT_APPID, rt.clone()).await), 0);
    s.advance_clock(Duration::from_secs(20));
    assert_eq!(errcode(&refresh(DEFAULT_APPID, rt).await), 42002);
}

#[tokio::test]
async fn global_token_overlap_expiry_and_errors() {
    let s = start_default().await;
    let alice = s.openid("alice", DEFAULT_APPID).unwrap();
    let t1 = cgi_token(&s, DEFAULT_APPID, DEFAULT_SECRET).await;
    assert_eq!(keys(&t1), ["access_token", "expires_in"]);
    assert_eq!(t1["expires_in"], 7200);
    let t1 = t1["access_token"].as_str().unwrap().to_string();
    assert_eq!(errcode(&user_info(&s, &t1, &alice).await), 0);
    s.advance_clock(Duration::from_secs(60));
    let t2 = cgi_token(&s, DEFAULT_APPID, DEFAULT_SECRET).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(t1, t2);
    // Both work for 5 minutes...
    s.advance_clock(Duration::from_secs(299));
    assert_eq!(errcode(&user_info(&s, &t1, &alice).await), 0);
    // ...then the old one is "not latest".
    s.advance_clock(Duration::from_secs(1));
    let stale = user_info(&s, &t1, &alice).await;
    assert_eq!(errcode(&stale), 40001);
    assert!(stale["errmsg"].as_str().unwrap().contains("not latest"));
    assert_eq!(errcode(&user_info(&s, &t2, &alice).await), 0);
    assert_eq!(errcode(&user_info(&s, "unknown", &alice).await), 40001);
    // Natural expiry: 42001.
    s.advance_clock(Duration::from_secs(7200));
    assert_eq!(errcode(&user_info(&s, &t2, &alice).await), 42001);
    assert_eq!(errcode(&cgi_token(&s, DEFAULT_APPID, "wrong").await), 40125);
    assert_eq!(
        errcode(&cgi_token(&s, "wxnope", DEFAULT_SECRET).await),
        40013
    );
    let v = get_json(&format!("{}/cgi-bin/token?grant_type=authorization_code&appid={DEFAULT_APPID}&secret={DEFAULT_SECRET}", s.url())).await;
    assert_eq!(errcode(&v), 40002);
    // Website apps have no global token.
    assert_eq!(
        errcode(&cgi_token(&s, DEFAULT_WEBSITE_APPID, DEFAULT_WEBSITE_SECRET).await),
        48001
    );
}

#[tokio::test]
async fn token_daily_quota_and_reset_on_the_next_day() {
    let mut cfg = SimConfig::default();
    cfg.apps[0].token_daily_quota = 3;
    let s = start_with(cfg).await;
    for _ in 0..3 {
        assert_eq!(
            errcode(&cgi_token(&s, DEFAULT_APPID, DEFAULT_SECRET).await),
            0
        );
    }
    let over = cgi_token(&s, DEFAULT_APPID, DEFAULT_SECRET).await;
    assert_eq!(errcode(&over), 45009);
    // stable_token has its own quota.
    assert_eq!(
        errcode(&stable_token(&s, DEFAULT_APPID, DEFAULT_SECRET, false).await),
        0
    );
    s.advance_clock(Duration::from_secs(86_400));
    assert_eq!(
        errcode(&cgi_token(&s, DEFAULT_APPID, DEFAULT_SECRET).await),
        0
    );
}

#[tokio::test]
async fn default_daily_quota_is_2000() {
    let s = start_default().await;
    let c = reqwest::Client::new();
    let url = format!("{}/cgi-bin/token?grant_type=client_credential&appid={DEFAULT_APPID}&secret={DEFAULT_SECRET}", s.url());
    for i in 0..2000 {
        let v: serde_json::Value = c.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(errcode(&v), 0, "call {i}");
    }
    let v: serde_json::Value = c.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(errcode(&v), 45009);
}

#[tokio::test]
async fn stable_token_is_stable_until_force_refresh() {
    let s = start_default().await;
    let alice = s.openid("alice", DEFAULT_APPID).unwrap();
    let a = stable_token(&s, DEFAULT_APPID, DEFAULT_SECRET, false).await;
    assert_eq!(keys(&a), ["access_token", "expires_in"]);
    let a = a["access_token"].as_str().unwrap().to_string();
    s.advance_clock(Duration::from_secs(600));
    let b = stable_token(&s, DEFAULT_APPID, DEFAULT_SECRET, false).await;
    assert_eq!(b["access_token"].as_str(), Some(a.as_str()));
    // 7200 s less the 600 s advanced; a real second may tick over between the two calls.
    let left = b["expires_in"].as_u64().unwrap();
    assert!((6599..=6600).contains(&left), "expires_in {left}");
    // Isolated from cgi-bin/token: fetching one does not invalidate the other.
    let n = cgi_token(&s, DEFAULT_APPID, DEFAULT_SECRET).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    s.advance_clock(Duration::from_secs(400));
    assert_eq!(errcode(&user_info(&s, &a, &alice).await), 0);
    assert_eq!(
        stable_token(&s, DEFAULT_APPID, DEFAULT_SECRET, false).await["access_token"].as_str(),
        Some(a.as_str())
    );
    // force_refresh: a new token, the old one dead at once.
    let f = stable_token(&s, DEFAULT_APPID, DEFAULT_SECRET, true).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(f, a);
    assert_eq!(errcode(&user_info(&s, &a, &alice).await), 40001);
    assert_eq!(errcode(&user_info(&s, &f, &alice).await), 0);
    assert_eq!(errcode(&user_info(&s, &n, &alice).await), 0);
    // Force refreshes at least 30 s apart.
    assert_eq!(
        errcode(&stable_token(&s, DEFAULT_APPID, DEFAULT_SECRET, true).await),
        45011
    );
    // Renewed 5 minutes before expiry: a new token, the old one still valid until then.
    s.advance_clock(Duration::from_secs(7200 - 299));
    let g = stable_token(&s, DEFAULT_APPID, DEFAULT_SECRET, false).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(g, f);
    assert_eq!(errcode(&user_info(&s, &f, &alice).await), 0);
    // Errors.
    assert_eq!(
        errcode(&stable_token(&s, DEFAULT_APPID, "wrong", false).await),
        40125
    );
    let r = reqwest::get(format!("{}/cgi-bin/stable_token", s.url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(errcode(&r.json().await.unwrap()), 43002);
    let r = reqwest::Client::new()
        .post(format!("{}/cgi-bin/stable_token", s.url()))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(errcode(&r.json().await.unwrap()), 47001);
}

#[tokio::test]
async fn stable_token_force_refresh_daily_limit() {
    let s = start_default().await;
    for i in 0..20 {
        assert_eq!(
            errcode(&stable_token(&s, DEFAULT_APPID, DEFAULT_SECRET, true).await),
            0,
            "force {i}"
        );
        s.advance_clock(Duration::from_secs(31));
    }
    assert_eq!(
        errcode(&stable_token(&s, DEFAULT_APPID, DEFAULT_SECRET, true).await),
        45009
    );
    assert_eq!(
        errcode(&stable_token(&s, DEFAULT_APPID, DEFAULT_SECRET, false).await),
        0
    );
}

#[tokio::test]
async fn user_info_followers_and_non_followers() {
    let s = start_default().await;
    let t = cgi_token(&s, DEFAULT_APPID, DEFAULT_SECRET).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let alice = s.openid("alice", DEFAULT_APPID).unwrap();
    let v = user_info(&s, &t, &alice).await;
    assert_eq!(v["subscribe"], 1);
    assert_eq!(v["openid"], alice.as_str());
    assert_eq!(
        v["unionid"].as_str(),
        s.unionid("alice", DEFAULT_APPID).as_deref()
    );
    assert!(
        v.get("nickname").is_none(),
        "nickname no longer returned since 2021-12-27"
    );
    let bob = s.openid("bob", DEFAULT_APPID).unwrap();
    assert_eq!(user_info(&s, &t, &bob).await, json!({"subscribe": 0}));
    // An openid of another account is invalid here.
    let other = s.openid("alice", DEFAULT_OTHER_APPID).unwrap();
    assert_eq!(errcode(&user_info(&s, &t, &other).await), 40003);
    // Follower of an unbound account: no unionid. Nobody follows the second account, so add one.
    let mut cfg = SimConfig::default();
    cfg.users[0].follows.push(DEFAULT_OTHER_APPID.into());
    let s2 = start_with(cfg).await;
    let t2 = cgi_token(&s2, DEFAULT_OTHER_APPID, DEFAULT_OTHER_SECRET).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let v = user_info(&s2, &t2, &s2.openid("alice", DEFAULT_OTHER_APPID).unwrap()).await;
    assert_eq!(v["subscribe"], 1);
    assert!(v.get("unionid").is_none());
    assert_eq!(
        errcode(&get_json(&format!("{}/cgi-bin/user/info?openid={alice}", s.url())).await),
        41001
    );
}

#[tokio::test]
async fn ip_whitelist_gives_40164() {
    let mut cfg = SimConfig::default();
    cfg.apps[0].ip_whitelist = vec!["10.1.2.3".parse().unwrap()];
    cfg.apps[2].ip_whitelist = vec!["127.0.0.1".parse().unwrap()];
    let s = start_with(cfg).await;
    let v = cgi_token(&s, DEFAULT_APPID, DEFAULT_SECRET).await;
    assert_eq!(errcode(&v), 40164);
    assert!(v["errmsg"].as_str().unwrap().contains("127.0.0.1"));
    assert_eq!(
        errcode(&stable_token(&s, DEFAULT_APPID, DEFAULT_SECRET, false).await),
        40164
    );
    assert_eq!(
        errcode(&cgi_token(&s, DEFAULT_OTHER_APPID, DEFAULT_OTHER_SECRET).await),
        0
    );
    // The whitelist does not apply to the sns exchange.
    let code = code_for(&s, DEFAULT_APPID, "snsapi_base", "bob").await;
    assert_eq!(
        errcode(&exchange(&s, DEFAULT_APPID, DEFAULT_SECRET, &code).await),
        0
    );
}

#[tokio::test]
async fn concurrent_stable_token_calls_share_one_token() {
    let s = std::sync::Arc::new(start_default().await);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            stable_token(&s, DEFAULT_APPID, DEFAULT_SECRET, false).await["access_token"]
                .as_str()
                .unwrap()
                .to_string()
        }));
    }
    let mut tokens = std::collections::BTreeSet::new();
    for t in tasks {
        tokens.insert(t.await.unwrap());
    }
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(s.stats().get("/cgi-bin/stable_token"), Some(&50));
}
