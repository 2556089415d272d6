//! The open.weixin.qq.com part of the simulator over HTTP: authorize validation and error
//! pages, the non-WeChat browser rule, snsapi_base/snsapi_userinfo, who is in the phone,
//! and website QR login.

#[path = "common/sim.rs"]
mod sim;

use sim::*;
use std::time::Duration;
use wxgate::simulator::{
    AppConfig, AppKind, SimConfig, UserConfig, DEFAULT_APPID, DEFAULT_OTHER_APPID, DEFAULT_SECRET,
    DEFAULT_WEBSITE_APPID, DEFAULT_WEBSITE_SECRET,
};

/// Fetches `url` with `client`; asserts WeChat's error page with `num` and no callback.
async fn assert_error_page(client: &reqwest::Client, url: &str, num: Option<i64>, text: &str) {
    let resp = client.get(url).send().await.expect("authorize answers");
    assert_eq!(resp.status(), 200, "{url}");
    assert!(
        location(&resp).is_none(),
        "an error page never calls back: {url}"
    );
    let body = resp.text().await.expect("body");
    if let Some(n) = num {
        assert!(
            body.contains(&format!("错误码: {n}")),
            "expected {n} for {url}: {body}"
        );
    } else {
        assert!(
            !body.contains("错误码"),
            "no number expected for {url}: {body}"
        );
    }
    assert!(body.contains(text), "expected {text:?} for {url}: {body}");
}

#[tokio::test]
async fn snsapi_base_redirects_at_once_with_code_and_state() {
    let s = start_default().await;
    let url = authorize_url(
        &s.url(),
        DEFAULT_APPID,
        CALLBACK,
        "snsapi_base",
        "abcXYZ123",
    );
    let resp = phone().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let loc = location(&resp).unwrap();
    assert!(loc.starts_with("http://localhost:8080/cb?code="), "{loc}");
    assert_eq!(query_param(&loc, "state").as_deref(), Some("abcXYZ123"));
    let code = query_param(&loc, "code").unwrap();
    assert_eq!(code.len(), 32);
    // Codes are random: a second authorization gives another one.
    let again = location(&phone().get(&url).send().await.unwrap()).unwrap();
    assert_ne!(query_param(&again, "code").unwrap(), code);
}

#[tokio::test]
async fn desktop_browser_sees_open_in_wechat_and_no_callback() {
    let s = start_default().await;
    let url = authorize_url(&s.url(), DEFAULT_APPID, CALLBACK, "snsapi_base", "st");
    let resp = desktop().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(location(&resp).is_none());
    let body = resp.text().await.unwrap();
    assert!(body.contains("请在微信客户端打开链接"));
    assert!(
        body.contains("simulator only"),
        "escape hatch must be labelled"
    );
    // Even an invalid request shows the same page: WeChat checks the browser first.
    let bad = authorize_url(
        &s.url(),
        DEFAULT_APPID,
        "http://evil.com/cb",
        "snsapi_base",
        "st",
    );
    let body = desktop()
        .get(&bad)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("请在微信客户端打开链接"));
}

#[tokio::test]
async fn escape_hatch_cookie_makes_a_desktop_browser_count_as_wechat() {
    let s = start_default().await;
    let path = format!(
        "/connect/oauth2/authorize?appid={DEFAULT_APPID}&redirect_uri={}&response_type=code&scope=snsapi_base&state=st",
        enc(CALLBACK)
    );
    let hatch = desktop()
        .get(format!("{}/_sim/wechat?return={}", s.url(), enc(&path)))
        .send()
        .await
        .unwrap();
    assert_eq!(hatch.status(), 302);
    assert_eq!(location(&hatch).as_deref(), Some(path.as_str()));
    let cookie = hatch
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("sim_wechat=1"), "{cookie}");
    let resp = desktop()
        .get(format!("{}{path}", s.url()))
        .header("Cookie", "sim_wechat=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert!(location(&resp).unwrap().starts_with(CALLBACK));
}

