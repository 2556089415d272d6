//! Entry points for the criterion benchmarks in `benches/auth.rs`: the per-request work of
//! [`authenticate`](super::authenticate) and the proxy's identity header rewrite, callable
//! without a hyper `Request` (whose `Incoming` body cannot be built outside hyper). Not a
//! stable API.

use http::header::HeaderMap;

use super::session::SessionData;
use super::{now, Auth, Jar, Permit};
use crate::headers;

/// Seals a session cookie value for `openid`, as a successful callback does.
pub fn seal_session(auth: &Auth, openid: &str, unionid: Option<&str>) -> String {
    let now = now();
    let data = SessionData {
        openid: openid.to_string(),
        unionid: unionid.map(str::to_string),
        appid: auth.appid.clone(),
        scope: "snsapi_base".to_string(),
        issued_at: now,
        expires_at: now + auth.session_ttl,
    };
    auth.codec.seal(auth.purpose(Jar::Session), &data)
}

/// The session cookie's name on plain HTTP (`secure = false`) or HTTPS.
pub fn session_cookie_name(auth: &Auth, secure: bool) -> &str {
    auth.cookie_name(Jar::Session, secure)
}

/// What an authenticated request costs on top of proxying: find the session cookie in the
/// Cookie header, look it up in the session cache (opening the cookie and signing a JWT on a
/// miss), strip client-sent identity headers and the gateway's cookies, and write the
/// identity headers and the JWT. `false` when there is no valid session.
pub fn authenticate_and_rewrite(auth: &Auth, headers: &mut HeaderMap, secure: bool) -> bool {
    let Some(session) = auth.session(headers, secure, now()) else {
        return false;
    };
    let permit = Permit {
        identity: Some(session.headers.clone()),
        snapshot: false,
    };
    headers::strip_identity(headers, Some(auth.jwt_header()));
    headers::strip_cookies(headers, auth.cookie_names());
    permit.write_headers(headers);
    true
}

/// Opens (decrypts and parses) a session cookie value without the cache.
pub fn open_session(auth: &Auth, value: &str) -> bool {
    auth.codec
        .open::<SessionData>(auth.purpose(Jar::Session), value)
        .is_some()
}
