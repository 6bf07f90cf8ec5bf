//! `tollgate gateway`: ships the metering task's event batches to a collector process, off the request
//! path. Every batch is first appended to a local outbox spool (fsynced), then sent; it leaves the spool
//! only when the collector has acknowledged it (after the collector's own fsync). So a collector that is
//! slow, down or restarting costs nothing but spool space, batches go out in order when it is back, and a
//! resend after a lost acknowledgement is recognised by the collector (`x-tollgate-batch:
//! <source>:<sequence>`) and not stored twice. The source is the gateway id plus an id drawn at each
//! start and kept with every spooled batch, so two gateways that share a `gateway_id` (or a copied data
//! dir) never look like one to the collector; two processes on one spool are refused at start.
//!
//! Spool full (`spool_max_bytes`, counting only batches not yet acknowledged: acknowledged bytes are
//! compacted away when they stand in the way): the newest batch is dropped, counted in
//! `tollgate_spool_dropped_events_total` and logged as an error (the spool keeps the oldest, in order).
//! Client traffic is never blocked or failed by any of this.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prometheus_client::encoding::DescriptorEncoder;
use serde::Deserialize;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tollgate_events::prom::{self, Kind};
use tollgate_events::{CallEvent, EventBatch, Positional};
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

#[derive(Debug, Default)]
pub struct ShipMetrics {
    pub shipped_events: AtomicU64,
    pub shipped_batches: AtomicU64,
    pub send_errors: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub spool_batches: AtomicU64,
    pub dropped_events: AtomicU64,
}

impl ShipMetrics {
    /// Scrape-time values for the process's registry.
    pub fn encode_metrics(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let rows: [(&str, Kind, &str, &AtomicU64); 6] = [
            ("tollgate_shipped_events", Kind::Counter, "Events the collector acknowledged.", &self.shipped_events),
            ("tollgate_shipped_batches", Kind::Counter, "Batches the collector acknowledged.", &self.shipped_batches),
            ("tollgate_ship_errors", Kind::Counter, "Failed sends to the collector (retried).", &self.send_errors),
            ("tollgate_spool_bytes", Kind::Gauge, "Bytes in the outbox spool.", &self.spool_bytes),
            ("tollgate_spool_batches", Kind::Gauge, "Batches waiting in the outbox spool.", &self.spool_batches),
            (
                "tollgate_spool_dropped_events",
                Kind::Counter,
                "Events lost because the spool was full and the collector did not take them.",
                &self.dropped_events,
            ),
        ];
        for (name, kind, help, v) in rows {
            prom::encode_scalar(e, name, help, kind, v.load(Ordering::Relaxed) as f64)?;
        }
        Ok(())
    }
}

/// The outbox: `outbox.jsonl` (one batch per line: `{"seq":n,"src":"…","events":[…]}`) and
/// `outbox.acked` (the last acknowledged sequence). The file is locked while a process uses it.
pub struct Outbox {
    path: PathBuf,
    acked_path: PathBuf,
    file: File,
    len: u64,
    acked: u64,
    next_seq: u64,
    /// Waiting batches: (seq, byte offset, length).
    waiting: VecDeque<(u64, u64, u64)>,
    /// The source new batches are sent under: `<gateway id>/<id drawn at this start>`.
    source: String,
    /// Request bodies (zstd JSON lines) of recent waiting batches, built when they were spooled: the
    /// normal path sends these, so an event is encoded once and never read back. Ascending by sequence;
    /// at most [`BODY_CACHE_BYTES`]. A batch without one (after a restart, or a long outage) is read
    /// back from the spool.
    bodies: VecDeque<(u64, u64, Bytes)>,
    bodies_bytes: usize,
}

/// Most compressed request bodies the outbox keeps in memory.
const BODY_CACHE_BYTES: usize = 8 << 20;

#[derive(serde::Serialize, Deserialize)]
struct Line {
    seq: u64,
    /// The source the batch is sent under (absent in spools written before sources were per start).
    #[serde(default)]
    src: Option<String>,
    /// Positional arrays (objects in spools written before 2026-12), read by either form.
    #[serde(deserialize_with = "either_forms")]
    events: Vec<CallEvent>,
}

fn either_forms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<CallEvent>, D::Error> {
    let events: Vec<tollgate_events::EitherForm> = Vec::deserialize(d)?;
    Ok(events.into_iter().map(|e| e.0).collect())
}

impl Outbox {
    #[cfg(test)]
    fn open(dir: &Path) -> std::io::Result<Outbox> {
        Outbox::open_as(dir, String::new())
    }

