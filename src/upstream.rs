//! Upstream connections: HTTP/1.1 connections made with hyper's low-level client, kept in one
//! small pool per server worker. A connection goes back to its pool when its response body
//! has been read to the end, so a request costs a lookup in a short list and no extra task.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service as _;

use crate::body::RequestBody;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Idle connections kept per worker; more are closed.
const MAX_IDLE: usize = 1024;

/// Where a connection goes: scheme and authority.
#[derive(Clone, PartialEq, Eq)]
struct Key {
    https: bool,
    authority: Authority,
}

struct Idle {
    key: Key,
    sender: SendRequest<RequestBody>,
    since: Instant,
}

/// One worker's idle connections, most recently returned last.
#[derive(Default)]
struct Idles {
    list: Vec<Idle>,
    swept: Option<Instant>,
    /// Whether a sweeper task runs for this pool (see [`ensure_sweeper`]).
    sweeper: bool,
}

impl Idles {
    /// Drops the connections that are closed or idle for `timeout`; dropping the last
    /// `SendRequest` ends the connection's task, which closes the socket.
    fn sweep(&mut self, now: Instant, timeout: Duration) {
        self.swept = Some(now);
        self.list
            .retain(|i| !i.sender.is_closed() && now.duration_since(i.since) < timeout);
    }
}

type Pool = Arc<Mutex<Idles>>;

/// The pools of all workers and the connector they share.
pub struct Upstreams {
    pools: Vec<Pool>,
    connector: Connector,
    idle_timeout: Duration,
}

/// Why an upstream request failed, for the error page and the log.
#[derive(Debug)]
pub enum SendError {
    Connect(Box<dyn std::error::Error + Send + Sync>),
    Http(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, e): (&str, &(dyn std::error::Error + 'static)) = match self {
            SendError::Connect(e) => ("cannot connect", e.as_ref()),
            SendError::Http(e) => ("request failed", e),
        };
        write!(f, "{what}: {e}")?;
        let mut source = e.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// A connection lent to one request. Dropped after the response body was read to the end
/// (`finished`), it goes back to its pool; otherwise it is closed.
pub struct Lease {
    pool: Pool,
    key: Key,
    sender: Option<SendRequest<RequestBody>>,
    finished: bool,
}

impl Lease {
    /// The response body has been read to the end: the connection may carry another request.
    pub fn finish(mut self) {
        self.finished = true;
    }

    /// The connection was upgraded (101): it is the tunnel's now, never pooled.
    pub fn discard(mut self) {
        self.sender = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(mut sender) = self.sender.take() else {
            return;
        };
        if !self.finished || sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            put_back(&self.pool, self.key.clone(), sender);
            return;
        }
        // The response is read but the connection is still finishing (the rest of a request
        // body, say): pool it once it can take a request, not before, so that nobody waits
        // on it. This is rare; the common case above costs no task.
        let (pool, key) = (self.pool.clone(), self.key.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if sender.ready().await.is_ok() {
                    put_back(&pool, key, sender);
                }
            });
        }
    }
}

fn put_back(pool: &Pool, key: Key, sender: SendRequest<RequestBody>) {
    if let Ok(mut idle) = pool.lock() {
        if idle.list.len() < MAX_IDLE {
            idle.list.push(Idle {
                key,
                sender,
                since: Instant::now(),
            });
        }
    }
}

impl Upstreams {
    /// `idle_timeout` (`server.upstream_idle_timeout`): a pooled connection unused for this
    /// long is closed, by the pool's sweeper even when no request comes.
    pub fn new(connector: Connector, workers: usize, idle_timeout: Duration) -> Upstreams {
        Upstreams {
            pools: (0..workers.max(1)).map(|_| Pool::default()).collect(),
            connector,
            idle_timeout,
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `https?://authority` over an idle
    /// connection of the calling worker's pool, or a new one.
    pub async fn send(
        &self,
        https: bool,
        authority: &Authority,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        let pool = &self.pools[worker_index() % self.pools.len()];
        let key = Key {
            https,
            authority: authority.clone(),
        };
        while let Some(mut sender) = checkout(pool, &key, self.idle_timeout) {
            // Ready at once, unless its previous response is still being wrapped up.
            if sender.ready().await.is_err() {
                continue;
            }
            // An upstream may close an idle connection just as a request goes out on it
            // (Node's 5 s keep-alive timeout, say). A request that can safely be sent twice
            // is then retried once on a new connection, as nginx does; others get the error.
            let replay = replayable(&req);
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.lease(pool, key, sender))),
                Err(mut e) => match (e.take_message(), replay) {
                    // Not sent at all: try another connection.
                    (Some(r), _) => req = r,
                    (None, Some(r)) => {
                        tracing::debug!(error = %e.into_error(), "reused upstream connection failed; retrying");
                        req = r;
                        break;
                    }
                    (None, None) => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        // Boxed: connecting is the rare path, and its state would otherwise make every
        // request's future (moved several times on its way into hyper) larger.
        let mut sender = Box::pin(self.connect(&key)).await?;
        ensure_sweeper(pool, self.idle_timeout);
        let resp = sender.send_request(req).await.map_err(SendError::Http)?;
        Ok((resp, self.lease(pool, key, sender)))
    }

    fn lease(&self, pool: &Pool, key: Key, sender: SendRequest<RequestBody>) -> Lease {
        Lease {
            pool: pool.clone(),
            key,
            sender: Some(sender),
            finished: false,
        }
    }

    async fn connect(&self, key: &Key) -> Result<SendRequest<RequestBody>, SendError> {
        let uri = Uri::builder()
            .scheme(if key.https { "https" } else { "http" })
            .authority(key.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| SendError::Connect(e.into()))?;
        let io = self
            .connector
            .clone()
            .call(uri)
            .await
            .map_err(SendError::Connect)?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Http)?;
        // The connection's own task reads and writes the socket; it ends when the upstream
        // closes or every `SendRequest` is gone.
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with error");
            }
        });
        Ok(sender)
    }
}

