//! `tollgate gateway`: ships the metering task's event batches to a collector process, off the request
//! path. Every batch is first appended to a local outbox spool (fsynced), then sent; it leaves the spool
//! only when the collector has acknowledged it (after the collector's own fsync). So a collector that is
//! slow, down or restarting costs nothing but spool space, batches go out in order when it is back, and a
//! resend after a lost acknowledgement is recognised by the collector (`x-tollgate-batch:
//! <gateway id>:<sequence>`) and not stored twice.
//!
//! Spool full (`spool_max_bytes`): the newest batch is dropped, counted in
//! `tollgate_spool_dropped_events_total` and logged as an error (the spool keeps the oldest, in order).
//! Client traffic is never blocked or failed by any of this.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tollgate_events::CallEvent;
use tracing::{error, info, warn};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipConfig {
    /// The collector's base URL, e.g. `http://collector.internal:8090`.
    pub collector_url: String,
    /// Environment variable holding the ingest token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Names this gateway to the collector; generated once into the data dir when not set.
    #[serde(default)]
    pub gateway_id: Option<String>,
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_spool_max_bytes() -> u64 {
    1024 * 1024 * 1024
}
fn default_timeout_ms() -> u64 {
    10_000
}

impl ShipConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.collector_url.starts_with("http://") || self.collector_url.starts_with("https://")) {
            return Err(format!(
                "shipping.collector_url: must start with http:// or https://, got `{}`",
                self.collector_url
            ));
        }
        if let Some(var) = &self.token_env {
            if std::env::var_os(var).is_none() {
                return Err(format!("shipping.token_env: environment variable `{var}` is not set"));
            }
        }
        if self.timeout_ms == 0 {
            return Err("shipping.timeout_ms: must be greater than 0".into());
        }
        Ok(())
    }
}

#[derive(Default)]
pub struct ShipMetrics {
    pub shipped_events: AtomicU64,
    pub shipped_batches: AtomicU64,
    pub send_errors: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub spool_batches: AtomicU64,
    pub dropped_events: AtomicU64,
}

impl ShipMetrics {
    pub fn render(&self, out: &mut String) {
        let rows: [(&str, &str, &str, &AtomicU64); 6] = [
            ("tollgate_shipped_events_total", "counter", "Events the collector acknowledged.", &self.shipped_events),
            ("tollgate_shipped_batches_total", "counter", "Batches the collector acknowledged.", &self.shipped_batches),
            ("tollgate_ship_errors_total", "counter", "Failed sends to the collector (retried).", &self.send_errors),
            ("tollgate_spool_bytes", "gauge", "Bytes in the outbox spool.", &self.spool_bytes),
            ("tollgate_spool_batches", "gauge", "Batches waiting in the outbox spool.", &self.spool_batches),
            (
                "tollgate_spool_dropped_events_total",
                "counter",
                "Events lost because the spool was full and the collector did not take them.",
                &self.dropped_events,
            ),
        ];
        for (name, kind, help, v) in rows {
            tollgate_events::prom::write_scalar(out, name, kind, help, v.load(Ordering::Relaxed));
        }
    }
}

/// The outbox: `outbox.jsonl` (one batch per line: `{"seq":n,"events":[…]}`) and `outbox.acked` (the last
/// acknowledged sequence).
struct Outbox {
    path: PathBuf,
    acked_path: PathBuf,
    file: File,
    len: u64,
    acked: u64,
    next_seq: u64,
    /// Waiting batches: (seq, byte offset, length).
    waiting: VecDeque<(u64, u64, u64)>,
}

#[derive(serde::Serialize, Deserialize)]
struct Line {
    seq: u64,
    events: Vec<CallEvent>,
}

