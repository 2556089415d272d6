//! The api.weixin.qq.com part: code exchange, refresh, userinfo and token check (`sns/*`), and
//! the global credential and follower lookup (`cgi-bin/*`). Every answer is HTTP 200 JSON;
//! errors are `{"errcode":N,"errmsg":…}` with WeChat's codes and messages.
// Helpers answer early with the finished WeChat response; it is built once per request,
// so its size on the error path does not matter.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;

use serde_json::{json, Map, Value};

use super::http::{self, api_error, ApiFamily, Params, Resp};
use super::state::{
    GlobalToken, RefreshEntry, SnsToken, State, OVERLAP_MS, REFRESH_TTL_MS, TOKEN_TTL_MS,
};
use super::world::{AppConfig, AppKind};
use super::Sim;

const SNS: ApiFamily = ApiFamily::Sns;
const CGI: ApiFamily = ApiFamily::CgiBin;

/// stable_token limits (reference §4).
const STABLE_DAILY_QUOTA: u64 = 500_000;
const FORCE_REFRESH_DAILY: u64 = 20;
const FORCE_REFRESH_GAP_MS: u64 = 30_000;

/// The gray default avatar WeChat shows for virtual (snapshot) accounts.
const SNAPSHOT_AVATAR: &str = "https://thirdwx.qlogo.cn/mmopen/vi_32/POgEwh4mIHO4nibH0KlMECNjjGxQUq24ZEaGT4poC6icRiccVGKSyXwibcPq4BWmiaIGuG1icwxaQX6grC9VemZoJ8rg/132";

fn sns_ok(v: Value) -> Resp {
    http::json(SNS, &v)
}

fn cgi_ok(v: Value) -> Resp {
    http::json(CGI, &v)
}

fn param<'a>(q: &'a Params, k: &str) -> &'a str {
    q.get(k).unwrap_or("")
}

/// Checks appid and secret, answering 41002/40013/41004/40125 like WeChat.
fn app_with_secret<'a>(
    sim: &'a Sim,
    family: ApiFamily,
    appid: &str,
    secret: &str,
) -> Result<&'a AppConfig, Resp> {
    if appid.is_empty() {
        return Err(api_error(family, 41002));
    }
    let app = sim
        .world
        .app(appid)
        .ok_or_else(|| api_error(family, 40013))?;
    if secret.is_empty() {
        return Err(api_error(family, 41004));
    }
    if secret != app.secret {
        return Err(api_error(family, 40125));
    }
    Ok(app)
}

/// unionid is disclosed only by user-consented scopes, and only for bound apps.
fn unionid_for_scope(sim: &Sim, user: &str, appid: &str, scope: &str) -> Option<String> {
    if scope == "snsapi_userinfo" || scope == "snsapi_login" {
        sim.world.unionid(user, appid)
    } else {
        None
    }
}

/// `GET /sns/oauth2/access_token`: exchange a code.
pub fn sns_access_token(sim: &Sim, q: &Params) -> Resp {
    let appid = param(q, "appid");
    let app = match app_with_secret(sim, SNS, appid, param(q, "secret")) {
        Ok(a) => a,
        Err(r) => return r,
    };
    if param(q, "grant_type") != "authorization_code" {
        return api_error(SNS, 40002);
    }
    let code = param(q, "code");
    if code.is_empty() {
        return api_error(SNS, 41008);
    }
    let now = sim.clock.now_ms();
    let mut st = sim.state();
    let entry = match st.codes.get_mut(code) {
        // A code belongs to the appid it was issued for: another appid's code is "invalid".
        Some(e) if e.appid == app.appid => e,
        _ => return api_error(SNS, 40029),
    };
    if entry.used {
        return api_error(SNS, 40163);
    }
    if now >= entry.expires_ms {
        return api_error(SNS, 40029);
    }
    entry.used = true;
    let (user, scope) = (entry.user.clone(), entry.scope.clone());
    let access_token = http::random_token(107);
    let refresh_token = http::random_token(107);
    st.sns_tokens.insert(
        access_token.clone(),
        SnsToken {
            appid: app.appid.clone(),
            user: user.clone(),
            scope: scope.clone(),
            expires_ms: now + TOKEN_TTL_MS,
        },
    );
    st.refresh_tokens.insert(
        refresh_token.clone(),
        RefreshEntry {
            appid: app.appid.clone(),
            user: user.clone(),
            scope: scope.clone(),
            expires_ms: now + REFRESH_TTL_MS,
        },
    );
    drop(st);
    let mut out = Map::new();
    out.insert("access_token".into(), json!(access_token));
    out.insert("expires_in".into(), json!(7200));
    out.insert("refresh_token".into(), json!(refresh_token));
    out.insert("openid".into(), json!(sim.world.openid(&user, &app.appid)));
    out.insert("scope".into(), json!(scope));
    // Present, with value 1, only for snapshot-mode virtual accounts (reference §2, §8).
    if sim.world.user(&user).is_some_and(|u| u.snapshot) {
        out.insert("is_snapshotuser".into(), json!(1));
    }
    // Since Dec 2017 never under snsapi_base (reference §2).
    if let Some(u) = unionid_for_scope(sim, &user, &app.appid, &scope) {
        out.insert("unionid".into(), json!(u));
    }
    sns_ok(Value::Object(out))
}

