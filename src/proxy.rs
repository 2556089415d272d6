//! Forwarding: rewrites a permitted request for its upstream, sends it over a pooled
//! HTTP/1.1 connection ([`crate::upstream`], rustls for https upstreams), streams both bodies
//! without buffering and tunnels the `Upgrade` requests a route allows (`upgrades`). It needs an [`auth::Permit`], which only
//! the auth module makes.

use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use crate::auth::Permit;
use crate::body::{Body, ClientFault, Progress, RequestBody};
use crate::config::{RouteSettings, ServerSettings};
use crate::error::GatewayError;
use crate::headers::{self, ClientView};
use crate::routes;
use crate::upstream::{Lease, SendError, Upstreams};

/// The upstream side: one connection pool per server worker, shared by all routes. A worker
/// only uses its own pool, so a request and its upstream connection stay on one thread.
pub struct Proxy {
    upstreams: Upstreams,
    /// `server.request_timeout` in milliseconds: live, a reload may change it.
    timeout_ms: std::sync::atomic::AtomicU64,
}

/// What the proxy needs to know about the request besides the request itself.
pub struct Forward<'a> {
    pub route: &'a RouteSettings,
    pub view: &'a ClientView,
    pub request_id: &'a HeaderValue,
    /// The configured JWT header, stripped from client requests.
    pub jwt_header: Option<&'a HeaderName>,
    /// The gateway's own cookie names, never sent upstream.
    pub own_cookies: &'a [String],
}

impl Proxy {
    /// `upstream_ca`: CAs trusted for https upstreams besides the public web roots (already
    /// validated when the config was loaded).
    /// `workers`: how many pools to keep (see [`crate::upstream::worker_index`]).
    pub fn new(server: &ServerSettings) -> Proxy {
        let timeout = server.request_timeout;
        let tls = crate::tls::upstream_client_config(&server.upstream_ca).unwrap_or_else(|e| {
            tracing::error!(error = %e, "server.upstream_ca unusable; trusting the public roots only");
            crate::tls::upstream_client_config(&[]).expect("the public roots are valid")
        });
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Proxy {
            upstreams: Upstreams::new(https, server.workers, server.upstream_idle_timeout),
            timeout_ms: std::sync::atomic::AtomicU64::new(timeout.as_millis() as u64),
        }
    }

    /// Applies a reloaded `server.request_timeout` to the requests that start after it.
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms.store(
            timeout.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub async fn forward(
        &self,
        fwd: Forward<'_>,
        mut req: Request<Incoming>,
        permit: Permit,
    ) -> Result<Response<Body>, GatewayError> {
        // A declared length over the limit is refused before the upstream is contacted.
        if let Some(max) = fwd.route.max_body {
            if http_body::Body::size_hint(req.body()).lower() > max {
                // Read what the client sends anyway, so that it sees the 413; not when it
                // waits for `100 Continue` (it then sends nothing, as it should).
                if !req.headers().contains_key(header::EXPECT) {
                    crate::body::linger(req.into_body());
                }
                return Err(GatewayError::BodyTooLarge(max));
            }
        }
        // Any other Upgrade is refused by serving the request as an ordinary one without it
        // (as nginx does): a 101 the upstream sends anyway is then "unexpected" below.
        let upgrade = headers::is_upgrade(req.headers()) && upgrade_allowed(fwd.route, &req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        // HTTP/2 clients carry the host in :authority; upstreams speak HTTP/1.1 and need Host.
        // It is the client's own authority, as for HTTP/1.1, not a trusted proxy's
        // X-Forwarded-Host (that one travels in X-Forwarded-Host).
        if !parts.headers.contains_key(header::HOST) {
            let authority = parts
                .uri
                .authority()
                .map_or(fwd.view.authority.as_str(), |a| a.as_str());
            if let Ok(v) = HeaderValue::from_str(authority) {
                parts.headers.insert(header::HOST, v);
            }
        }
        parts.uri = upstream_uri(fwd.route, &parts.uri)?;
        parts.version = Version::HTTP_11;
        let h = &mut parts.headers;
        headers::remove_hop_by_hop(h, upgrade);
        // Request trailers are dropped (see RequestBody); the header announcing them goes too.
        h.remove(header::TRAILER);
        headers::strip_identity(h, fwd.jwt_header);
        headers::strip_cookies(h, fwd.own_cookies);
        fwd.view.set_forwarded(h);
        h.insert(headers::X_REQUEST_ID.clone(), fwd.request_id.clone());
        permit.write_headers(h);

        let progress = Progress::new();
        let body = RequestBody::new(body, progress.clone(), fwd.route.max_body);
        let request = Request::from_parts(parts, body);
        let (mut resp, lease) = match self.send(fwd.route, request, &progress).await {
            Ok(sent) => sent,
            Err(e) => return Err(self.failure(fwd.route, e, &progress)),
        };

        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let lease = if switching {
            lease.discard();
            None
        } else {
            Some(lease)
        };
        if switching {
            match client_upgrade {
                Some(client_side) => {
                    let upstream_side = hyper::upgrade::on(&mut resp);
                    tokio::spawn(tunnel(client_side, upstream_side));
                }
                // A 101 nobody asked for cannot be honoured.
                None => {
                    return Err(GatewayError::UpstreamUnreachable(
                        "unexpected 101 from upstream".into(),
                    ))
                }
            }
        }
        let (mut parts, body) = resp.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers, switching);
        parts
            .headers
            .insert(headers::X_REQUEST_ID.clone(), fwd.request_id.clone());
        Ok(Response::from_parts(parts, Body::upstream(body, lease)))
    }
}

impl Proxy {
    /// Whose fault a failed exchange was. The client's body (malformed, aborted, stalled, over
    /// `max_body`) is told apart from the upstream's failures, so that no client can make the
    /// gateway report (and alert on) 502s and 504s.
    fn failure(
        &self,
        route: &RouteSettings,
        e: Option<SendError>,
        progress: &Progress,
    ) -> GatewayError {
        match (progress.client_fault(), e) {
            (Some(ClientFault::TooLarge), _) => {
                GatewayError::BodyTooLarge(route.max_body.unwrap_or(0))
            }
            (Some(ClientFault::Broken), e) => {
                GatewayError::ClientBody(e.map_or_else(|| "broken body".into(), |e| e.to_string()))
            }
            (None, None) if progress.waiting_on_client() => {
                GatewayError::ClientTimeout(self.timeout())
            }
            (None, None) => GatewayError::UpstreamTimeout(self.timeout()),
            (None, Some(e)) => {
                GatewayError::UpstreamUnreachable(format!("{}: {e}", route.upstream.url))
            }
        }
    }

