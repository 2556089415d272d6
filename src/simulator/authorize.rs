//! The open.weixin.qq.com part: `/connect/oauth2/authorize` (official accounts, inside the
//! WeChat browser) and `/connect/qrconnect` (website apps, desktop), with WeChat's error
//! pages, the non-WeChat-browser page, the snsapi_userinfo consent page and the QR confirm page.
// Helpers answer early with the finished WeChat response; it is built once per request,
// so its size on the error path does not matter.
#![allow(clippy::result_large_err)]

use hyper::HeaderMap;

use super::http::{self, enc, escape, page, redirect, Params, Resp};
use super::state::{CodeEntry, CODE_TTL_MS, QR_CODE_TTL_MS};
use super::world::AppKind;
use super::Sim;

/// WeChat's limit on `state` (reference §1).
const MAX_STATE: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    OAuth2,
    QrConnect,
}

/// A validated authorize request.
#[derive(Debug)]
struct AuthReq {
    appid: String,
    redirect_uri: String,
    scope: String,
    state: String,
}

/// WeChat's error page: what the user sees inside WeChat, never a callback.
#[derive(Debug)]
struct ErrPage(Option<i64>, &'static str);

pub fn error_page(code: Option<i64>, msg: &str) -> Resp {
    let num = code
        .map(|c| format!("<p class=\"code\">错误码: {c}</p>"))
        .unwrap_or_default();
    page(
        "微信网页授权",
        &format!(
            "<h2>Oops! Something went wrong:(</h2><p id=\"errmsg\">{}</p>{num}",
            escape(msg)
        ),
    )
}

fn err(e: ErrPage) -> Resp {
    error_page(e.0, e.1)
}

/// WeChat browser detection (reference §9): every WeChat build, WeCom included, carries
/// `MicroMessenger`. The `sim_wechat=1` cookie is the simulator-only escape hatch.
fn in_wechat(headers: &HeaderMap) -> bool {
    let ua = headers
        .get(hyper::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ua.contains("MicroMessenger") || http::cookie(headers, "sim_wechat").as_deref() == Some("1")
}

fn not_in_wechat(query: &Params) -> Resp {
    let back = format!("/connect/oauth2/authorize?{}", reencode(query));
    page(
        "微信网页授权",
        &format!(
            "<h2>请在微信客户端打开链接</h2>\
<div class=\"sim\"><b>wxgate simulator only — not WeChat behaviour.</b> Real WeChat stops here: this page never \
calls back in a desktop browser. To walk the flow from this browser anyway, mark it as a WeChat browser \
(sets the <code>sim_wechat=1</code> cookie and reloads):<br>\
<a class=\"btn\" id=\"sim-wechat\" href=\"/_sim/wechat?return={}\">Simulator: treat this browser as WeChat</a></div>",
            escape(&enc(&back))
        ),
    )
}

/// Re-serialises decoded parameters, keeping their order.
fn reencode(query: &Params) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &query.0 {
        s.append_pair(k, v);
    }
    s.finish()
}

fn validate(sim: &Sim, flow: Flow, q: &Params) -> Result<AuthReq, ErrPage> {
    let appid = q.get("appid").unwrap_or("");
    let redirect_uri = q.get("redirect_uri").unwrap_or("");
    let scope = q.get("scope").unwrap_or("");
    let state = q.get("state").unwrap_or("");
    if appid.is_empty() {
        return Err(ErrPage(Some(10012), "appid不能为空"));
    }
    let app = sim
        .world
        .app(appid)
        .ok_or(ErrPage(Some(40013), "appid 参数错误 (invalid appid)"))?;
    match (flow, app.kind) {
        (Flow::OAuth2, AppKind::Website) => {
            return Err(ErrPage(
                Some(10016),
                "不支持微信开放平台的Appid，请使用公众号Appid",
            ))
        }
        (Flow::QrConnect, AppKind::OfficialAccount) => {
            return Err(ErrPage(Some(10005), "Scope参数错误或没有Scope权限"))
        }
        _ => {}
    }
    if redirect_uri.is_empty() {
        return Err(ErrPage(Some(10011), "redirect_uri不能为空"));
    }
    if q.get("response_type") != Some("code") {
        return Err(ErrPage(None, "response_type 参数错误"));
    }
    if scope.is_empty() {
        return Err(ErrPage(Some(10010), "scope不能为空"));
    }
    // Exactly one scope: snsapi_base/snsapi_userinfo here, snsapi_login only on qrconnect.
    let scope_ok = match flow {
        Flow::OAuth2 => scope == "snsapi_base" || scope == "snsapi_userinfo",
        Flow::QrConnect => scope == "snsapi_login",
    };
    if !scope_ok || !app.certified {
        return Err(ErrPage(Some(10005), "此公众号并没有这些scope的权限"));
    }
    check_redirect(redirect_uri, &app.callback_domains, app.strict_ports)?;
    if state.is_empty() {
        return Err(ErrPage(Some(10013), "state不能为空"));
    }
    if state.len() > MAX_STATE {
        return Err(ErrPage(None, "state参数过长 (state parameter is too long)"));
    }
    if !state.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ErrPage(None, "state参数错误 (only a-zA-Z0-9)"));
    }
    // WeChat matches the link with a strict pattern; keep the documented order.
    let order = ["appid", "redirect_uri", "response_type", "scope", "state"];
    let seen: Vec<&str> = q.keys().filter(|k| order.contains(k)).collect();
    let mut dedup = seen.clone();
    dedup.dedup();
    if dedup != order {
        return Err(ErrPage(
            None,
            "参数错误 (parameters must come in the order appid, redirect_uri, response_type, scope, state)",
        ));
    }
    Ok(AuthReq {
        appid: appid.into(),
        redirect_uri: redirect_uri.into(),
        scope: scope.into(),
        state: state.into(),
    })
}

