//! What each step of turning calls into a durable record costs per event, on this machine: the
//! write-ahead log's append (positional JSON, CRC, `write`, `fdatasync`), the Parquet sink's column
//! builders and file (encode, zstd, `fsync`s), and, for comparison, the same columns written as an Arrow
//! IPC stream (plain and zstd). Events look like the gateway bench's (one model, one key, fresh ids).
//!
//! `cargo run --release -p tollgate-collector --example storecost -- [ROUNDS] [DRAIN]`
//! (defaults 20 rounds of 4,096 events; DRAIN events per write-ahead append, as a metering drain of
//! 20 ms at 3,200 calls/s would hand it). Medians over the rounds, nanoseconds per event.

use std::error::Error;
use std::path::Path;
use std::time::Instant;
use tollgate_collector::parquet::{ParquetSink, ParquetSinkConfig, PendingBatch};
use tollgate_collector::wal::Wal;
use tollgate_events::{CallEvent, CallEventBatchBuilder, ClientApi, Endpoint, Outcome, Positional, UsageSource};

const EVENTS: usize = 4096;

/// An event like the gateway's for the bench's call; its ids are fresh UUIDv7s, as the gateway's are.
fn event(i: usize, now_us: i64) -> CallEvent {
    let id = || uuid::Uuid::now_v7().simple().to_string();
    CallEvent {
        schema_version: 1,
        event_id: id(),
        request_id: id(),
        ts_start_us: now_us + i as i64 * 31,
        ts_end_us: now_us + i as i64 * 31 + 900,
        tenant: "acme".into(),
        department: "research".into(),
        team: "search".into(),
        project: "ranker".into(),
        user: "u-17".into(),
        api_key_id: "key-bench".into(),
        endpoint: Endpoint::Chat,
        client_api: ClientApi::Openai,
        provider: "openai".into(),
        upstream: "mock".into(),
        requested_model: "gpt-4o-mini".into(),
        served_model: "gpt-4o-mini-2024-07-18".into(),
        route: "gpt-4o-mini".into(),
        routing_strategy: "single".into(),
        attempt: 1,
        status_code: 200,
        outcome: Outcome::Ok,
        finish_reason: "stop".into(),
        input_tokens: 9 + (i % 7) as u64,
        output_tokens: 5 + (i % 3) as u64,
        usage_source: UsageSource::Provider,
        cost_nanousd: 4_350 + (i % 11) as u64 * 150,
        price_id: "openai/gpt-4o-mini@2024-07-18".into(),
        latency_ms: 1,
        upstream_latency_ms: 1,
        gateway_overhead_us: 3 + (i % 5) as u32,
        request_bytes: 76,
        response_bytes: 572,
        ..Default::default()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The process's CPU time (every thread: the sink writes on the runtime's blocking pool), ns.
fn cpu_ns() -> u128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes the clock's value into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// A step's start: wall clock and CPU time.
struct Start(Instant, u128);

fn start() -> Start {
    Start(Instant::now(), cpu_ns())
}

/// Wall and CPU nanoseconds per event since `s`.
fn per_event(s: Start) -> (f64, f64) {
    let n = EVENTS as f64;
    (s.0.elapsed().as_nanos() as f64 / n, (cpu_ns() - s.1) as f64 / n)
}

/// Writes `batch` to `path` as an Arrow IPC stream and syncs the file; returns its size in bytes.
fn write_ipc(
    path: &Path,
    batch: &arrow::record_batch::RecordBatch,
    opts: arrow_ipc::writer::IpcWriteOptions,
) -> Result<u64, Box<dyn Error>> {
    let file = std::fs::File::create(path)?;
    let mut w = arrow_ipc::writer::StreamWriter::try_new_with_options(file, &batch.schema(), opts)?;
    w.write(batch)?;
    w.finish()?;
    let file = w.into_inner()?;
    file.sync_all()?;
    Ok(file.metadata()?.len())
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let drain: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64).max(1);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let dir = tempfile::tempdir_in(std::env::var_os("STORECOST_DIR").unwrap_or_else(|| ".".into()))?;
    let now_us = chrono::Utc::now().timestamp_micros();
    let wal = Wal::open(&dir.path().join("wal"), 64 << 20, 0)?;
    let mut sink = ParquetSink::open(ParquetSinkConfig::new(dir.path().join("data")))?;
    let names = ["json", "wal", "builders", "parquet", "ipc", "ipc-zstd"];
    let mut t: Vec<Vec<(f64, f64)>> = vec![Vec::new(); names.len()];
    let mut sizes = (0, 0, 0);
    for round in 0..rounds {
        let events: Vec<CallEvent> = (0..EVENTS).map(|i| event(i, now_us)).collect();
        // Positional JSON alone: what the write-ahead log encodes per event.
        let s = start();
        let mut buf = Vec::with_capacity(EVENTS * 512);
        for e in &events {
            serde_json::to_writer(&mut buf, &Positional(e))?;
            buf.push(b'\n');
        }
        t[0].push(per_event(s));
        std::hint::black_box(&buf);
        // The write-ahead log's append, one drain at a time, each with its fdatasync.
        let s = start();
        for chunk in events.chunks(drain) {
            wal.append(chunk, None)?;
        }
        t[1].push(per_event(s));
        // The sink's column builders, then its file (one per batch: encode, zstd, fsyncs, rename).
        let s = start();
        let mut b = CallEventBatchBuilder::new();
        for e in &events {
            b.append(e);
        }
        let batch = b.finish()?;
        t[2].push(per_event(s));
        sink.set_next_offset((round * EVENTS) as u64);
        let mut pending = PendingBatch::default();
        for e in &events {
            sink.append(&mut pending, e);
        }
        let sealed = sink.seal(&mut pending)?;
        let s = start();
        rt.block_on(sink.write(sealed))?;
        t[3].push(per_event(s));
        // The same columns as an Arrow IPC stream, with one fsync: plain, then with zstd buffers.
        let s = start();
        let plain = arrow_ipc::writer::IpcWriteOptions::default();
        let ipc = write_ipc(&dir.path().join(format!("ipc-{round}.arrow")), &batch, plain.clone())?;
        t[4].push(per_event(s));
        let s = start();
        let zstd = plain.try_with_compression(Some(arrow_ipc::CompressionType::ZSTD))?;
        let zipc = write_ipc(&dir.path().join(format!("ipc-zstd-{round}.arrow")), &batch, zstd)?;
        t[5].push(per_event(s));
        sizes = (buf.len() as u64, ipc, zipc);
    }
    // The Parquet files' bytes: every file the sink wrote, all rounds.
    let mut parquet = 0;
    for day in std::fs::read_dir(dir.path().join("data/calls"))? {
        for f in std::fs::read_dir(day?.path())? {
            parquet += f?.metadata()?.len();
        }
    }
    println!("{rounds} rounds of {EVENTS} events, {drain} per write-ahead append; ns per event (median):");
    println!("  {:<9} {:>8} {:>8}", "step", "wall", "CPU");
    for (name, v) in names.iter().zip(t) {
        let (wall, cpu): (Vec<f64>, Vec<f64>) = v.into_iter().unzip();
        println!("  {name:<9} {:>8.0} {:>8.0}", median(wall), median(cpu));
    }
    let (json, ipc, zipc) = sizes;
    let per = EVENTS as u64;
    println!(
        "  bytes per event: positional JSON {}, Parquet {}, Arrow IPC {}, Arrow IPC zstd {}",
        json / per,
        parquet / (per * rounds as u64).max(1),
        ipc / per,
        zipc / per
    );
    Ok(())
}
