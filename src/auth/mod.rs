//! Authentication decisions. A request reaches an upstream only with a [`Permit`], and only
//! this module makes permits: the proxy cannot forward a request nobody decided about.
//! The login endpoints live in [`flow`]; the primitives (sealed cookies, JWT, return paths,
//! user agents, login state) in their own submodules.

#[doc(hidden)]
pub mod bench_support;
pub mod cache;
pub mod flow;
pub mod jwt;
pub mod redirect;
pub mod session;
pub mod state;
pub mod ua;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::body::Body;
use crate::config::{
    AuthMode, ConfigError, JwtKey, NonWechat, Preflight, RouteSettings, Settings, UnionIdMode,
};
use crate::error::GatewayError;
use crate::headers::{self, ClientView};
use crate::pages;
use crate::wechat::WechatClient;

use cache::{Cached, SessionCache};
use jwt::JwtSigner;
use session::{SessionCodec, SessionData};

/// The identity headers of one authenticated session, prepared once and reused.
pub struct IdentityHeaders {
    openid: HeaderValue,
    unionid: Option<HeaderValue>,
    jwt: HeaderValue,
    jwt_header: HeaderName,
}

/// Permission to forward, carrying what the upstream may learn about the user.
pub struct Permit {
    identity: Option<Arc<IdentityHeaders>>,
    snapshot: bool,
}

impl Permit {
    fn anonymous() -> Permit {
        Permit {
            identity: None,
            snapshot: false,
        }
    }

    /// Writes the gateway-made identity headers; the proxy has already stripped any
    /// client-sent ones, so these are the only identity headers the upstream sees.
    pub(crate) fn write_headers(&self, h: &mut HeaderMap) {
        if let Some(id) = &self.identity {
            h.insert(headers::X_WECHAT_OPENID.clone(), id.openid.clone());
            if let Some(u) = &id.unionid {
                h.insert(headers::X_WECHAT_UNIONID.clone(), u.clone());
            }
            h.insert(id.jwt_header.clone(), id.jwt.clone());
        }
        if self.snapshot {
            h.insert(
                headers::X_WECHAT_SNAPSHOT.clone(),
                HeaderValue::from_static("1"),
            );
        }
    }
}

pub enum Decision {
    Forward(Permit),
    /// Boxed: the proxied path carries a `Forward`, and this keeps `Decision` small.
    Respond(Box<Response<Body>>),
}

/// The gateway's cookies. Each has a plain name (HTTP) and a `__Host-` one (HTTPS), which
/// browsers only accept from a secure origin, for path `/`, without a Domain.
#[derive(Clone, Copy)]
enum Jar {
    Session = 0,
    State = 1,
    Guard = 2,
    Snapshot = 3,
}

/// The login machinery, present when `[wechat]`, `[session]` and `[jwt]` are configured.
pub struct Auth {
    appid: String,
    open_base: String,
    unionid_mode: UnionIdMode,
    allow_wecom: bool,
    public_url: Option<String>,
    client: WechatClient,
    codec: SessionCodec,
    signer: JwtSigner,
    jwks: Bytes,
    /// Public keys of earlier configurations, published until the tokens they signed expire.
    retired: Vec<RetiredKey>,
    jwt_header: HeaderName,
    bearer: bool,
    session_ttl: u64,
    jwt_ttl: u64,
    /// `[jar][secure as usize]`.
    names: [[String; 2]; 4],
    own_cookies: Vec<String>,
    cache: SessionCache,
    recent_codes: flow::RecentCodes,
}

