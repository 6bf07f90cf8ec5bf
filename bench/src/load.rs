//! The load driver: `c` workers, each owning one keep-alive HTTP/1 connection (or, for
//! `fresh_connections`, opening a new one for every request and closing it after the answer), for a
//! fixed window.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stats::{summarize, RunSummary};

/// Past the end of the window a hung request is abandoned after this long, so every run stops on its own.
const HANG_GRACE: Duration = Duration::from_secs(5);
/// Bytes of the body tail kept to check that a stream ended with `data: [DONE]`.
const TAIL: usize = 32;

/// One load run against one target.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub path: String,
    pub body: Bytes,
    pub bearer: Option<String>,
    pub stream: bool,
    /// A new connection per request, closed after the answer; its latency includes the connect.
    pub fresh_connections: bool,
    pub concurrency: usize,
    pub measure: Duration,
    /// Expected requests per second over all workers, to size the sample vectors up front.
    pub expected_rps: usize,
}

struct WorkerOut {
    latency_ns: Vec<u64>,
    ttfb_ns: Vec<u64>,
    errors: u64,
}

/// Runs the load from now (the time until `t_measure` is warm-up) and summarizes the requests that started
/// and completed inside the measured window, `t_measure` to `t_measure + spec.measure`. The caller picks
/// `t_measure` so it can sample the processes under test over the same window.
pub async fn run(spec: LoadSpec, t_measure: Instant) -> Result<RunSummary> {
    let spec = Arc::new(spec);
    let t_end = t_measure + spec.measure;
    let per_worker = (spec.expected_rps * spec.measure.as_secs().max(1) as usize / spec.concurrency.max(1)).max(1024);

    let mut handles = Vec::with_capacity(spec.concurrency);
    for _ in 0..spec.concurrency {
        handles.push(tokio::spawn(worker(spec.clone(), t_measure, t_end, per_worker)));
    }
    let mut latency_ns = Vec::with_capacity(per_worker * spec.concurrency);
    let mut ttfb_ns = Vec::with_capacity(if spec.stream { per_worker * spec.concurrency } else { 0 });
    let mut errors = 0;
    for h in handles {
        let out = h.await.context("load worker died")?;
        latency_ns.extend_from_slice(&out.latency_ns);
        ttfb_ns.extend_from_slice(&out.ttfb_ns);
        errors += out.errors;
    }
    Ok(summarize(latency_ns, ttfb_ns, errors, spec.measure.as_secs_f64()))
}

async fn worker(spec: Arc<LoadSpec>, t_measure: Instant, t_end: Instant, cap: usize) -> WorkerOut {
    let mut out = WorkerOut {
        latency_ns: Vec::with_capacity(cap),
        ttfb_ns: Vec::with_capacity(if spec.stream { cap } else { 0 }),
        errors: 0,
    };
    let hard_deadline = tokio::time::Instant::from_std(t_end + HANG_GRACE);
    let mut tail = Vec::with_capacity(TAIL * 2);
    'connection: while Instant::now() < t_end {
        let t_connect = Instant::now();
        let mut sender = match tokio::time::timeout_at(hard_deadline, connect(spec.addr)).await {
            Ok(Ok(s)) => s,
            _ => {
                if Instant::now() >= t_measure {
                    out.errors += 1;
                }
                // A dead target must not turn into a hot reconnect loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while Instant::now() < t_end {
            let Ok(req) = build_request(&spec) else {
                out.errors += 1;
                return out;
            };
            // A fresh connection's request is timed from before its connect.
            let t0 = if spec.fresh_connections { t_connect } else { Instant::now() };
            let res =
                tokio::time::timeout_at(hard_deadline, one_request(&mut sender, req, spec.stream, &mut tail)).await;
            let t1 = Instant::now();
            match res {
                Ok(Ok(first_chunk)) => {
                    if t0 >= t_measure && t1 <= t_end {
                        out.latency_ns.push(nanos(t1 - t0));
                        if let Some(f) = first_chunk {
                            out.ttfb_ns.push(nanos(f - t0));
                        }
                    }
                }
                _ => {
                    if t0 >= t_measure {
                        out.errors += 1;
                    }
                    continue 'connection;
                }
            }
            if spec.fresh_connections {
                // Dropping the sender closes the connection (this side closes first, as clients do).
                continue 'connection;
            }
        }
    }
    out
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the peer closes; either is expected.
        let _ = conn.await;
    });
    Ok(sender)
}