/// 10003 unless the redirect_uri's host is one of the app's callback domains (exact host
/// match, case-insensitive). WeChat also refuses any port; the simulator ignores ports
/// unless the app sets `strict_ports`, because local development always has one.
fn check_redirect(uri: &str, domains: &[String], strict_ports: bool) -> Result<(), ErrPage> {
    const MISMATCH: ErrPage = ErrPage(Some(10003), "redirect_uri域名与后台配置不一致");
    let url = url::Url::parse(uri).map_err(|_| MISMATCH)?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(MISMATCH);
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        _ => return Err(MISMATCH),
    };
    if !domains.iter().any(|d| d.eq_ignore_ascii_case(&host)) {
        return Err(MISMATCH);
    }
    if strict_ports && url.port().is_some() {
        return Err(MISMATCH);
    }
    Ok(())
}

/// WeChat appends `code` and `state` to the query and, if the redirect_uri has a fragment,
/// inserts them before it (which is what breaks hash-routed single-page apps).
fn callback_url(redirect_uri: &str, code: &str, state: &str) -> String {
    let (base, frag) = match redirect_uri.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (redirect_uri, None),
    };
    let sep = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    let frag = frag.map(|f| format!("#{f}")).unwrap_or_default();
    header_safe(&format!("{base}{sep}code={code}&state={state}{frag}"))
}

/// Percent-encodes bytes a Location header cannot carry (non-ASCII, controls, spaces).
fn header_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Who is in the phone: `sim_user` query parameter, else `sim_user` cookie, else the
/// world's first user.
fn current_user<'a>(sim: &'a Sim, headers: &HeaderMap, q: &Params) -> Result<&'a str, Resp> {
    let chosen = q
        .get("sim_user")
        .map(str::to_string)
        .or_else(|| http::cookie(headers, "sim_user"));
    match chosen {
        Some(name) => match sim.world.user(&name) {
            Some(u) => Ok(u.name.as_str()),
            None => Err(page(
                "wxgate simulator",
                &format!(
                    "<h2>Unknown simulated user {}</h2><p>wxgate simulator: <a href=\"/_sim/users\">choose who is in the phone</a>.</p>",
                    escape(&name)
                ),
            )),
        },
        None => sim
            .world
            .users
            .first()
            .map(|u| u.name.as_str())
            .ok_or_else(|| error_page(None, "no users in the simulated world")),
    }
}

