//! The HTTP/1 accept loop for client connections. `axum::serve` sets no header-read timeout, so 200
//! clients trickling their headers held 200 connections for as long as they liked; this loop runs hyper
//! with a timer, `header_read_timeout` and a hard cap on header bytes (above the gateway's own
//! `max_header_bytes`, which LLM endpoints answer in the client's error shape with an event), and drains
//! connections gracefully on shutdown.

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
/// their requests (the caller bounds that wait). `gateway`: the state behind `app`'s metered routes,
/// whose calls then skip the router (see [`Front`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    gateway: Arc<GatewayState>,
    limits: ClientLimits,
    shutdown: impl Future<Output = ()>,
) {
    let front = Front { app, gateway };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.hard_max_header_bytes)
        .max_buf_size(limits.hard_max_header_bytes.max(8192 + 4096 * 100));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without TCP_NODELAY the last small SSE write of a stream waits for the client's delayed ACK.
        if let Err(error) = tcp.set_nodelay(true) {
            debug!(%error, "could not set TCP_NODELAY");
        }
        let conn = http.serve_connection(TokioIo::new(tcp), front.clone());
        let conn = graceful.watch(conn);
        // Everything of the connection's calls runs in this task; see `self_wake` for why its own wakes
        // are polled in place.
        tokio::spawn(crate::self_wake::PollInPlace::new(async move {
            if let Err(error) = conn.await {
                debug!(%error, "client connection ended with an error");
            }
        }));
    }
    drop(listener);
    graceful.shutdown().await;
}
