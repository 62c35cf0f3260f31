//! Plain-HTTP (`http://`) upstreams over HTTP/1.1 without a connection task: a call takes an
//! idle connection from the pool (or opens one), and drives it itself while it writes the
//! request and reads the answer, so the answer reaches the calling task without a hop through
//! another task (and often another thread) and back. A connection goes back to the pool once
//! its answer is read in full; a call dropped half-way (its timeout) closes its connection.
//!
//! TLS upstreams, and every call when a proxy is configured, go through reqwest instead.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;

/// One HTTP/1.1 connection: the handle requests go through, and the connection itself, which
/// whoever waits for an answer on it polls.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: http1::Connection<TokioIo<TcpStream>, Full<Bytes>>,
}

/// An idle connection, and since when.
struct Idle {
    conn: Conn,
    since: Instant,
}

/// One `host:port`: the address to connect to and its idle connections, newest last.
pub(super) struct Host {
    address: Box<str>,
    idle: Mutex<VecDeque<Idle>>,
}

/// Where calls to one `host[:port]` go, resolved once (for a deployment, when the router takes
/// it into a snapshot): the `host` header's value, and the address's idle connections (shared
/// by every deployment on that address).
pub(super) struct Route {
    host_header: Option<HeaderValue>,
    host: Arc<Host>,
}

impl Route {
    /// The host's `host:port`.
    pub(super) fn address(&self) -> &str {
        &self.host.address
    }

    /// The `host` header sent to it.
    pub(super) fn host_header(&self) -> Option<&HeaderValue> {
        self.host_header.as_ref()
    }
}

/// The hosts called so far, per `host:port`, and how their connections are kept.
pub(super) struct Pool {
    hosts: Mutex<HashMap<Box<str>, Arc<Host>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    keepalive: Duration,
}

/// An answer: status, headers, the body's bytes (or how reading them failed).
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Result<Bytes, hyper::Error>,
}

/// Why a call got no answer.
#[derive(Debug)]
pub(super) enum Failed {
    /// No connection within the connect timeout.
    ConnectTimeout,
    /// No connection.
    Connect(std::io::Error),
    /// The connection failed before the answer's head.
    Send(hyper::Error),
    /// The connection closed before it answered.
    Closed,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::ConnectTimeout => f.write_str("could not connect: timed out"),
            Failed::Connect(e) => write!(f, "could not connect: {e}"),
            Failed::Send(e) => write!(f, "the connection failed: {e}"),
            Failed::Closed => f.write_str("the connection closed before an answer"),
        }
    }
}

/// Where a plain-HTTP URL goes: its `host[:port]` as written, the address to connect to, and
/// the request target (path and query).
pub(super) struct Target {
    pub(super) authority: String,
    pub(super) address: String,
    pub(super) path: hyper::Uri,
}

/// `url` split for a plain-HTTP call, when it is one this pool can make: `http://`, no user
/// information, a path hyper accepts as it is. Anything else goes through reqwest.
pub(super) fn target(url: &str) -> Option<Target> {
    let rest = url.strip_prefix("http://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') || path.contains('#') {
        return None;
    }
    // A port after the host (an IPv6 literal's colons are inside its brackets).
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.contains(']'));
    let address = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let path = if path.is_empty() { "/" } else { path };
    let path = hyper::Uri::try_from(path).ok()?;
    Some(Target {
        authority: authority.to_string(),
        address,
        path,
    })
}

