//! Small HTTP helpers shared by the simulator's handlers: query/form parsing, cookies,
//! HTML escaping, and the response shapes WeChat uses (JSON errors with its own messages).

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use hyper::{Response, StatusCode};
use rand::Rng as _;

pub type Resp = Response<Full<Bytes>>;

/// Decoded `key=value` pairs in their original order (order matters on the authorize URL).
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(s: &str) -> Params {
        Params(
            form_urlencoded::parse(s.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// First value of `key` (WeChat ignores repeats; the first one wins here).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
}

/// Value of cookie `name` in a `Cookie:` header.
pub fn cookie(headers: &hyper::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

pub use crate::pages::escape;

/// Percent-encodes a query component (everything but unreserved characters).
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn random_string(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// WeChat's token alphabet includes `_` and `-`.
pub fn random_token(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

fn with_type(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Which Content-Type family an API answer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFamily {
    /// `sns/*` answers JSON labelled `text/plain`, as WeChat does; clients that trust the
    /// content type break here, exactly as they would against WeChat.
    Sns,
    /// `cgi-bin/*` answers `application/json; encoding=utf-8`, as WeChat does.
    CgiBin,
}

pub fn json(family: ApiFamily, v: &serde_json::Value) -> Resp {
    let ctype = match family {
        ApiFamily::Sns => "text/plain",
        ApiFamily::CgiBin => "application/json; encoding=utf-8",
    };
    // WeChat answers every API call, errors included, with HTTP 200.
    with_type(StatusCode::OK, ctype, v.to_string())
}

/// WeChat's message for an errcode (as seen in production answers).
pub fn errmsg(code: i64) -> &'static str {
    match code {
        -1 => "system error",
        // Authorize-page errors: shown inside WeChat, never sent to a server.
        10003 => "redirect_uri域名与后台配置不一致",
        10004 => "此公众号被封禁",
        10005 => "此公众号并没有这些scope的权限",
        10006 => "必须关注此测试号",
        10009 => "操作太频繁了，请稍后重试",
        10010 => "scope不能为空",
        10011 => "redirect_uri不能为空",
        10012 => "appid不能为空",
        10013 => "state不能为空",
        10015 => "公众号未授权第三方平台，请检查授权状态",
        10016 => "不支持微信开放平台的Appid，请使用公众号Appid",
        0 => "ok",
        40001 => "invalid credential, access_token is invalid or not latest",
        40002 => "invalid grant_type",
        40003 => "invalid openid",
        40013 => "invalid appid",
        40014 => "invalid access_token",
        40029 => "invalid code",
        40030 => "invalid refresh_token",
        40125 => "invalid appsecret",
        40163 => "code been used",
        41001 => "access_token missing",
        41002 => "appid missing",
        41003 => "refresh_token missing",
        41004 => "appsecret missing",
        41008 => "missing code",
        41009 => "missing openid",
        42001 => "access_token expired",
        42002 => "refresh_token expired",
        42003 => "code expired",
        42007 => "access_token and refresh_token exception",
        43002 => "require POST method",
        45009 => "reach max api daily quota limit",
        45011 => "api minute-quota reach limit  mustslower  retry next minute",
        47001 => "data format error",
        48001 => "api unauthorized",
        50001 => "user unauthorized",
        50002 => "user limited",
        _ => "system error",
    }
}

/// WeChat suffixes error messages with a request id, so clients must match on errcode,
/// never on errmsg text.
pub fn with_rid(msg: &str) -> String {
    let mut rng = rand::thread_rng();
    format!(
        "{msg}, rid: {:08x}-{:08x}-{:08x}",
        rng.gen::<u32>(),
        rng.gen::<u32>(),
        rng.gen::<u32>()
    )
}

pub fn err_value(code: i64, msg: &str) -> serde_json::Value {
    serde_json::json!({"errcode": code, "errmsg": with_rid(msg)})
}

pub fn api_error(family: ApiFamily, code: i64) -> Resp {
    json(family, &err_value(code, errmsg(code)))
}

pub fn html(body: String) -> Resp {
    with_type(StatusCode::OK, "text/html; charset=utf-8", body)
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    with_type(status, "text/plain; charset=utf-8", body)
}

pub fn control_json(status: StatusCode, v: &serde_json::Value) -> Resp {
    with_type(status, "application/json", v.to_string())
}

pub fn redirect(location: &str) -> Resp {
    let mut r = with_type(StatusCode::FOUND, "text/html; charset=utf-8", Bytes::new());
    match HeaderValue::from_str(location) {
        Ok(v) => {
            r.headers_mut().insert(LOCATION, v);
            r
        }
        // Only reachable with control characters in a client-supplied URL.
        Err(_) => text(StatusCode::BAD_REQUEST, "bad redirect target"),
    }
}

pub fn set_cookie(mut r: Resp, name: &str, value: &str) -> Resp {
    let c = format!("{name}={value}; Path=/; SameSite=Lax; Max-Age=31536000");
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(SET_COOKIE, v);
    }
    r
}

/// A page wrapped in the simulator's minimal mobile-style layout.
pub fn page(title: &str, body: &str) -> Resp {
    html(format!(
        "<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title>\
<style>body{{font-family:-apple-system,'PingFang SC',sans-serif;max-width:480px;margin:40px auto;padding:0 16px;color:#333;text-align:center}}\
.btn{{display:inline-block;margin:8px;padding:10px 24px;border-radius:4px;border:1px solid #ccc;background:#f7f7f7;color:#333;text-decoration:none;font-size:16px;cursor:pointer}}\
.primary{{background:#07c160;border-color:#07c160;color:#fff}}.sim{{margin-top:48px;padding:12px;border:2px dashed #e69500;background:#fff8e6;font-size:14px;text-align:left}}\
.code{{color:#888}}ul{{list-style:none;padding:0}}</style></head><body>{}</body></html>",
        escape(title),
        body
    ))
}

/// JSON object from a map, for counters.
pub fn stats_value(m: &BTreeMap<String, u64>) -> serde_json::Value {
    serde_json::Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_and_params() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let p = Params::parse("a=1&b=x%20y&a=2");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), Some("x y"));
        assert_eq!(p.keys().collect::<Vec<_>>(), vec!["a", "b", "a"]);
        assert!(with_rid("invalid code").starts_with("invalid code, rid: "));
        assert_eq!(random_token(100).len(), 100);
    }

    #[test]
    fn cookie_lookup() {
        let mut h = hyper::HeaderMap::new();
        h.insert(
            hyper::header::COOKIE,
            HeaderValue::from_static("a=1; sim_user=bob; x=y"),
        );
        assert_eq!(cookie(&h, "sim_user").as_deref(), Some("bob"));
        assert_eq!(cookie(&h, "nope"), None);
    }
}
