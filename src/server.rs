//! The listener, the worker threads and the per-connection loop. One accept loop hands
//! connections round-robin to `server.workers` event loops (one thread each, nginx-style), so
//! a request, its upstream connection and their wakeups stay on one thread. HTTP/1
//! connections that go idle give their buffers back ("parking") until the client speaks again.
//!
//! The shape follows hyper-util's `server_graceful` example (hyper connection builders,
//! upgrades, a graceful drain bounded by `server.shutdown_timeout`), with two changes the
//! benchmarks asked for (see `bench/RESULTS.md`): the worker threads, and HTTP/1 served
//! through `hyper::server::conn::http1` directly instead of `auto::Builder`, because only it
//! hands the socket back when a keep-alive connection is idle.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::app::Gateway;
use crate::handler;

/// How long a client may take to send a request's headers, and to send its first byte.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// An HTTP/1 connection with no bytes moving and no request in flight for this long parks
/// (checked at this interval, so it parks 0.1 to 0.2 s after going idle): hyper's 16 KiB of
/// buffers are freed and the task waits on the bare socket, as nginx frees its request
/// buffers between keep-alive requests.
const PARK_AFTER: Duration = Duration::from_millis(100);
/// What an HTTP/2 client sends first (RFC 9113 §3.4), for h2c with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A bound, serving gateway. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
    gateway: Arc<Gateway>,
    parked: Arc<AtomicUsize>,
}

impl Running {
    /// Idle HTTP/1 connections currently parked (holding no hyper buffers).
    pub fn parked_connections(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

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

    /// Drains (bounded by `server.shutdown_timeout`) and returns when every worker has ended.
    pub async fn shutdown(self) {
        self.begin_shutdown();
        let _ = self.done.await;
    }

    /// Waits until the server stops (after a shutdown was begun elsewhere).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// What every connection needs, shared by all workers.
struct Shared {
    gateway: Arc<Gateway>,
    /// Whether the listener speaks TLS (fixed for the process); the certificate itself is the
    /// current snapshot's, so a reload renews it for the next connections.
    tls: bool,
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    keepalive: Duration,
    stop: watch::Receiver<bool>,
    parked: Arc<AtomicUsize>,
}

/// A worker thread as the accept loop sees it.
struct Worker {
    tx: mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    done: oneshot::Receiver<()>,
}

/// Binds `server.listen`, starts `server.workers - 1` worker threads (the caller's runtime is
/// worker 0 and runs the accept loop) and starts serving in the background.
pub async fn start(gateway: Arc<Gateway>) -> io::Result<Running> {
    let snap = gateway.snapshot();
    let settings = &snap.settings.server;
    let tls = snap.tls.is_some();
    let listener = TcpListener::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let parked = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(Shared {
        parked: parked.clone(),
        http1: http1_builder(settings.max_request_header_bytes),
        http2: http2_builder(settings.max_request_header_bytes),
        keepalive: settings.keepalive_timeout,
        tls,
        gateway: gateway.clone(),
        stop: stop_rx,
    });
    let mut workers = Vec::new();
    for index in 1..settings.workers {
        workers.push(spawn_worker(index, shared.clone())?);
    }
    let done = tokio::spawn(accept_loop(listener, shared, workers));
    gateway.set_ready(true);
    tracing::info!(%addr, tls = settings.tls.is_some(), workers = settings.workers, "wxgate listening");
    Ok(Running {
        addr,
        stop,
        done,
        gateway,
        parked,
    })
}

fn http1_builder(max_headers: usize) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    // The buffers are larger than the configured limit so that most oversized requests reach
    // the handler, which answers with a readable 431 page; far larger ones get hyper's bare 431.
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size((max_headers * 2).max(16 * 1024))
        .max_headers(256);
    b
}

fn http2_builder(max_headers: usize) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size((max_headers * 2) as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// A thread with its own single-threaded runtime that serves the connections it is handed
/// until the accept loop stops, then drains them.
fn spawn_worker(index: usize, shared: Arc<Shared>) -> io::Result<Worker> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>();
    let (done_tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("wxgate-worker-{index}"))
        .spawn(move || {
            crate::upstream::set_worker_index(index);
            runtime.block_on(async move {
                let tracker = TaskTracker::new();
                while let Some((stream, peer)) = rx.recv().await {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => {
                            tracker.spawn(serve(stream, peer, shared.clone()));
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot register a connection"),
                    }
                }
                drain(
                    &tracker,
                    shared.gateway.snapshot().settings.server.shutdown_timeout,
                )
                .await;
            });
            let _ = done_tx.send(());
        })?;
    Ok(Worker { tx, done })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, workers: Vec<Worker>) {
    let tracker = TaskTracker::new();
    let mut stop = shared.stop.clone();
    let mut next = 0usize;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Round-robin over worker 0 (this runtime) and the worker threads.
                    next = (next + 1) % (workers.len() + 1);
                    let handed = match next.checked_sub(1).and_then(|i| workers.get(i)) {
                        None => Some((stream, peer)),
                        Some(w) => match stream.into_std() {
                            Ok(std) => w.tx.send((std, peer)).err().and_then(|e| {
                                let (std, peer) = e.0;
                                TcpStream::from_std(std).ok().map(|s| (s, peer))
                            }),
                            Err(e) => {
                                tracing::warn!(%peer, error = %e, "cannot hand a connection to a worker");
                                None
                            }
                        },
                    };
                    if let Some((stream, peer)) = handed {
                        tracker.spawn(serve(stream, peer, shared.clone()));
                    }
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
    let gateway = &shared.gateway;
    gateway.set_ready(false);
    drop(listener);
    let limit = gateway.snapshot().settings.server.shutdown_timeout;
    tracing::info!(?limit, "draining connections");
    let mut done = Vec::new();
    for w in workers {
        // Closing the channel tells the worker to drain.
        drop(w.tx);
        done.push(w.done);
    }
    drain(&tracker, limit).await;
    for d in done {
        let _ = d.await;
    }
}

/// Waits for a worker's connections to finish, at most `limit` (the rest are dropped with
/// the worker's runtime).
async fn drain(tracker: &TaskTracker, limit: Duration) {
    tracker.close();
    let in_flight = tracker.len();
    tokio::select! {
        _ = tracker.wait() => {
            if in_flight > 0 {
                tracing::debug!(in_flight, "worker's connections closed");
            }
        }
        _ = tokio::time::sleep(limit) => {
            tracing::warn!(remaining = tracker.len(), "shutdown_timeout reached; closing remaining connections");
        }
    }
}

/// One client connection. The big futures (TLS handshake, hyper's connection) are boxed so
/// that the task itself stays small: it is what an idle, parked connection costs.
async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    if !shared.tls {
        return serve_plain(stream, peer, shared).await;
    }
    let Some(acceptor) = shared.gateway.snapshot().tls.clone() else {
        return;
    };
    Box::pin(serve_tls(stream, peer, shared, acceptor)).await
}

