//! The gateway's HTTP/1 server (`ferrolite_settings.server`): its own accept loop over hyper's
//! connections, so that no client holds a connection, a file descriptor or memory for longer
//! than the settings allow.
//!
//! - A connection with no request in progress is closed after `keep_alive_timeout` without a
//!   byte (LiteLLM's uvicorn closes idle connections after 5 s), a new connection too.
//! - A request's headers must arrive whole within `header_read_timeout` of their first byte
//!   (a client sending one byte at a time is cut off), its body within `body_read_timeout` of
//!   the end of its headers (the whole body, not each read): past it the answer is a 408 (in
//!   Anthropic's error shape on the Messages API's paths, OpenAI's elsewhere) and the
//!   connection closes.
//! - At most `max_connections` connections are open. At the cap a new client makes room by
//!   closing the connection idle for the longest time (or sending the slowest headers); when
//!   every connection has a request in progress, the new client waits (in the listen queue)
//!   until one ends. A client being answered is never cut off to make room. When the process
//!   runs out of file descriptors, an idle connection is closed the same way.
//! - A request may carry up to `max_headers` header fields; more is a 431.
//! - On shutdown the listener closes, idle connections close at once, and each connection
//!   with a request in progress closes once it is answered.

use std::time::Duration;

/// `ferrolite_settings.server`: how the gateway's HTTP server treats connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// The time a request's headers may take to arrive, from their first byte (default 10 s).
    pub header_read_timeout: Duration,
    /// The time a request's whole body may take to arrive, from the end of its headers
    /// (default 60 s); past it the answer is a 408.
    pub body_read_timeout: Duration,
    /// The time a connection with no request in progress stays open without receiving a byte
    /// (default 5 s, as LiteLLM's uvicorn).
    pub keep_alive_timeout: Duration,
    /// The most connections open at once (default 4096).
    pub max_connections: usize,
    /// The most header fields a request may carry (default 256); more is a 431.
    pub max_headers: usize,
}

impl ServerSettings {
    /// The default `header_read_timeout`.
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default `body_read_timeout`.
    pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
    /// The default `keep_alive_timeout` (uvicorn's `timeout_keep_alive`).
    pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default `max_connections`.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
    /// The default `max_headers`.
    pub const DEFAULT_MAX_HEADERS: usize = 256;
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: Self::DEFAULT_BODY_READ_TIMEOUT,
            keep_alive_timeout: Self::DEFAULT_KEEP_ALIVE_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_headers: Self::DEFAULT_MAX_HEADERS,
        }
    }
}

#[cfg(feature = "gateway")]
pub(crate) use running::serve;

#[cfg(feature = "gateway")]
mod running {
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::task::{Context, Poll};

    use axum::body::{Body, Bytes};
    use axum::http::{Request, Response, StatusCode, header};
    use http_body::{Frame, SizeHint};
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use parking_lot::Mutex;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::TcpStream;
    use tokio::sync::{Notify, watch};
    use tokio::time::Instant;

    use super::ServerSettings;

    /// What a connection is doing, for its timeouts and for choosing which one makes room.
    #[derive(Debug, Clone, Copy)]
    enum Phase {
        /// No request in progress and no byte of the next one, since then.
        Idle(Instant),
        /// The first bytes of a request's headers arrived then; the rest have not.
        Head(Instant),
        /// This many requests in progress (read, handled or being answered).
        Busy(usize),
    }

    /// One open connection, as the accept loop and its own task see it.
    struct Conn {
        phase: Mutex<Phase>,
        /// Whether headers starting must wake the connection's task: only when their timeout is
        /// shorter than the keep-alive timeout (otherwise the task's timer, armed no later than
        /// the keep-alive deadline, fires in time and finds the headers' deadline itself).
        wake_on_head: bool,
        /// The request being read ran past `body_read_timeout` (HTTP/1: one request at a
        /// time per connection; cleared when the next one begins).
        body_timed_out: AtomicBool,
        /// Set when the connection must close to make room (notified once).
        evict: Notify,
        /// Chosen to make room already: not chosen twice.
        evicted: AtomicBool,
        /// Notified when the phase's deadline moves earlier than the task's timer (headers begin,
        /// with `wake_on_head`).
        changed: Notify,
        /// The registry's: notified when a request ends or a connection closes.
        freed: Arc<Notify>,
    }

