//! The HTTP/1 accept loop for client connections. `axum::serve` sets no header-read timeout, so 200
//! clients trickling their headers held 200 connections for as long as they liked; this loop runs hyper
//! with a timer, `header_read_timeout` and a hard cap on header bytes (above the gateway's own
//! `max_header_bytes`, which LLM endpoints answer in the client's error shape with an event), and drains
//! connections gracefully on shutdown. Accepted connections are served by threads of their own (see
//! [`serve`]).

use crate::GatewayState;
use axum::body::Body;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::debug;

/// Bounds on client connections, from `[gateway]`.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// A connection whose request headers have not all arrived after this long is closed.
    pub header_read_timeout: Duration,
    /// Header bytes past which hyper itself answers a bare 431 and closes the connection.
    pub hard_max_header_bytes: usize,
}

impl ClientLimits {
    pub fn from_settings(s: &crate::config::GatewaySettings) -> ClientLimits {
        ClientLimits {
            header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
            // The gateway's own check answers up to 4x its limit; hyper's hard cap is what bounds memory.
            hard_max_header_bytes: s.max_header_bytes.saturating_mul(4).max(64 * 1024),
        }
    }
}

/// What a client connection calls: a `POST` to a metered LLM endpoint goes straight to the gateway's
/// handler, everything else through the router. The router costs a metered call a boxed route clone,
/// a map of path parameters in the request's extensions and a second content-length check, about a
/// tenth of the allocations of a whole call; the handler and every answer are the same either way.
#[derive(Clone)]
struct Front {
    app: Router,
    gateway: Arc<GatewayState>,
}

type FrontFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<http::Request<Incoming>> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = FrontFuture;

    fn call(&self, req: http::Request<Incoming>) -> FrontFuture {
        if req.method() == http::Method::POST {
            if let Some((endpoint, client)) = crate::metered_endpoint(req.uri().path()) {
                let st = self.gateway.clone();
                let req = req.map(Body::new);
                return Box::pin(async move { Ok(crate::metered(st, req, endpoint, client).await) });
            }
        }
        Box::pin(hyper::service::Service::call(&TowerToHyperService::new(self.app.clone()), req))
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for open connections to finish
/// their requests (the caller bounds that wait, and cuts the rest by dropping this future). `gateway`:
/// the state behind `app`'s metered routes, whose calls then skip the router (see [`Front`]).
///
/// Connections are served by `threads` threads of their own (0: one per core), each a single-threaded
/// runtime; this task only accepts them and deals them out in turn. A connection then stays on one
/// thread for its life: its calls are never stolen by another worker half-way, nothing of it is woken
/// across threads, and the buffers hyper and the gateway allocate for it are freed by the thread that
/// allocated them (glibc's per-thread arenas: a free from another thread takes that arena's lock, and on
/// a shared runtime those frees were most of `serve`'s futex calls; bench/RESULTS.md, thirteenth round).
/// Dealing in turn keeps the threads' shares of connections even, which the kernel's choice among
/// several accepting threads does not.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    gateway: Arc<GatewayState>,
    limits: ClientLimits,
    threads: usize,
    shutdown: impl Future<Output = ()>,
) {
    let front = Front { app, gateway };
    let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
    let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
    // Dropped with this future (the caller's grace period ran out): the threads drop their connections.
    let _cut_on_drop = CutOnDrop(cut_tx);
    let mut shards = Vec::with_capacity(threads);
    for i in 0..threads {
        match Shard::start(i, front.clone(), limits, cut_rx.clone()) {
            Ok(shard) => shards.push(shard),
            Err(error) => tracing::warn!(%error, "could not start a connection thread"),
        }
    }
    if shards.is_empty() {
        // No thread could be started: serve on this runtime rather than not at all.
        return serve_here(listener, front, limits, shutdown).await;
    }
    tokio::pin!(shutdown);
    let mut next = 0usize;
    while let Some(tcp) = next_connection(&listener, shutdown.as_mut()).await {
        // Leaves this runtime's I/O driver; the connection's thread registers it with its own.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(error) => {
                debug!(%error, "could not hand a connection over");
                continue;
            }
        };
        let shard = &shards[next % shards.len()];
        next = next.wrapping_add(1);
        if shard.conns.send(tcp).is_err() {
            debug!("a connection thread has ended; connection dropped");
        }
    }
    drop(listener);
    // Closing the hand-over channels starts each thread's graceful shutdown.
    let done: Vec<_> = shards.into_iter().map(|s| s.done).collect();
    for d in done {
        let _ = d.await;
    }
}

