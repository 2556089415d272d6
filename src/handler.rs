//! One request, in phases: size check → gateway's own paths → route → authenticate →
//! forward → log. Each phase is a plain function in its own module; this file only
//! sequences them, reading one configuration snapshot from start to end.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, Uri};
use hyper::body::Incoming;

use crate::accesslog::{self, LoggedBody};
use crate::admin;
use crate::app::{Gateway, Snapshot};
use crate::auth::{self, Auth, Decision};
use crate::body::Body;
use crate::config::RouteSettings;
use crate::error::GatewayError;
use crate::headers::{self, ClientView};
use crate::proxy::Forward;

/// Serves one request; never fails (errors become short pages) and always logs once.
pub async fn handle(
    gateway: Arc<Gateway>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
) -> Response<LoggedBody> {
    let started = Instant::now();
    // One snapshot for the whole request: a reload meanwhile does not change its rules.
    let snap = gateway.snapshot();
    let request_id = headers::request_id(req.headers());
    // Before anything looks at the request: one validated authority, and one normalised path
    // that routing, `/_wxgate/`, auth and the upstream all see.
    let checked = headers::check_host(req.version(), req.uri(), req.headers())
        .map_err(GatewayError::BadRequest)
        .and_then(|()| normalize_target(&mut req));
    let view = ClientView::new(
        peer,
        tls,
        req.uri(),
        req.headers(),
        &snap.settings.server.trusted_proxies,
    );
    let wants_json = headers::wants_json(req.headers());
    let method = req.method().clone();
    // Logged as routed (normalised); a refused path is logged as received.
    let path = req.uri().path().to_string();

    let (mut route, mut fwd) = (None, false);
    let result = match checked {
        Ok(()) => {
            phases(
                &gateway,
                &snap,
                req,
                &view,
                &request_id,
                &mut route,
                &mut fwd,
            )
            .await
        }
        Err(e) => Err(e),
    };
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => e.into_response(wants_json, request_id.to_str().unwrap_or("-")),
    };
    resp.headers_mut()
        .insert(headers::X_REQUEST_ID.clone(), request_id.clone());
    if path == "/_wxgate/callback" {
        // The callback URL carries a code: whatever the answer (error pages included), never
        // let it leak through Referer.
        resp.headers_mut().insert(
            http::header::REFERRER_POLICY,
            http::HeaderValue::from_static("no-referrer"),
        );
    }

    let (parts, body) = resp.into_parts();
    let entry = accesslog::Entry {
        started,
        method,
        host: view.host,
        path,
        status: parts.status.as_u16(),
        route,
        forwarded: fwd,
        request_id,
        client_ip: view.client_ip,
    };
    Response::from_parts(parts, LoggedBody::new(body, entry))
}

/// Replaces the request's path with its normal form ([`crate::path::normalize`]), keeping the
/// query as sent; refuses (400) a path that cannot be normalised safely. Nothing is allocated
/// when the path is already normal.
fn normalize_target(req: &mut Request<Incoming>) -> Result<(), GatewayError> {
    let normal = match crate::path::normalize(req.uri().path()) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(p)) => p,
        Err(refusal) => return Err(GatewayError::BadRequest(refusal.message())),
    };
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    let target = match parts.path_and_query.as_ref().and_then(|pq| pq.query()) {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    let invalid = || GatewayError::BadRequest("The request path is not valid.");
    parts.path_and_query = Some(target.parse().map_err(|_| invalid())?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| invalid())?;
    Ok(())
}

async fn phases(
    gateway: &Gateway,
    snap: &Snapshot,
    req: Request<Incoming>,
    view: &ClientView,
    request_id: &http::HeaderValue,
    chosen: &mut Option<Arc<RouteSettings>>,
    forwarded: &mut bool,
) -> Result<Response<Body>, GatewayError> {
    let size = headers::header_bytes(req.headers());
    if size > snap.settings.server.max_request_header_bytes {
        return Err(GatewayError::HeadersTooLarge(size));
    }
    // Boxed, and only for the gateway's own paths: its future is large (the login callback's
    // code exchange), and would otherwise enlarge every request's future, which is moved
    // several times on its way into hyper.
    if admin::owns(snap, req.uri().path()) {
        if let Some(resp) = Box::pin(admin::serve(gateway, snap, &req, view)).await? {
            return Ok(resp);
        }
    }
    let route = snap
        .router
        .select(&view.host, req.uri().path())
        .ok_or(GatewayError::NoRoute)?;
    *chosen = Some(route.clone());
    let permit = match auth::authenticate(snap.auth.as_ref(), route, &req, view).await? {
        Decision::Forward(permit) => permit,
        Decision::Respond(resp) => return Ok(*resp),
    };
    let fwd = Forward {
        route,
        view,
        request_id,
        jwt_header: snap.auth.as_ref().map(Auth::jwt_header),
        own_cookies: snap.auth.as_ref().map_or(&[], Auth::cookie_names),
    };
    *forwarded = true;
    gateway.proxy().forward(fwd, req, permit).await
}