/// A JWT key replaced by a reload: its public half stays in the JWKS until `until`, so tokens
/// signed before the reload keep verifying.
#[derive(Clone)]
struct RetiredKey {
    kid: String,
    jwk: serde_json::Value,
    until: u64,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Auth {
    /// `previous`: the auth of the configuration being replaced by a reload, if any.
    pub fn from_settings(
        settings: &Settings,
        _stores: &crate::store::Stores,
        previous: Option<&Auth>,
    ) -> Result<Option<Auth>, ConfigError> {
        let (Some(wechat), Some(session), Some(jwt_cfg)) =
            (&settings.wechat, &settings.session, &settings.jwt)
        else {
            return Ok(None);
        };
        let err = |key: &str, reason: String| ConfigError {
            file: settings.source.clone(),
            key: key.to_string(),
            reason,
        };
        let keys: Vec<Vec<u8>> = session.keys.iter().map(|k| k.expose().to_vec()).collect();
        let codec = SessionCodec::new(&keys).map_err(|r| err("session.secret", r))?;
        let alg = jwt_cfg.algorithm;
        let (issuer, audience, ttl) = (
            jwt_cfg.issuer.clone(),
            jwt_cfg.audience.clone(),
            jwt_cfg.ttl,
        );
        let signer = match &jwt_cfg.key {
            JwtKey::Pem { path, pem } => {
                JwtSigner::from_pem(alg, pem.expose(), issuer, audience, ttl)
                    .map_err(|r| err("jwt.private_key", format!("{}: {r}", path.display())))?
            }
            JwtKey::Shared(secret) => {
                JwtSigner::from_secret(secret.expose(), issuer, audience, ttl)
                    .map_err(|r| err("jwt.secret", r))?
            }
        };
        let client = WechatClient::new(wechat).map_err(|r| err("wechat", r))?;
        let base = &session.cookie_name;
        let names = [
            [base.clone(), format!("__Host-{base}")],
            [
                "wxgate_state".to_string(),
                "__Host-wxgate_state".to_string(),
            ],
            [
                "wxgate_guard".to_string(),
                "__Host-wxgate_guard".to_string(),
            ],
            [
                "wxgate_snapshot".to_string(),
                "__Host-wxgate_snapshot".to_string(),
            ],
        ];
        // One state cookie per pending login (`wxgate_state_<state>`), matched as a prefix;
        // the plain `wxgate_state` of earlier versions is still read and stripped.
        let own_cookies = names
            .iter()
            .flatten()
            .cloned()
            .chain([
                format!("{}*", flow::STATE_PREFIX),
                format!("__Host-{}*", flow::STATE_PREFIX),
            ])
            .collect();
        let retired = previous.map_or_else(Vec::new, |p| p.retire(signer.kid(), now()));
        Ok(Some(Auth {
            appid: wechat.appid.clone(),
            open_base: wechat.open_base.clone(),
            unionid_mode: wechat.unionid,
            allow_wecom: wechat.allow_wecom,
            public_url: settings.server.public_url.clone(),
            client,
            codec,
            jwks: Bytes::copy_from_slice(signer.jwks_json()),
            retired,
            signer,
            bearer: jwt_cfg.header == header::AUTHORIZATION,
            jwt_header: jwt_cfg.header.clone(),
            session_ttl: session.ttl.as_secs(),
            jwt_ttl: jwt_cfg.ttl.as_secs(),
            names,
            own_cookies,
            cache: SessionCache::new(session.cache_max_entries, session.cache_max_bytes),
            recent_codes: flow::RecentCodes::default(),
        }))
    }

    /// The keys to keep publishing after this configuration is replaced by one whose signing
    /// key is `next_kid`: this one's (unless unchanged) and its own still-live retired keys.
    fn retire(&self, next_kid: &str, now: u64) -> Vec<RetiredKey> {
        let mut keys: Vec<RetiredKey> = self
            .retired
            .iter()
            .filter(|k| k.until > now && k.kid != next_kid)
            .cloned()
            .collect();
        if let Some(jwk) = self.signer.jwk().filter(|_| self.signer.kid() != next_kid) {
            keys.retain(|k| k.kid != self.signer.kid());
            keys.push(RetiredKey {
                kid: self.signer.kid().to_string(),
                jwk: jwk.clone(),
                // A token signed just before the swap lives this long (plus a minute of
                // clock skew between the gateway and its upstreams).
                until: now + self.signer.ttl_secs() + 60,
            });
        }
        keys
    }

    /// The JWKS document: the current key and every retired one still in use.
    fn jwks(&self, now: u64) -> Bytes {
        let live: Vec<&serde_json::Value> = self
            .retired
            .iter()
            .filter(|k| k.until > now)
            .map(|k| &k.jwk)
            .collect();
        if live.is_empty() {
            return self.jwks.clone();
        }
        let keys: Vec<&serde_json::Value> = self.signer.jwk().into_iter().chain(live).collect();
        serde_json::to_vec(&serde_json::json!({ "keys": keys }))
            .map_or_else(|_| self.jwks.clone(), Bytes::from)
    }

    pub fn jwt_header(&self) -> &HeaderName {
        &self.jwt_header
    }

    /// Every cookie name the gateway uses; none of them is ever sent upstream. A name ending
    /// in `*` stands for every cookie name starting with what precedes it (see
    /// [`crate::cookies::is_own`]).
    pub fn cookie_names(&self) -> &[String] {
        &self.own_cookies
    }

    pub fn wechat(&self) -> &WechatClient {
        &self.client
    }

    /// The origin the browser is on: `public_url` when configured.
    fn origin(&self, view: &ClientView) -> String {
        self.public_url.clone().unwrap_or_else(|| view.origin())
    }

    fn secure(&self, view: &ClientView) -> bool {
        match &self.public_url {
            Some(u) => u.starts_with("https://"),
            None => view.scheme == "https",
        }
    }

    fn cookie_name(&self, jar: Jar, secure: bool) -> &str {
        &self.names[jar as usize][secure as usize]
    }

    /// The AEAD associated data a cookie is sealed with: its configured plain name. A state
    /// cookie cannot be replayed as a session, and a session sealed by a gateway whose
    /// `session.cookie_name` differs (same secret and appid) opens nowhere else.
    fn purpose(&self, jar: Jar) -> &str {
        &self.names[jar as usize][0]
    }

    fn read<T: serde::de::DeserializeOwned>(
        &self,
        headers: &HeaderMap,
        jar: Jar,
        secure: bool,
    ) -> Option<T> {
        let value = headers::cookie(headers, self.cookie_name(jar, secure))?;
        self.codec.open(self.purpose(jar), value)
    }

    /// The cached identity for the request's session cookie, opening and signing on a miss.
    fn session(&self, headers: &HeaderMap, secure: bool, now: u64) -> Option<Arc<Cached>> {
        let value = headers::cookie(headers, self.cookie_name(Jar::Session, secure))?;
        if let Some(hit) = self.cache.get(value) {
            if hit.usable_at(now) {
                return Some(hit);
            }
        }
        let data: SessionData = self.codec.open(self.purpose(Jar::Session), value)?;
        // A cookie sealed for another appid (a shared secret across gateways) is no session here.
        if !data.is_valid_at(now) || data.appid != self.appid {
            self.cache.remove(value);
            return None;
        }
        let cached = Arc::new(self.identity(data, now)?);
        self.cache.insert(value, cached.clone(), now);
        Some(cached)
    }

    /// Signs the JWT and prepares the header values for one session.
    fn identity(&self, data: SessionData, now: u64) -> Option<Cached> {
        let (token, exp) = self.signer.sign(
            &data.openid,
            data.unionid.as_deref(),
            &data.appid,
            &data.scope,
            now,
        );
        let jwt = if self.bearer {
            HeaderValue::from_str(&format!("Bearer {token}")).ok()?
        } else {
            HeaderValue::from_str(&token).ok()?
        };
        let headers = IdentityHeaders {
            openid: HeaderValue::from_str(&data.openid).ok()?,
            unionid: data
                .unionid
                .as_deref()
                .and_then(|u| HeaderValue::from_str(u).ok()),
            jwt,
            jwt_header: self.jwt_header.clone(),
        };
        // Re-sign when a quarter of the lifetime is left, so upstreams never get a stale token.
        let jwt_refresh_at = exp.saturating_sub(self.jwt_ttl / 4);
        Some(Cached {
            data,
            headers: Arc::new(headers),
            jwt_refresh_at,
        })
    }

    /// Serves `/_wxgate/<name>` endpoints that belong to authentication.
    pub async fn serve_endpoint(
        &self,
        name: &str,
        req: &Request<Incoming>,
        view: &ClientView,
    ) -> Result<Option<Response<Body>>, GatewayError> {
        let resp = match name {
            "login" => self.login(req, view),
            // `Referrer-Policy: no-referrer` is added by the handler to every callback answer,
            // errors included.
            "callback" => self.callback(req, view).await?,
            "logout" => self.logout(req, view),
            "session" => self.session_info(req, view),
            "jwks.json" => {
                let mut resp = pages::json_bytes(http::StatusCode::OK, self.jwks(now()));
                resp.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=300"),
                );
                resp
            }
            _ => return Ok(None),
        };
        Ok(Some(resp))
    }
}