#[tokio::test]
async fn validation_errors_show_wechat_numbers_and_never_call_back() {
    let s = start_default().await;
    let b = s.url();
    let p = phone();
    let cb = enc(CALLBACK);
    let a = DEFAULT_APPID;
    let cases: Vec<(String, Option<i64>, &str)> = vec![
        (authorize_url(&b, a, "http://evil.example/cb", "snsapi_base", "st"), Some(10003), "redirect_uri域名与后台配置不一致"),
        (authorize_url(&b, a, "http://sub.localhost/cb", "snsapi_base", "st"), Some(10003), "redirect_uri"),
        // Double-encoded redirect_uri fails as WeChat's does.
        (format!("{b}/connect/oauth2/authorize?appid={a}&redirect_uri={}&response_type=code&scope=snsapi_base&state=st", enc(&enc(CALLBACK))), Some(10003), "redirect_uri"),
        (authorize_url(&b, a, CALLBACK, "snsapi_login", "st"), Some(10005), "scope"),
        (authorize_url(&b, a, CALLBACK, "snsapi_base,snsapi_userinfo", "st"), Some(10005), "scope"),
        (authorize_url(&b, a, CALLBACK, "", "st"), Some(10010), "scope不能为空"),
        (format!("{b}/connect/oauth2/authorize?appid={a}&redirect_uri=&response_type=code&scope=snsapi_base&state=st"), Some(10011), "redirect_uri不能为空"),
        (authorize_url(&b, "", CALLBACK, "snsapi_base", "st"), Some(10012), "appid不能为空"),
        (authorize_url(&b, a, CALLBACK, "snsapi_base", ""), Some(10013), "state不能为空"),
        (format!("{b}/connect/oauth2/authorize?appid={a}&redirect_uri={cb}&response_type=code&scope=snsapi_base"), Some(10013), "state不能为空"),
        (authorize_url(&b, DEFAULT_WEBSITE_APPID, CALLBACK, "snsapi_base", "st"), Some(10016), "开放平台"),
        (authorize_url(&b, "wx0000000000000000", CALLBACK, "snsapi_base", "st"), Some(40013), "appid"),
        (authorize_url(&b, a, CALLBACK, "snsapi_base", &"a".repeat(129)), None, "state参数过长"),
        (authorize_url(&b, a, CALLBACK, "snsapi_base", "a-b"), None, "state参数错误"),
        // A fragment that was wrongly percent-encoded reaches the server inside state.
        (format!("{b}/connect/oauth2/authorize?appid={a}&redirect_uri={cb}&response_type=code&scope=snsapi_base&state=st%23wechat_redirect"), None, "state参数错误"),
        (format!("{b}/connect/oauth2/authorize?appid={a}&redirect_uri={cb}&response_type=token&scope=snsapi_base&state=st"), None, "response_type"),
        (format!("{b}/connect/oauth2/authorize?redirect_uri={cb}&appid={a}&response_type=code&scope=snsapi_base&state=st"), None, "order"),
    ];
    for (url, num, text) in &cases {
        assert_error_page(&p, url, *num, text).await;
    }
    // 128 alphanumeric bytes is still fine.
    let ok = authorize_url(&b, a, CALLBACK, "snsapi_base", &"a".repeat(128));
    assert_eq!(p.get(&ok).send().await.unwrap().status(), 302);
    // Callback hosts are compared without ports; 127.0.0.1 is the other default domain.
    let ip = authorize_url(&b, a, "http://127.0.0.1:3000/x", "snsapi_base", "st");
    assert_eq!(p.get(&ip).send().await.unwrap().status(), 302);
    // The redirect_uri must reach the simulator fully encoded; extras after state are fine.
    let extra = format!(
        "{}&connect_redirect=1",
        authorize_url(&b, a, CALLBACK, "snsapi_base", "st").replace("#wechat_redirect", "")
    );
    assert_eq!(p.get(&extra).send().await.unwrap().status(), 302);
}

#[tokio::test]
async fn uncertified_account_and_strict_ports() {
    let cfg = SimConfig {
        apps: vec![
            AppConfig {
                appid: "wxaaaaaaaaaaaaaaaa".into(),
                secret: "s1".into(),
                kind: AppKind::OfficialAccount,
                callback_domains: vec!["localhost".into()],
                open_platform: None,
                ip_whitelist: vec![],
                certified: false,
                strict_ports: false,
                token_daily_quota: 2000,
            },
            AppConfig {
                appid: "wxbbbbbbbbbbbbbbbb".into(),
                secret: "s2".into(),
                kind: AppKind::OfficialAccount,
                callback_domains: vec!["localhost".into()],
                open_platform: None,
                ip_whitelist: vec![],
                certified: true,
                strict_ports: true,
                token_daily_quota: 2000,
            },
        ],
        users: vec![UserConfig {
            name: "u".into(),
            follows: vec![],
            snapshot: false,
            nickname: None,
        }],
    };
    let s = start_with(cfg).await;
    let p = phone();
    assert_error_page(
        &p,
        &authorize_url(
            &s.url(),
            "wxaaaaaaaaaaaaaaaa",
            CALLBACK,
            "snsapi_base",
            "st",
        ),
        Some(10005),
        "scope",
    )
    .await;
    assert_error_page(
        &p,
        &authorize_url(
            &s.url(),
            "wxbbbbbbbbbbbbbbbb",
            CALLBACK,
            "snsapi_base",
            "st",
        ),
        Some(10003),
        "redirect_uri",
    )
    .await;
    let no_port = authorize_url(
        &s.url(),
        "wxbbbbbbbbbbbbbbbb",
        "http://localhost/cb",
        "snsapi_base",
        "st",
    );
    assert_eq!(p.get(&no_port).send().await.unwrap().status(), 302);
}