async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
) {
    let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
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
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let activity = Arc::new(Activity::default());
    let io = ConnIo::new(stream, Bytes::new(), activity.clone());
    if h2 {
        serve_h2(io, peer, &shared, true).await;
    } else {
        // rustls keeps its own buffers, so a TLS connection is not parked.
        let _ = serve_h1(io, peer, &shared, &activity, true, false).await;
    }
}

/// Plain TCP: HTTP/1.1 (parked between requests when idle) or h2c with prior knowledge.
async fn serve_plain(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let activity = Arc::new(Activity::default());
    let mut stop = shared.stop.clone();
    let mut prefix = Bytes::new();
    let mut first = true;
    loop {
        if prefix.is_empty() {
            // Parked (or new): wait on the bare socket for the client's next bytes.
            let wait = if first {
                HEADER_READ_TIMEOUT
            } else {
                shared.keepalive.saturating_sub(PARK_AFTER)
            };
            if *stop.borrow_and_update() {
                return;
            }
            let mut peeked = [0u8; 24];
            let _parked = (!first).then(|| Gauge::up(&shared.parked));
            let n = tokio::select! {
                r = stream.peek(if first { &mut peeked[..] } else { &mut peeked[..1] }) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                _ = tokio::time::sleep(wait) => return,
                _ = stop.changed() => return,
            };
            if first && n >= 3 && peeked[..n] == H2_PREFACE[..n] {
                let io = ConnIo::new(stream, Bytes::new(), activity);
                Box::pin(serve_h2(io, peer, &shared, false)).await;
                return;
            }
        }
        first = false;
        // A partial request came back from a park: let hyper's header timer run out on it
        // rather than restarting it with another park (a slow client gains nothing).
        let may_park = prefix.is_empty();
        let io = ConnIo::new(stream, std::mem::take(&mut prefix), activity.clone());
        match Box::pin(serve_h1(io, peer, &shared, &activity, false, may_park)).await {
            Some((io, rest)) => {
                stream = io.inner;
                prefix = rest;
            }
            None => return,
        }
    }
}

