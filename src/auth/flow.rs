//! The login endpoints: sending the browser to WeChat's authorize page, the callback that
//! exchanges the code, logout and session info. The loop guard lives here: a login that
//! keeps failing ends on an error page, even for a browser that keeps no cookies.

use std::collections::HashMap;
use std::sync::Mutex;

use cookie::{Cookie, SameSite};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::redirect::{encode_for_location, safe_return_to};
use super::session::SessionData;
use super::state::{is_valid_state, new_state, states_match, LoginState, LoopGuard};
use super::{now, Auth, Jar};
use crate::body::Body;
use crate::config::UnionIdMode;
use crate::error::GatewayError;
use crate::headers::ClientView;
use crate::pages;

/// Like Python's `quote(s, safe="")`, what WeChat expects for `redirect_uri`: everything
/// but letters, digits and `-._~` is percent-encoded, exactly once.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How long the browser has between leaving for WeChat and coming back.
const STATE_TTL: u64 = 600;
/// Each pending login has its own state cookie, `wxgate_state_<state>` (`__Host-` on HTTPS),
/// so logins started in parallel (two tabs) do not overwrite each other's.
pub(super) const STATE_PREFIX: &str = "wxgate_state_";
/// Most pending logins kept per browser; starting one more evicts the oldest. Bounds the
/// Cookie header (each is ~300 bytes) whatever a page does.
pub(super) const MAX_PENDING_LOGINS: usize = 4;
/// Rounds per login attempt: the first, and one restart.
const MAX_ROUNDS: u8 = 2;
/// How long an exchanged code is remembered, for duplicate callbacks (codes live 5 minutes).
const CODE_MEMORY: u64 = 300;

/// Codes this gateway exchanged recently (by hash, together with the state they came back
/// with), with the session they produced, so that a duplicate callback (the same callback URL
/// delivered twice) lands in the session. Keyed by state *and* code: a spent code presented
/// with another browser's own valid state must not hand that browser the code owner's session.
#[derive(Default)]
pub struct RecentCodes(Mutex<HashMap<Vec<u8>, (SessionData, u64)>>);

impl RecentCodes {
    fn key(state: &str, code: &str) -> Vec<u8> {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(state.as_bytes());
        ctx.update(b"\0");
        ctx.update(code.as_bytes());
        ctx.finish().as_ref().to_vec()
    }

    fn remember(&self, state: &str, code: &str, data: &SessionData, now: u64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= 10_000 {
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= 10_000 {
                map.clear();
            }
        }
        map.insert(Self::key(state, code), (data.clone(), now + CODE_MEMORY));
    }

    fn recall(&self, state: &str, code: &str, now: u64) -> Option<SessionData> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&Self::key(state, code))
            .filter(|(data, until)| *until > now && data.is_valid_at(now))
            .map(|(data, _)| data.clone())
    }
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    let q = req.uri().query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn login_url(return_to: &str) -> String {
    format!(
        "/_wxgate/login?return_to={}",
        utf8_percent_encode(return_to, URI_COMPONENT)
    )
}

/// 401 for APIs: where to send the user to log in, never a redirect.
pub fn login_required(here: &str) -> Response<Body> {
    let mut resp = pages::json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({
            "error": "wechat_login_required",
            "login_url": login_url(&safe_return_to(here)),
        }),
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("WeChat realm=\"wxgate\""),
    );
    resp
}

/// 401 for an API call from WeChat's snapshot mode: no identity until the user taps
/// 「使用完整服务」, after which `login_url` works.
pub fn snapshot_json() -> Response<Body> {
    pages::json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({
            "error": "wechat_snapshot_mode",
            "message": "WeChat snapshot mode: tap 使用完整服务 to sign in",
            "login_url": login_url("/"),
        }),
    )
}

impl Auth {
    fn set_cookie(
        &self,
        resp: &mut Response<Body>,
        jar: Jar,
        secure: bool,
        value: Option<(String, Option<u64>)>,
    ) {
        let name = self.cookie_name(jar, secure).to_string();
        set_named_cookie(resp, name, secure, value);
    }

    /// The name of the state cookie of the login whose `state` this is.
    fn state_cookie_name(&self, state: &str, secure: bool) -> String {
        if secure {
            format!("__Host-{STATE_PREFIX}{state}")
        } else {
            format!("{STATE_PREFIX}{state}")
        }
    }