impl Outbox {
    fn open(dir: &Path) -> std::io::Result<Outbox> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("outbox.jsonl");
        let acked_path = dir.join("outbox.acked");
        // Sequences only grow, also across a wiped spool: a fresh one starts at the current time in µs.
        let acked: u64 =
            std::fs::read_to_string(&acked_path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros() as u64)
                    .unwrap_or(0)
            });
        let file = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        let mut waiting = VecDeque::new();
        let mut next_seq = acked + 1;
        let mut valid = 0u64;
        {
            let mut r = BufReader::new(File::open(&path)?);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = r.read_until(b'\n', &mut line)?;
                if n == 0 || line.last() != Some(&b'\n') {
                    break; // a torn last line (crash mid-append) is dropped below
                }
                #[derive(Deserialize)]
                struct Seq {
                    seq: u64,
                }
                match serde_json::from_slice::<Seq>(&line) {
                    Ok(s) => {
                        if s.seq > acked {
                            waiting.push_back((s.seq, valid, n as u64));
                        }
                        next_seq = next_seq.max(s.seq + 1);
                    }
                    Err(_) => break,
                }
                valid += n as u64;
            }
        }
        if file.metadata()?.len() != valid {
            file.set_len(valid)?;
            file.sync_all()?;
        }
        Ok(Outbox { path, acked_path, file, len: valid, acked, next_seq, waiting })
    }

    #[cfg(test)]
    fn push(&mut self, events: &[CallEvent], max_bytes: u64) -> std::io::Result<Option<u64>> {
        let r = self.push_many(std::slice::from_ref(&events.to_vec()), max_bytes)?;
        Ok(r.first().copied().flatten())
    }

    /// Appends several batches with one fsync (group commit); `None` for a batch that did not fit.
    fn push_many(&mut self, batches: &[Vec<CallEvent>], max_bytes: u64) -> std::io::Result<Vec<Option<u64>>> {
        let mut out = Vec::with_capacity(batches.len());
        let mut buf = Vec::new();
        let mut added = Vec::new();
        let mut len = self.len;
        for events in batches {
            let seq = self.next_seq + added.len() as u64;
            let mut line = serde_json::to_vec(&serde_json::json!({"seq": seq, "events": events}))?;
            line.push(b'\n');
            if max_bytes > 0 && len + line.len() as u64 > max_bytes {
                out.push(None);
                continue;
            }
            added.push((seq, len, line.len() as u64));
            len += line.len() as u64;
            buf.extend_from_slice(&line);
            out.push(Some(seq));
        }
        if !buf.is_empty() {
            self.file.write_all(&buf)?;
            self.file.sync_data()?;
            self.next_seq += added.len() as u64;
            self.len = len;
            self.waiting.extend(added);
        }
        Ok(out)
    }

    fn read(&self, offset: u64, len: u64) -> std::io::Result<Line> {
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; len as usize];
        std::io::Read::read_exact(&mut f, &mut buf)?;
        Ok(serde_json::from_slice(&buf)?)
    }

    fn ack(&mut self, seq: u64) -> std::io::Result<()> {
        self.acked = seq;
        // Not fsynced: after a crash an older value only means resending batches the collector already has,
        // which it recognises by their sequence.
        let tmp = self.acked_path.with_extension("tmp");
        std::fs::write(&tmp, seq.to_string())?;
        std::fs::rename(&tmp, &self.acked_path)?;
        while self.waiting.front().is_some_and(|(s, _, _)| *s <= seq) {
            self.waiting.pop_front();
        }
        // Everything acknowledged: start the file over. The acked sequence must be on disk first, or a
        // restart could hand out sequences the collector has already seen.
        if self.waiting.is_empty() && self.len > 0 {
            File::open(&self.acked_path)?.sync_all()?;
            self.file.set_len(0)?;
            self.file.sync_all()?;
            self.len = 0;
        }
        Ok(())
    }
}

struct Sender {
    client: crate::providers::HttpClient,
    url: String,
    token: Option<String>,
    gateway_id: String,
    timeout: Duration,
}

impl Sender {
    /// One attempt; Ok when the collector stored the batch (or already had it).
    async fn send(&self, seq: u64, events: &[CallEvent]) -> Result<(), String> {
        let mut body = Vec::with_capacity(events.len() * 600);
        for e in events {
            serde_json::to_writer(&mut body, e).map_err(|e| e.to_string())?;
            body.push(b'\n');
        }
        let compressed = zstd::bulk::compress(&body, 1).map_err(|e| e.to_string())?;
        let mut req = http::Request::post(format!("{}/v1/ingest", self.url))
            .header(http::header::CONTENT_TYPE, "application/x-ndjson")
            .header(http::header::CONTENT_ENCODING, "zstd")
            .header("x-tollgate-batch", format!("{}:{seq}", self.gateway_id));
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(compressed))).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| "collector did not answer in time".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("collector answered {status}: {}", String::from_utf8_lossy(&text)))
        }
    }
}