/// `GET /sns/oauth2/refresh_token`: no secret; the refresh token itself is the credential.
pub fn sns_refresh_token(sim: &Sim, q: &Params) -> Resp {
    let appid = param(q, "appid");
    if appid.is_empty() {
        return api_error(SNS, 41002);
    }
    if sim.world.app(appid).is_none() {
        return api_error(SNS, 40013);
    }
    if param(q, "grant_type") != "refresh_token" {
        return api_error(SNS, 40002);
    }
    let rt = param(q, "refresh_token");
    if rt.is_empty() {
        return api_error(SNS, 41003);
    }
    let now = sim.clock.now_ms();
    let mut st = sim.state();
    let entry = match st.refresh_tokens.get(rt) {
        Some(e) if e.appid == appid => e.clone(),
        _ => return api_error(SNS, 40030),
    };
    if now >= entry.expires_ms {
        return api_error(SNS, 42002);
    }
    let access_token = http::random_token(107);
    st.sns_tokens.insert(
        access_token.clone(),
        SnsToken {
            appid: entry.appid.clone(),
            user: entry.user.clone(),
            scope: entry.scope.clone(),
            expires_ms: now + TOKEN_TTL_MS,
        },
    );
    drop(st);
    sns_ok(json!({
        "access_token": access_token,
        "expires_in": 7200,
        "refresh_token": rt,
        "openid": sim.world.openid(&entry.user, &entry.appid),
        "scope": entry.scope,
    }))
}

/// Looks up a user token: unknown → 40001, expired → 42001, other user's openid → 40003.
fn sns_token(sim: &Sim, q: &Params) -> Result<SnsToken, Resp> {
    let token = param(q, "access_token");
    if token.is_empty() {
        return Err(api_error(SNS, 41001));
    }
    let openid = param(q, "openid");
    if openid.is_empty() {
        return Err(api_error(SNS, 41009));
    }
    let now = sim.clock.now_ms();
    let t = sim
        .state()
        .sns_tokens
        .get(token)
        .cloned()
        .ok_or_else(|| api_error(SNS, 40001))?;
    if now >= t.expires_ms {
        return Err(api_error(SNS, 42001));
    }
    if sim.world.openid(&t.user, &t.appid).as_deref() != Some(openid) {
        return Err(api_error(SNS, 40003));
    }
    Ok(t)
}