    /// The pending login the callback's `state` belongs to, with the name of the cookie it
    /// came from: that login's own cookie, else the single `wxgate_state` cookie of earlier
    /// versions (a login in flight across an upgrade), else the only pending login if there
    /// is just one. The last two may carry another state: the caller still compares it, and
    /// uses such a login only for where to return and which round this is.
    fn pending_login(
        &self,
        headers: &HeaderMap,
        state: Option<&str>,
        secure: bool,
    ) -> Option<(LoginState, String)> {
        if let Some(s) = state.filter(|s| is_valid_state(s)) {
            let name = self.state_cookie_name(s, secure);
            if let Some(value) = crate::cookies::get_str(headers, &name) {
                if let Some(l) = self.codec.open(self.purpose(Jar::State), value) {
                    return Some((l, name));
                }
            }
        }
        if let Some(legacy) = self.read::<LoginState>(headers, Jar::State, secure) {
            return Some((legacy, self.cookie_name(Jar::State, secure).to_string()));
        }
        let prefix = self.state_cookie_name("", secure);
        let mut pending = crate::cookies::pairs(headers)
            .filter(|(n, _)| n.starts_with(prefix.as_bytes()) && n.len() > prefix.len());
        let (name, value) = pending.next()?;
        if pending.next().is_some() {
            return None; // Several: none of them can be told to be this one.
        }
        let login = self
            .codec
            .open(self.purpose(Jar::State), std::str::from_utf8(value).ok()?)?;
        Some((login, String::from_utf8_lossy(name).into_owned()))
    }