/// One connection thread: its hand-over channel and the signal that its runtime has ended.
struct Shard {
    conns: tokio::sync::mpsc::UnboundedSender<std::net::TcpStream>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Shard {
    fn start(
        i: usize,
        front: Front,
        limits: ClientLimits,
        mut cut: tokio::sync::watch::Receiver<bool>,
    ) -> std::io::Result<Shard> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (conns, mut rx) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name(format!("tollgate-io-{i}")).spawn(move || {
            crate::inline_client::keep_connections_on_this_thread();
            rt.block_on(async move {
                tokio::spawn(keep_timer_wheel_awake());
                let serve = async move {
                    let http = http1_builder(limits);
                    let graceful = GracefulShutdown::new();
                    while let Some(tcp) = rx.recv().await {
                        let tcp = match tokio::net::TcpStream::from_std(tcp) {
                            Ok(tcp) => tcp,
                            Err(error) => {
                                debug!(%error, "could not register a connection");
                                continue;
                            }
                        };
                        spawn_connection(&http, &graceful, tcp, front.clone());
                    }
                    graceful.shutdown().await;
                };
                // The cut ends the graceful wait too: a stream longer than the grace period must not
                // keep the thread (and the event senders it holds) alive.
                tokio::select! {
                    () = serve => {}
                    _ = cut.wait_for(|c| *c) => {}
                }
            });
            // Every connection still open is dropped with the runtime (its calls' events are emitted as
            // the client's disconnect) before the acceptor learns that this thread is done.
            drop(rt);
            let _ = done_tx.send(());
        })?;
        Ok(Shard { conns, done })
    }
}

/// A timer that always expires within a second, so the thread's timer wheel is never without an early
/// deadline. tokio's time driver writes to the runtime's eventfd whenever a timer is armed earlier than
/// the deadline the driver last parked with, or when it parked with none; every call arms some (hyper's
/// `header_read_timeout` for each request's head, the upstream timeouts), and on an otherwise timer-less
/// thread each arming was such a write, about a third of a system call per call (bench/RESULTS.md,
/// fourteenth round). Behind this tick they are later deadlines and need no wake-up; it costs one wake-up
/// per second per thread.
async fn keep_timer_wheel_awake() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

struct CutOnDrop(tokio::sync::watch::Sender<bool>);

impl Drop for CutOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

fn http1_builder(limits: ClientLimits) -> hyper::server::conn::http1::Builder {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.hard_max_header_bytes)
        .max_buf_size(limits.hard_max_header_bytes.max(8192 + 4096 * 100));
    http
}

fn spawn_connection(
    http: &hyper::server::conn::http1::Builder,
    graceful: &GracefulShutdown,
    tcp: tokio::net::TcpStream,
    front: Front,
) {
    let conn = http.serve_connection(TokioIo::new(tcp), front);
    let conn = graceful.watch(conn);
    // Everything of the connection's calls runs in this task; see `self_wake` for why its own wakes
    // are polled in place.
    tokio::spawn(crate::self_wake::PollInPlace::new(async move {
        if let Err(error) = conn.await {
            debug!(%error, "client connection ended with an error");
        }
    }));
}

/// Accepts and serves connections on the current runtime (when no connection thread could start).
async fn serve_here(listener: TcpListener, front: Front, limits: ClientLimits, shutdown: impl Future<Output = ()>) {
    let http = http1_builder(limits);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    while let Some(tcp) = next_connection(&listener, shutdown.as_mut()).await {
        spawn_connection(&http, &graceful, tcp, front.clone());
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The next client connection, with `TCP_NODELAY` set; `None` once `shutdown` has resolved.
async fn next_connection(
    listener: &TcpListener,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Option<tokio::net::TcpStream> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    // Without TCP_NODELAY the last small SSE write of a stream waits for the client's
                    // delayed ACK.
                    if let Err(error) = tcp.set_nodelay(true) {
                        debug!(%error, "could not set TCP_NODELAY");
                    }
                    return Some(tcp);
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            () = &mut shutdown => return None,
        }
    }
}