impl Pool {
    /// An empty pool.
    pub(super) fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        keepalive: Duration,
    ) -> Self {
        Pool {
            hosts: Mutex::new(HashMap::new()),
            connect_timeout,
            idle_timeout,
            keepalive,
        }
    }

    /// The route of calls to `target`'s host (its idle connections found by address once, not
    /// per call).
    pub(super) fn route(&self, target: &Target) -> Route {
        let host = {
            let mut hosts = self.hosts.lock();
            match hosts.get(target.address.as_str()) {
                Some(host) => Arc::clone(host),
                None => {
                    let host = Arc::new(Host {
                        address: target.address.as_str().into(),
                        idle: Mutex::new(VecDeque::new()),
                    });
                    hosts.insert(target.address.as_str().into(), Arc::clone(&host));
                    host
                }
            }
        };
        Route {
            host_header: HeaderValue::from_str(&target.authority).ok(),
            host,
        }
    }

    /// Sends `body` with `headers` (the pool adds `host`) to `path` on `route` and reads the
    /// answer.
    pub(super) async fn send(
        &self,
        route: &Route,
        path: hyper::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, Failed> {
        let mut request = hyper::Request::new(Full::new(body));
        *request.method_mut() = hyper::Method::POST;
        *request.uri_mut() = path;
        *request.headers_mut() = headers;
        if let Some(host) = &route.host_header {
            request
                .headers_mut()
                .insert(hyper::header::HOST, host.clone());
        }
        let host = &*route.host;
        let mut conn = match self.checkout(host) {
            Some(conn) => conn,
            None => self.connect(&host.address).await?,
        };
        let (answer, reusable) = conn.exchange(request).await?;
        if reusable {
            self.checkin(host, conn);
        }
        Ok(answer)
    }

    /// An idle connection to `host` that is still open; those past the idle timeout, or closed
    /// by the server, are closed on the way.
    fn checkout(&self, host: &Host) -> Option<Conn> {
        let mut conns = host.idle.lock();
        while let Some(Idle { mut conn, since }) = conns.pop_back() {
            if since.elapsed() < self.idle_timeout && conn.open() {
                return Some(conn);
            }
        }
        None
    }

    /// Puts `conn` back for the next call to `host`.
    fn checkin(&self, host: &Host, conn: Conn) {
        let idle = Idle {
            conn,
            since: Instant::now(),
        };
        let mut conns = host.idle.lock();
        // Checked in in time order: the oldest are at the front. Those past the idle timeout
        // are closed here, so connections a burst opened do not stay open (and their sockets
        // held) until a later burst reaches them.
        while conns
            .front()
            .is_some_and(|old| old.since.elapsed() >= self.idle_timeout)
        {
            conns.pop_front();
        }
        conns.push_back(idle);
    }

    /// A new connection to `address`.
    async fn connect(&self, address: &str) -> Result<Conn, Failed> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| Failed::ConnectTimeout)?
            .map_err(Failed::Connect)?;
        stream.set_nodelay(true).map_err(Failed::Connect)?;
        let keepalive = socket2::TcpKeepalive::new().with_time(self.keepalive);
        socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&keepalive)
            .map_err(Failed::Connect)?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Failed::Send)?;
        Ok(Conn { sender, driver })
    }
}

impl Conn {
    /// Whether the connection is still usable: the server has not closed it while it sat idle
    /// (one poll reads what arrived, an end of stream among it).
    fn open(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        !self.sender.is_closed() && Pin::new(&mut self.driver).poll(&mut cx).is_pending()
    }

    /// Sends `request` and reads its whole answer, driving the connection meanwhile; whether
    /// the connection can take another request afterwards.
    async fn exchange(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<(Answer, bool), Failed> {
        let mut ended = false;
        let answer = {
            let Conn { sender, driver } = &mut *self;
            let work = async {
                sender.ready().await.map_err(Failed::Send)?;
                let response = sender.send_request(request).await.map_err(Failed::Send)?;
                let (parts, mut body) = response.into_parts();
                let bytes = collect(&mut body).await;
                Ok::<_, Failed>(Answer {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    body: bytes,
                })
            };
            let mut work = std::pin::pin!(work);
            std::future::poll_fn(|cx| {
                if let Poll::Ready(answer) = work.as_mut().poll(cx) {
                    return Poll::Ready(answer);
                }
                if !ended {
                    match Pin::new(&mut *driver).poll(cx) {
                        Poll::Ready(Ok(())) => ended = true,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(Failed::Send(e))),
                        Poll::Pending => {}
                    }
                }
                // What the connection just read may have completed the answer.
                match work.as_mut().poll(cx) {
                    Poll::Ready(answer) => Poll::Ready(answer),
                    Poll::Pending if ended => Poll::Ready(Err(Failed::Closed)),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await?
        };
        let reusable = !ended && answer.body.is_ok() && !self.sender.is_closed();
        Ok((answer, reusable))
    }
}

/// A body's bytes: its one frame as it is, several gathered.
async fn collect(body: &mut hyper::body::Incoming) -> Result<Bytes, hyper::Error> {
    let mut first: Option<Bytes> = None;
    let mut gathered: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        match (&mut gathered, first.take()) {
            (Some(all), _) => all.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(before)) => {
                let mut all = BytesMut::with_capacity(before.len() + data.len());
                all.extend_from_slice(&before);
                all.extend_from_slice(&data);
                gathered = Some(all);
            }
        }
    }
    Ok(match gathered {
        Some(all) => all.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// A header for a plain-HTTP call, or why not (its name only: a value may be a secret).
pub(super) fn header(
    name: &str,
    value: &str,
    sensitive: bool,
) -> Result<(HeaderName, HeaderValue), String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("the header name `{name}` is not valid"))?;
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| format!("the value of the header `{name}` is not valid"))?;
    value.set_sensitive(sensitive);
    Ok((header, value))
}
