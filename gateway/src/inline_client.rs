//! The request path's upstream client: HTTP/1 connections driven by the task of the call that uses them.
//!
//! hyper-util's pooled client gives every connection a task of its own. A call then crosses tasks (and
//! often the runtime's workers) at each step: the request goes to the connection's task through a
//! channel, the answer's head comes back through another, every body chunk through a third, and a
//! further task hands the connection back to the pool. Here a connection has no task: the call's own task
//! polls it while it waits for the head ([`InlineClient::request`]) and while it reads the body (the
//! [`Lease`] travels in `UpstreamBody`), and once the body has ended the connection goes back to an idle
//! list. hyper's wake-ups between the connection and the call then wake the task already running; and a
//! body whose chunks arrived together is read in one go, so the client's side of the gateway can write
//! them together too.
//!
//! An idle connection is polled by nobody. When it is taken it is polled once with a waker that does
//! nothing: one the upstream closed meanwhile reports it then and is dropped, and a request a reused
//! connection could not send (hyper hands it back) is sent on the next one, as hyper-util does.

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use std::collections::HashMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tower_service::Service;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
type Io = hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;
type Conn = http1::Connection<Io, Full<Bytes>>;
type Sender = http1::SendRequest<Full<Bytes>>;

/// Where a connection goes: scheme and authority of the request's URI.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    scheme: Scheme,
    authority: Authority,
}

struct Idle {
    sender: Sender,
    conn: Box<Conn>,
    since: Instant,
    /// Where the connection was opened (see [`keep_connections_on_this_thread`]).
    home: usize,
}