    /// Sends the request and waits for the response headers. The upstream gets `timeout` from
    /// the moment the request body last moved: the clock restarts while a client is still
    /// uploading (like nginx's `proxy_send_timeout`), so only a silent upstream times out.
    /// `Err(None)` is a timeout.
    async fn send(
        &self,
        route: &RouteSettings,
        req: Request<RequestBody>,
        progress: &Progress,
    ) -> Result<(Response<Incoming>, Lease), Option<SendError>> {
        let up = &route.upstream;
        let sent = self.upstreams.send(up.https, &up.authority, req);
        tokio::pin!(sent);
        let timeout = self.timeout();
        let mut deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                result = &mut sent => return result.map_err(Some),
                _ = tokio::time::sleep_until(deadline) => {
                    let next = tokio::time::Instant::from_std(progress.last()) + timeout;
                    if next <= tokio::time::Instant::now() {
                        return Err(None);
                    }
                    deadline = next;
                }
            }
        }
    }
}

/// The request target sent upstream, in origin form (`/path?query`): the connection already
/// goes to the route's upstream.
fn upstream_uri(route: &RouteSettings, uri: &Uri) -> Result<Uri, GatewayError> {
    let path = routes::upstream_path(route, uri.path());
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    Uri::builder()
        .path_and_query(pq)
        .build()
        .map_err(|_| GatewayError::BadRequest("The request path is not valid."))
}

/// Whether the request's `Upgrade` may be tunnelled: HTTP/1.1, every protocol it offers in
/// the route's `upgrades` (case-insensitive), and WebSocket only on GET (RFC 6455 §4.1). An
/// `h2c` tunnel, say, would carry requests the gateway never sees, with forged identities.
fn upgrade_allowed(route: &RouteSettings, req: &Request<Incoming>) -> bool {
    if req.version() != Version::HTTP_11 || route.upgrades.is_empty() {
        return false;
    }
    let mut offered = false;
    for value in req.headers().get_all(header::UPGRADE) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let allowed = route.upgrades.iter().any(|a| a.eq_ignore_ascii_case(token));
            let websocket = token.eq_ignore_ascii_case("websocket");
            if !allowed || (websocket && req.method() != Method::GET) {
                return false;
            }
            offered = true;
        }
    }
    offered
}

/// Copies bytes both ways between the client and the upstream once both sides switched.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "tunnel closed with error");
    }
}