/// A copy to send again if a reused connection fails before any answer: only for idempotent
/// methods without a body (a streamed body cannot be sent twice).
fn replayable(req: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    if !req.method().is_idempotent() || !http_body::Body::is_end_stream(req.body()) {
        return None;
    }
    let mut copy = Request::new(RequestBody::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// The most recently returned idle connection to `key` (the others can time out). Once a
/// second the list is swept of connections that are closed or too old.
fn checkout(pool: &Pool, key: &Key, timeout: Duration) -> Option<SendRequest<RequestBody>> {
    let mut idle = pool.lock().ok()?;
    let now = Instant::now();
    if idle
        .swept
        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
    {
        idle.sweep(now, timeout);
    }
    loop {
        let at = idle.list.iter().rposition(|i| i.key == *key)?;
        let i = idle.list.swap_remove(at);
        if !i.sender.is_closed() && now.duration_since(i.since) < timeout {
            return Some(i.sender);
        }
    }
}

/// Starts, on the calling worker's runtime, a task that sweeps `pool` every half idle timeout,
/// so idle connections are closed even when traffic stops. One per pool: the task clears the
/// flag when it ends (its runtime shut down, or the pool is gone).
fn ensure_sweeper(pool: &Pool, timeout: Duration) {
    match pool.lock() {
        Ok(mut idle) if !idle.sweeper => idle.sweeper = true,
        _ => return,
    }
    struct Running(Weak<Mutex<Idles>>);
    impl Drop for Running {
        fn drop(&mut self) {
            if let Some(pool) = self.0.upgrade() {
                if let Ok(mut idle) = pool.lock() {
                    idle.sweeper = false;
                }
            }
        }
    }
    let running = Running(Arc::downgrade(pool));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(timeout / 2).await;
            let Some(pool) = running.0.upgrade() else {
                return;
            };
            // Taken out under the lock, dropped (closing their sockets) after it.
            let expired = match pool.lock() {
                Ok(mut idle) => {
                    let before = std::mem::take(&mut idle.list);
                    let now = Instant::now();
                    let (keep, expired): (Vec<_>, Vec<_>) = before.into_iter().partition(|i| {
                        !i.sender.is_closed() && now.duration_since(i.since) < timeout
                    });
                    idle.list = keep;
                    idle.swept = Some(now);
                    expired
                }
                Err(_) => return,
            };
            drop(expired);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodiless_idempotent_requests_are_replayed() {
        let req = |m: &str| {
            Request::builder()
                .method(m)
                .uri("/a?b=1")
                .header("x-request-id", "r1")
                .body(RequestBody::empty())
                .unwrap()
        };
        let copy = replayable(&req("GET")).expect("GET is replayed");
        assert_eq!(copy.uri(), "/a?b=1");
        assert_eq!(copy.headers()["x-request-id"], "r1");
        assert!(replayable(&req("PUT")).is_some());
        assert!(replayable(&req("POST")).is_none());
        assert!(replayable(&req("PATCH")).is_none());
    }
}

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Which server worker the calling thread is (0 outside the worker threads): each worker uses
/// only its own pool, so a request and its upstream connection stay on one thread.
pub fn worker_index() -> usize {
    WORKER.with(std::cell::Cell::get)
}

/// Called once by each worker thread as it starts (see `crate::server`).
pub fn set_worker_index(index: usize) {
    WORKER.with(|w| w.set(index));
}