thread_local! {
    static HOME: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the calling thread as one that runs a single-threaded runtime of its own for its whole life
/// (a connection thread of `listen::serve`): the upstream connections it opens are lent only to calls
/// on it. A connection's socket is registered with the I/O driver of the runtime that opened it, which
/// only that thread polls, and its buffers come from that thread's allocator arena: used by a call on
/// another thread, every read would wake that call across threads (or never, while its own thread
/// waits for work) and every buffer freed would take the other arena's lock. On other threads (the
/// workers of a multi-threaded runtime, which share one driver) connections are shared among them.
pub fn keep_connections_on_this_thread() {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    HOME.with(|h| h.set(NEXT.fetch_add(1, Ordering::Relaxed)));
}

fn home() -> usize {
    HOME.with(|h| h.get())
}

/// Connections to one upstream's hosts, idle ones kept per host (most recently used first out).
pub struct InlineClient {
    connector: Connector,
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
    opened: AtomicU64,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the upstream URI has no scheme or host")]
    Uri,
    #[error("connecting: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// A connection lent to one call until its answer's body has been read. Dropped before that, it closes
/// the connection (HTTP/1 cannot abandon an answer half read).
pub struct Lease {
    sender: Sender,
    /// Boxed: hyper's connection state with its buffers is a few KiB, and a lease moves by value from
    /// the idle list into the call's futures, into `UpstreamBody` and back at every call; boxed, those
    /// moves copy a pointer and the call's future shrinks by as much (one allocation per connection).
    conn: Box<Conn>,
    key: Key,
    pool: Arc<InlineClient>,
    /// The connection's future has completed (closed or failed): it must not be polled again.
    closed: bool,
    home: usize,
}

impl InlineClient {
    /// http or https (webpki roots), TCP_NODELAY; idle connections are kept `idle_timeout`, at most
    /// `max_idle_per_host` per host.
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle_per_host: usize) -> Arc<InlineClient> {
        Arc::new(InlineClient {
            connector: crate::http_client::connector(connect_timeout),
            idle: Mutex::new(HashMap::new()),
            max_idle_per_host,
            idle_timeout,
            opened: AtomicU64::new(0),
        })
    }

    /// Connections opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Sends `req` (absolute URI, `Host` header set by the caller) and waits for the answer's head. The
    /// returned lease must be polled to read the body (`UpstreamBody` does).
    pub async fn request(
        self: &Arc<Self>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), ClientError> {
        let target = req.uri().clone();
        let key = match (target.scheme(), target.authority()) {
            (Some(s), Some(a)) => Key { scheme: s.clone(), authority: a.clone() },
            _ => return Err(ClientError::Uri),
        };
        // HTTP/1 to an origin server: the request line carries the path only.
        let origin = target.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(origin);
        loop {
            let (mut lease, reused) = match self.checkout(&key) {
                Some(l) => (l, true),
                // Boxed: connecting (DNS, TCP, TLS, handshake) is rare and its future is large; inline it
                // would grow every call's future by as much.
                None => (Box::pin(self.connect(key.clone(), target.clone())).await?, false),
            };
            let sent = lease.sender.try_send_request(req);
            match lease.drive(sent).await {
                Ok(resp) => return Ok((resp, lease)),
                Err(mut e) => match e.take_message() {
                    // Never written: a reused connection had been closed by the upstream.
                    Some(back) if reused => req = back,
                    _ => return Err(ClientError::Http(e.into_error())),
                },
            }
        }
    }

    async fn connect(self: &Arc<Self>, key: Key, target: Uri) -> Result<Lease, ClientError> {
        let io = self.connector.clone().call(target).await.map_err(ClientError::Connect)?;
        let (sender, conn) = http1::Builder::new().handshake(io).await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Lease { sender, conn: Box::new(conn), key, pool: self.clone(), closed: false, home: home() })
    }

    /// The most recently used idle connection to `key` that is still open and may be used here.
    fn checkout(self: &Arc<Self>, key: &Key) -> Option<Lease> {
        let now = Instant::now();
        let me = home();
        loop {
            let idle = {
                let mut all = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                let list = all.get_mut(key)?;
                self.drop_expired(list, now);
                let at = list.iter().rposition(|i| i.home == me)?;
                list.remove(at)
            };
            let mut lease = Lease {
                sender: idle.sender,
                conn: idle.conn,
                key: key.clone(),
                pool: self.clone(),
                closed: false,
                home: idle.home,
            };
            lease.poll_conn(&mut Context::from_waker(Waker::noop()));
            if !lease.closed && lease.sender.is_ready() {
                return Some(lease);
            }
        }
    }

    fn put(&self, key: Key, idle: Idle) {
        let mut all = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = all.entry(key).or_default();
        self.drop_expired(list, idle.since);
        if list.len() < self.max_idle_per_host {
            list.push(idle);
        }
    }

    /// Closes the connections of `list` idle longer than the timeout at `now`.
    fn drop_expired(&self, list: &mut Vec<Idle>, now: Instant) {
        // Oldest first (each was pushed when it came back): those past the timeout are a prefix.
        let expired = list.partition_point(|i| now.saturating_duration_since(i.since) > self.idle_timeout);
        list.drain(..expired);
    }
}

impl Lease {
    /// Moves the connection on: writes what is queued, reads what has arrived and hands it to the answer
    /// or its body. Wakes `cx` when there is more to do.
    pub fn poll_conn(&mut self, cx: &mut Context<'_>) {
        if !self.closed {
            if let Poll::Ready(r) = Pin::new(&mut *self.conn).poll(cx) {
                self.closed = true;
                if let Err(error) = r {
                    tracing::debug!(%error, "upstream connection ended");
                }
            }
        }
    }

