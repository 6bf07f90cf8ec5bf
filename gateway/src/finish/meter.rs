//! Metering: the `CallGuard` that every request carries and that emits exactly one call event when it is
//! dropped (whatever ended the call), the bounded queue those events go through, and the metering task
//! that fills in estimated usage and cost off the request path.
//!
//! When the queue is full the guard does not block and does not drop: it finishes the event inline and
//! appends it to a spill file (JSON lines), which the metering task replays once the queue has room.

use crate::finish::{EndObserver, PricedObserver};
use crate::metrics::GatewayMetrics;
use bytes::Bytes;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tollgate_events::{
    CallEvent, EventBatch, Outcome, PriceBook, PriceTable, ServiceTier, Tally, TokenEstimator, UsageSource,
    SCHEMA_VERSION,
};
use tracing::{error, warn};

/// What is needed to count tokens the provider did not report.
#[derive(Debug, Default)]
pub struct EstimateInput {
    /// The request body as the client sent it; prompt tokens are counted from it.
    pub request_body: Bytes,
    /// Count prompt tokens (the provider reported none).
    pub input: bool,
    /// Count output tokens from `output_text` (the provider reported none).
    pub output: bool,
    /// Content the client received so far (at most [`MAX_OUTPUT_TEXT`] bytes of it).
    pub output_text: String,
    /// Content bytes past that cap: counted as a byte approximation.
    pub output_extra_bytes: u64,
}

/// Most content text kept per call for estimating output tokens; the rest is only counted in bytes, so
/// an endless upstream cannot grow a call's memory without bound.
pub const MAX_OUTPUT_TEXT: usize = 16 * 1024 * 1024;

/// First allocation for a call's content text.
const OUTPUT_TEXT_START: usize = 256;

/// What a response (or request) says about pricing beyond the token counts.
#[derive(Debug, Default, Clone, Copy)]
pub struct PricingHints {
    /// The service tier the provider ran the call on (response), else the one the client asked for.
    pub service_tier: Option<ServiceTier>,
    /// Cache-write tokens with a 1-hour lifetime (part of `cache_write_tokens`).
    pub cache_write_1h: u64,
    /// The provider reported a negative, fractional or non-numeric token count.
    pub anomalous_usage: bool,
}

/// An event on its way to the metering task.
#[derive(Debug)]
pub struct PendingEvent {
    /// By value: the guard's box stays on the worker that made it (freed there, into its own arena);
    /// only the event's fields cross to the metering task.
    pub event: CallEvent,
    /// Non-token usage (media units, built-in tool calls), priced with the unit price table.
    pub units: Option<Box<crate::billable::reader::Units>>,
    pub estimate: Option<Box<EstimateInput>>,
    pub hints: PricingHints,
    /// Told the priced event (budget settlement).
    pub priced: Vec<Arc<dyn PricedObserver>>,
}

/// State shared by the handlers' `Meter`s and the metering task. It must not hold the queue's sender,
/// or the queue would never close and shutdown would never finish draining.
struct MeterInner {
    prices: Arc<PriceBook>,
    estimator: TokenEstimator,
    spill_path: PathBuf,
    spill_lock: Mutex<()>,
    metrics: Arc<GatewayMetrics>,
    /// Spills handed to the blocking pool and not done yet.
    spilling: AtomicUsize,
}

/// Cheap to clone; shared by all request handlers.
#[derive(Clone)]
pub struct Meter {
    tx: mpsc::Sender<PendingEvent>,
    inner: Arc<MeterInner>,
}

/// Receiving half, consumed by [`run_metering`].
pub struct MeterReceiver {
    rx: mpsc::Receiver<PendingEvent>,
    inner: Arc<MeterInner>,
}

#[cfg(test)]
impl MeterReceiver {
    pub(crate) fn try_recv_for_tests(&mut self) -> Option<PendingEvent> {
        self.rx.try_recv().ok()
    }
}