fn build_request(spec: &LoadSpec) -> Result<Request<Full<Bytes>>> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(spec.path.as_str())
        .header(header::HOST, spec.addr.to_string())
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(bearer) = &spec.bearer {
        b = b.header(header::AUTHORIZATION, bearer.as_str());
    }
    Ok(b.body(Full::new(spec.body.clone()))?)
}

/// Sends one request and reads the whole body; returns when the first non-empty body chunk arrived.
async fn one_request(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
    stream: bool,
    tail: &mut Vec<u8>,
) -> Result<Option<Instant>> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut first = None;
    tail.clear();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            if data.is_empty() {
                continue;
            }
            if first.is_none() {
                first = Some(Instant::now());
            }
            if stream {
                tail.extend_from_slice(&data[data.len().saturating_sub(TAIL)..]);
                if tail.len() > TAIL {
                    tail.drain(..tail.len() - TAIL);
                }
            }
        }
    }
    if !status.is_success() {
        bail!("status {status}");
    }
    if stream {
        if !ends_with_done(tail) {
            bail!("stream did not end with data: [DONE]");
        }
        return Ok(first);
    }
    Ok(None)
}

fn ends_with_done(tail: &[u8]) -> bool {
    let trimmed = tail.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(&tail[..0], |i| &tail[..=i]);
    trimmed.ends_with(b"data: [DONE]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn done_detection() {
        assert!(ends_with_done(b"{}\n\ndata: [DONE]\n\n"));
        assert!(ends_with_done(b"data: [DONE]"));
        assert!(!ends_with_done(b"data: {\"x\":1}\n\n"));
        assert!(!ends_with_done(b""));
    }

    /// What the stand-in counted: connections accepted, answers written.
    #[derive(Default)]
    struct Counts {
        accepted: std::sync::atomic::AtomicU64,
        served: std::sync::atomic::AtomicU64,
    }

    /// A stand-in upstream (the real mock is a separate binary): one canned SSE reply per request.
    async fn stand_in() -> (SocketAddr, Arc<Counts>) {
        use std::sync::atomic::Ordering::Relaxed;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                c.accepted.fetch_add(1, Relaxed);
                let c = c.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let body = "data: {\"choices\":[]}\n\ndata: [DONE]\n\n";
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    // Requests from the driver are small and arrive in one read.
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(resp.as_bytes()).await.is_err() {
                            break;
                        }
                        c.served.fetch_add(1, Relaxed);
                    }
                });
            }
        });
        (addr, counts)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn drives_load_and_stops_on_its_own() {
        let (addr, _) = stand_in().await;
        let spec = LoadSpec {
            addr,
            path: "/v1/chat/completions".into(),
            body: Bytes::from_static(b"{}"),
            bearer: Some("Bearer k".into()),
            stream: true,
            fresh_connections: false,
            concurrency: 2,
            measure: Duration::from_millis(200),
            expected_rps: 1000,
        };
        let s = run(spec, Instant::now() + Duration::from_millis(50)).await.unwrap();
        assert!(s.requests > 0);
        assert_eq!(s.errors, 0);
        assert!(s.ttfb_p50_us.is_some());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn fresh_connections_open_one_connection_per_request() {
        let (addr, counts) = stand_in().await;
        let spec = LoadSpec {
            addr,
            path: "/".into(),
            body: Bytes::from_static(b"{}"),
            bearer: None,
            stream: false,
            fresh_connections: true,
            concurrency: 2,
            measure: Duration::from_millis(200),
            expected_rps: 1000,
        };
        let s = run(spec, Instant::now()).await.unwrap();
        assert!(s.requests > 10, "{s:?}");
        assert_eq!(s.errors, 0);
        // Every request came on a connection of its own (the counts are the server's, not the driver's): at
        // least one connection per request counted, and beyond the requests served no more than each
        // worker's last connection (opened as the window closed) and an answer not yet counted.
        let accepted = counts.accepted.load(std::sync::atomic::Ordering::Relaxed);
        let served = counts.served.load(std::sync::atomic::Ordering::Relaxed);
        assert!(accepted >= s.requests as u64, "{accepted} connections for {} requests", s.requests);
        assert!(accepted <= served + 4, "{accepted} connections for {served} requests served");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dead_target_counts_errors_and_stops() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let spec = LoadSpec {
            addr: port,
            path: "/".into(),
            body: Bytes::new(),
            bearer: None,
            stream: false,
            fresh_connections: false,
            concurrency: 1,
            measure: Duration::from_millis(100),
            expected_rps: 10,
        };
        let s = run(spec, Instant::now()).await.unwrap();
        assert_eq!(s.requests, 0);
        assert!(s.errors > 0);
    }
}