    /// Polls the connection alongside `fut` until `fut` completes.
    async fn drive<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = pin!(fut);
        std::future::poll_fn(|cx| {
            self.poll_conn(cx);
            fut.as_mut().poll(cx)
        })
        .await
    }

    /// The answer's body has been read to its end: once the connection is ready for the next request it
    /// goes back to the idle list, else it is closed.
    pub fn release(mut self, cx: &mut Context<'_>) {
        self.poll_conn(cx);
        if self.closed || !self.sender.is_ready() {
            return;
        }
        let Lease { sender, conn, key, pool, home, .. } = self;
        pool.put(key, Idle { sender, conn, since: Instant::now(), home });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicUsize;

    /// A plain hyper server on a free port answering every request with its path, counting connections.
    async fn server() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                // Each answer names its connection (0, 1, … in the order they were accepted).
                let conn_no = count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                        let path = req.uri().path().to_string();
                        let close = path.contains("close");
                        // `/chunked...`: the path in three chunks (no length: chunked transfer coding).
                        let body = if path.starts_with("/chunked") {
                            let parts: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = path
                                .as_bytes()
                                .chunks(path.len().div_ceil(3))
                                .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
                                .collect();
                            http_body_util::StreamBody::new(futures_util::stream::iter(parts)).boxed()
                        } else {
                            Full::new(Bytes::from(path)).boxed()
                        };
                        let mut resp = Response::new(body);
                        resp.headers_mut().insert("x-conn", http::HeaderValue::from(conn_no));
                        if close {
                            resp.headers_mut()
                                .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (format!("http://{addr}"), accepted)
    }

    fn request(base: &str, path: &str) -> Request<Full<Bytes>> {
        let host = base.trim_start_matches("http://").to_string();
        Request::post(format!("{base}{path}")).header("host", host).body(Full::new(Bytes::from_static(b"{}"))).unwrap()
    }

    /// Reads the whole body the way `UpstreamBody` does: the lease polled beside it, released at the end.
    async fn read(resp: Response<Incoming>, lease: Lease) -> Bytes {
        let body = crate::respond::UpstreamBody::new(resp.into_body(), lease);
        body.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn reuses_one_connection_for_calls_one_after_another() {
        let (base, accepted) = server().await;
        let client = InlineClient::new(Duration::from_secs(1), Duration::from_secs(90), 8);
        for i in 0..5 {
            let (resp, lease) = client.request(request(&base, &format!("/v1/call{i}"))).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(read(resp, lease).await, format!("/v1/call{i}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(client.opened(), 1);
    }

    /// hyper's server stops polling a body of known length once `is_end_stream` says so: the connection
    /// must come back all the same.
    #[tokio::test]
    async fn reuses_the_connection_of_a_body_read_up_to_its_length() {
        let (base, accepted) = server().await;
        let client = InlineClient::new(Duration::from_secs(1), Duration::from_secs(90), 8);
        for i in 0..3 {
            let (resp, lease) = client.request(request(&base, &format!("/len{i}"))).await.unwrap();
            let mut body = crate::respond::UpstreamBody::new(resp.into_body(), lease);
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), format!("/len{i}"));
            assert!(http_body::Body::is_end_stream(&body));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn reuses_connections_after_chunked_bodies() {
        let (base, accepted) = server().await;
        let client = InlineClient::new(Duration::from_secs(1), Duration::from_secs(90), 8);
        for i in 0..3 {
            let (resp, lease) = client.request(request(&base, &format!("/chunked/{i}"))).await.unwrap();
            assert!(resp.headers().get(http::header::CONTENT_LENGTH).is_none());
            assert_eq!(read(resp, lease).await, format!("/chunked/{i}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_half_read_closes_its_connection() {
        let (base, accepted) = server().await;
        let client = InlineClient::new(Duration::from_secs(1), Duration::from_secs(90), 8);
        let (_resp, lease) = client.request(request(&base, "/a")).await.unwrap();
        drop(lease);
        let (resp, lease) = client.request(request(&base, "/b")).await.unwrap();
        assert_eq!(read(resp, lease).await, "/b");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_used_again() {
        let (base, accepted) = server().await;
        let client = InlineClient::new(Duration::from_secs(1), Duration::from_secs(90), 8);
        let (resp, lease) = client.request(request(&base, "/close")).await.unwrap();
        assert_eq!(read(resp, lease).await, "/close");
        // Give the upstream's close time to arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (resp, lease) = client.request(request(&base, "/after")).await.unwrap();
        assert_eq!(read(resp, lease).await, "/after");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connections_past_their_timeout_are_not_used() {
        let (base, accepted) = server().await;
        let client = InlineClient::new(Duration::from_secs(1), Duration::from_millis(20), 8);
        let (resp, lease) = client.request(request(&base, "/one")).await.unwrap();
        read(resp, lease).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (resp, lease) = client.request(request(&base, "/two")).await.unwrap();
        assert_eq!(read(resp, lease).await, "/two");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_calls_get_connections_of_their_own_and_leave_them_idle() {
        let (base, accepted) = server().await;
        let client = InlineClient::new(Duration::from_secs(1), Duration::from_secs(90), 8);
        let calls = (0..4).map(|i| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                let (resp, lease) = client.request(request(&base, &format!("/c{i}"))).await.unwrap();
                read(resp, lease).await
            })
        });
        let bodies = futures_util::future::join_all(calls).await;
        for (i, body) in bodies.into_iter().enumerate() {
            assert_eq!(body.unwrap(), format!("/c{i}"));
        }
        let opened = accepted.load(Ordering::SeqCst);
        assert!((1..=4).contains(&opened), "{opened}");
        // All idle now: as many calls again open nothing new.
        for i in 0..opened {
            let (resp, lease) = client.request(request(&base, &format!("/d{i}"))).await.unwrap();
            read(resp, lease).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), opened);
    }

    type Job = Box<dyn FnOnce(&tokio::runtime::Runtime) + Send>;

    /// A thread with a single-threaded runtime of its own, running the jobs it is sent one at a time.
    struct OnThread(std::sync::mpsc::Sender<Job>);

    impl OnThread {
        fn start() -> OnThread {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            std::thread::spawn(move || {
                keep_connections_on_this_thread();
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                for job in rx {
                    job(&rt);
                }
            });
            OnThread(tx)
        }

        fn run<T: Send + 'static>(&self, f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static) -> T {
            let (tx, rx) = std::sync::mpsc::channel();
            self.0.send(Box::new(move |rt| tx.send(f(rt)).unwrap())).unwrap();
            rx.recv().unwrap()
        }
    }

    fn conn_no(resp: &Response<Incoming>) -> String {
        resp.headers()["x-conn"].to_str().unwrap().to_string()
    }

    /// Connection threads (`listen::serve`) each call upstreams: an idle connection goes back only to a
    /// call on the thread that opened it, even when another thread's connection came back later.
    #[test]
    fn a_thread_gets_back_the_connections_it_opened() {
        let server_rt = tokio::runtime::Runtime::new().unwrap();
        let (base, accepted) = server_rt.block_on(server());
        let client = InlineClient::new(Duration::from_secs(1), Duration::from_secs(90), 8);
        let (a, b) = (OnThread::start(), OnThread::start());
        let call = |client: &Arc<InlineClient>, base: &str, path: &str| {
            let (client, req) = (client.clone(), request(base, path));
            move |rt: &tokio::runtime::Runtime| rt.block_on(client.request(req)).unwrap()
        };
        // A holds its connection (0) while B opens one (1) and gives it back; then A gives 0 back.
        let (resp_a, lease_a) = a.run(call(&client, &base, "/a1"));
        assert_eq!(conn_no(&resp_a), "0");
        let (resp_b, lease_b) = b.run(call(&client, &base, "/b1"));
        assert_eq!(conn_no(&resp_b), "1");
        assert_eq!(b.run(move |rt| rt.block_on(read(resp_b, lease_b))), "/b1");
        assert_eq!(a.run(move |rt| rt.block_on(read(resp_a, lease_a))), "/a1");
        // 0 is the most recent idle connection, yet B's next call gets its own 1, and A's gets 0.
        let (resp, lease) = b.run(call(&client, &base, "/b2"));
        assert_eq!(conn_no(&resp), "1");
        assert_eq!(b.run(move |rt| rt.block_on(read(resp, lease))), "/b2");
        let (resp, lease) = a.run(call(&client, &base, "/a2"));
        assert_eq!(conn_no(&resp), "0");
        assert_eq!(a.run(move |rt| rt.block_on(read(resp, lease))), "/a2");
        // A third thread with none of its own idle opens one: the others' runtimes are not running now,
        // and a call on one of their connections would never be woken.
        let c = OnThread::start();
        let (resp, lease) = c.run(call(&client, &base, "/c1"));
        assert_eq!(conn_no(&resp), "2");
        assert_eq!(c.run(move |rt| rt.block_on(read(resp, lease))), "/c1");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = InlineClient::new(Duration::from_secs(1), Duration::from_secs(90), 8);
        match client.request(request(&base, "/x")).await {
            Err(ClientError::Connect(_)) => {}
            Err(other) => panic!("expected a connect error, got {other}"),
            Ok(_) => panic!("expected a connect error"),
        }
    }
}