    fn open_as(dir: &Path, source: String) -> std::io::Result<Outbox> {
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
        if let Err(e) = file.try_lock() {
            return Err(match e {
                std::fs::TryLockError::WouldBlock => std::io::Error::other(format!(
                    "another tollgate process uses the outbox spool {} (each gateway needs its own data_dir)",
                    path.display()
                )),
                std::fs::TryLockError::Error(e) => e,
            });
        }
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
        Ok(Outbox {
            path,
            acked_path,
            file,
            len: valid,
            acked,
            next_seq,
            waiting,
            source,
            bodies: VecDeque::new(),
            bodies_bytes: 0,
        })
    }

    /// Bytes of batches not acknowledged yet: what the cap counts.
    #[cfg(test)]
    fn unacked_bytes(&self) -> u64 {
        self.len - self.head()
    }

    /// Where the first unacknowledged batch starts (everything before it is acknowledged).
    fn head(&self) -> u64 {
        self.waiting.front().map(|w| w.1).unwrap_or(self.len)
    }

    /// Drops the acknowledged bytes at the front of the file: the waiting batches are copied into a new
    /// file that replaces the old one (fsynced, then renamed, then the directory fsynced).
    fn compact(&mut self) -> std::io::Result<()> {
        let head = self.head();
        if head == 0 {
            return Ok(());
        }
        let mut rest = Vec::with_capacity((self.len - head) as usize);
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(head))?;
        std::io::Read::read_to_end(&mut f, &mut rest)?;
        let tmp = self.path.with_extension("compact");
        let mut out = File::create(&tmp)?;
        out.write_all(&rest)?;
        out.sync_all()?;
        let file = OpenOptions::new().read(true).append(true).open(&tmp)?;
        file.try_lock().map_err(|e| std::io::Error::other(e.to_string()))?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = file;
        self.len -= head;
        for w in self.waiting.iter_mut() {
            w.1 -= head;
        }
        Ok(())
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
        let mut bodies = Vec::new();
        let mut len = self.len;
        let src = serde_json::to_string(&self.source)?;
        for events in batches {
            let seq = self.next_seq + added.len() as u64;
            // Each event is encoded once: its JSON is both the spool line's array element and the line of
            // the request body (serde_json writes no raw newline, so lines joined by commas are an array).
            let mut line = format!("{{\"seq\":{seq},\"src\":{src},\"events\":[").into_bytes();
            let start = line.len();
            for e in events {
                serde_json::to_writer(&mut line, &Positional(e))?;
                line.push(b'\n');
            }
            let nd = line[start..].to_vec();
            if events.is_empty() {
                line.extend_from_slice(b"]}\n");
            } else {
                for b in &mut line[start..] {
                    if *b == b'\n' {
                        *b = b',';
                    }
                }
                line.pop();
                line.extend_from_slice(b"]}\n");
            }
            let over = |len: u64, head: u64| max_bytes > 0 && len - head + line.len() as u64 > max_bytes;
            if over(len, self.head()) && buf.is_empty() && self.head() > 0 {
                // Acknowledged bytes are in the way: drop them before refusing anything.
                self.compact()?;
                len = self.len;
            }
            if over(len, self.head().min(len)) {
                out.push(None);
                continue;
            }
            added.push((seq, len, line.len() as u64));
            len += line.len() as u64;
            buf.extend_from_slice(&line);
            out.push(Some(seq));
            bodies.push((seq, events.len() as u64, nd));
        }
        if !buf.is_empty() {
            self.file.write_all(&buf)?;
            self.file.sync_data()?;
            self.next_seq += added.len() as u64;
            self.len = len;
            self.waiting.extend(added);
            for (seq, n, nd) in bodies {
                if self.bodies_bytes >= BODY_CACHE_BYTES {
                    break;
                }
                let Ok(z) = zstd::bulk::compress(&nd, 1) else { break };
                self.bodies_bytes += z.len();
                self.bodies.push_back((seq, n, Bytes::from(z)));
            }
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

    fn drop_bodies_through(&mut self, seq: u64) {
        while self.bodies.front().is_some_and(|(s, _, _)| *s <= seq) {
            if let Some((_, _, b)) = self.bodies.pop_front() {
                self.bodies_bytes -= b.len();
            }
        }
    }

    /// The request body of waiting batch `seq` and its event count, when built at spooling time.
    fn body(&mut self, seq: u64) -> Option<(u64, Bytes)> {
        self.drop_bodies_through(seq.saturating_sub(1));
        self.bodies.front().filter(|(s, _, _)| *s == seq).map(|(_, n, b)| (*n, b.clone()))
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
        self.drop_bodies_through(seq);
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
    client: crate::http_client::HttpClient,
    url: String,
    token: Option<String>,
    timeout: Duration,
}

impl Sender {
    /// The request body of a batch read back from the spool: its events as zstd JSON lines, positional
    /// arrays or (for a collector that reads only those) objects.
    fn encode(events: &[CallEvent], objects: bool) -> Result<Bytes, String> {
        let mut body = Vec::with_capacity(events.len() * if objects { 600 } else { 300 });
        for e in events {
            if objects {
                serde_json::to_writer(&mut body, e).map_err(|e| e.to_string())?;
            } else {
                serde_json::to_writer(&mut body, &Positional(e)).map_err(|e| e.to_string())?;
            }
            body.push(b'\n');
        }
        Ok(Bytes::from(zstd::bulk::compress(&body, 1).map_err(|e| e.to_string())?))
    }

    /// One attempt; Ok when the collector stored the batch (or already had it).
    async fn send(&self, source: &str, seq: u64, compressed: Bytes) -> Result<(), SendError> {
        let mut req = http::Request::post(format!("{}/v1/ingest", self.url))
            .header(http::header::CONTENT_TYPE, "application/x-ndjson")
            .header(http::header::CONTENT_ENCODING, "zstd")
            .header("x-tollgate-batch", format!("{source}:{seq}"));
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(compressed)).map_err(|e| SendError::Other(e.to_string()))?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| SendError::Other("collector did not answer in time".to_string()))?
            .map_err(|e| SendError::Other(e.to_string()))?;
        let status = resp.status();
        let text = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&text);
            // What a collector from before the positional form answers to an array.
            let objects_only = status == http::StatusCode::BAD_REQUEST
                && text.contains("bad_event")
                && text.contains("invalid type: sequence");
            let message = format!("collector answered {status}: {text}");
            Err(if objects_only { SendError::ObjectsOnly(message) } else { SendError::Other(message) })
        }
    }
}