/// `GET /sns/userinfo`.
pub fn sns_userinfo(sim: &Sim, q: &Params) -> Resp {
    let t = match sns_token(sim, q) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if t.scope == "snsapi_base" {
        return api_error(SNS, 48001);
    }
    let Some(user) = sim.world.user(&t.user) else {
        return api_error(SNS, 40003);
    };
    let openid = sim.world.openid(&t.user, &t.appid);
    let (nickname, avatar) = if user.snapshot {
        // Snapshot pages only ever get virtual data.
        ("微信用户".to_string(), SNAPSHOT_AVATAR.to_string())
    } else {
        let nick = user.nickname.clone().unwrap_or_else(|| user.name.clone());
        let id = openid.clone().unwrap_or_default();
        (
            nick,
            format!("https://thirdwx.qlogo.cn/mmopen/vi_32/sim{id}/132"),
        )
    };
    let mut out = Map::new();
    out.insert("openid".into(), json!(openid));
    out.insert("nickname".into(), json!(nickname));
    // Sex and region are no longer returned since 2021-10-20: 0 and empty strings.
    out.insert("sex".into(), json!(0));
    out.insert("province".into(), json!(""));
    out.insert("city".into(), json!(""));
    out.insert("country".into(), json!(""));
    out.insert("headimgurl".into(), json!(avatar));
    out.insert("privilege".into(), json!([]));
    if let Some(u) = sim.world.unionid(&t.user, &t.appid) {
        out.insert("unionid".into(), json!(u));
    }
    sns_ok(Value::Object(out))
}

/// `GET /sns/auth`: is this user token valid for this openid?
pub fn sns_auth(sim: &Sim, q: &Params) -> Resp {
    match sns_token(sim, q) {
        Ok(_) => sns_ok(json!({"errcode": 0, "errmsg": "ok"})),
        Err(r) => r,
    }
}

fn ip_allowed(app: &AppConfig, peer: SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    app.ip_whitelist.is_empty() || app.ip_whitelist.iter().any(|w| w.to_canonical() == ip)
}

fn not_whitelisted(peer: SocketAddr) -> Resp {
    let ip = peer.ip().to_canonical();
    let msg = format!("invalid ip {ip} ipv6 ::ffff:{ip}, not in whitelist");
    http::json(CGI, &http::err_value(40164, &msg))
}

/// Shared checks of `cgi-bin/token` and `cgi-bin/stable_token`.
fn credential_app<'a>(
    sim: &'a Sim,
    peer: SocketAddr,
    grant_type: &str,
    appid: &str,
    secret: &str,
) -> Result<&'a AppConfig, Resp> {
    if grant_type != "client_credential" {
        return Err(api_error(CGI, 40002));
    }
    let app = app_with_secret(sim, CGI, appid, secret)?;
    if app.kind != AppKind::OfficialAccount {
        return Err(api_error(CGI, 48001));
    }
    if !ip_allowed(app, peer) {
        return Err(not_whitelisted(peer));
    }
    Ok(app)
}

/// Marks a replaced token stale at `at` (never later than an earlier deadline).
fn supersede(st: &mut State, old: Option<String>, at: u64) {
    if let Some(t) = old.and_then(|o| st.global_tokens.get_mut(&o)) {
        t.stale_after_ms = Some(t.stale_after_ms.map_or(at, |s| s.min(at)));
    }
}

/// `GET /cgi-bin/token`: every call issues a new token; the previous one keeps working for
/// 5 minutes, then answers 40001 "not latest". 2000 calls a day.
pub fn cgi_token(sim: &Sim, peer: SocketAddr, q: &Params) -> Resp {
    let app = match credential_app(
        sim,
        peer,
        param(q, "grant_type"),
        param(q, "appid"),
        param(q, "secret"),
    ) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let now = sim.clock.now_ms();
    let day = sim.clock.day();
    let token = http::random_token(136);
    {
        // Quota, issue and supersede in one step: concurrent fetches each replace the last.
        let mut st = sim.state();
        let t = st.app_tokens(&app.appid, day);
        if t.token_calls >= app.token_daily_quota {
            return api_error(CGI, 45009);
        }
        t.token_calls += 1;
        let old = t.token.replace(token.clone());
        st.global_tokens.insert(
            token.clone(),
            GlobalToken {
                appid: app.appid.clone(),
                expires_ms: now + TOKEN_TTL_MS,
                stale_after_ms: None,
            },
        );
        supersede(&mut st, old, now + OVERLAP_MS);
    }
    cgi_ok(json!({"access_token": token, "expires_in": 7200}))
}