    /// Removal of the oldest pending logins' cookies, so that with the one being started at
    /// most [`MAX_PENDING_LOGINS`] remain. Cookies that no longer open go first.
    fn evict_pending(&self, resp: &mut Response<Body>, headers: &HeaderMap, secure: bool) {
        let prefix = self.state_cookie_name("", secure);
        let mut pending: Vec<(u64, &[u8])> = crate::cookies::pairs(headers)
            .filter(|(n, _)| n.starts_with(prefix.as_bytes()))
            .map(|(n, v)| {
                let created = std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| self.codec.open::<LoginState>(self.purpose(Jar::State), v))
                    .map_or(0, |l| l.created_at);
                (created, n)
            })
            .collect();
        if pending.len() < MAX_PENDING_LOGINS {
            return;
        }
        pending.sort_unstable();
        let excess = pending.len() + 1 - MAX_PENDING_LOGINS;
        for (_, name) in pending.into_iter().take(excess) {
            if let Ok(name) = std::str::from_utf8(name) {
                set_named_cookie(resp, name.to_string(), secure, None);
            }
        }
    }

    fn seal_cookie<T: serde::Serialize>(
        &self,
        resp: &mut Response<Body>,
        jar: Jar,
        secure: bool,
        value: &T,
        max_age: Option<u64>,
    ) {
        let sealed = self.codec.seal(self.purpose(jar), value);
        self.set_cookie(resp, jar, secure, Some((sealed, max_age)));
    }

    fn guard(&self, headers: &HeaderMap, secure: bool) -> LoopGuard {
        self.read(headers, Jar::Guard, secure).unwrap_or_default()
    }

    /// An unauthenticated navigation: start round 1, unless this browser already failed too often.
    pub(super) fn begin(
        &self,
        headers: &HeaderMap,
        view: &ClientView,
        here: &str,
        now: u64,
    ) -> Response<Body> {
        let secure = self.secure(view);
        let return_to = safe_return_to(here);
        if self.guard(headers, secure).tripped(now) {
            return pages::login_failed(&login_url(&return_to), "-");
        }
        self.redirect_to_wechat(headers, view, return_to, 1, None, now)
    }

    /// An unauthenticated page navigation by a browser that says so (`Sec-Fetch-Dest:
    /// document`): a tiny page that adds `location.hash`, which never reaches a server, to
    /// the return path and goes on to `/_wxgate/login`, so hash-routed apps (`/#/orders`)
    /// come back where they were. Without JavaScript, a meta refresh and a link go to the
    /// same login without the fragment. Other clients get the direct 302.
    pub(super) fn begin_navigation(
        &self,
        headers: &HeaderMap,
        view: &ClientView,
        here: &str,
        now: u64,
    ) -> Response<Body> {
        let document = headers
            .get("sec-fetch-dest")
            .is_some_and(|d| d.as_bytes().eq_ignore_ascii_case(b"document"));
        if !document || self.guard(headers, self.secure(view)).tripped(now) {
            return self.begin(headers, view, here, now);
        }
        hash_keeping_page(&login_url(&safe_return_to(here)))
    }

    /// 302 to WeChat's authorize page, with the state and the return path in this login's own
    /// sealed cookie.
    fn redirect_to_wechat(
        &self,
        headers: &HeaderMap,
        view: &ClientView,
        return_to: String,
        round: u8,
        guard: Option<LoopGuard>,
        now: u64,
    ) -> Response<Body> {
        let secure = self.secure(view);
        let origin = self.origin(view);
        // The round also rides in the callback URL, so a browser without cookies is still counted.
        let redirect_uri = if round <= 1 {
            format!("{origin}/_wxgate/callback")
        } else {
            format!("{origin}/_wxgate/callback?wxr={round}")
        };
        let state = new_state();
        // WeChat matches this URL with a strict pattern: keep the parameters in this order.
        let location = format!(
            "{}/connect/oauth2/authorize?appid={}&redirect_uri={}&response_type=code&scope=snsapi_base&state={}&connect_redirect=1#wechat_redirect",
            self.open_base,
            self.appid,
            utf8_percent_encode(&redirect_uri, URI_COMPONENT),
            state
        );
        let login = LoginState {
            state,
            return_to,
            round,
            created_at: now,
        };
        let mut resp = pages::redirect(&location);
        self.evict_pending(&mut resp, headers, secure);
        let sealed = self.codec.seal(self.purpose(Jar::State), &login);
        let name = self.state_cookie_name(&login.state, secure);
        set_named_cookie(&mut resp, name, secure, Some((sealed, Some(STATE_TTL))));
        if let Some(g) = guard {
            self.seal_cookie(&mut resp, Jar::Guard, secure, &g, Some(STATE_TTL));
        }
        resp
    }

    /// `GET /_wxgate/login?return_to=/path`: starts the flow explicitly.
    pub(super) fn login(&self, req: &Request<Incoming>, view: &ClientView) -> Response<Body> {
        let here = query_param(req, "return_to").unwrap_or_else(|| "/".into());
        self.begin(req.headers(), view, &here, now())
    }

    /// `GET /_wxgate/logout?return_to=/path`: forgets the session.
    pub(super) fn logout(&self, req: &Request<Incoming>, view: &ClientView) -> Response<Body> {
        let secure = self.secure(view);
        if let Some(v) =
            crate::headers::cookie(req.headers(), self.cookie_name(Jar::Session, secure))
        {
            self.cache.remove(v);
        }
        let return_to =
            safe_return_to(&query_param(req, "return_to").unwrap_or_else(|| "/".into()));
        let mut resp = pages::redirect(&encode_for_location(&return_to));
        self.set_cookie(&mut resp, Jar::Session, secure, None);
        self.set_cookie(&mut resp, Jar::Snapshot, secure, None);
        resp
    }

    /// `GET /_wxgate/session`: the identity as JSON, or 401.
    pub(super) fn session_info(
        &self,
        req: &Request<Incoming>,
        view: &ClientView,
    ) -> Response<Body> {
        match self.session(req.headers(), self.secure(view), now()) {
            Some(s) => pages::json(
                StatusCode::OK,
                &serde_json::json!({
                    "openid": s.data.openid,
                    "unionid": s.data.unionid,
                    "appid": s.data.appid,
                    "scope": s.data.scope,
                    "issued_at": s.data.issued_at,
                    "expires_at": s.data.expires_at,
                }),
            ),
            None => login_required("/"),
        }
    }

    /// `GET /_wxgate/callback?code=…&state=…[&wxr=N]`.
    pub(super) async fn callback(
        &self,
        req: &Request<Incoming>,
        view: &ClientView,
    ) -> Result<Response<Body>, GatewayError> {
        let now = now();
        let secure = self.secure(view);
        let headers = req.headers();
        let query_state = query_param(req, "state");
        let (login, state_cookie) =
            match self.pending_login(headers, query_state.as_deref(), secure) {
                Some((l, name)) => (Some(l), Some(name)),
                None => (None, None),
            };
        let login = login.filter(|l| l.created_at <= now + 60 && now < l.created_at + STATE_TTL);
        let spent = state_cookie.as_deref();
        let url_round: u8 = query_param(req, "wxr")
            .and_then(|r| r.parse().ok())
            .unwrap_or(1);
        let round = url_round.max(login.as_ref().map_or(1, |l| l.round));
        let return_to = login
            .as_ref()
            .map_or_else(|| "/".to_string(), |l| l.return_to.clone());
        let has_session = self.session(headers, secure, now).is_some();
        let retry = Retry {
            headers,
            spent,
            view,
            return_to: &return_to,
            round,
            guard: self.guard(headers, secure),
            now,
        };

        let state_ok = match (&login, query_state) {
            // Only a well-formed state is compared at all.
            (Some(l), Some(s)) => is_valid_state(&s) && states_match(&l.state, &s),
            _ => false,
        };
        let Some(login) = login.filter(|_| state_ok) else {
            // A refreshed callback after success: the state is spent but the session is there.
            if has_session {
                return Ok(self.back_to(&return_to, spent, secure));
            }
            return Ok(self.restart(retry, "state missing, expired or mismatched"));
        };
        let code = query_param(req, "code").filter(|c| !c.is_empty() && c.len() <= 512);
        let Some(code) = code else {
            if has_session {
                return Ok(self.back_to(&return_to, spent, secure));
            }
            return Ok(self.restart(retry, "callback without code"));
        };

        match self.client.exchange_code(&code).await {
            Ok(ex) if ex.is_snapshot => {
                // A virtual identity: never bound to a session (reference §8).
                tracing::info!("snapshot-mode user: no session issued");
                let mut resp = self.back_to(&return_to, spent, secure);
                self.seal_cookie(&mut resp, Jar::Snapshot, secure, &1u8, None);
                Ok(resp)
            }
            Ok(ex) => {
                let unionid = match (ex.unionid, self.unionid_mode) {
                    (Some(u), _) => Some(u),
                    (None, UnionIdMode::Follower) => {
                        match self.client.follower_unionid(&ex.openid).await {
                            Ok(u) => u,
                            Err(e) => {
                                log_wechat_error(
                                    &e,
                                    "unionid lookup failed; session issued without unionid",
                                );
                                None
                            }
                        }
                    }
                    (None, UnionIdMode::Off) => None,
                };
                let data = SessionData {
                    openid: ex.openid,
                    unionid,
                    appid: self.appid.clone(),
                    scope: ex.scope,
                    issued_at: now,
                    expires_at: now + self.session_ttl,
                };
                self.recent_codes.remember(&login.state, &code, &data, now);
                Ok(self.logged_in(&data, &return_to, spent, secure))
            }
            Err(e) if e.is_bad_code() => {
                if has_session {
                    return Ok(self.back_to(&return_to, spent, secure));
                }
                if let Some(data) = self.recent_codes.recall(&login.state, &code, now) {
                    return Ok(self.logged_in(&data, &return_to, spent, secure));
                }
                log_wechat_error(&e, "code rejected");
                Ok(self.restart(retry, "code rejected by WeChat"))
            }
            Err(e) if e.is_config() => {
                log_wechat_error(&e, "WeChat rejected the gateway's configuration");
                Err(GatewayError::WechatConfig(e.to_string()))
            }
            Err(e) => {
                log_wechat_error(&e, "code exchange failed");
                Err(GatewayError::WechatUnavailable(e.to_string()))
            }
        }
    }

    fn logged_in(
        &self,
        data: &SessionData,
        return_to: &str,
        spent: Option<&str>,
        secure: bool,
    ) -> Response<Body> {
        let mut resp = self.back_to(return_to, spent, secure);
        self.seal_cookie(
            &mut resp,
            Jar::Session,
            secure,
            data,
            Some(self.session_ttl),
        );
        self.set_cookie(&mut resp, Jar::Guard, secure, None);
        self.set_cookie(&mut resp, Jar::Snapshot, secure, None);
        resp
    }

    /// 302 to the (already sanitized) return path, with this login's state cookie spent
    /// (the other pending logins keep theirs).
    fn back_to(&self, return_to: &str, spent: Option<&str>, secure: bool) -> Response<Body> {
        let mut target =
            super::redirect::strip_params(&safe_return_to(return_to), &["code", "state"]);
        if !target.contains('#') {
            // An explicit (empty) fragment: a 302 without one inherits the fragment of the
            // URL it answers, and the browser reached the callback from WeChat's authorize
            // URL, which ends in `#wechat_redirect`, a route to a hash router.
            target.push('#');
        }
        let mut resp = pages::redirect(&encode_for_location(&target));
        if let Some(name) = spent {
            set_named_cookie(&mut resp, name.to_string(), secure, None);
        }
        resp
    }

    /// A failed round: one restart, then an error page; the guard counts across attempts.
    fn restart(&self, mut r: Retry<'_>, reason: &'static str) -> Response<Body> {
        let secure = self.secure(r.view);
        r.guard.record_failure(r.now);
        tracing::info!(
            reason,
            round = r.round,
            failures = r.guard.failures,
            "login round failed"
        );
        if r.round >= MAX_ROUNDS || r.guard.tripped(r.now) {
            let mut resp = pages::login_failed(&login_url(r.return_to), "-");
            self.seal_cookie(&mut resp, Jar::Guard, secure, &r.guard, Some(STATE_TTL));
            if let Some(name) = r.spent {
                set_named_cookie(&mut resp, name.to_string(), secure, None);
            }
            return resp;
        }
        let mut resp = self.redirect_to_wechat(
            r.headers,
            r.view,
            r.return_to.to_string(),
            r.round + 1,
            Some(r.guard),
            r.now,
        );
        if let Some(name) = r.spent {
            set_named_cookie(&mut resp, name.to_string(), secure, None);
        }
        resp
    }
}

