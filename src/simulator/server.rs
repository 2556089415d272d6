//! The simulator's accept loop and request routing: one port serves the open.weixin.qq.com
//! pages, the api.weixin.qq.com APIs and the `/_sim/` control API. Counters and faults are
//! applied here, before any handler runs.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::control::FaultKind;
use super::http::{self, ApiFamily, Params, Resp};
use super::{api, authorize, control, Sim, ENDPOINTS};

/// Bodies larger than this are refused; WeChat's requests here are tiny.
const MAX_BODY: usize = 64 * 1024;

/// Returned by the service to make hyper close the connection without an answer.
#[derive(Debug)]
pub struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated dropped connection")
    }
}

impl std::error::Error for DropConnection {}

pub async fn serve(listener: TcpListener, sim: Arc<Sim>) {
    // Connections live in this JoinSet so that aborting the serve task (SimHandle drop)
    // aborts every open connection too.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let sim = sim.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let sim = sim.clone();
                            async move { route(sim, peer, req).await }
                        });
                        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        // A failed connection (client gone, simulated drop) only ends itself.
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    });
                }
                Err(e) => {
                    tracing::warn!("simulator accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn route(
    sim: Arc<Sim>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, DropConnection> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = Params::parse(parts.uri.query().unwrap_or(""));
    let body: Bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(http::text(StatusCode::PAYLOAD_TOO_LARGE, "body too large")),
    };

    if let Some(endpoint) = ENDPOINTS.iter().copied().find(|e| *e == path) {
        let decision = sim
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .on_call(endpoint);
        if let Some(d) = decision.latency {
            tokio::time::sleep(d).await;
        }
        match decision.outcome {
            Some(FaultKind::Drop) => return Err(DropConnection),
            Some(FaultKind::HttpStatus { status }) => {
                let s = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                return Ok(http::text(s, format!("simulated HTTP {status}")));
            }
            Some(FaultKind::Errcode { errcode, errmsg }) => {
                let msg = errmsg.unwrap_or_else(|| http::errmsg(errcode).to_string());
                return Ok(if endpoint.starts_with("/connect/") {
                    authorize::error_page(Some(errcode), &msg)
                } else {
                    let family = if endpoint.starts_with("/sns/") {
                        ApiFamily::Sns
                    } else {
                        ApiFamily::CgiBin
                    };
                    http::json(family, &http::err_value(errcode, &msg))
                });
            }
            Some(FaultKind::Latency { .. }) | None => {}
        }
        return Ok(dispatch(&sim, peer, &parts, endpoint, &query, &body));
    }

    Ok(match (&parts.method, path.as_str()) {
        (&Method::POST, "/_sim/consent") => authorize::consent_submit(
            &sim,
            &parts.headers,
            &Params::parse(&String::from_utf8_lossy(&body)),
        ),
        (&Method::POST, "/_sim/qrconfirm") => {
            authorize::qr_confirm(&sim, &Params::parse(&String::from_utf8_lossy(&body)))
        }
        (_, p) if p.starts_with("/_sim/") => control::handle(&sim, &parts.method, p, &query, &body),
        (&Method::GET, "/") => authorize::index(&sim),
        _ => http::text(StatusCode::NOT_FOUND, "not found"),
    })
}

fn dispatch(
    sim: &Sim,
    peer: SocketAddr,
    parts: &hyper::http::request::Parts,
    endpoint: &str,
    query: &Params,
    body: &[u8],
) -> Resp {
    match endpoint {
        "/connect/oauth2/authorize" => authorize::oauth2_authorize(sim, &parts.headers, query),
        "/connect/qrconnect" => authorize::qrconnect(sim, &parts.headers, query),
        "/sns/oauth2/access_token" => api::sns_access_token(sim, query),
        "/sns/oauth2/refresh_token" => api::sns_refresh_token(sim, query),
        "/sns/userinfo" => api::sns_userinfo(sim, query),
        "/sns/auth" => api::sns_auth(sim, query),
        "/cgi-bin/token" => api::cgi_token(sim, peer, query),
        "/cgi-bin/stable_token" => api::cgi_stable_token(sim, peer, &parts.method, body),
        "/cgi-bin/user/info" => api::cgi_user_info(sim, query),
        _ => http::text(StatusCode::NOT_FOUND, "not found"),
    }
}
