//! Target `session_cookie`: the session cookie (`SessionData` sealed as `wxgate_session`,
//! src/auth/session.rs). Property: see [`super::cookies::check`] (no forgery, round trip,
//! no tampering, no panic).

use wxgate::auth::session::SessionData;

use super::Reader;

pub fn make(r: &mut Reader) -> SessionData {
    let openid = r.string();
    let unionid = match r.u8() % 2 {
        0 => None,
        _ => Some(r.string()),
    };
    SessionData {
        openid,
        unionid,
        appid: r.string(),
        scope: r.string(),
        issued_at: r.u64(),
        expires_at: r.u64(),
    }
}

pub fn check(data: &[u8]) {
    super::cookies::check(data, "wxgate_session", make);
}