/// Requests that must get 401 JSON instead of a redirect: APIs, XHR, non-navigation methods,
/// clients that do not accept HTML, and sub-resources (favicon, images, scripts) as the
/// browser's fetch metadata names them. Only a real page navigation starts a login: a
/// favicon fetch racing the page's own login would otherwise overwrite its state cookie.
fn wants_401(route: &RouteSettings, req: &Request<Incoming>) -> bool {
    let h = req.headers();
    let navigation = req.method() == Method::GET || req.method() == Method::HEAD;
    let accept = h.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let accepts_html =
        accept.is_none_or(|a| a.contains("text/html") || a.contains("*/*") || a.contains("xhtml"));
    let sub_resource = h
        .get("sec-fetch-mode")
        .is_some_and(|m| !m.as_bytes().eq_ignore_ascii_case(b"navigate"));
    route.api || !navigation || headers::wants_json(h) || !accepts_html || sub_resource
}

/// Decides whether and as whom a request goes upstream.
pub async fn authenticate(
    auth: Option<&Auth>,
    route: &RouteSettings,
    req: &Request<Incoming>,
    view: &ClientView,
) -> Result<Decision, GatewayError> {
    let Some(auth) = auth else {
        return Ok(Decision::Forward(Permit::anonymous()));
    };
    if route.auth == AuthMode::Off {
        return Ok(Decision::Forward(Permit::anonymous()));
    }
    // A CORS preflight is sent without credentials (Fetch standard), so it cannot log in: on an
    // api route with `preflight = "pass"` it goes upstream anonymously (`preflight` is always
    // `Auth` on other routes).
    if route.preflight == Preflight::Pass
        && req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return Ok(Decision::Forward(Permit::anonymous()));
    }
    let now = now();
    let secure = auth.secure(view);
    if let Some(session) = auth.session(req.headers(), secure, now) {
        return Ok(Decision::Forward(Permit {
            identity: Some(session.headers.clone()),
            snapshot: false,
        }));
    }
    let snapshot = auth
        .read::<u8>(req.headers(), Jar::Snapshot, secure)
        .is_some();
    if route.auth == AuthMode::Optional {
        return Ok(Decision::Forward(Permit {
            identity: None,
            snapshot,
        }));
    }
    if snapshot {
        // APIs get JSON they can act on; pages get the 「使用完整服务」 notice.
        return Ok(Decision::Respond(Box::new(if wants_401(route, req) {
            flow::snapshot_json()
        } else {
            pages::snapshot_notice()
        })));
    }
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let in_wechat = ua::is_wechat(ua, auth.allow_wecom);
    if !in_wechat && route.non_wechat == NonWechat::Pass {
        return Ok(Decision::Forward(Permit::anonymous()));
    }
    let here = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    if wants_401(route, req) {
        return Ok(Decision::Respond(Box::new(flow::login_required(here))));
    }
    if !in_wechat && route.non_wechat == NonWechat::Deny {
        return Ok(Decision::Respond(Box::new(pages::open_in_wechat(
            &format!("{}{here}", auth.origin(view)),
        ))));
    }
    Ok(Decision::Respond(Box::new(auth.begin_navigation(
        req.headers(),
        view,
        here,
        now,
    ))))
}
