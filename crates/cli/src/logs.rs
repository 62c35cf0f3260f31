//! Where the process' log lines go: standard error, written by a thread of its own in batches,
//! so that a line logged on a request's path (the gateway's `answered` line, one per request)
//! costs that request a copy into memory, not a `write` to the file or pipe behind standard
//! error, nor a wait for another thread's write.
//!
//! - A logging thread appends its line to a buffer under a lock and goes on. The writer thread
//!   sleeps until the buffer has a line, gathers lines for [`BATCH`] (or until [`HIGH_WATER`]
//!   bytes wait), and writes them all with one `write`.
//! - Nothing is dropped: past [`LIMIT`] bytes waiting (a log sink slower than the logs), a
//!   logging thread waits for the writer instead.
//! - [`Flush`], the guard `main` holds, writes what is left when it is dropped: every line
//!   logged before a clean exit (SIGTERM, Ctrl-C, a command's end) reaches standard error.
//!   A line logged after it is written at once, by the thread that logs it.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// How long the writer thread gathers lines after the first of a batch before it writes them.
pub(crate) const BATCH: Duration = Duration::from_millis(20);

/// Bytes waiting past which the writer thread writes at once instead of gathering on.
pub(crate) const HIGH_WATER: usize = 64 << 10;

/// Bytes waiting past which a logging thread waits for the writer thread (nothing is dropped).
pub(crate) const LIMIT: usize = 16 << 20;

/// What the logging threads and the writer thread share.
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer thread: a first line after an idle spell, the high water, the close.
    wake: Condvar,
    /// Wakes logging threads waiting for room (past [`LIMIT`]).
    room: Condvar,
}

/// The lines not yet written, and what the writer thread is doing.
#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// The writer thread waits for a first line (a line must wake it).
    idle: bool,
    /// The writer thread was woken for the high water already (no second wake).
    woken: bool,
    /// The guard was dropped: the writer thread wrote everything and ended.
    closed: bool,
}

/// The [`tracing_subscriber::fmt::MakeWriter`] of the batched standard error: each line goes to
/// the writer thread's buffer.
#[derive(Clone)]
pub(crate) struct Batched {
    shared: Arc<Shared>,
}

/// The guard of the writer thread: dropped, it writes every line logged so far and ends the
/// thread.
pub(crate) struct Flush {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Standard error, written in batches by a thread of its own (see the module documentation);
/// `None` when that thread cannot start (then lines are written by the thread logging them).
pub(crate) fn batched_stderr() -> (Batched, Option<Flush>) {
    batched(std::io::stderr)
}

/// `out`, written in batches by a thread of its own.
pub(crate) fn batched<W, F>(out: F) -> (Batched, Option<Flush>)
where
    W: Write,
    F: FnOnce() -> W + Send + 'static,
{
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        room: Condvar::new(),
    });
    let writer = Batched {
        shared: Arc::clone(&shared),
    };
    let thread = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("ferrolite-logs".into())
            .spawn(move || run(&shared, out()))
    };
    match thread {
        Ok(thread) => {
            let flush = Flush {
                shared,
                thread: Some(thread),
            };
            (writer, Some(flush))
        }
        Err(_) => {
            shared.state.lock().closed = true;
            (writer, None)
        }
    }
}

/// The writer thread: waits for a first line, gathers for [`BATCH`], writes; until closed and
/// everything is written.
fn run(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut state = shared.state.lock();
            while state.pending.is_empty() && !state.closed {
                state.idle = true;
                shared.wake.wait(&mut state);
            }
            state.idle = false;
            if !state.closed && state.pending.len() < HIGH_WATER {
                // Woken early by the high water or the close.
                let _ = shared.wake.wait_for(&mut state, BATCH);
            }
            std::mem::swap(&mut state.pending, &mut batch);
            state.woken = false;
            shared.room.notify_all();
            state.closed
        };
        if !batch.is_empty() {
            let _ = out.write_all(&batch);
            let _ = out.flush();
            batch.clear();
            if batch.capacity() > 4 * HIGH_WATER {
                batch.shrink_to(HIGH_WATER);
            }
        }
        if closed && shared.state.lock().pending.is_empty() {
            return;
        }
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        {
            let mut state = self.shared.state.lock();
            state.closed = true;
            self.shared.wake.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Write for &Batched {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let shared = &*self.shared;
        let mut state = shared.state.lock();
        while state.pending.len() >= LIMIT && !state.closed {
            shared.room.wait(&mut state);
        }
        if state.closed {
            drop(state);
            // The writer thread has ended (or never started): this thread writes.
            return std::io::stderr().write(line);
        }
        state.pending.extend_from_slice(line);
        if state.idle {
            state.idle = false;
            shared.wake.notify_one();
        } else if state.pending.len() >= HIGH_WATER && !state.woken {
            state.woken = true;
            shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Batched {
    type Writer = &'a Batched;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io::Write;
    use std::sync::Arc;

    use parking_lot::Mutex;

    /// A sink the test reads back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_and_none_is_lost_past_the_limit() {
        let sink = Sink::default();
        let out = sink.clone();
        let (writer, flush) = super::batched(move || out);
        let flush = flush.expect("the writer thread starts");
        let threads = 4;
        let lines = 50_000;
        let padding = "x".repeat(80);
        // 4 x 50,000 lines of ~90 bytes: more than `LIMIT` in all, so writers wait for room.
        std::thread::scope(|scope| {
            for t in 0..threads {
                let writer = &writer;
                let padding = &padding;
                scope.spawn(move || {
                    for n in 0..lines {
                        let line = format!("{t} {n} {padding}\n");
                        (&*writer).write_all(line.as_bytes()).unwrap();
                    }
                });
            }
        });
        assert!(threads * lines * 90 > super::LIMIT);
        drop(flush);
        let written = String::from_utf8(sink.0.lock().clone()).unwrap();
        let mut next = vec![0usize; threads];
        for line in written.lines() {
            let mut parts = line.split(' ');
            let t: usize = parts.next().unwrap().parse().unwrap();
            let n: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(parts.next(), Some(padding.as_str()), "a line cut: {line}");
            assert_eq!(n, next[t], "thread {t}'s lines out of order or lost");
            next[t] += 1;
        }
        assert_eq!(next, vec![lines; threads]);
    }
}
