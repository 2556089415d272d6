//! The response body type of the gateway: a page it wrote itself or an upstream's body
//! streamed through untouched. An enum rather than a boxed trait object, so the hot path
//! allocates nothing for it.

use std::pin::Pin;
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
/// rather than from the first: a slow upload is progress, not a hung upstream.
pub struct Progress {
    start: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Progress {
    pub fn new() -> std::sync::Arc<Progress> {
        std::sync::Arc::new(Progress {
            start: std::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// The instant the body last produced data (or the start).
    pub fn last(&self) -> std::time::Instant {
        self.start
            + std::time::Duration::from_millis(
                self.last_ms.load(std::sync::atomic::Ordering::Relaxed),
            )
    }
}

pin_project_lite::pin_project! {
    /// A client's request body on its way upstream, recording progress as it streams.
    pub struct RequestBody {
        // None: no body (a copy of a bodiless request, sent again).
        inner: Option<Incoming>,
        progress: std::sync::Arc<Progress>,
    }
}

impl RequestBody {
    pub fn new(inner: Incoming, progress: std::sync::Arc<Progress>) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            progress,
        }
    }

    /// No body at all.
    pub fn empty() -> RequestBody {
        RequestBody {
            inner: None,
            progress: Progress::new(),
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this.progress.touch();
        }
        polled
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
