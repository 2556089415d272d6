//! One request, in phases: size check → gateway's own paths → route → authenticate →
//! forward → log. Each phase is a plain function in its own module; this file only
//! sequences them and owns the shared [`Gateway`] state.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::accesslog::{self, LoggedBody};
use crate::admin;
use crate::auth::{self, Auth, Decision};
use crate::body::Body;
use crate::config::{ConfigError, RouteSettings, Settings};
use crate::error::GatewayError;
use crate::headers::{self, ClientView};
use crate::proxy::{Forward, Proxy};
use crate::routes::Router;

/// Everything a request needs, built once at start-up.
pub struct Gateway {
    settings: Settings,
    router: Router,
    proxy: Proxy,
    auth: Option<Auth>,
    ready: AtomicBool,
}

impl Gateway {
    /// Builds the gateway; key material that fails to load is reported as a config error.
    pub fn new(settings: Settings) -> Result<Gateway, ConfigError> {
        let auth = Auth::from_settings(&settings)?;
        Ok(Gateway {
            router: Router::new(&settings.routes),
            proxy: Proxy::new(&settings.server),
            auth,
            settings,
            ready: AtomicBool::new(false),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// Serves one request; never fails (errors become short pages) and always logs once.
pub async fn handle(
    gateway: Arc<Gateway>,
    req: Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
) -> Response<LoggedBody> {
    let started = Instant::now();
    let request_id = headers::request_id(req.headers());
    let view = ClientView::new(
        peer,
        tls,
        req.uri(),
        req.headers(),
        &gateway.settings.server.trusted_proxies,
    );
    let wants_json = headers::wants_json(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_string();

    let (mut route, mut fwd) = (None, false);
    let mut resp = match phases(&gateway, req, &view, &request_id, &mut route, &mut fwd).await {
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

async fn phases(
    gateway: &Gateway,
    req: Request<Incoming>,
    view: &ClientView,
    request_id: &http::HeaderValue,
    chosen: &mut Option<Arc<RouteSettings>>,
    forwarded: &mut bool,
) -> Result<Response<Body>, GatewayError> {
    let size = headers::header_bytes(req.headers());
    if size > gateway.settings.server.max_request_header_bytes {
        return Err(GatewayError::HeadersTooLarge(size));
    }
    // Boxed, and only for the gateway's own paths: its future is large (the login callback's
    // code exchange), and would otherwise enlarge every request's future, which is moved
    // several times on its way into hyper.
    if admin::owns(gateway, req.uri().path()) {
        if let Some(resp) = Box::pin(admin::serve(gateway, &req, view)).await? {
            return Ok(resp);
        }
    }
    let route = gateway
        .router
        .select(&view.host, req.uri().path())
        .ok_or(GatewayError::NoRoute)?;
    *chosen = Some(route.clone());
    let permit = match auth::authenticate(gateway.auth(), route, &req, view).await? {
        Decision::Forward(permit) => permit,
        Decision::Respond(resp) => return Ok(*resp),
    };
    let fwd = Forward {
        route,
        view,
        request_id,
        jwt_header: gateway.auth().map(Auth::jwt_header),
        own_cookies: gateway.auth().map_or(&[], Auth::cookie_names),
    };
    *forwarded = true;
    gateway.proxy.forward(fwd, req, permit).await
}