/// Reads the fragment into the login's return path. Fixed text, allowed by its hash in the
/// page's CSP; the login URL comes from the link, so nothing is interpolated into script.
/// `#wechat_redirect` is WeChat's marker, never an app's route.
const HASH_SCRIPT: &str = "var l=document.getElementById('login'),h=location.hash;\
if(h==='#wechat_redirect')h='';location.replace(l.getAttribute('href')+encodeURIComponent(h));";

/// The page of [`Auth::begin_navigation`]: no external resources, a strict CSP.
fn hash_keeping_page(login: &str) -> Response<Body> {
    use base64::Engine as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, HASH_SCRIPT.as_bytes());
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    );
    let href = pages::escape(login);
    let doc = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Signing in</title>\
<noscript><meta http-equiv=\"refresh\" content=\"0;url={href}\"></noscript></head>\
<body><p><a id=\"login\" href=\"{href}\">Continue to WeChat sign-in</a></p>\
<script>{HASH_SCRIPT}</script></body></html>\n"
    );
    let mut resp = pages::html(StatusCode::OK, doc);
    if let Ok(v) = HeaderValue::from_str(&csp) {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

/// Appends a `Set-Cookie` for one of the gateway's cookies: host-only, path `/`, HttpOnly,
/// SameSite=Lax (it must come back on WeChat's top-level redirect to the callback), Secure on
/// HTTPS; `None` removes it.
fn set_named_cookie(
    resp: &mut Response<Body>,
    name: String,
    secure: bool,
    value: Option<(String, Option<u64>)>,
) {
    let mut c = match &value {
        Some((v, _)) => Cookie::new(name, v.clone()),
        None => Cookie::new(name, ""),
    };
    c.set_path("/");
    c.set_http_only(true);
    c.set_same_site(SameSite::Lax);
    c.set_secure(secure);
    match value {
        Some((_, Some(max_age))) => c.set_max_age(cookie::time::Duration::seconds(max_age as i64)),
        Some((_, None)) => {}
        None => c.make_removal(),
    }
    if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

struct Retry<'a> {
    headers: &'a HeaderMap,
    /// The state cookie this callback used, removed whatever happens next.
    spent: Option<&'a str>,
    view: &'a ClientView,
    return_to: &'a str,
    round: u8,
    guard: LoopGuard,
    now: u64,
}

/// Logs a failed WeChat call: configuration errors at error level. `errcode` is only present
/// when WeChat answered one (0 means success in WeChat's API, so timeouts and HTTP failures
/// must not carry it).
fn log_wechat_error(e: &crate::wechat::WechatError, what: &'static str) {
    match e.errcode() {
        Some(errcode) if e.is_config() => tracing::error!(errcode, error = %e, "{what}"),
        Some(errcode) => tracing::warn!(errcode, error = %e, "{what}"),
        None => tracing::warn!(error = %e, "{what}"),
    }
}