/// The gateway id: configured, or generated once into `<data_dir>/gateway.id`.
pub fn gateway_id(cfg: &ShipConfig, data_dir: &Path) -> std::io::Result<String> {
    if let Some(id) = &cfg.gateway_id {
        return Ok(id.clone());
    }
    let path = data_dir.join("gateway.id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            std::fs::create_dir_all(data_dir)?;
            let id = uuid::Uuid::now_v7().simple().to_string();
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}

/// Runs until the metering side closes, then tries to send what is left for up to `grace`; anything
/// still unsent stays in the spool for the next start. Two halves: one moves batches from metering into
/// the spool as soon as they come (so a slow collector never leaves events in memory), the other sends
/// from the spool in order.
pub async fn run_shipper(
    mut rx: mpsc::Receiver<Vec<CallEvent>>,
    cfg: ShipConfig,
    data_dir: PathBuf,
    metrics: Arc<ShipMetrics>,
    grace: Duration,
) {
    let outbox = match Outbox::open(&data_dir.join("spool")) {
        Ok(o) => Arc::new(std::sync::Mutex::new(o)),
        Err(e) => {
            error!(error = %e, "cannot open the outbox spool; events will be sent without it");
            return run_without_spool(rx, cfg, data_dir, metrics).await;
        }
    };
    let sender = match make_sender(&cfg, &data_dir) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot set up shipping");
            return;
        }
    };
    let notify = Arc::new(tokio::sync::Notify::new());
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spooler = {
        let (outbox, notify, closed, metrics) = (outbox.clone(), notify.clone(), closed.clone(), metrics.clone());
        let max = cfg.spool_max_bytes;
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Group commit: everything metering has handed over by now goes in with one fsync.
                let mut batches = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batches.push(more);
                }
                let ob = outbox.clone();
                let sizes: Vec<u64> = batches.iter().map(|b| b.len() as u64).collect();
                let pushed = tokio::task::spawn_blocking(move || match ob.lock() {
                    Ok(mut o) => o.push_many(&batches, max).map(|r| (r, o.len, o.waiting.len())),
                    Err(_) => Err(std::io::Error::other("outbox lock poisoned")),
                })
                .await;
                match pushed {
                    Ok(Ok((results, len, waiting))) => {
                        metrics.spool_bytes.store(len, Ordering::Relaxed);
                        metrics.spool_batches.store(waiting as u64, Ordering::Relaxed);
                        for (r, n) in results.iter().zip(&sizes) {
                            if r.is_none() {
                                // Spool full: the newest batches are dropped, loudly (the spool keeps the
                                // oldest, in order).
                                metrics.dropped_events.fetch_add(*n, Ordering::Relaxed);
                                error!(
                                    events = n,
                                    spool_max_bytes = max,
                                    "outbox spool full (collector behind or down): call events dropped"
                                );
                            }
                        }
                        notify.notify_one();
                    }
                    Ok(Err(e)) => {
                        let n: u64 = sizes.iter().sum();
                        metrics.dropped_events.fetch_add(n, Ordering::Relaxed);
                        error!(error = %e, events = n, "outbox spool write failed: call events dropped");
                    }
                    Err(e) => {
                        let n: u64 = sizes.iter().sum();
                        metrics.dropped_events.fetch_add(n, Ordering::Relaxed);
                        error!(error = %e, events = n, "outbox spool task failed: call events dropped");
                    }
                }
            }
            closed.store(true, Ordering::SeqCst);
            notify.notify_one();
        })
    };
    if let Ok(o) = outbox.lock() {
        if !o.waiting.is_empty() {
            info!(batches = o.waiting.len(), "outbox spool holds batches from before; sending them first");
        }
    }
    let mut backoff = Duration::from_millis(100);
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let front = outbox.lock().ok().and_then(|o| o.waiting.front().copied());
        let Some((seq, offset, len)) = front else {
            if closed.load(Ordering::SeqCst) {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notify.notified()).await;
            continue;
        };
        if closed.load(Ordering::SeqCst) {
            let d = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + grace);
            if tokio::time::Instant::now() >= d {
                let left = outbox.lock().map(|o| o.waiting.len()).unwrap_or(0);
                warn!(batches = left, "collector unreachable at shutdown: batches stay in the spool");
                break;
            }
        }
        let line = match outbox
            .lock()
            .map_err(|_| std::io::Error::other("outbox lock poisoned"))
            .and_then(|o| o.read(offset, len))
        {
            Ok(l) => l,
            Err(e) => {
                error!(error = %e, seq, "unreadable spool entry skipped");
                if let Ok(mut o) = outbox.lock() {
                    let _ = o.ack(seq);
                }
                continue;
            }
        };
        match sender.send(seq, &line.events).await {
            Ok(()) => {
                metrics.shipped_events.fetch_add(line.events.len() as u64, Ordering::Relaxed);
                metrics.shipped_batches.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut o) = outbox.lock() {
                    if let Err(e) = o.ack(seq) {
                        error!(error = %e, "cannot record the acknowledgement in the spool");
                    }
                    metrics.spool_bytes.store(o.len, Ordering::Relaxed);
                    metrics.spool_batches.store(o.waiting.len() as u64, Ordering::Relaxed);
                }
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                metrics.send_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, seq, retry_in_ms = backoff.as_millis() as u64, "shipping to the collector failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    let _ = spooler.await;
    let left = outbox.lock().map(|o| o.waiting.len()).unwrap_or(0);
    info!(left_in_spool = left, "shipper stopped");
}

