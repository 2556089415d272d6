//! The body types of the proxied path. [`Body`], the response: a page the gateway wrote
//! itself or an upstream's body streamed through untouched (an enum rather than a boxed trait
//! object, so the hot path allocates nothing for it). [`RequestBody`], the client's upload on
//! its way upstream: progress, `max_body`, trailers dropped, client faults told apart.

use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

pin_project_lite::pin_project! {
    #[project = BodyProj]
    pub enum Body {
        Full { data: Option<Bytes> },
        Upstream { #[pin] inner: Incoming, lease: Option<crate::upstream::Lease> },
    }
}

impl Body {
    pub fn empty() -> Body {
        Body::Full { data: None }
    }
    pub fn full(data: impl Into<Bytes>) -> Body {
        let data: Bytes = data.into();
        Body::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }
    /// An upstream response body; `lease` returns its connection to the pool once the body
    /// has been read to the end.
    pub fn upstream(inner: Incoming, lease: Option<crate::upstream::Lease>) -> Body {
        let lease = match lease {
            Some(l) if http_body::Body::is_end_stream(&inner) => {
                l.finish();
                None
            }
            other => other,
        };
        Body::Upstream { inner, lease }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyProj::Upstream { mut inner, lease } => {
                let polled = inner.as_mut().poll_frame(cx);
                let done = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => inner.is_end_stream(),
                    // An error: the connection is not reusable (dropping the lease closes it).
                    Poll::Ready(Some(Err(_))) => {
                        lease.take();
                        false
                    }
                    Poll::Pending => false,
                };
                if done {
                    if let Some(l) = lease.take() {
                        l.finish();
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full { data } => data.is_none(),
            Body::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Body::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

/// When a request body last moved, so the upstream timeout can run from the last byte sent
/// rather than from the first: a slow upload is progress, not a hung upstream. It also
/// records whether the *client* side of the body failed, so that a broken, aborted, stalled or
/// oversized upload is answered as the client's fault (4xx, logged at debug) and never as an
/// upstream failure (502/504, logged at warn): clients must not be able to fake those.
pub struct Progress {
    start: std::time::Instant,
    last_ms: AtomicU64,
    /// A [`ClientFault`] as `u8`, 0 when none.
    fault: AtomicU8,
    /// The last poll of the client's body was `Pending`: the gateway waits on the client.
    waiting: AtomicBool,
}

/// How a client's request body failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFault {
    /// Malformed (a bad chunk size), or cut short by the client.
    Broken = 1,
    /// Longer than the route's `max_body`.
    TooLarge = 2,
}

impl Progress {
    pub fn new() -> std::sync::Arc<Progress> {
        std::sync::Arc::new(Progress {
            start: std::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            fault: AtomicU8::new(0),
            waiting: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Relaxed);
        self.waiting.store(false, Relaxed);
    }

    /// The instant the body last produced data (or the start).
    pub fn last(&self) -> std::time::Instant {
        self.start + std::time::Duration::from_millis(self.last_ms.load(Relaxed))
    }

    /// Whether the client's side of the body failed, and how.
    pub fn client_fault(&self) -> Option<ClientFault> {
        match self.fault.load(Relaxed) {
            1 => Some(ClientFault::Broken),
            2 => Some(ClientFault::TooLarge),
            _ => None,
        }
    }

    /// Whether the body is unfinished and the client has not sent its next bytes: a timeout
    /// now is the client's (a stalled upload), not the upstream's.
    pub fn waiting_on_client(&self) -> bool {
        self.waiting.load(Relaxed)
    }
}

/// Why a request body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("reading the client's request body: {0}")]
    Client(#[source] hyper::Error),
    #[error("request body over the route's max_body of {0} bytes")]
    TooLarge(u64),
}

pin_project_lite::pin_project! {
    /// A client's request body on its way upstream: records progress as it streams, cuts it at
    /// the route's `max_body`, and drops trailers.
    pub struct RequestBody {
        // None: no body (a copy of a bodiless request, sent again).
        inner: Option<Incoming>,
        progress: std::sync::Arc<Progress>,
        // Bytes still allowed (u64::MAX: unlimited).
        allowed: u64,
        limit: u64,
    }
}

impl RequestBody {
    /// `max_body`: the route's limit, `None` for unlimited.
    pub fn new(
        inner: Incoming,
        progress: std::sync::Arc<Progress>,
        max_body: Option<u64>,
    ) -> RequestBody {
        let limit = max_body.unwrap_or(u64::MAX);
        RequestBody {
            inner: Some(inner),
            progress,
            allowed: limit,
            limit,
        }
    }

    /// No body at all.
    pub fn empty() -> RequestBody {
        RequestBody {
            inner: None,
            progress: Progress::new(),
            allowed: u64::MAX,
            limit: u64::MAX,
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let frame = match Pin::new(&mut *inner).poll_frame(cx) {
                Poll::Pending => {
                    this.progress.waiting.store(true, Relaxed);
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    this.progress.waiting.store(false, Relaxed);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.progress
                        .fault
                        .store(ClientFault::Broken as u8, Relaxed);
                    return Poll::Ready(Some(Err(RequestBodyError::Client(e))));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            // Request trailers are dropped, never forwarded: they arrive after the identity
            // headers were stripped and set, so any field in them (X-WeChat-OpenId, the JWT
            // header, X-Forwarded-For...) would reach the upstream unchecked, and upstream
            // frameworks merge trailers into headers.
            let Some(data) = frame.data_ref() else {
                continue;
            };
            let len = data.len() as u64;
            if len > *this.allowed {
                this.progress
                    .fault
                    .store(ClientFault::TooLarge as u8, Relaxed);
                if let Some(rest) = this.inner.take() {
                    linger(rest);
                }
                return Poll::Ready(Some(Err(RequestBodyError::TooLarge(*this.limit))));
            }
            *this.allowed -= len;
            this.progress.touch();
            return Poll::Ready(Some(Ok(frame)));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// How long, and how much of, a refused request body is read and thrown away.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);
const LINGER_BYTES: u64 = 16 << 20;

/// Reads and discards the rest of a refused request body (over `max_body`) for a bounded
/// time and size, then lets it go. Closing at once would have the kernel answer the client's
/// next bytes with a reset, which can destroy the 413 before the client reads it (RFC 9112
/// §9.6); a client that finishes its upload in time even keeps its connection.
pub fn linger(body: Incoming) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        use http_body_util::BodyExt as _;
        let mut body = body;
        let mut left = LINGER_BYTES;
        let deadline = tokio::time::Instant::now() + LINGER_TIME;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
            let n = frame.data_ref().map_or(0, |d| d.len() as u64);
            match left.checked_sub(n) {
                Some(l) => left = l,
                None => break,
            }
        }
    });
}