impl Meter {
    pub fn new(
        capacity: usize,
        prices: Arc<PriceBook>,
        spill_path: PathBuf,
        metrics: Arc<GatewayMetrics>,
    ) -> (Meter, MeterReceiver) {
        let (tx, rx) = mpsc::channel(capacity);
        let inner = Arc::new(MeterInner {
            prices,
            estimator: TokenEstimator::new(),
            spill_path,
            spill_lock: Mutex::new(()),
            metrics,
            spilling: AtomicUsize::new(0),
        });
        (Meter { tx, inner: inner.clone() }, MeterReceiver { rx, inner })
    }

    /// The price table in force; replace its content to reload prices.
    pub fn prices(&self) -> &Arc<PriceBook> {
        &self.inner.prices
    }

    /// The shared tokenizer (for endpoints whose answer is a token count).
    pub fn estimator(&self) -> &TokenEstimator {
        &self.inner.estimator
    }

    pub fn metrics(&self) -> &GatewayMetrics {
        &self.inner.metrics
    }

    /// Events waiting for the metering task.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    fn submit(&self, p: PendingEvent) {
        self.inner.metrics.events_emitted.inc();
        match self.tx.try_send(p) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(p)) => {
                // Shutting down: the blocking pool may not run new work any more; do it here.
                self.inner.metrics.events_spilled.inc();
                spill(&self.inner, p);
            }
            Err(mpsc::error::TrySendError::Full(p)) => {
                self.inner.metrics.events_spilled.inc();
                // Tokenizing and fsyncing would stall a runtime worker (every request on it): hand the
                // work to the blocking pool. Beyond MAX_SPILLING such hand-offs the caller does it
                // itself, which bounds the memory they hold (the "when full" rule of the spill path).
                let handle = tokio::runtime::Handle::try_current().ok();
                let inner = self.inner.clone();
                match handle {
                    Some(h) if inner.spilling.fetch_add(1, Ordering::AcqRel) < MAX_SPILLING => {
                        h.spawn_blocking(move || {
                            spill(&inner, p);
                            inner.spilling.fetch_sub(1, Ordering::AcqRel);
                        });
                    }
                    Some(_) => {
                        inner.spilling.fetch_sub(1, Ordering::AcqRel);
                        spill(&inner, p);
                    }
                    None => spill(&inner, p),
                }
            }
        }
    }
}

/// Most spills handed to the blocking pool at once.
const MAX_SPILLING: usize = 4096;

/// Finishes an event that found the queue full and appends it to the spill file.
fn spill(inner: &MeterInner, p: PendingEvent) {
    let ev = finish_event(p, &inner.prices.current(), &inner.estimator, &inner.metrics);
    if let Err(error) = append_spill(&inner.spill_path, &inner.spill_lock, &ev) {
        inner.metrics.events_lost.inc();
        error!(%error, event_id = %ev.event_id, path = %inner.spill_path.display(), "event queue full and spill failed: event lost");
    } else {
        warn!(event_id = %ev.event_id, "event queue full: event spilled to disk");
    }
}