    impl Conn {
        fn read_some(&self) {
            let mut phase = self.phase.lock();
            if let Phase::Idle(_) = *phase {
                *phase = Phase::Head(Instant::now());
                drop(phase);
                if self.wake_on_head {
                    // Its deadline is now the header timeout's, sooner than the timer's.
                    self.changed.notify_one();
                }
            }
        }

        fn begin(self: &Arc<Self>) -> InFlight {
            let mut phase = self.phase.lock();
            *phase = match *phase {
                Phase::Busy(n) => Phase::Busy(n.saturating_add(1)),
                Phase::Idle(_) | Phase::Head(_) => Phase::Busy(1),
            };
            drop(phase);
            self.body_timed_out.store(false, Ordering::Relaxed);
            InFlight(Arc::clone(self))
        }
    }

    /// A request in progress on a connection: dropped once its answer is sent (or abandoned).
    struct InFlight(Arc<Conn>);

    impl Drop for InFlight {
        fn drop(&mut self) {
            let mut phase = self.0.phase.lock();
            *phase = match *phase {
                Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
                _ => Phase::Idle(Instant::now()),
            };
            drop(phase);
            // The connection's timer needs no wake: it is armed no later than a keep-alive
            // deadline starting now (see `Connection::run`).
            // A client waiting for room may now take this connection's place.
            self.0.freed.notify_waiters();
        }
    }

    /// The open connections.
    #[derive(Default)]
    struct Registry {
        conns: Mutex<HashMap<u64, Arc<Conn>>>,
        next: AtomicU64,
        /// Notified whenever a connection closes or one of its requests ends.
        freed: Arc<Notify>,
    }

    impl Registry {
        fn open(&self, settings: &ServerSettings) -> (u64, Arc<Conn>) {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            let conn = Arc::new(Conn {
                phase: Mutex::new(Phase::Idle(Instant::now())),
                wake_on_head: settings.header_read_timeout < settings.keep_alive_timeout,
                body_timed_out: AtomicBool::new(false),
                evict: Notify::new(),
                evicted: AtomicBool::new(false),
                changed: Notify::new(),
                freed: Arc::clone(&self.freed),
            });
            self.conns.lock().insert(id, Arc::clone(&conn));
            (id, conn)
        }

        fn close(&self, id: u64) {
            self.conns.lock().remove(&id);
            self.freed.notify_waiters();
        }

        fn len(&self) -> usize {
            self.conns.lock().len()
        }

        /// Asks the connection without a request in progress that has waited longest (idle,
        /// or still sending its headers) to close; false when every connection is answering.
        fn evict_one(&self) -> bool {
            let conns = self.conns.lock();
            let oldest = conns
                .values()
                .filter(|c| !c.evicted.load(Ordering::Relaxed))
                .filter_map(|c| match *c.phase.lock() {
                    Phase::Idle(since) | Phase::Head(since) => Some((since, c)),
                    Phase::Busy(_) => None,
                })
                .min_by_key(|(since, _)| *since);
            match oldest {
                Some((_, conn)) => {
                    conn.evicted.store(true, Ordering::Relaxed);
                    conn.evict.notify_one();
                    true
                }
                None => false,
            }
        }
    }

