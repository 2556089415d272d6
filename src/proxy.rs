//! Forwarding: rewrites a permitted request for its upstream, sends it over a pooled
//! HTTP/1.1 connection ([`crate::upstream`], rustls for https upstreams), streams both bodies
//! without buffering and tunnels `Upgrade` requests. It needs an [`auth::Permit`], which only
//! the auth module makes.

use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use crate::auth::Permit;
use crate::body::{Body, Progress, RequestBody};
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
    /// `workers`: how many pools to keep (see [`crate::server::worker_index`]).
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
        let upgrade = req.version() <= Version::HTTP_11 && headers::is_upgrade(req.headers());
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
        headers::strip_identity(h, fwd.jwt_header);
        headers::strip_cookies(h, fwd.own_cookies);
        fwd.view.set_forwarded(h);
        h.insert(headers::X_REQUEST_ID.clone(), fwd.request_id.clone());
        permit.write_headers(h);

        let progress = Progress::new();
        let body = RequestBody::new(body, progress.clone());
        let request = Request::from_parts(parts, body);
        let (mut resp, lease) = match self.send(fwd.route, request, &progress).await {
            Err(None) => return Err(GatewayError::UpstreamTimeout(self.timeout())),
            Err(Some(e)) => {
                return Err(GatewayError::UpstreamUnreachable(format!(
                    "{}: {e}",
                    fwd.route.upstream.url
                )))
            }
            Ok(sent) => sent,
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
