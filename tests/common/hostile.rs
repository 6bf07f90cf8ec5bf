//! A hostile upstream for tests: a raw TCP server that answers each request with exactly the bytes a
//! test scripted (status line, headers, body framing and all), so tests can send what no well-behaved
//! server would: a last line without a line end, CR-only line ends, `data:` split over lines, a JSON
//! body to a stream request, a line of many megabytes. A request picks its script with `HOSTILE[name]`
//! anywhere in its body.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One step of a scripted answer.
#[derive(Clone, Debug)]
pub enum Step {
    Send(Vec<u8>),
    /// `bytes` sent `times` times, in writes of about 64 KiB (large answers without holding them whole).
    Repeat(Vec<u8>, usize),
    Sleep(u64),
}

pub struct Hostile {
    addr: SocketAddr,
    scripts: Arc<Mutex<HashMap<String, Vec<Step>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hostile {
    pub async fn start() -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scripts: Arc<Mutex<HashMap<String, Vec<Step>>>> = Arc::default();
        let s = scripts.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = answer(tcp, s).await;
                });
            }
        });
        Hostile { addr, scripts, task }
    }

    /// `http://addr/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests containing `HOSTILE[name]` get these steps, then the connection is closed.
    pub fn on(&self, name: &str, steps: Vec<Step>) {
        self.scripts.lock().unwrap().insert(name.to_string(), steps);
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Status line and headers of a 200 whose body runs to the end of the connection.
pub fn head(content_type: &str) -> Step {
    Step::Send(format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n").into_bytes())
}

/// A whole scripted SSE answer.
pub fn sse(body: &[u8]) -> Vec<Step> {
    vec![head("text/event-stream"), Step::Send(body.to_vec())]
}

async fn answer(mut tcp: TcpStream, scripts: Arc<Mutex<HashMap<String, Vec<Step>>>>) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let header_end = loop {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&req[..header_end]).to_ascii_lowercase();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while req.len() < header_end + len {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&req[header_end..]);
    let name = body.split("HOSTILE[").nth(1).and_then(|r| r.split(']').next()).unwrap_or("");
    let steps = scripts.lock().unwrap().get(name).cloned();
    let Some(steps) = steps else {
        let msg = format!("no script `{name}`");
        let resp = format!(
            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{msg}",
            msg.len()
        );
        tcp.write_all(resp.as_bytes()).await?;
        return tcp.shutdown().await;
    };
    for step in steps {
        match step {
            Step::Send(b) => tcp.write_all(&b).await?,
            Step::Repeat(b, times) => {
                let per_write = (64 * 1024 / b.len().max(1)).max(1);
                let block = b.repeat(per_write);
                let mut left = times;
                while left >= per_write {
                    tcp.write_all(&block).await?;
                    left -= per_write;
                }
                tcp.write_all(&b.repeat(left)).await?;
            }
            Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
    }
    tcp.shutdown().await
}

/// VmHWM (peak resident set) of a process, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}