    /// Serves `app` on `listener` with `settings` until `shutdown` completes, then lets the
    /// requests in progress finish (see the module documentation).
    // The accept loop owns its connections' tasks (one each, ended with the connection), and
    // backs off in real time after a failed accept: connection timeouts are wall-clock.
    #[allow(clippy::disallowed_methods)]
    pub(crate) async fn serve(
        listener: tokio::net::TcpListener,
        app: axum::Router,
        settings: ServerSettings,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let settings = Arc::new(settings);
        let registry = Arc::new(Registry::default());
        let (stop, stopping) = watch::channel(false);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = shutdown.as_mut() => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if out_of_descriptors(&e) {
                        tracing::warn!(
                            error = %e,
                            "out of file descriptors: closing an idle connection"
                        );
                        registry.evict_one();
                    } else {
                        tracing::debug!(error = %e, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            // At the cap: the longest-idle connection makes room; when every connection is
            // answering, this client waits until a request ends or a connection closes (new
            // clients queue in the listen backlog meanwhile).
            loop {
                let closed = registry.freed.notified();
                let mut closed = std::pin::pin!(closed);
                closed.as_mut().enable();
                if registry.len() < settings.max_connections {
                    break;
                }
                registry.evict_one();
                tokio::select! {
                    () = shutdown.as_mut() => {
                        drop(stream);
                        return drain(&registry, stop).await;
                    }
                    () = closed => {}
                }
            }
            let _ = stream.set_nodelay(true);
            let (id, conn) = registry.open(&settings);
            let task = Connection {
                app: app.clone(),
                conn,
                settings: Arc::clone(&settings),
                stopping: stopping.clone(),
            };
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                task.run(stream).await;
                registry.close(id);
            });
        }
        drop(listener);
        drain(&registry, stop).await
    }

    /// Tells every connection to close once it has answered, and waits until all have.
    async fn drain(registry: &Registry, stop: watch::Sender<bool>) -> std::io::Result<()> {
        let _ = stop.send(true);
        loop {
            let closed = registry.freed.notified();
            let mut closed = std::pin::pin!(closed);
            closed.as_mut().enable();
            if registry.len() == 0 {
                return Ok(());
            }
            closed.await;
        }
    }

    /// EMFILE or ENFILE: the process or the system has no file descriptor left.
    fn out_of_descriptors(e: &std::io::Error) -> bool {
        matches!(e.raw_os_error(), Some(23 | 24))
    }

    use std::time::Duration;

    /// One connection's task.
    struct Connection {
        app: axum::Router,
        conn: Arc<Conn>,
        settings: Arc<ServerSettings>,
        stopping: watch::Receiver<bool>,
    }

    impl Connection {
        async fn run(self, stream: TcpStream) {
            let Connection {
                app,
                conn,
                settings,
                mut stopping,
            } = self;
            let io = TokioIo::new(Watched {
                stream,
                conn: Arc::clone(&conn),
            });
            let service = {
                let conn = Arc::clone(&conn);
                let body_read_timeout = settings.body_read_timeout;
                hyper::service::service_fn(move |request: Request<Incoming>| {
                    handle(app.clone(), Arc::clone(&conn), body_read_timeout, request)
                })
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(None)
                .max_headers(settings.max_headers)
                .keep_alive(true);
            let connection = builder.serve_connection(io, service);
            let mut connection = std::pin::pin!(connection);
            let mut closing = *stopping.borrow_and_update();
            if closing {
                return;
            }
            // One timer for the connection's life, re-armed in place (no timer registered or
            // task woken per request). It is always armed no later than the deadline of the
            // phase in progress and of any idle spell that begins later: at most
            // `keep_alive_timeout` after it was armed. When it fires early, the phase is looked
            // at and the timer re-armed.
            let keep_alive = settings.keep_alive_timeout;
            let timer = tokio::time::sleep_until(Instant::now() + keep_alive);
            let mut timer = std::pin::pin!(timer);
            loop {
                if closing && !matches!(*conn.phase.lock(), Phase::Busy(_)) {
                    // Nothing in progress: closing now loses nothing.
                    return;
                }
                tokio::select! {
                    // The connection first: bytes already received count before a deadline.
                    biased;
                    served = connection.as_mut() => {
                        if let Err(e) = served {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        return;
                    }
                    () = conn.changed.notified() => {
                        let phase = *conn.phase.lock();
                        let at = rearm_at(phase, Instant::now(), &settings).min(timer.deadline());
                        timer.as_mut().reset(at);
                    }
                    () = conn.evict.notified(), if !closing => {
                        tracing::debug!("closing a connection to make room for a new one");
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    _ = stopping.changed(), if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    () = timer.as_mut() => {
                        let now = Instant::now();
                        let phase = *conn.phase.lock();
                        match phase {
                            Phase::Idle(since) if now >= since + keep_alive => {
                                tracing::debug!("closing an idle connection (keep_alive_timeout)");
                                return;
                            }
                            Phase::Head(since) if now >= since + settings.header_read_timeout => {
                                tracing::debug!(
                                    "closing a connection whose headers did not arrive in time \
                                     (header_read_timeout)"
                                );
                                return;
                            }
                            _ => timer.as_mut().reset(rearm_at(phase, now, &settings)),
                        }
                    }
                }
            }
        }
    }

    /// When a connection's timer fires next, looked at `now` in `phase`: the phase's deadline,
    /// but no later than a keep-alive deadline starting now (the request in progress may end
    /// at once and the connection go idle).
    fn rearm_at(phase: Phase, now: Instant, settings: &ServerSettings) -> Instant {
        let idle_from_now = now + settings.keep_alive_timeout;
        match phase {
            Phase::Idle(since) => since + settings.keep_alive_timeout,
            Phase::Head(since) => (since + settings.header_read_timeout).min(idle_from_now),
            Phase::Busy(_) => idle_from_now,
        }
    }

    /// One request through `app`, its body read under `body_read_timeout`; its answer carries
    /// the connection's in-flight mark until it is sent.
    // The body's deadline is a client's wall-clock allowance, on tokio's timer as hyper's own.
    #[allow(clippy::disallowed_methods)]
    async fn handle(
        mut app: axum::Router,
        conn: Arc<Conn>,
        body_read_timeout: Duration,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let in_flight = conn.begin();
        // Kept for the shape of a 408 the server answers itself.
        let path = request.uri().path().to_string();
        let request = request.map(|body| {
            Body::new(TimedBody {
                inner: body,
                deadline: None,
                started: Instant::now(),
                conn: Arc::clone(&conn),
                timeout: body_read_timeout,
                finished: false,
            })
        });
        let response = match tower::Service::call(&mut app, request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let response = if conn.body_timed_out.load(Ordering::Relaxed) {
            body_timeout_response(&path, body_read_timeout)
        } else {
            response
        };
        Ok(response.map(|body| {
            Body::new(Answer {
                inner: body,
                _in_flight: in_flight,
            })
        }))
    }

    /// The 408 of a body that did not arrive in time, in the error shape of the API `path`
    /// belongs to (Anthropic's on the Messages API's paths, OpenAI's elsewhere); the
    /// connection closes after it.
    fn body_timeout_response(path: &str, timeout: Duration) -> Response<Body> {
        let message = BodyTimeout(timeout).to_string();
        let body =
            crate::gateway::error_body_for(path, StatusCode::REQUEST_TIMEOUT, "timeout", &message);
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        response
    }

    /// The error a request body gives once `body_read_timeout` has passed.
    #[derive(Debug)]
    struct BodyTimeout(Duration);

    impl std::fmt::Display for BodyTimeout {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "the request body did not arrive within body_read_timeout ({}s)",
                self.0.as_secs_f64()
            )
        }
    }

    impl std::error::Error for BodyTimeout {}

    /// A request body that fails once its deadline (`timeout` after `started`) passes before
    /// its end arrived. Its timer is made only when the body is not all there at once (a
    /// small body arrives with its headers: no timer per request).
    struct TimedBody {
        inner: Incoming,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
        started: Instant,
        /// Its connection, marked when the deadline passes.
        conn: Arc<Conn>,
        timeout: Duration,
        finished: bool,
    }

    impl http_body::Body for TimedBody {
        type Data = Bytes;
        type Error = Box<dyn std::error::Error + Send + Sync>;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let this = self.get_mut();
            if this.finished {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(None) => {
                    this.finished = true;
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Err(e))) => {
                    this.finished = true;
                    Poll::Ready(Some(Err(Box::new(e))))
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if this.inner.is_end_stream() {
                        this.finished = true;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Pending => {
                    let at = this.started + this.timeout;
                    let deadline = this
                        .deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    match deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            this.finished = true;
                            this.conn.body_timed_out.store(true, Ordering::Relaxed);
                            Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))))
                        }
                        Poll::Pending => Poll::Pending,
                    }
                }
            }
        }

        fn is_end_stream(&self) -> bool {
            self.finished || self.inner.is_end_stream()
        }

        fn size_hint(&self) -> SizeHint {
            self.inner.size_hint()
        }
    }

    /// An answer's body, holding its connection's in-flight mark until it is sent or dropped.
    struct Answer {
        inner: Body,
        _in_flight: InFlight,
    }

    impl http_body::Body for Answer {
        type Data = Bytes;
        type Error = axum::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Pin::new(&mut self.get_mut().inner).poll_frame(cx)
        }

        fn is_end_stream(&self) -> bool {
            self.inner.is_end_stream()
        }

        fn size_hint(&self) -> SizeHint {
            self.inner.size_hint()
        }
    }

    /// The connection's socket, telling its [`Conn`] when bytes arrive.
    struct Watched {
        stream: TcpStream,
        conn: Arc<Conn>,
    }

    impl AsyncRead for Watched {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let this = self.get_mut();
            let before = buf.filled().len();
            let read = Pin::new(&mut this.stream).poll_read(cx, buf);
            if buf.filled().len() > before {
                this.conn.read_some();
            }
            read
        }
    }

    impl AsyncWrite for Watched {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.stream.is_write_vectored()
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().stream).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
        }
    }
}