/// `POST /cgi-bin/stable_token`: isolated from `cgi-bin/token`; returns the same token while it
/// has more than 5 minutes left (the platform renews early), unless `force_refresh`.
pub fn cgi_stable_token(sim: &Sim, peer: SocketAddr, method: &hyper::Method, body: &[u8]) -> Resp {
    if method != hyper::Method::POST {
        return api_error(CGI, 43002);
    }
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return api_error(CGI, 47001);
    };
    let s = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let force = match req.get("force_refresh") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return api_error(CGI, 47001),
    };
    let app = match credential_app(sim, peer, &s("grant_type"), &s("appid"), &s("secret")) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let now = sim.clock.now_ms();
    let day = sim.clock.day();
    // One lock for the whole decision, so concurrent callers in normal mode all get the
    // same token, exactly as WeChat's stable_token promises.
    let mut st = sim.state();
    let t = st.app_tokens(&app.appid, day);
    if t.stable_calls >= STABLE_DAILY_QUOTA {
        return api_error(CGI, 45009);
    }
    t.stable_calls += 1;
    if force {
        if t.force_refreshes >= FORCE_REFRESH_DAILY {
            return api_error(CGI, 45009);
        }
        if t.last_force_ms
            .is_some_and(|l| now < l + FORCE_REFRESH_GAP_MS)
        {
            return api_error(CGI, 45011);
        }
        t.force_refreshes += 1;
        t.last_force_ms = Some(now);
    }
    let current = t.stable.clone();
    if !force {
        if let Some(g) = current.as_ref().and_then(|c| st.global_tokens.get(c)) {
            let live = g.stale_after_ms.is_none_or(|s| now < s);
            // The platform renews 5 minutes before expiry; until then the same token.
            if live && g.expires_ms > now + OVERLAP_MS {
                let left = (g.expires_ms - now) / 1000;
                return cgi_ok(json!({"access_token": current, "expires_in": left}));
            }
        }
    }
    let token = http::random_token(136);
    st.global_tokens.insert(
        token.clone(),
        GlobalToken {
            appid: app.appid.clone(),
            expires_ms: now + TOKEN_TTL_MS,
            stale_after_ms: None,
        },
    );
    st.app_tokens(&app.appid, day).stable = Some(token.clone());
    if force {
        // force_refresh invalidates the previous stable token at once.
        supersede(&mut st, current, now);
    }
    drop(st);
    cgi_ok(json!({"access_token": token, "expires_in": 7200}))
}

/// Validates a global token: unknown or replaced ("not latest") → 40001, expired → 42001.
fn global_token(sim: &Sim, token: &str) -> Result<String, Resp> {
    if token.is_empty() {
        return Err(api_error(CGI, 41001));
    }
    let now = sim.clock.now_ms();
    let g = sim
        .state()
        .global_tokens
        .get(token)
        .cloned()
        .ok_or_else(|| api_error(CGI, 40001))?;
    if g.stale_after_ms.is_some_and(|s| now >= s) {
        return Err(api_error(CGI, 40001));
    }
    if now >= g.expires_ms {
        return Err(api_error(CGI, 42001));
    }
    Ok(g.appid)
}

/// `GET /cgi-bin/user/info`: follower details with unionid for bound accounts; non-followers
/// get `subscribe: 0` and nothing else.
pub fn cgi_user_info(sim: &Sim, q: &Params) -> Resp {
    let appid = match global_token(sim, param(q, "access_token")) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let openid = param(q, "openid");
    if openid.is_empty() {
        return api_error(CGI, 41009);
    }
    let Some(user) = sim.world.user_by_openid(&appid, openid) else {
        return api_error(CGI, 40003);
    };
    if !sim.world.follows(&user.name, &appid) {
        return cgi_ok(json!({"subscribe": 0}));
    }
    let mut out = Map::new();
    out.insert("subscribe".into(), json!(1));
    out.insert("openid".into(), json!(openid));
    out.insert("language".into(), json!("zh_CN"));
    out.insert("subscribe_time".into(), json!(1_704_067_200u64));
    if let Some(u) = sim.world.unionid(&user.name, &appid) {
        out.insert("unionid".into(), json!(u));
    }
    out.insert("remark".into(), json!(""));
    out.insert("groupid".into(), json!(0));
    out.insert("tagid_list".into(), json!([]));
    out.insert("subscribe_scene".into(), json!("ADD_SCENE_QR_CODE"));
    out.insert("qr_scene".into(), json!(0));
    out.insert("qr_scene_str".into(), json!(""));
    cgi_ok(Value::Object(out))
}
