//! A non-blocking, batching writer for log lines. Formatting stays on the request's thread;
//! the bytes go through a bounded channel to one thread that writes them to stderr through a
//! 64 KiB buffer and flushes whenever the channel is empty, then lets lines gather for 2 ms.
//! Under load that is one `write` per batch instead of one per line (the access log writes a
//! line per request); when idle, a line reaches stderr as soon as it is logged. When the
//! channel is full, logging waits: lines are never dropped.

use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::Duration;

/// Lines that may wait for the writer thread before loggers block.
const QUEUE: usize = 16 * 1024;
const BUFFER: usize = 64 * 1024;
/// How long the writer thread lets lines gather once they flow.
const BATCH: Duration = Duration::from_millis(2);

enum Msg {
    Line(Vec<u8>),
    /// Flush, then acknowledge.
    Flush(SyncSender<()>),
}

/// The `MakeWriter` for `tracing_subscriber::fmt`: cheap to clone, one per subscriber.
#[derive(Clone)]
pub struct LogWriter {
    tx: SyncSender<Msg>,
}

/// Flushes what was logged when dropped (keep it alive in `main`).
pub struct FlushGuard {
    tx: SyncSender<Msg>,
}

/// Starts the writer thread for `out` (stderr in `wxgate`).
pub fn spawn<W: Write + Send + 'static>(out: W) -> io::Result<(LogWriter, FlushGuard)> {
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("wxgate-log".into())
        .spawn(move || drain(rx, BufWriter::with_capacity(BUFFER, out)))?;
    Ok((LogWriter { tx: tx.clone() }, FlushGuard { tx }))
}

fn drain<W: Write>(rx: Receiver<Msg>, mut out: BufWriter<W>) {
    // Write errors (a closed stderr) are ignored, like `eprintln!` would not be able to report them.
    let handle = |msg: Msg, out: &mut BufWriter<W>| match msg {
        Msg::Line(line) => {
            let _ = out.write_all(&line);
        }
        Msg::Flush(ack) => {
            let _ = out.flush();
            let _ = ack.send(());
        }
    };
    // Blocks while nothing is logged, so a lone line is written at once. Once lines flow, it
    // drains, flushes and naps for BATCH: loggers then find the thread awake and never pay
    // a wake-up (a futex call) per line, which cost more than the `write` it saved.
    while let Ok(msg) = rx.recv() {
        handle(msg, &mut out);
        loop {
            while let Ok(msg) = rx.try_recv() {
                handle(msg, &mut out);
            }
            let _ = out.flush();
            std::thread::sleep(BATCH);
            match rx.try_recv() {
                Ok(msg) => handle(msg, &mut out),
                Err(_) => break,
            }
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(Duration::from_secs(2));
        }
    }
}

impl LogWriter {
    /// Queues one whole line (ending in a newline).
    pub fn send_line(&self, line: Vec<u8>) {
        // A stopped writer (process exiting) loses the line, as `write_all` would report.
        let _ = self.tx.send(Msg::Line(line));
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    /// `tracing_subscriber::fmt` formats a whole event first and writes it with one call.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.tx
            .send(Msg::Line(buf.to_vec()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "log writer stopped"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_and_the_guard_flushes() {
        let out = Shared::default();
        let (writer, guard) = spawn(out.clone()).unwrap();
        let mut expected = Vec::new();
        for i in 0..20_000 {
            let line = format!("line {i}\n");
            writer.clone().write_all(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        drop(guard);
        assert_eq!(*out.0.lock().unwrap(), expected);
    }

    #[test]
    fn a_lone_line_is_written_without_a_flush_request() {
        let out = Shared::default();
        let (mut writer, _guard) = spawn(out.clone()).unwrap();
        writer.write_all(b"hello\n").unwrap();
        for _ in 0..200 {
            if !out.0.lock().unwrap().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*out.0.lock().unwrap(), b"hello\n");
    }
}
