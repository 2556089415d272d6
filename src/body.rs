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
        Upstream { #[pin] inner: Incoming },
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
    pub fn upstream(inner: Incoming) -> Body {
        Body::Upstream { inner }
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
            BodyProj::Upstream { inner } => inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full { data } => data.is_none(),
            Body::Upstream { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Body::Upstream { inner } => inner.size_hint(),
        }
    }
}