#[tokio::test]
async fn redirect_uri_fragment_gets_code_inserted_before_it() {
    let s = start_default().await;
    let url = authorize_url(
        &s.url(),
        DEFAULT_APPID,
        "http://localhost/app?x=1#/home",
        "snsapi_base",
        "st",
    );
    let loc = location(&phone().get(&url).send().await.unwrap()).unwrap();
    assert!(loc.starts_with("http://localhost/app?x=1&code="), "{loc}");
    assert!(loc.ends_with("&state=st#/home"), "{loc}");
}

async fn consent_form(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 200);
    assert!(location(&resp).is_none(), "consent page, not a callback");
    let body = resp.text().await.unwrap();
    assert!(body.contains("获得你的公开信息"), "{body}");
    // The hidden `q` field carries the original request (HTML-escaped).
    let start = body.find("name=\"q\" value=\"").unwrap() + "name=\"q\" value=\"".len();
    let end = start + body[start..].find('"').unwrap();
    body[start..end].replace("&amp;", "&")
}

async fn submit(
    s: &wxgate::simulator::SimHandle,
    q: &str,
    user: &str,
    decision: &str,
) -> reqwest::Response {
    phone()
        .post(format!("{}/_sim/consent", s.url()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("q={}&user={user}&decision={decision}", enc(q)))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn snsapi_userinfo_consent_deny_allow_then_silent() {
    let s = start_default().await;
    let url = format!(
        "{}&sim_user=bob",
        authorize_url(&s.url(), DEFAULT_APPID, CALLBACK, "snsapi_userinfo", "st")
            .replace("#wechat_redirect", "")
    );
    let q = consent_form(phone().get(&url).send().await.unwrap()).await;
    // Deny: no callback at all.
    let deny = submit(&s, &q, "bob", "deny").await;
    assert_eq!(deny.status(), 200);
    assert!(location(&deny).is_none());
    assert!(deny.text().await.unwrap().contains("拒绝"));
    // Still not consented: the page comes back.
    let q = consent_form(phone().get(&url).send().await.unwrap()).await;
    let allow = submit(&s, &q, "bob", "allow").await;
    assert_eq!(allow.status(), 302);
    let loc = location(&allow).unwrap();
    let code = query_param(&loc, "code").unwrap();
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st"));
    let tok = exchange(&s, DEFAULT_APPID, DEFAULT_SECRET, &code).await;
    assert_eq!(tok["scope"], "snsapi_userinfo");
    assert_eq!(
        tok["openid"].as_str(),
        s.openid("bob", DEFAULT_APPID).as_deref()
    );
    // Consented once: silent now; forcePopup=true asks again.
    assert_eq!(phone().get(&url).send().await.unwrap().status(), 302);
    consent_form(
        phone()
            .get(format!("{url}&forcePopup=true"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    // Consent is per account.
    let other = url.replace(DEFAULT_APPID, DEFAULT_OTHER_APPID);
    consent_form(phone().get(&other).send().await.unwrap()).await;
}

#[tokio::test]
async fn snsapi_userinfo_is_silent_for_followers_and_snapshot_users() {
    let s = start_default().await;
    let code = code_for(&s, DEFAULT_APPID, "snsapi_userinfo", "alice").await;
    assert_eq!(
        exchange(&s, DEFAULT_APPID, DEFAULT_SECRET, &code).await["scope"],
        "snsapi_userinfo"
    );
    code_for(&s, DEFAULT_APPID, "snsapi_userinfo", "carol").await;
    // alice does not follow the other account: consent there.
    let url = format!(
        "{}&sim_user=alice",
        authorize_url(
            &s.url(),
            DEFAULT_OTHER_APPID,
            CALLBACK,
            "snsapi_userinfo",
            "st"
        )
        .replace("#wechat_redirect", "")
    );
    consent_form(phone().get(&url).send().await.unwrap()).await;
}

#[tokio::test]
async fn who_is_in_the_phone_query_cookie_default_and_picker() {
    let s = start_default().await;
    let base = authorize_url(&s.url(), DEFAULT_APPID, CALLBACK, "snsapi_base", "st")
        .replace("#wechat_redirect", "");
    let openid_of = |loc: String| {
        let s = &s;
        async move {
            let code = query_param(&loc, "code").unwrap();
            exchange(s, DEFAULT_APPID, DEFAULT_SECRET, &code).await["openid"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    // Default: the world's first user.
    let loc = location(&phone().get(&base).send().await.unwrap()).unwrap();
    assert_eq!(Some(openid_of(loc).await), s.openid("alice", DEFAULT_APPID));
    // Cookie.
    let loc = location(
        &phone()
            .get(&base)
            .header("Cookie", "sim_user=bob")
            .send()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(Some(openid_of(loc).await), s.openid("bob", DEFAULT_APPID));
    // Query parameter wins over the cookie.
    let loc = location(
        &phone()
            .get(format!("{base}&sim_user=carol"))
            .header("Cookie", "sim_user=bob")
            .send()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(Some(openid_of(loc).await), s.openid("carol", DEFAULT_APPID));
    // Unknown user: a simulator page, no callback.
    let resp = phone()
        .get(format!("{base}&sim_user=mallory"))
        .send()
        .await
        .unwrap();
    assert!(location(&resp).is_none());
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("Unknown simulated user"));
    // Echoed names are escaped.
    let resp = phone()
        .get(format!("{base}&sim_user=%3Cscript%3E"))
        .send()
        .await
        .unwrap();
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("&lt;script&gt;") && !body.contains("<script>"),
        "{body}"
    );
    // Picker lists users (escaped return URL) and sets the cookie.
    let page = phone()
        .get(format!("{}/_sim/users?return={}", s.url(), enc("/x?<b>")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for u in ["alice", "bob", "carol"] {
        assert!(page.contains(&format!("user={u}")), "{page}");
    }
    assert!(!page.contains("<b>"));
    let sel = phone()
        .get(format!(
            "{}/_sim/users/select?user=bob&return={}",
            s.url(),
            enc("/back")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(sel.status(), 302);
    assert_eq!(location(&sel).as_deref(), Some("/back"));
    let c = sel
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(c.starts_with("sim_user=bob"), "{c}");
    let bad = phone()
        .get(format!("{}/_sim/users/select?user=nobody", s.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn qrconnect_website_app_desktop_confirm_and_ten_minute_codes() {
    let s = start_default().await;
    let b = s.url();
    let d = desktop();
    // Official-account appid, or a scope other than snsapi_login: WeChat's scope error.
    assert_error_page(
        &d,
        &qrconnect_url(&b, DEFAULT_APPID, CALLBACK, "snsapi_login", "st"),
        Some(10005),
        "Scope",
    )
    .await;
    assert_error_page(
        &d,
        &qrconnect_url(&b, DEFAULT_WEBSITE_APPID, CALLBACK, "snsapi_base", "st"),
        Some(10005),
        "scope",
    )
    .await;
    assert_error_page(
        &d,
        &qrconnect_url(
            &b,
            DEFAULT_WEBSITE_APPID,
            "http://evil.example/",
            "snsapi_login",
            "st",
        ),
        Some(10003),
        "redirect_uri",
    )
    .await;
    let url = qrconnect_url(&b, DEFAULT_WEBSITE_APPID, CALLBACK, "snsapi_login", "qr1");
    let resp = d
        .get(&url)
        .header("Cookie", "sim_user=bob")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "desktop browsers are fine on qrconnect");
    let body = resp.text().await.unwrap();
    assert!(body.contains("模拟手机确认登录"));
    assert!(body.contains("id=\"sim-user\">bob<"));
    let start = body.find("name=\"q\" value=\"").unwrap() + 16;
    let q = body[start..start + body[start..].find('"').unwrap()].replace("&amp;", "&");
    let post = |decision: &'static str| {
        let q = q.clone();
        let b = b.clone();
        async move {
            desktop()
                .post(format!("{b}/_sim/qrconfirm"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(format!("q={}&user=bob&decision={decision}", enc(&q)))
                .send()
                .await
                .unwrap()
        }
    };
    let cancel = post("deny").await;
    assert!(location(&cancel).is_none());
    let ok = post("allow").await;
    assert_eq!(ok.status(), 302);
    let loc = location(&ok).unwrap();
    assert_eq!(query_param(&loc, "state").as_deref(), Some("qr1"));
    let code1 = query_param(&loc, "code").unwrap();
    let code2 = query_param(&location(&post("allow").await).unwrap(), "code").unwrap();
    // 9 minutes: a qrconnect code is still good (an oauth2 code would not be).
    s.advance_clock(Duration::from_secs(9 * 60));
    let tok = exchange(&s, DEFAULT_WEBSITE_APPID, DEFAULT_WEBSITE_SECRET, &code1).await;
    assert_eq!(tok["scope"], "snsapi_login");
    assert_eq!(
        tok["openid"].as_str(),
        s.openid("bob", DEFAULT_WEBSITE_APPID).as_deref()
    );
    // Same Open Platform account: the same unionid as on the official account.
    assert_eq!(
        tok["unionid"].as_str(),
        s.unionid("bob", DEFAULT_APPID).as_deref()
    );
    s.advance_clock(Duration::from_secs(2 * 60));
    assert_eq!(
        errcode(&exchange(&s, DEFAULT_WEBSITE_APPID, DEFAULT_WEBSITE_SECRET, &code2).await),
        40029
    );
}