fn append_spill(path: &PathBuf, lock: &Mutex<()>, ev: &CallEvent) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(ev).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let _g = lock.lock().map_err(|_| std::io::Error::other("spill lock poisoned"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(&line)?;
    f.sync_data()
}

/// Fills in estimated usage (when the provider reported none) and the cost. Pure CPU, and it cannot take
/// its caller down: estimation and pricing run under `catch_unwind`. If estimation panics the event keeps
/// a bytes/4 approximation marked `estimated_approx`; if pricing panics it keeps no cost; either way it is
/// still emitted, `tollgate_metering_panics_total` counts it and the metering task goes on.
pub fn finish_event(
    p: PendingEvent,
    prices: &PriceTable,
    estimator: &TokenEstimator,
    metrics: &GatewayMetrics,
) -> CallEvent {
    let mut ev = p.event;
    if let Some(est) = p.estimate {
        let model = if ev.served_model.is_empty() { ev.requested_model.clone() } else { ev.served_model.clone() };
        let (input, output) = match catch_unwind(AssertUnwindSafe(|| estimate(&model, &est, estimator))) {
            Ok(counts) => counts,
            Err(_) => {
                metrics.metering_panics.inc();
                error!(event_id = %ev.event_id, %model, "token estimation panicked; usage approximated from bytes");
                let out_bytes = (est.output_text.len() as u64).saturating_add(est.output_extra_bytes);
                (Tally::bytes(est.request_body.len() as u64), Tally::bytes(out_bytes))
            }
        };
        if est.input {
            ev.input_tokens = input.tokens;
            ev.cached_input_tokens = 0;
        }
        if est.output {
            ev.output_tokens = output.tokens;
        }
        if est.input || est.output {
            let approx = (est.input && input.approx) || (est.output && output.approx);
            ev.usage_source = if TokenEstimator::is_exact(&model) && !approx {
                UsageSource::Estimated
            } else {
                UsageSource::EstimatedApprox
            };
        }
    }
    // Pricing and the observers (budget settlement) run under `catch_unwind` too: whatever they do, the
    // event is still emitted and the metering task goes on.
    let service_tier = p.hints.service_tier.unwrap_or_default();
    let cache_write_1h = p.hints.cache_write_1h;
    let priced = match catch_unwind(AssertUnwindSafe(|| prices.price_event(&mut ev, service_tier, cache_write_1h))) {
        Ok(priced) => Some(priced),
        Err(_) => {
            metrics.metering_panics.inc();
            error!(event_id = %ev.event_id, "pricing panicked; event kept without a cost");
            None
        }
    };
    if let Some(units) = &p.units {
        if catch_unwind(AssertUnwindSafe(|| crate::billable::glue::price_units(&mut ev, units))).is_err() {
            metrics.metering_panics.inc();
            error!(event_id = %ev.event_id, "unit pricing panicked; event kept without its unit cost");
        }
    }
    if p.hints.anomalous_usage && ev.usage_source != UsageSource::Capped {
        ev.usage_source = UsageSource::Capped;
    }
    if ev.usage_source == UsageSource::Capped {
        metrics.usage_capped.inc();
        warn!(event_id = %ev.event_id, model = %ev.served_model, upstream = %ev.upstream, input_tokens = ev.input_tokens,
            output_tokens = ev.output_tokens, "provider-reported usage was not believable; counts capped");
    }
    if priced.is_some_and(|p| p.unpriced) {
        metrics.unpriced_events.inc();
        warn!(event_id = %ev.event_id, served_model = %ev.served_model, requested_model = %ev.requested_model,
            upstream = %ev.upstream, "no price for this model and no fallback_price on its upstream; stored as unpriced");
    }
    for o in &p.priced {
        if catch_unwind(AssertUnwindSafe(|| o.priced(&ev))).is_err() {
            metrics.metering_panics.inc();
            error!(event_id = %ev.event_id, "a priced-event observer panicked");
        }
    }
    ev
}

/// Prompt and output tokens the provider did not report, counted from what was sent and received.
fn estimate(model: &str, est: &EstimateInput, estimator: &TokenEstimator) -> (Tally, Tally) {
    let input = if est.input {
        let body: serde_json::Value = serde_json::from_slice(&est.request_body).unwrap_or_default();
        estimator.tally_request(model, &body)
    } else {
        Tally::default()
    };
    let output = if est.output {
        let mut t = estimator.tally_text(model, &est.output_text);
        if est.output_extra_bytes > 0 {
            let extra = Tally::bytes(est.output_extra_bytes);
            t = Tally { tokens: t.tokens.saturating_add(extra.tokens), approx: true };
        }
        t
    } else {
        Tally::default()
    };
    (input, output)
}

/// How often the metering task drains the queue. It polls rather than being woken per event: a wake-up
/// per call is a cross-thread hand-off on the request path, a timer tick is not.
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// Largest batch handed to the collector at once.
const OUT_BATCH: usize = 1024;

/// Runs until every `Meter` clone is dropped and the queue is empty: finishes events and hands them to
/// `out` (the collector's queue, which applies backpressure here, never to clients) in batches. Replays
/// the spill file when the queue is idle.
pub async fn run_metering(mut r: MeterReceiver, out: mpsc::Sender<EventBatch>) {
    let inner = r.inner.clone();
    // Events spilled by an earlier run go first.
    replay_spill(&inner, &out).await;
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_ticks = 0u32;
    // One request log for the task's life: its buffer keeps the capacity of the busiest drain.
    let mut log = crate::reqlog::RequestLog::new();
    loop {
        tick.tick().await;
        let queued = r.rx.len();
        inner.metrics.queue_depth.set(i64::try_from(queued).unwrap_or(i64::MAX));
        // Events are large (608 bytes): a batch grown by doubling would copy them several times over.
        // Calls keep ending while the drain runs (more of them when connection threads preempt it), hence
        // the margin; a margin of an eighth was overrun often enough at c=32 that growing the batch showed
        // in the events thread's profile (`finish_grow` 1.7% of its samples, with the copy and the page
        // faults of the new block). Capacity never touched costs no memory.
        let mut batch = Vec::with_capacity((queued + queued / 2 + 64).min(OUT_BATCH));
        let closed = loop {
            match r.rx.try_recv() {
                Ok(p) => {
                    let ev = finish_event(p, &inner.prices.current(), &inner.estimator, &inner.metrics);
                    inner.metrics.observe(&ev);
                    log.add(&ev);
                    batch.push(ev);
                    if batch.len() >= OUT_BATCH {
                        log.flush();
                    }
                    if batch.len() >= OUT_BATCH && out.send(live(std::mem::take(&mut batch))).await.is_err() {
                        error!("collector queue closed; metering stops");
                        return;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break false,
                Err(mpsc::error::TryRecvError::Disconnected) => break true,
            }
        };
        log.flush();
        idle_ticks = if batch.is_empty() { idle_ticks + 1 } else { 0 };
        // The write-ahead log keeps recent batches in memory as they are: a quiet tick's one event should
        // not keep room for 64 there (glibc shrinks the block in place).
        if batch.capacity() > 2 * batch.len() {
            batch.shrink_to_fit();
        }
        if !batch.is_empty() && out.send(live(batch)).await.is_err() {
            error!("collector queue closed; metering stops");
            return;
        }
        if closed {
            break;
        }
        if idle_ticks >= 50 {
            idle_ticks = 0;
            replay_spill(&inner, &out).await;
        }
    }
    replay_spill(&inner, &out).await;
}

fn live(events: Vec<CallEvent>) -> EventBatch {
    EventBatch { events, replayed: false }
}

fn replayed(events: Vec<CallEvent>) -> EventBatch {
    EventBatch { events, replayed: true }
}

async fn replay_spill(inner: &MeterInner, out: &mpsc::Sender<EventBatch>) {
    let replaying = inner.spill_path.with_extension("replaying");
    // A crash mid-replay leaves `.replaying`, which is sent again from the start: events already sent
    // from it can then be stored twice (documented in the README; the write-ahead log of issue 5 closes it).
    if !replaying.exists() {
        let moved = {
            let Ok(_g) = inner.spill_lock.lock() else { return };
            inner.spill_path.exists() && std::fs::rename(&inner.spill_path, &replaying).is_ok()
        };
        if !moved {
            return;
        }
    }
    let text = match tokio::fs::read_to_string(&replaying).await {
        Ok(t) => t,
        Err(error) => {
            error!(%error, path = %replaying.display(), "cannot read spill file");
            return;
        }
    };
    let mut n = 0u64;
    let mut batch = Vec::new();
    let mut log = crate::reqlog::RequestLog::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<CallEvent>(line) {
            Ok(ev) => {
                inner.metrics.observe(&ev);
                log.add(&ev);
                batch.push(ev);
                n += 1;
                if batch.len() >= OUT_BATCH {
                    log.flush();
                    if out.send(replayed(std::mem::take(&mut batch))).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => error!(%error, "unreadable line in spill file skipped"),
        }
    }
    log.flush();
    if !batch.is_empty() && out.send(replayed(batch)).await.is_err() {
        return;
    }
    if let Err(error) = tokio::fs::remove_file(&replaying).await {
        error!(%error, "cannot remove replayed spill file");
    }
    inner.metrics.events_replayed.inc_by(n);
}

/// The per-request metering guard. Handlers fill it in as the call proceeds; dropping it emits the event.
pub struct CallGuard {
    meter: Meter,
    pub event: Box<CallEvent>,
    t0: Instant,
    /// When the request was handed to the upstream.
    pub t_sent: Option<Instant>,
    /// Gateway time spent before sending upstream and after the upstream's headers.
    pub overhead: Duration,
    pub t_first_content: Option<Instant>,
    /// Set once the call reached a final state; a guard dropped without it is a client disconnect.
    pub finished: bool,
    /// Whether the provider reported input / output usage.
    pub have_input_usage: bool,
    pub have_output_usage: bool,
    /// Set when a request was sent upstream and its tokens may need counting.
    pub request_body: Option<Bytes>,
    output_text: String,
    output_extra_bytes: u64,
    /// Told the priced event, in the metering task (budget settlement).
    pub priced: Vec<Arc<dyn PricedObserver>>,
    /// Told the event the moment the call ends (circuit breakers).
    pub ended: Vec<Arc<dyn EndObserver>>,
    /// The key asked for `x-tollgate-cost-usd`.
    pub wants_cost: bool,
    /// Receives the call's cost when the guard drops, if the provider reported its usage.
    pub cost_report: Option<tokio::sync::oneshot::Sender<u64>>,
    /// Service tier, 1-hour cache writes and usage anomalies seen in the response.
    pub hints: PricingHints,
    /// Response redaction and cache fill that admission steps asked for (applied by `respond`).
    pub response_plan: Option<Arc<crate::guards::ResponsePlan>>,
    /// Non-token usage read from the answer (media units, built-in tool calls).
    pub units: Option<Box<crate::billable::reader::Units>>,
}

pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

impl CallGuard {
    pub fn new(meter: Meter, mut event: CallEvent) -> CallGuard {
        event.schema_version = SCHEMA_VERSION;
        event.event_id = crate::ids::new_v7_string();
        event.ts_start_us = now_us();
        event.attempt = 1;
        meter.inner.metrics.in_flight.inc();
        CallGuard {
            meter,
            event: Box::new(event),
            t0: Instant::now(),
            t_sent: None,
            overhead: Duration::ZERO,
            t_first_content: None,
            finished: false,
            have_input_usage: false,
            have_output_usage: false,
            request_body: None,
            output_text: String::new(),
            output_extra_bytes: 0,
            priced: Vec::new(),
            ended: Vec::new(),
            wants_cost: false,
            cost_report: None,
            units: None,
            hints: PricingHints::default(),
            response_plan: None,
        }
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    pub fn started(&self) -> Instant {
        self.t0
    }

    /// Ends the call with `outcome` (the event is emitted when the guard drops).
    pub fn finish(&mut self, outcome: Outcome, status: u16) {
        if !self.finished {
            self.finished = true;
            self.event.outcome = outcome;
            self.event.status_code = status;
        }
    }

    /// Keeps content text for output estimation, up to [`MAX_OUTPUT_TEXT`] bytes.
    pub fn push_output(&mut self, text: &str) {
        // Once the provider reported usage nothing will be estimated from the text: only its length
        // (time to first content) matters, so it is counted, not kept.
        let usage_reported = self.have_input_usage && self.have_output_usage;
        if !usage_reported && self.output_text.len() + text.len() <= MAX_OUTPUT_TEXT {
            if self.output_text.capacity() == 0 && !text.is_empty() {
                // Streams add a few bytes per chunk: room for a short answer at once, not a regrowth on
                // each of the first chunks.
                self.output_text.reserve(text.len().max(OUTPUT_TEXT_START));
            }
            self.output_text.push_str(text);
        } else {
            self.output_extra_bytes = self.output_extra_bytes.saturating_add(text.len() as u64);
        }
    }

    /// Content bytes seen so far.
    pub fn output_len(&self) -> u64 {
        (self.output_text.len() as u64).saturating_add(self.output_extra_bytes)
    }

    pub fn metrics(&self) -> &GatewayMetrics {
        self.meter.metrics()
    }

    pub fn mark_content(&mut self) {
        if self.t_first_content.is_none() {
            self.t_first_content = Some(Instant::now());
        }
    }
}

/// The `service_tier` a client asked for in its request body, if any (looked for only when the
/// response named none).
fn requested_service_tier(body: &[u8]) -> Option<ServiceTier> {
    memchr::memmem::find(body, b"\"service_tier\"")?;
    #[derive(serde::Deserialize)]
    struct Req {
        service_tier: Option<String>,
    }
    let r: Req = serde_json::from_slice(body).ok()?;
    r.service_tier.map(|t| ServiceTier::parse(&t))
}

fn ms_ceil(d: Duration) -> u32 {
    u32::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u32::MAX)
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let end = Instant::now();
        if !self.finished {
            self.event.outcome = Outcome::ClientDisconnect;
            if self.event.status_code == 0 {
                // nginx's convention for "client closed request" before a response was sent.
                self.event.status_code = 499;
            }
        }
        let ev = &mut self.event;
        ev.ts_end_us = now_us();
        ev.latency_ms = ms_ceil(end - self.t0);
        // Durations round up to whole milliseconds: 0 ttft keeps meaning "no content arrived" even for
        // sub-millisecond answers, and ttft <= latency always holds.
        ev.ttft_ms = self.t_first_content.map(|t| ms_ceil(t - self.t0)).unwrap_or(0);
        ev.upstream_latency_ms = self.t_sent.map(|t| ms_ceil(end - t)).unwrap_or(0);
        ev.gateway_overhead_us = u32::try_from(self.overhead.as_micros()).unwrap_or(u32::MAX);
        ev.usage_source =
            if self.have_input_usage || self.have_output_usage { UsageSource::Provider } else { UsageSource::None };
        // Count tokens the provider did not report, for calls that reached it and were not refused by it.
        // `finish_event` marks such events `estimated`.
        let refused = ev.outcome == Outcome::UpstreamError && ev.status_code >= 400;
        let mut hints = self.hints;
        if hints.service_tier.is_none() {
            hints.service_tier = self.request_body.as_deref().and_then(requested_service_tier);
        }
        let estimate = match self.request_body.take() {
            Some(body) if !(refused || self.have_input_usage && self.have_output_usage) => {
                Some(Box::new(EstimateInput {
                    request_body: body,
                    input: !self.have_input_usage,
                    output: !self.have_output_usage,
                    output_text: std::mem::take(&mut self.output_text),
                    output_extra_bytes: self.output_extra_bytes,
                }))
            }
            _ => None,
        };
        for o in &self.ended {
            o.ended(ev);
        }
        if let (Some(tx), None) = (self.cost_report.take(), &estimate) {
            // The cost metering will store: the same pricing on a copy of the event.
            let mut priced = (*self.event).clone();
            let prices = self.meter.inner.prices.current();
            prices.price_event(&mut priced, hints.service_tier.unwrap_or_default(), hints.cache_write_1h);
            let _ = tx.send(priced.cost_nanousd);
        }
        let event = std::mem::take(&mut *self.event);
        let priced = std::mem::take(&mut self.priced);
        self.meter.inner.metrics.in_flight.dec();
        let units = self.units.take();
        self.meter.submit(PendingEvent { event, units, estimate, priced, hints });
    }
}

#[cfg(test)]
mod spill_tests {
    use super::*;

    /// A full queue must not tokenize or fsync on the runtime worker that dropped the guard: the
    /// caller returns while the spill file is still locked, and the event lands once it is free.
    #[test]
    fn a_full_queue_spills_off_the_runtime_worker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overflow.jsonl");
        let (meter, _rx) = Meter::new(
            1,
            Arc::new(PriceBook::new(PriceTable::builtin())),
            path.clone(),
            Arc::new(GatewayMetrics::default()),
        );
        let pending = |i: u32| PendingEvent {
            event: CallEvent { event_id: format!("e{i}"), ..Default::default() },
            units: None,
            estimate: None,
            hints: Default::default(),
            priced: Vec::new(),
        };
        meter.submit(pending(0)); // fills the queue
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let held = meter.inner.spill_lock.lock().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let m = meter.clone();
        let worker = std::thread::spawn(move || {
            rt.block_on(async move {
                m.submit(pending(1));
                done_tx.send(()).unwrap();
            });
            rt
        });
        let returned = done_rx.recv_timeout(Duration::from_secs(20)).is_ok();
        drop(held);
        assert!(returned, "the runtime worker waited for the spill file");
        let rt = worker.join().unwrap();
        drop(rt); // waits for the blocking pool
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("\"e1\""), "{text}");
    }
}
