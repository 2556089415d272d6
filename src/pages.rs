//! The short pages and JSON bodies the gateway answers with itself: errors, "open in
//! WeChat", the snapshot notice. Everything echoed into HTML is escaped here.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

pub use crate::body::Body;

/// Escapes text for HTML element and attribute content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A complete small HTML document. `body_html` must already be escaped.
pub fn html_document(title: &str, body_html: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title}</title><style>body{{font-family:-apple-system,system-ui,sans-serif;max-width:32em;\
margin:3em auto;padding:0 1em;color:#222;line-height:1.5}}h1{{font-size:1.3em}}\
.muted{{color:#777;font-size:.85em}}table{{border-collapse:collapse;width:100%}}\
td{{vertical-align:top;padding:2px 6px;overflow-wrap:anywhere}}pre{{white-space:pre-wrap;overflow-wrap:anywhere}}a.button{{display:inline-block;padding:.6em 1.2em;\
background:#07c160;color:#fff;border-radius:4px;text-decoration:none}}</style></head>\
<body>{body_html}</body></html>\n",
        title = escape(title),
    )
}

pub fn html(status: StatusCode, doc: String) -> Response<Body> {
    let mut resp = Response::new(Body::full(doc));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_bytes(status, Bytes::from(value.to_string()))
}

pub fn json_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The error answer: a short page, or JSON when the client asked for JSON.
pub fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    wants_json: bool,
    request_id: &str,
) -> Response<Body> {
    if wants_json {
        return json(
            status,
            &serde_json::json!({ "error": code, "message": message, "request_id": request_id }),
        );
    }
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<h1>{} {}</h1><p>{}</p><p class=\"muted\">Request ID: {}</p>",
        status.as_u16(),
        escape(reason),
        escape(message),
        escape(request_id)
    );
    html(
        status,
        html_document(&format!("{} {}", status.as_u16(), reason), &body),
    )
}

/// A 302 to a location the caller has already made safe.
pub fn redirect(location: &str) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// For browsers outside WeChat on a `non_wechat = "deny"` route: the WeChat wording, a QR
/// code of this page's URL to scan with the phone, and the URL itself.
pub fn open_in_wechat(url: &str) -> Response<Body> {
    let qr = qrcode::QrCode::new(url.as_bytes())
        .map(|code| {
            code.render::<qrcode::render::svg::Color>()
                .min_dimensions(220, 220)
                .quiet_zone(true)
                .build()
        })
        .unwrap_or_default();
    let body = format!(
        "<h1>请在微信客户端打开链接</h1><p>Please open this page in WeChat: scan the code with WeChat's scanner.</p>\
<div class=\"qr\" role=\"img\" aria-label=\"QR code of this page\">{qr}</div><p class=\"muted\">{}</p>",
        escape(url)
    );
    html(
        StatusCode::FORBIDDEN,
        html_document("请在微信客户端打开链接", &body),
    )
}

/// WeChat's snapshot mode (快照页) hands out virtual identities; no session is issued for
/// them, so a page that requires login asks the user to leave snapshot mode.
pub fn snapshot_notice() -> Response<Body> {
    let body = "<h1>请点击「使用完整服务」</h1><p>This page is shown in WeChat's preview (snapshot) mode. \
Tap 「使用完整服务」 at the bottom of the screen to sign in and use the full service.</p>";
    html(StatusCode::OK, html_document("使用完整服务", body))
}

/// The end of a login that keeps failing: no further redirect, one link to try again.
pub fn login_failed(retry_url: &str, request_id: &str) -> Response<Body> {
    let body = format!(
        "<h1>Sign-in did not complete</h1><p>WeChat sign-in could not be completed. If it keeps failing, \
wait a few minutes, make sure cookies are allowed, and try again.</p>\
<p><a class=\"button\" href=\"{}\">Try again</a></p><p class=\"muted\">Request ID: {}</p>",
        escape(retry_url),
        escape(request_id)
    );
    html(
        StatusCode::BAD_REQUEST,
        html_document("Sign-in did not complete", &body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn error_json_and_html() {
        let r = error(StatusCode::BAD_GATEWAY, "bad_gateway", "down", true, "rid");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let r = error(StatusCode::NOT_FOUND, "not_found", "<x>", false, "rid");
        assert_eq!(r.status(), 404);
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
    }
}