fn make_sender(cfg: &ShipConfig, data_dir: &Path) -> std::io::Result<Sender> {
    let client = crate::providers::http_client(Duration::from_millis(cfg.timeout_ms));
    Ok(Sender {
        client,
        url: cfg.collector_url.trim_end_matches('/').to_string(),
        token: cfg.token_env.as_ref().and_then(|v| std::env::var(v).ok()),
        gateway_id: gateway_id(cfg, data_dir)?,
        timeout: Duration::from_millis(cfg.timeout_ms),
    })
}

/// Fallback when the spool cannot be opened: send directly, count what cannot be sent.
async fn run_without_spool(
    mut rx: mpsc::Receiver<Vec<CallEvent>>,
    cfg: ShipConfig,
    data_dir: PathBuf,
    metrics: Arc<ShipMetrics>,
) {
    let Ok(sender) = make_sender(&cfg, &data_dir) else { return };
    let mut seq =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    while let Some(events) = rx.recv().await {
        seq += 1;
        if sender.send(seq, &events).await.is_ok() {
            metrics.shipped_events.fetch_add(events.len() as u64, Ordering::Relaxed);
        } else {
            metrics.dropped_events.fetch_add(events.len() as u64, Ordering::Relaxed);
            error!(events = events.len(), "collector unreachable and no spool: call events dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_survives_restarts_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let ev = |i: u64| CallEvent { event_id: format!("e{i}"), ..Default::default() };
        std::fs::write(dir.path().join("outbox.acked"), "0").unwrap();
        let mut o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.push(&[ev(1)], 0).unwrap(), Some(1));
        assert_eq!(o.push(&[ev(2), ev(3)], 0).unwrap(), Some(2));
        o.ack(1).unwrap();
        drop(o);
        // A crash mid-append leaves a torn line: dropped on open.
        let mut f = OpenOptions::new().append(true).open(dir.path().join("outbox.jsonl")).unwrap();
        f.write_all(b"{\"seq\":3,\"events\":[").unwrap();
        drop(f);
        let mut o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.waiting.iter().map(|w| w.0).collect::<Vec<_>>(), vec![2]);
        let (_, off, len) = o.waiting[0];
        assert_eq!(o.read(off, len).unwrap().events.len(), 2);
        assert_eq!(o.push(&[ev(4)], 0).unwrap(), Some(3));
        o.ack(3).unwrap();
        assert_eq!(o.len, 0, "all acknowledged: the file starts over");
        drop(o);
        let o = Outbox::open(dir.path()).unwrap();
        assert!(o.waiting.is_empty());
        assert_eq!(o.next_seq, 4, "sequences never repeat");
        // The cap refuses a line that does not fit.
        let mut o = o;
        assert_eq!(o.push(&[ev(5)], 10).unwrap(), None);
    }
}
