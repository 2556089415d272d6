//! The listener and connection loop, after hyper-util's `server_graceful` example: an `auto`
//! builder (HTTP/1.1, h2 and h2c prior knowledge), optional rustls, and a graceful shutdown
//! that stops accepting, turns `readyz` to 503 and lets in-flight requests finish.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::handler::{self, Gateway};

/// A bound, serving gateway. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
    gateway: Arc<Gateway>,
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Starts draining without waiting for it.
    pub fn begin_shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Drains (bounded by `server.shutdown_timeout`) and returns when the loop has ended.
    pub async fn shutdown(self) {
        self.begin_shutdown();
        let _ = self.done.await;
    }

    /// Waits until the server stops (after a shutdown was begun elsewhere).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Binds `server.listen` and starts serving in the background.
pub async fn start(gateway: Arc<Gateway>) -> std::io::Result<Running> {
    let settings = &gateway.settings().server;
    let tls = match &settings.tls {
        Some(t) => Some(TlsAcceptor::from(
            crate::tls::server_config(&t.cert, &t.key).map_err(std::io::Error::other)?,
        )),
        None => None,
    };
    let listener = TcpListener::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let done = tokio::spawn(accept_loop(listener, tls, gateway.clone(), stop_rx));
    gateway.set_ready(true);
    tracing::info!(%addr, tls = settings.tls.is_some(), "wxgate listening");
    Ok(Running {
        addr,
        stop,
        done,
        gateway,
    })
}

fn builder(gateway: &Gateway) -> auto::Builder<TokioExecutor> {
    let max_headers = gateway.settings().server.max_request_header_bytes;
    let mut b = auto::Builder::new(TokioExecutor::new());
    // The buffers are larger than the configured limit so that most oversized requests reach
    // the handler, which answers with a readable 431 page; far larger ones get hyper's bare 431.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size((max_headers * 2).max(16 * 1024))
        .max_headers(256);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size((max_headers * 2) as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    mut stop: watch::Receiver<bool>,
) {
    let builder = Arc::new(builder(&gateway));
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let watcher = graceful.watcher();
                    let gateway = gateway.clone();
                    let builder = builder.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        serve(stream, peer, tls, gateway, builder, watcher).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    gateway.set_ready(false);
    drop(listener);
    let limit = gateway.settings().server.shutdown_timeout;
    tracing::info!(in_flight = graceful.count(), ?limit, "draining connections");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(limit) => tracing::warn!("shutdown_timeout reached; closing remaining connections"),
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let is_tls = tls.is_some();
    let service = service_fn(move |req| {
        let gateway = gateway.clone();
        async move { Ok::<_, Infallible>(handler::handle(gateway, req, peer, is_tls).await) }
    });
    let result = match tls {
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            watcher.watch(conn.into_owned()).await
        }
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            watcher.watch(conn.into_owned()).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with error");
    }
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// the future is first polled, so call it before listening: a SIGTERM that arrives during
/// start-up then shuts down cleanly instead of killing the process.
pub fn termination_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let ctrl_c = tokio::signal::ctrl_c();
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = term.recv() => {},
                _ = ctrl_c => {},
            }
            return;
        }
        let _ = ctrl_c.await;
    }
}