fn issue_code(sim: &Sim, req: &AuthReq, user: &str, ttl_ms: u64) -> String {
    let now = sim.clock.now_ms();
    // WeChat's codes are 32 characters, random, and differ on every authorization.
    let code = http::random_string(32);
    let mut st = sim.state();
    st.prune(now);
    st.codes.insert(
        code.clone(),
        CodeEntry {
            appid: req.appid.clone(),
            user: user.to_string(),
            scope: req.scope.clone(),
            expires_ms: now + ttl_ms,
            used: false,
        },
    );
    code
}

fn call_back(sim: &Sim, req: &AuthReq, user: &str, ttl_ms: u64) -> Resp {
    let code = issue_code(sim, req, user, ttl_ms);
    redirect(&callback_url(&req.redirect_uri, &code, &req.state))
}

/// `GET /connect/oauth2/authorize`.
pub fn oauth2_authorize(sim: &Sim, headers: &HeaderMap, q: &Params) -> Resp {
    if !in_wechat(headers) {
        return not_in_wechat(q);
    }
    let req = match validate(sim, Flow::OAuth2, q) {
        Ok(r) => r,
        Err(e) => return err(e),
    };
    let user = match current_user(sim, headers, q) {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    if req.scope == "snsapi_base" {
        return call_back(sim, &req, user, CODE_TTL_MS);
    }
    // snsapi_userinfo is silent for followers and after a previous consent; snapshot-mode
    // users see the snapshot page, not a consent prompt. forcePopup=true asks again.
    let force = q.get("forcePopup") == Some("true");
    let consented = sim
        .state()
        .consents
        .contains(&(user.to_string(), req.appid.clone()));
    let snapshot = sim.world.user(user).is_some_and(|u| u.snapshot);
    if !force && (consented || snapshot || sim.world.follows(user, &req.appid)) {
        return call_back(sim, &req, user, CODE_TTL_MS);
    }
    consent_page(q, &req, user)
}

fn user_switch(q: &Params, path: &str, user: &str) -> String {
    let mut params = q.clone();
    params.0.retain(|(k, _)| k != "sim_user");
    let back = format!("{path}?{}", reencode(&params));
    format!(
        "<div class=\"sim\">wxgate simulator: the phone belongs to <b id=\"sim-user\">{}</b>. \
<a href=\"/_sim/users?return={}\">Switch user</a></div>",
        escape(user),
        escape(&enc(&back))
    )
}

fn hidden_form(
    action: &str,
    q: &Params,
    user: &str,
    decision: &str,
    label: &str,
    class: &str,
) -> String {
    format!(
        "<form method=\"post\" action=\"{action}\" style=\"display:inline\">\
<input type=\"hidden\" name=\"q\" value=\"{}\"><input type=\"hidden\" name=\"user\" value=\"{}\">\
<input type=\"hidden\" name=\"decision\" value=\"{decision}\">\
<button class=\"btn {class}\" type=\"submit\" id=\"{decision}\">{label}</button></form>",
        escape(&reencode(q)),
        escape(user),
    )
}

fn consent_page(q: &Params, req: &AuthReq, user: &str) -> Resp {
    page(
        "微信网页授权",
        &format!(
            "<h3>{}</h3><p>申请获得以下权限：</p><p>获得你的公开信息（昵称、头像等）</p>{}{}{}",
            escape(&req.appid),
            hidden_form("/_sim/consent", q, user, "allow", "允许", "primary"),
            hidden_form("/_sim/consent", q, user, "deny", "拒绝", ""),
            user_switch(q, "/connect/oauth2/authorize", user),
        ),
    )
}

/// `POST /_sim/consent`: the Allow/Deny buttons of the consent page.
pub fn consent_submit(sim: &Sim, headers: &HeaderMap, form: &Params) -> Resp {
    let q = Params::parse(form.get("q").unwrap_or(""));
    if !in_wechat(headers) {
        return not_in_wechat(&q);
    }
    let req = match validate(sim, Flow::OAuth2, &q) {
        Ok(r) => r,
        Err(e) => return err(e),
    };
    let user = match form.get("user").and_then(|u| sim.world.user(u)) {
        Some(u) => u.name.clone(),
        None => return error_page(None, "unknown simulated user"),
    };
    if form.get("decision") != Some("allow") {
        // The documentation promises `redirect_uri?state=…` on refusal, but field reports
        // say WeChat usually never calls back: the simulator never does.
        return page("微信网页授权", "<h2 id=\"denied\">你已拒绝授权</h2>");
    }
    sim.state()
        .consents
        .insert((user.clone(), req.appid.clone()));
    call_back(sim, &req, &user, CODE_TTL_MS)
}

/// `GET /connect/qrconnect`: website QR login, usable from any browser.
pub fn qrconnect(sim: &Sim, headers: &HeaderMap, q: &Params) -> Resp {
    let req = match validate(sim, Flow::QrConnect, q) {
        Ok(r) => r,
        Err(e) => return err(e),
    };
    let user = match current_user(sim, headers, q) {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    page(
        "微信登录",
        &format!(
            "<h3>微信登录</h3><p>请使用微信扫描二维码登录「{}」</p>\
<div class=\"sim\"><b>wxgate simulator:</b> scan with the simulated phone, then confirm on it.<br>{}{}</div>{}",
            escape(&req.appid),
            hidden_form("/_sim/qrconfirm", q, user, "allow", "模拟手机确认登录", "primary"),
            hidden_form("/_sim/qrconfirm", q, user, "deny", "取消", ""),
            user_switch(q, "/connect/qrconnect", user),
        ),
    )
}

/// `POST /_sim/qrconfirm`: the simulated phone confirmed (or cancelled) the QR login.
pub fn qr_confirm(sim: &Sim, form: &Params) -> Resp {
    let q = Params::parse(form.get("q").unwrap_or(""));
    let req = match validate(sim, Flow::QrConnect, &q) {
        Ok(r) => r,
        Err(e) => return err(e),
    };
    let user = match form.get("user").and_then(|u| sim.world.user(u)) {
        Some(u) => u.name.clone(),
        None => return error_page(None, "unknown simulated user"),
    };
    if form.get("decision") != Some("allow") {
        return page("微信登录", "<h2 id=\"denied\">你已取消此次登录</h2>");
    }
    call_back(sim, &req, &user, QR_CODE_TTL_MS)
}

/// `GET /`: what this server is.
pub fn index(sim: &Sim) -> Resp {
    let apps: String = sim
        .world
        .apps
        .iter()
        .map(|a| {
            format!(
                "<li><code>{}</code> {:?} callback domains: {}</li>",
                escape(&a.appid),
                a.kind,
                escape(&a.callback_domains.join(", "))
            )
        })
        .collect();
    page(
        "wxgate WeChat simulator",
        &format!(
            "<h2>wxgate WeChat simulator</h2><p>Serves open.weixin.qq.com and api.weixin.qq.com locally.</p>\
<ul>{apps}</ul><p><a href=\"/_sim/users\">Who is in the phone</a> · <a href=\"/_sim/world\">World (JSON)</a> · \
<a href=\"/_sim/stats\">Stats</a></p>"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_inserts_before_fragment() {
        assert_eq!(
            callback_url("http://localhost/cb", "C", "S"),
            "http://localhost/cb?code=C&state=S"
        );
        assert_eq!(
            callback_url("http://localhost/cb?x=1", "C", "S"),
            "http://localhost/cb?x=1&code=C&state=S"
        );
        assert_eq!(
            callback_url("http://localhost/#/home", "C", "S"),
            "http://localhost/?code=C&state=S#/home"
        );
        assert_eq!(
            callback_url("http://localhost/路", "C", "S"),
            "http://localhost/%E8%B7%AF?code=C&state=S"
        );
    }

    #[test]
    fn redirect_host_rules() {
        let d = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        assert!(check_redirect("http://localhost:8080/cb", &d, false).is_ok());
        assert!(check_redirect("http://LOCALHOST/cb", &d, false).is_ok());
        assert!(check_redirect("http://localhost:8080/cb", &d, true).is_err());
        assert!(check_redirect("http://localhost/cb", &d, true).is_ok());
        assert!(check_redirect("http://evil.localhost/cb", &d, false).is_err());
        assert!(check_redirect("http%3A%2F%2Flocalhost%2Fcb", &d, false).is_err());
        assert!(check_redirect("ftp://localhost/cb", &d, false).is_err());
    }
}