enum SendError {
    /// The collector refused the batch's positional events: an older release, which reads objects only.
    ObjectsOnly(String),
    Other(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::ObjectsOnly(m) | SendError::Other(m) => f.write_str(m),
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
    mut rx: mpsc::Receiver<EventBatch>,
    outbox: Outbox,
    cfg: ShipConfig,
    metrics: Arc<ShipMetrics>,
    grace: Duration,
) {
    let outbox = Arc::new(std::sync::Mutex::new(outbox));
    let sender = make_sender(&cfg);
    let notify = Arc::new(tokio::sync::Notify::new());
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spooler = {
        let (outbox, notify, closed, metrics) = (outbox.clone(), notify.clone(), closed.clone(), metrics.clone());
        let max = cfg.spool_max_bytes;
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Group commit: everything metering has handed over by now goes in with one fsync. Replayed
                // or not, the collector checks every shipped event's id.
                let mut batches = vec![first.events];
                while let Ok(more) = rx.try_recv() {
                    batches.push(more.events);
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
    // Set once the collector turns out to read only the object form: batches are then read back from
    // the spool and sent as objects, until the process restarts.
    let mut objects = false;
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
        // The body built when the batch was spooled, or else the batch read back from the spool.
        let cached = if objects {
            None
        } else {
            outbox.lock().ok().and_then(|mut o| o.body(seq).map(|(n, b)| (n, b, o.source.clone())))
        };
        let (events, body, source) = match cached {
            Some(c) => c,
            None => {
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
                let source = line.src.clone().unwrap_or_else(|| outbox_source(&outbox));
                match Sender::encode(&line.events, objects) {
                    Ok(b) => (line.events.len() as u64, b, source),
                    Err(e) => {
                        error!(error = %e, seq, "spool entry cannot be encoded; skipped");
                        if let Ok(mut o) = outbox.lock() {
                            let _ = o.ack(seq);
                        }
                        continue;
                    }
                }
            }
        };
        match sender.send(&source, seq, body).await {
            Ok(()) => {
                metrics.shipped_events.fetch_add(events, Ordering::Relaxed);
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
            Err(SendError::ObjectsOnly(e)) if !objects => {
                warn!(
                    error = %e,
                    "the collector reads call events only as JSON objects (a release before the positional form): \
                     sending objects from now on; upgrade the collector"
                );
                objects = true;
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

/// Opens (and locks) the outbox spool under `<data_dir>/spool`; batches spooled from now on go out
/// under `<gateway id>/<id drawn now>`. Fails if another process holds the spool.
pub fn open_spool(cfg: &ShipConfig, data_dir: &Path) -> std::io::Result<Outbox> {
    let source = format!("{}/{}", gateway_id(cfg, data_dir)?, uuid::Uuid::now_v7().simple());
    Outbox::open_as(&data_dir.join("spool"), source)
}

fn make_sender(cfg: &ShipConfig) -> Sender {
    Sender {
        client: crate::http_client::http_client(Duration::from_millis(cfg.timeout_ms)),
        url: cfg.collector_url.trim_end_matches('/').to_string(),
        token: cfg.token_env.as_ref().and_then(|v| std::env::var(v).ok()),
        timeout: Duration::from_millis(cfg.timeout_ms),
    }
}

/// The source of batches spooled before sources were kept per batch: the current one.
fn outbox_source(outbox: &std::sync::Mutex<Outbox>) -> String {
    outbox.lock().map(|o| o.source.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A collector from before the positional form: each line must be a JSON object (its key scan's
    /// error for anything else), answered as its ingest endpoint did.
    async fn old_collector(got: Arc<std::sync::Mutex<Vec<serde_json::Value>>>) -> String {
        use axum::routing::post;
        let app = axum::Router::new().route(
            "/v1/ingest",
            post(move |body: Bytes| async move {
                let raw = zstd::stream::decode_all(&body[..]).unwrap();
                let mut events = Vec::new();
                for (i, line) in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
                    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line) {
                        Ok(m) => events.push(serde_json::Value::Object(m)),
                        Err(e) => {
                            let message = format!("line {}: not a call event: {e}", i + 1);
                            let body = serde_json::json!({"error": {"message": message, "type": "ingest_error", "code": "bad_event"}});
                            return (http::StatusCode::BAD_REQUEST, body.to_string());
                        }
                    }
                }
                let n = events.len();
                got.lock().unwrap().extend(events);
                (http::StatusCode::OK, serde_json::json!({"accepted": n, "first_offset": 0}).to_string())
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_collector_that_reads_only_objects_gets_objects() {
        let dir = tempfile::tempdir().unwrap();
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let url = old_collector(got.clone()).await;
        let cfg = ShipConfig {
            collector_url: url,
            token_env: None,
            gateway_id: Some("gw".into()),
            spool_max_bytes: 0,
            timeout_ms: 5_000,
        };
        let outbox = open_spool(&cfg, dir.path()).unwrap();
        let (tx, rx) = mpsc::channel(4);
        let metrics = Arc::new(ShipMetrics::default());
        let shipper = tokio::spawn(run_shipper(rx, outbox, cfg, metrics.clone(), Duration::from_secs(10)));
        let ev = |i: u64| CallEvent {
            schema_version: tollgate_events::SCHEMA_VERSION,
            event_id: format!("e{i}"),
            cost_nanousd: 1_000 + i,
            ..Default::default()
        };
        tx.send(EventBatch { events: vec![ev(1), ev(2)], replayed: false }).await.unwrap();
        tx.send(EventBatch { events: vec![ev(3)], replayed: true }).await.unwrap();
        drop(tx);
        tokio::time::timeout(Duration::from_secs(20), shipper).await.unwrap().unwrap();
        let got = got.lock().unwrap();
        let ids: Vec<&str> = got.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["e1", "e2", "e3"]);
        assert_eq!(got[2]["cost_nanousd"], 1_003);
        assert_eq!(metrics.shipped_events.load(Ordering::Relaxed), 3);
        // The refusal that told the shipper is not a send error.
        assert_eq!(metrics.send_errors.load(Ordering::Relaxed), 0);
    }

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

    #[test]
    fn the_cap_counts_only_unacknowledged_batches() {
        let dir = tempfile::tempdir().unwrap();
        let ev = |i: u64| CallEvent { event_id: format!("e{i}"), ..Default::default() };
        let mut o = Outbox::open(dir.path()).unwrap();
        let one = {
            let before = o.len;
            o.push(&[ev(0)], 0).unwrap().unwrap();
            o.len - before
        };
        // Room for three batches; two are acknowledged, one waits.
        let cap = 3 * one + one / 2;
        let s1 = o.push(&[ev(1)], cap).unwrap().unwrap();
        let _s2 = o.push(&[ev(2)], cap).unwrap().unwrap();
        o.ack(s1).unwrap();
        assert_eq!(o.unacked_bytes(), one);
        // Acknowledged bytes no longer count: the next two fit (the file is compacted on the way).
        let s3 = o.push(&[ev(3)], cap).unwrap();
        let s4 = o.push(&[ev(4)], cap).unwrap();
        assert!(s3.is_some() && s4.is_some(), "acknowledged bytes were counted against the cap");
        assert_eq!(o.push(&[ev(5)], cap).unwrap(), None, "three unacknowledged batches fill it");
        let waiting: Vec<u64> = o.waiting.iter().map(|w| w.0).collect();
        assert_eq!(waiting.len(), 3);
        for (seq, off, len) in o.waiting.clone() {
            assert_eq!(o.read(off, len).unwrap().seq, seq, "offsets still point at their batches");
        }
        drop(o);
        let o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.waiting.iter().map(|w| w.0).collect::<Vec<_>>(), waiting, "the compacted file reopens");
    }

    #[test]
    fn a_spool_is_used_by_one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Outbox::open(dir.path()).unwrap();
        let e = Outbox::open(dir.path()).err().expect("second open refused");
        assert!(e.to_string().contains("another tollgate process"), "{e}");
    }
}
