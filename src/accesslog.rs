//! The access log: one line per request, written when the response body ends (or the client
//! goes away), so bytes and duration are the real ones. Query strings and cookies never
//! appear: only the path is logged.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::body::Body;

/// What the log line says, gathered along the request path.
pub struct Entry {
    pub started: Instant,
    pub method: http::Method,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub route: Option<std::sync::Arc<crate::config::RouteSettings>>,
    pub request_id: http::HeaderValue,
    pub client_ip: std::net::IpAddr,
}

pin_project_lite::pin_project! {
    /// A response body that counts what it sends and logs once when done.
    pub struct LoggedBody {
        #[pin]
        inner: Body,
        bytes: u64,
        entry: Option<Box<Entry>>,
    }

    impl PinnedDrop for LoggedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(entry) = this.entry.take() {
                let complete = http_body::Body::is_end_stream(&*this.inner);
                write(&entry, *this.bytes, complete);
            }
        }
    }
}

impl LoggedBody {
    pub fn new(inner: Body, entry: Entry) -> LoggedBody {
        LoggedBody {
            inner,
            bytes: 0,
            entry: Some(Box::new(entry)),
        }
    }
}

fn write(e: &Entry, bytes: u64, complete: bool) {
    let request_id = e.request_id.to_str().unwrap_or("-");
    tracing::info!(
        target: "wxgate::access",
        method = %e.method,
        host = %e.host,
        path = %e.path,
        status = e.status,
        bytes,
        duration_ms = e.started.elapsed().as_secs_f64() * 1000.0,
        route = e.route.as_ref().map_or("-", |r| r.name.as_str()),
        upstream = e.route.as_ref().map_or("-", |r| r.upstream.url.as_str()),
        request_id,
        client = %e.client_ip,
        complete,
    );
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    *this.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(entry) = this.entry.take() {
                    write(&entry, *this.bytes, true);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
