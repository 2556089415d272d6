//! Everything under `/_wxgate/`, which belongs to the gateway and is never forwarded:
//! health and readiness here, the login endpoints via the auth module. Also the
//! `MP_verify_*.txt` files WeChat asks for at the domain root.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use crate::app::{Gateway, Snapshot};
use crate::body::Body;
use crate::error::GatewayError;
use crate::headers::ClientView;
use crate::pages;

pub const PREFIX: &str = "/_wxgate/";

/// Answers the request if it is the gateway's own; `None` lets it go on to routing.
pub async fn serve(
    gateway: &Gateway,
    snap: &Snapshot,
    req: &Request<Incoming>,
    view: &ClientView,
) -> Result<Option<http::Response<Body>>, GatewayError> {
    let path = req.uri().path();
    if let Some(resp) = verify_file(snap, req.method(), path) {
        return Ok(Some(resp));
    }
    if !crate::path::is_under("/_wxgate", path) {
        return Ok(None);
    }
    // Every spelling of `/_wxgate` (the bare prefix, any case, `;parameters`) belongs to the
    // gateway and is never forwarded; only the exact lower-case names are served.
    let Some(name) = path.strip_prefix(PREFIX) else {
        return Err(GatewayError::NoRoute);
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(Some(pages::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "This address only answers GET.",
            crate::headers::wants_json(req.headers()),
            "-",
        )));
    }
    let resp = match name {
        "healthz" => pages::text(StatusCode::OK, "ok\n"),
        "readyz" if gateway.is_ready() => pages::text(StatusCode::OK, "ready\n"),
        "readyz" => pages::text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        _ => match &snap.auth {
            Some(auth) => match auth.serve_endpoint(name, req, view).await? {
                Some(resp) => resp,
                None => return Err(GatewayError::NoRoute),
            },
            None => return Err(GatewayError::NoRoute),
        },
    };
    Ok(Some(resp))
}

/// Whether `serve` may answer this path: a cheap test, so the handler awaits `serve` (a large
/// future, because of the login callback) only for the gateway's own paths.
/// `path` is normalised ([`crate::path::normalize`]).
pub fn owns(snap: &Snapshot, path: &str) -> bool {
    crate::path::is_under("/_wxgate", path)
        || snap
            .settings
            .wechat
            .as_ref()
            .is_some_and(|w| w.verify_files.contains_key(path.trim_start_matches('/')))
}

fn verify_file(snap: &Snapshot, method: &Method, path: &str) -> Option<http::Response<Body>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let name = path.strip_prefix('/')?;
    let content = snap.settings.wechat.as_ref()?.verify_files.get(name)?;
    let mut resp = http::Response::new(Body::full(content.clone()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Some(resp)
}
