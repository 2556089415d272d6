//! The access log: one line per request, written when the response body ends (or the client
//! goes away), so bytes and duration are the real ones. Query strings and cookies never
//! appear: only the path is logged. The `wxgate` binary installs a [`Sink`] that formats the
//! line by hand (the same text or JSON as its other log lines); without one, the line is an
//! ordinary `tracing` event.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::OnceLock;
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
    /// The route the request matched, if it got that far.
    pub route: Option<std::sync::Arc<crate::config::RouteSettings>>,
    /// Whether the request was handed to the route's upstream. Answers the gateway gives
    /// itself (login redirects, 401, 403 pages) name their route but no upstream, so an
    /// operator does not look for them in the upstream's logs.
    pub forwarded: bool,
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

/// Where the binary's access lines go, and in which format.
pub struct Sink {
    writer: crate::logwriter::LogWriter,
    json: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Formats access lines by hand and hands them to `writer`: tracing's general-purpose
/// formatter cost about 5% of the gateway's CPU per request. Lines look exactly like the
/// `tracing_subscriber::fmt` ones (text, or JSON with `json`), and `WXGATE_LOG` still decides
/// whether they are written.
pub fn install(writer: crate::logwriter::LogWriter, json: bool) {
    let _ = SINK.set(Sink { writer, json });
}

fn write(e: &Entry, bytes: u64, complete: bool) {
    let request_id = e.request_id.to_str().unwrap_or("-");
    let route = e.route.as_ref().map_or("-", |r| r.name.as_str());
    let upstream = match &e.route {
        Some(r) if e.forwarded => r.upstream.url.as_str(),
        _ => "-",
    };
    // Microseconds are the most a log reader can use; more digits are float noise.
    let duration_ms = (e.started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    if let Some(sink) = SINK.get() {
        if tracing::enabled!(target: "wxgate::access", tracing::Level::INFO) {
            let line = Line {
                method: e.method.as_str(),
                host: &e.host,
                path: &e.path,
                status: e.status,
                bytes,
                duration_ms,
                route,
                upstream,
                request_id,
                client: e.client_ip,
                complete,
            };
            let now = std::time::SystemTime::now();
            let text = if sink.json {
                line.json(now)
            } else {
                line.text(now)
            };
            sink.writer.send_line(text.into_bytes());
        }
        return;
    }
    tracing::info!(
        target: "wxgate::access",
        method = %e.method,
        host = %e.host,
        path = %e.path,
        status = e.status,
        bytes,
        duration_ms,
        route,
        upstream,
        request_id,
        client = %e.client_ip,
        complete,
    );
}

/// One access line's fields, in the order they are written.
struct Line<'a> {
    method: &'a str,
    host: &'a str,
    path: &'a str,
    status: u16,
    bytes: u64,
    duration_ms: f64,
    route: &'a str,
    upstream: &'a str,
    request_id: &'a str,
    client: IpAddr,
    complete: bool,
}

impl Line<'_> {
    /// As `tracing_subscriber::fmt` writes it without colours. Host and path are written
    /// bare when they are plain, and quoted otherwise, so that a client cannot forge fields.
    fn text(&self, now: std::time::SystemTime) -> String {
        let mut out = String::with_capacity(320);
        let bare = |v: &str| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b'=')
        };
        let _ = write!(
            out,
            "{}  INFO wxgate::access: method={} ",
            humantime::format_rfc3339_micros(now),
            self.method
        );
        for (key, v) in [("host", self.host), ("path", self.path)] {
            if bare(v) {
                let _ = write!(out, "{key}={v} ");
            } else {
                let _ = write!(out, "{key}={v:?} ");
            }
        }
        let _ = writeln!(
            out,
            "status={} bytes={} duration_ms={:.3} route={:?} upstream={:?} request_id={:?} client={} complete={}",
            self.status,
            self.bytes,
            self.duration_ms,
            self.route,
            self.upstream,
            self.request_id,
            self.client,
            self.complete
        );
        out
    }

    /// As `tracing_subscriber::fmt().json().flatten_event(true)` writes it.
    fn json(&self, now: std::time::SystemTime) -> String {
        let s = |v: &str| serde_json::Value::from(v).to_string();
        // Fixed precision, as in the text line; still a JSON number. A duration is finite.
        let duration = format!("{:.3}", self.duration_ms);
        format!(
            "{{\"timestamp\":\"{}\",\"level\":\"INFO\",\"method\":{},\"host\":{},\"path\":{},\"status\":{},\"bytes\":{},\"duration_ms\":{},\"route\":{},\"upstream\":{},\"request_id\":{},\"client\":\"{}\",\"complete\":{},\"target\":\"wxgate::access\"}}\n",
            humantime::format_rfc3339_micros(now),
            s(self.method),
            s(self.host),
            s(self.path),
            self.status,
            self.bytes,
            duration,
            s(self.route),
            s(self.upstream),
            s(self.request_id),
            self.client,
            self.complete
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(host: &'a str, path: &'a str) -> Line<'a> {
        Line {
            method: "GET",
            host,
            path,
            status: 200,
            bytes: 24,
            duration_ms: 0.25,
            route: "app",
            upstream: "http://127.0.0.1:3000",
            request_id: "abc",
            client: "10.0.0.7".parse().unwrap(),
            complete: true,
        }
    }

    fn at() -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_763_712_000_123_456)
    }

    #[test]
    fn text_line_matches_the_tracing_format() {
        assert_eq!(
            line("shop.example.com", "/a/b").text(at()),
            "2025-11-21T08:00:00.123456Z  INFO wxgate::access: method=GET host=shop.example.com \
             path=/a/b status=200 bytes=24 duration_ms=0.250 route=\"app\" \
             upstream=\"http://127.0.0.1:3000\" request_id=\"abc\" client=10.0.0.7 complete=true\n"
        );
    }

    #[test]
    fn text_line_quotes_what_could_forge_a_field() {
        let t = line("a b status=500", "/x\"y").text(at());
        assert!(
            t.contains(r#"host="a b status=500" path="/x\"y" status=200"#),
            "{t}"
        );
        assert_eq!(t.matches("status=").count(), 2, "{t}");
        assert!(line("", "/").text(at()).contains("host=\"\" path=/ "));
    }

    #[test]
    fn durations_have_three_decimals_and_no_float_noise() {
        let mut l = line("h", "/");
        l.duration_ms = 1.0694249999999998;
        let t = l.text(at());
        assert!(t.contains(" duration_ms=1.069 "), "{t}");
        let j = l.json(at());
        assert!(j.contains("\"duration_ms\":1.069,"), "{j}");
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["duration_ms"], 1.069, "still a JSON number: {j}");
        l.duration_ms = 12.0;
        assert!(l.text(at()).contains(" duration_ms=12.000 "));
        assert!(l.json(at()).contains("\"duration_ms\":12.000,"));
    }

    #[test]
    fn json_line_parses_with_every_field() {
        let j = line("ex\"ample", "/p").json(at());
        assert!(j.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["timestamp"], "2025-11-21T08:00:00.123456Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "wxgate::access");
        assert_eq!(v["host"], "ex\"ample");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 24);
        assert_eq!(v["duration_ms"], 0.25);
        assert_eq!(v["client"], "10.0.0.7");
        assert_eq!(v["complete"], true);
        assert_eq!(v.as_object().unwrap().len(), 14);
    }
}