/// Serves HTTP/1.1 until the connection ends (`None`) or parks (`Some`, with the socket and
/// any bytes hyper had read but not used).
async fn serve_h1<S>(
    io: ConnIo<S>,
    peer: SocketAddr,
    shared: &Shared,
    activity: &Arc<Activity>,
    tls: bool,
    mut may_park: bool,
) -> Option<(ConnIo<S>, Bytes)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (gateway, counter) = (shared.gateway.clone(), activity.clone());
    let service =
        service_fn(move |req| respond(gateway.clone(), req, peer, tls, InFlight::new(&counter)));
    // Boxed: the task keeps only a pointer while parked, not hyper's connection state.
    let mut conn = Box::pin(
        shared
            .http1
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades(),
    );
    let mut stop = shared.stop.clone();
    let mut stopping = *stop.borrow_and_update();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    let mut parking = false;
    let tick_every = PARK_AFTER.min(shared.keepalive);
    let tick = tokio::time::sleep(tick_every);
    tokio::pin!(tick);
    let mut seen = activity.events();
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut tick, if !stopping && !parking => {
                let now = activity.events();
                let in_flight = activity.in_flight.load(Ordering::Relaxed);
                may_park |= in_flight > 0;
                if now == seen && in_flight == 0 && may_park && !tls {
                    // Idle for a whole tick: hyper is between requests. Disabling keep-alive
                    // on an idle hyper connection ends it at once, without a byte written.
                    parking = shared.keepalive > tick_every;
                    activity.parking.store(parking, Ordering::Relaxed);
                    conn.as_mut().graceful_shutdown();
                } else {
                    seen = now;
                    tick.as_mut().reset(tokio::time::Instant::now() + tick_every);
                }
            }
        }
    };
    if let Err(e) = &result {
        tracing::debug!(%peer, error = %e, "connection ended with error");
        return None;
    }
    if !parking {
        return None;
    }
    activity.parking.store(false, Ordering::Relaxed);
    let parts = Pin::into_inner(conn).into_parts()?;
    tracing::trace!(%peer, buffered = parts.read_buf.len(), "connection parked");
    // `read_buf` shares hyper's whole read buffer even when empty: copy what is left (a few
    // bytes of a request, if any) so that the buffer itself is freed.
    Some((
        parts.io.into_inner(),
        Bytes::copy_from_slice(&parts.read_buf),
    ))
}

async fn serve_h2<S>(io: ConnIo<S>, peer: SocketAddr, shared: &Shared, tls: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (gateway, counter) = (shared.gateway.clone(), io.activity.clone());
    let service =
        service_fn(move |req| respond(gateway.clone(), req, peer, tls, InFlight::new(&counter)));
    let mut conn = Box::pin(shared.http2.serve_connection(TokioIo::new(io), service));
    let mut stop = shared.stop.clone();
    if *stop.borrow_and_update() {
        conn.as_mut().graceful_shutdown();
    }
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with error");
    }
}

/// One request through the handler, its response body counted as in flight.
async fn respond(
    gateway: Arc<Gateway>,
    req: Request<hyper::body::Incoming>,
    peer: SocketAddr,
    tls: bool,
    guard: InFlight,
) -> Result<hyper::Response<InFlightBody>, Infallible> {
    let resp = handler::handle(gateway, req, peer, tls).await;
    Ok(resp.map(|inner| InFlightBody {
        inner,
        _guard: guard,
    }))
}

/// Counts while alive.
struct Gauge(Arc<AtomicUsize>);

impl Gauge {
    fn up(counter: &Arc<AtomicUsize>) -> Gauge {
        counter.fetch_add(1, Ordering::Relaxed);
        Gauge(counter.clone())
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the connection loop watches to decide that a connection is idle.
#[derive(Default)]
struct Activity {
    /// Reads and writes that moved bytes.
    events: AtomicU64,
    /// Requests whose response body has not been dropped yet.
    in_flight: AtomicUsize,
    /// Set while hyper is being stopped to park: its shutdown must not close the socket.
    parking: AtomicBool,
}

impl Activity {
    fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    fn bump(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a request as in flight from the moment the service is called until its response
/// body is dropped (sent, or abandoned).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.bump();
    }
}

pin_project_lite::pin_project! {
    /// The handler's response body plus the in-flight guard.
    pub struct InFlightBody {
        #[pin]
        inner: crate::accesslog::LoggedBody,
        _guard: InFlight,
    }
}

impl http_body::Body for InFlightBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The client connection as hyper sees it: replays bytes left over from before a park, and
/// records activity. While parking, its shutdown leaves the socket open.
struct ConnIo<S> {
    inner: S,
    prefix: Bytes,
    activity: Arc<Activity>,
}

impl<S> ConnIo<S> {
    fn new(inner: S, prefix: Bytes, activity: Arc<Activity>) -> ConnIo<S> {
        ConnIo {
            inner,
            prefix,
            activity,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            this.activity.bump();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            this.activity.bump();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bump();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bump();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.activity.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
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

/// Reloads the configuration from `path` on every SIGHUP (`kill -HUP <pid>`, systemd's
/// `ExecReload`). The handler is installed before this returns, so a SIGHUP sent once the
/// gateway says it is listening never takes the process down (the default action).
#[cfg(unix)]
pub fn reload_on_hangup(gateway: Arc<Gateway>, path: std::path::PathBuf) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!(file = %path.display(), "SIGHUP: reloading the configuration");
            // Reading files and building keys blocks: keep it off the event loop.
            let (g, p) = (gateway.clone(), path.clone());
            let _ = tokio::task::spawn_blocking(move || g.reload_from(&p)).await;
        }
    });
    Ok(())
}

#[cfg(not(unix))]
pub fn reload_on_hangup(_gateway: Arc<Gateway>, _path: std::path::PathBuf) -> io::Result<()> {
    Ok(())
}
