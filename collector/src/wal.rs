//! The collector's write-ahead log: every batch of events is appended and fsynced before it is
//! acknowledged, and each sink reads the log from its own cursor. Events are numbered by their offset in
//! the log (0, 1, 2, … forever), which is what sinks name their output after, so a batch replayed after a
//! crash lands under the same names and ids.
//!
//! Layout: `<dir>/seg-<first offset:020>.wal`, each a sequence of records:
//! `magic | payload length u32 | CRC-32 u32 | first offset u64 | event count u32 | source length u16 |
//! source | payload`, the CRC covering source and payload. Event records (`TGW1`) carry the events as JSON
//! lines and their source (`<gateway id>:<batch seq>`, empty for an in-process gateway); a batch whose
//! source sequence the log already holds is not appended again, so a gateway that resends a batch whose
//! acknowledgement it lost does not double it. Each segment starts with a checkpoint record (`TGWC`)
//! holding the last sequence of every source, so the active segment alone rebuilds that map. On open, the last segment is scanned and a torn or
//! corrupt tail (a crash mid-append) is truncated, never parsed as data. A segment is deleted only when every
//! sink's cursor has passed its end. When the log holds more than `max_bytes`, appends are refused (the
//! caller keeps the events: gateways spool them) until sinks catch up.
//!
//! Events are also deduplicated by `event_id` over the last `dedup_window` events appended: a gateway
//! that replays its spill file after a crash (or any sender that resends events under a new batch)
//! cannot store a call twice. Batches that cannot hold an event sent before (the live metering queue of an
//! in-process gateway, [`Ids::New`]) skip the window. The window survives restarts: each segment's checkpoint carries the ids
//! of the window, and the active segment's own events add to them on open.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tollgate_events::{event_from_json, CallEvent, Positional};
use tracing::warn;

const MAGIC: &[u8; 4] = b"TGW1";
const CHECKPOINT: &[u8; 4] = b"TGWC";
const HEADER: usize = 4 + 4 + 4 + 8 + 4 + 2;

type Sources = std::collections::HashMap<String, u64>;

/// Whether an append checks the batch's event ids against the window (and adds them to it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ids {
    /// Events that may have been sent before (another process's batches, a replayed spill file).
    Check,
    /// Events made by this process and sent once (the live metering queue of `serve`): no lookups in
    /// the window, and they take no room in it.
    New,
}

/// Events whose ids the log remembers for deduplication, by default.
pub const DEFAULT_DEDUP_WINDOW: usize = 131_072;

/// The checkpoint at the start of each segment: every source's last sequence and the dedup window's ids
/// (32 hex digits each, oldest first). Older logs hold only the sources map.
#[derive(serde::Serialize, serde::Deserialize)]
struct CheckpointDoc {
    sources: Sources,
    #[serde(default)]
    ids: String,
}

/// An event id as a 128-bit key: the UUID itself, or (for ids that are not UUIDs) their FNV-1a hash,
/// which is fixed across releases (the keys are persisted). Events without an id are never deduplicated.
fn id_key(id: &str) -> Option<u128> {
    if id.is_empty() {
        return None;
    }
    if let Ok(u) = uuid::Uuid::parse_str(id) {
        return Some(u.as_u128());
    }
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in id.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    Some(h)
}

type IdSet = std::collections::HashSet<u128, foldhash::fast::RandomState>;

/// The ids of recently appended events, bounded, oldest first.
#[derive(Default)]
struct Seen {
    /// Keyed by ids that are random in their low bits already: a fast hash, not SipHash.
    set: IdSet,
    order: std::collections::VecDeque<u128>,
    window: usize,
}

impl Seen {
    fn insert(&mut self, k: u128) -> bool {
        if self.window == 0 || !self.set.insert(k) {
            return false;
        }
        self.order.push_back(k);
        while self.order.len() > self.window {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    fn hex(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(self.order.len() * 32);
        for k in &self.order {
            let _ = write!(out, "{k:032x}");
        }
        out
    }

    fn load_hex(&mut self, hex: &str) {
        for chunk in hex.as_bytes().chunks(32) {
            if let Some(k) = std::str::from_utf8(chunk).ok().and_then(|c| u128::from_str_radix(c, 16).ok()) {
                self.insert(k);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log io on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("write-ahead log is full ({bytes} bytes, cap {cap}); sinks are behind")]
    Full { bytes: u64, cap: u64 },
    #[error("write-ahead log record at offset {0} is unreadable: {1}")]
    Corrupt(u64, String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io { path: path.to_path_buf(), source }
}

/// CRC-32 (IEEE) of a record.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

struct Writer {
    file: File,
    path: PathBuf,
    seg_start: u64,
    seg_len: u64,
    next: u64,
    /// The last batch sequence appended per source.
    sources: Sources,
    seen: Seen,
}

pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    max_bytes: u64,
    /// Bytes over all segments, kept up to date by append and garbage collection (read from disk once at open).
    total: std::sync::atomic::AtomicU64,
    /// Events not appended because the window already held their id.
    pub duplicates: std::sync::atomic::AtomicU64,
    writer: Mutex<Writer>,
    end: watch::Sender<u64>,
    /// The most recent appended batches, as handed in (first offset, events): a sink that keeps up takes its
    /// events from here instead of reading and decoding them back from disk.
    tail: Mutex<std::collections::VecDeque<(u64, Arc<Vec<CallEvent>>)>>,
}

/// Event slots the in-memory tail holds at most, counted by each batch's capacity (what it keeps
/// allocated, 608 bytes a slot plus the events' strings), not its length: under light traffic the metering
/// queue hands in batches of one or two events in room for 64, and a bound on events let 4,096 such batches
/// (about 160 MiB) pile up over a quiet hour.
const TAIL_EVENTS: usize = 4_096;

fn seg_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("seg-{start:020}.wal"))
}

/// Segments in offset order: (first offset, path).
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix("seg-").and_then(|s| s.strip_suffix(".wal")) {
            if let Ok(start) = n.parse::<u64>() {
                out.push((start, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// One record read back: its first offset and events.
pub struct Record {
    pub first: u64,
    pub events: Vec<CallEvent>,
}

enum Rec {
    Events { first: u64, count: u32, source: String, events: Vec<CallEvent>, ids: Vec<String>, size: u64 },
    Checkpoint { doc: CheckpointDoc, size: u64 },
}

/// What to decode from an event record's payload.
#[derive(Clone, Copy, PartialEq)]
enum Want {
    Nothing,
    Ids,
    /// The events of a record that reaches this offset; a record wholly below it is skipped unread
    /// (its payload is neither checksummed nor decoded: a sink read it already).
    EventsFrom(u64),
}

/// Reads the next record; `Ok(None)` at a clean end, `Err` on a torn or corrupt record.
fn read_record<R: Read + Seek>(r: &mut R, want: Want) -> Result<Option<Rec>, String> {
    let mut h = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err("torn header".into()),
            Ok(n) => got += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    let checkpoint = &h[0..4] == CHECKPOINT;
    if &h[0..4] != MAGIC && !checkpoint {
        return Err("bad magic".into());
    }
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let crc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let first = u64::from_le_bytes([h[12], h[13], h[14], h[15], h[16], h[17], h[18], h[19]]);
    let count = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    let src_len = u16::from_le_bytes([h[24], h[25]]) as usize;
    let size = (HEADER + src_len + len) as u64;
    if let (Want::EventsFrom(offset), false) = (want, checkpoint) {
        if first + u64::from(count) <= offset {
            // A torn record here can only be the last one; the next header read then finds the end.
            r.seek(SeekFrom::Current((src_len + len) as i64)).map_err(|e| e.to_string())?;
            return Ok(Some(Rec::Events {
                first,
                count,
                source: String::new(),
                events: Vec::new(),
                ids: Vec::new(),
                size,
            }));
        }
    }
    let mut body = vec![0u8; src_len + len];
    r.read_exact(&mut body).map_err(|_| "torn payload".to_string())?;
    if crc32(&body) != crc {
        return Err("checksum mismatch".into());
    }
    let (source, payload) = body.split_at(src_len);
    if checkpoint {
        let doc = match serde_json::from_slice::<CheckpointDoc>(payload) {
            Ok(d) => d,
            Err(_) => CheckpointDoc {
                sources: serde_json::from_slice(payload).map_err(|e| format!("bad checkpoint: {e}"))?,
                ids: String::new(),
            },
        };
        return Ok(Some(Rec::Checkpoint { doc, size }));
    }
    let (mut events, mut ids) = (Vec::new(), Vec::new());
    let lines = payload.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    match want {
        Want::Nothing => {}
        Want::Ids => {
            // Lines are read whole, in either form: a positional line has no key to pick the id out by.
            for line in lines {
                ids.push(event_from_json(line).map_err(|e| format!("bad event: {e}"))?.event_id);
            }
        }
        Want::EventsFrom(_) => {
            for line in lines {
                events.push(event_from_json(line).map_err(|e| format!("bad event: {e}"))?);
            }
            if events.len() != count as usize {
                return Err("event count mismatch".into());
            }
        }
    }
    let source = String::from_utf8_lossy(source).into_owned();
    Ok(Some(Rec::Events { first, count, source, events, ids, size }))
}

fn encode(magic: &[u8; 4], first: u64, count: u32, source: &str, payload: &[u8]) -> Vec<u8> {
    let fill = |rec: &mut Vec<u8>| -> Result<(), std::convert::Infallible> {
        rec.extend_from_slice(payload);
        Ok(())
    };
    let Ok(rec) = record(magic, first, count, source, payload.len(), fill);
    rec
}

/// A record whose payload `fill` writes in place, after the header and the source (no copy of either); the
/// header's length and checksum are filled in once the payload is known. `size_hint`: the payload's
/// expected length.
fn record<E>(
    magic: &[u8; 4],
    first: u64,
    count: u32,
    source: &str,
    size_hint: usize,
    fill: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<Vec<u8>, E> {
    let mut rec = Vec::with_capacity(HEADER + source.len() + size_hint);
    rec.extend_from_slice(&[0; HEADER]);
    rec.extend_from_slice(source.as_bytes());
    fill(&mut rec)?;
    let len = (rec.len() - HEADER - source.len()) as u32;
    let crc = crc32(&rec[HEADER..]);
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(magic);
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8..12].copy_from_slice(&crc.to_le_bytes());
    h[12..20].copy_from_slice(&first.to_le_bytes());
    h[20..24].copy_from_slice(&count.to_le_bytes());
    h[24..26].copy_from_slice(&(source.len() as u16).to_le_bytes());
    rec[..HEADER].copy_from_slice(&h);
    Ok(rec)
}

/// `gateway:seq` → (gateway, seq).
fn parse_source(source: &str) -> Option<(&str, u64)> {
    let (g, seq) = source.rsplit_once(':')?;
    Some((g, seq.parse().ok()?))
}

impl Wal {
    /// Opens (or creates) the log with the default dedup window; truncates a torn tail of the last segment.
    pub fn open(dir: &Path, segment_bytes: u64, max_bytes: u64) -> Result<Wal, WalError> {
        Wal::open_with_dedup(dir, segment_bytes, max_bytes, DEFAULT_DEDUP_WINDOW)
    }

    /// Opens the log remembering the ids of the last `dedup_window` events (0: no dedup by id).
    pub fn open_with_dedup(
        dir: &Path,
        segment_bytes: u64,
        max_bytes: u64,
        dedup_window: usize,
    ) -> Result<Wal, WalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let segs = segments(dir)?;
        let (seg_start, path) = match segs.last() {
            Some((s, p)) => (*s, p.clone()),
            None => (0, seg_path(dir, 0)),
        };
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&path).map_err(io(&path))?;
        // Scan the active segment to find its valid end and the sources' last sequences.
        let mut valid = 0u64;
        let mut next = seg_start;
        let mut sources = Sources::new();
        let mut seen = Seen { window: dedup_window, ..Seen::default() };
        let want = if dedup_window > 0 { Want::Ids } else { Want::Nothing };
        {
            let mut r = BufReader::new(File::open(&path).map_err(io(&path))?);
            loop {
                match read_record(&mut r, want) {
                    Ok(Some(Rec::Checkpoint { doc, size })) => {
                        sources = doc.sources;
                        seen = Seen { window: dedup_window, ..Seen::default() };
                        seen.load_hex(&doc.ids);
                        valid += size;
                    }
                    Ok(Some(Rec::Events { first, count, source, size, ids, .. })) => {
                        for k in ids.iter().filter_map(|id| id_key(id)) {
                            seen.insert(k);
                        }
                        if first != next {
                            warn!(path = %path.display(), expected = next, found = first, "write-ahead log offsets jump; truncating");
                            break;
                        }
                        if let Some((g, seq)) = parse_source(&source) {
                            sources.insert(g.to_string(), seq);
                        }
                        valid += size;
                        next = first + u64::from(count);
                    }
                    Ok(None) => break,
                    Err(why) => {
                        warn!(path = %path.display(), at_byte = valid, %why, "torn write-ahead log tail truncated");
                        break;
                    }
                }
            }
        }
        let len = file.metadata().map_err(io(&path))?.len();
        if len != valid {
            file.set_len(valid).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        let _ = file.seek(SeekFrom::End(0));
        let total: u64 = segments(dir)?.iter().map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
        let (end, _) = watch::channel(next);
        Ok(Wal {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(1024),
            max_bytes,
            total: std::sync::atomic::AtomicU64::new(total),
            duplicates: std::sync::atomic::AtomicU64::new(0),
            writer: Mutex::new(Writer { file, path, seg_start, seg_len: valid, next, sources, seen }),
            tail: Mutex::new(std::collections::VecDeque::new()),
            end,
        })
    }

    /// The offset the next event will get (= events ever appended).
    pub fn end(&self) -> u64 {
        *self.end.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.end.subscribe()
    }

    /// Bytes on disk over all segments.
    pub fn bytes(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Appends and fsyncs one record; returns the offset range `[first, end)` it got, or `None` when the
    /// log already holds this source's batch (a resend) or every one of its events (by id). Events whose
    /// ids are in the dedup window are left out. Blocking I/O: call from a blocking context.
    pub fn append(&self, events: &[CallEvent], source: Option<(&str, u64)>) -> Result<Option<(u64, u64)>, WalError> {
        self.append_inner(events, None, source, Ids::Check)
    }

    /// As [`Wal::append`], and keeps the batch in the in-memory tail when it went in whole.
    pub fn append_shared(
        &self,
        events: &Arc<Vec<CallEvent>>,
        source: Option<(&str, u64)>,
        ids: Ids,
    ) -> Result<Option<(u64, u64)>, WalError> {
        self.append_inner(events, Some(events), source, ids)
    }

    /// The batches of the in-memory tail from the one holding offset `at` on, as long as they follow each
    /// other without a gap; empty when the tail does not hold `at` (the caller reads the log instead).
    pub fn tail_from(&self, at: u64) -> Vec<(u64, Arc<Vec<CallEvent>>)> {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(u64, Arc<Vec<CallEvent>>)> = Vec::new();
        for (first, evs) in tail.iter() {
            let end = first + evs.len() as u64;
            match out.last() {
                None if *first <= at && at < end => out.push((*first, evs.clone())),
                Some((f, e)) if f + e.len() as u64 == *first => out.push((*first, evs.clone())),
                Some(_) => break,
                None => {}
            }
        }
        out
    }

    fn append_inner(
        &self,
        events: &[CallEvent],
        shared: Option<&Arc<Vec<CallEvent>>>,
        source: Option<(&str, u64)>,
        ids: Ids,
    ) -> Result<Option<(u64, u64)>, WalError> {
        let mut w = self.writer.lock().map_err(|_| WalError::Corrupt(0, "writer lock poisoned".into()))?;
        if let Some((g, seq)) = source {
            if w.sources.get(g).is_some_and(|last| seq <= *last) {
                return Ok(None);
            }
        }
        // Per event: its id's key when it is checked (a batch of new events has none, and keeps them all).
        let keys: Vec<Option<u128>> = match ids {
            Ids::Check => events.iter().map(|e| id_key(&e.event_id)).collect(),
            Ids::New => Vec::new(),
        };
        let mut fresh = IdSet::with_capacity_and_hasher(keys.len(), Default::default());
        let keep: Vec<bool> = keys
            .iter()
            .map(|k| match k {
                Some(k) if w.seen.window > 0 => !w.seen.set.contains(k) && fresh.insert(*k),
                _ => true,
            })
            .collect();
        let dropped = keep.iter().filter(|k| !**k).count();
        if dropped > 0 {
            self.duplicates.fetch_add(dropped as u64, std::sync::atomic::Ordering::Relaxed);
            warn!(events = dropped, "events already in the log (same event_id) left out");
            if dropped == events.len() {
                if let Some((g, seq)) = source {
                    w.sources.insert(g.to_string(), seq);
                }
                return Ok(None);
            }
        }
        // The roll to a new segment below keeps `w.next`, so the record can be made first.
        let first = w.next;
        let src = source.map(|(g, seq)| format!("{g}:{seq}")).unwrap_or_default();
        let fresh_events = events.iter().enumerate().filter(|(i, _)| ids == Ids::New || keep[*i]).map(|(_, e)| e);
        let count =
            u32::try_from(events.len() - dropped).map_err(|_| WalError::Corrupt(first, "batch too large".into()))?;
        // Positional JSON lines: the events without their field names (see `Positional`).
        let rec = record(MAGIC, first, count, &src, events.len() * 400, |rec| {
            for e in fresh_events {
                serde_json::to_writer(&mut *rec, &Positional(e)).map_err(|e| WalError::Corrupt(0, e.to_string()))?;
                rec.push(b'\n');
            }
            Ok(())
        })?;
        let bytes = self.bytes();
        if self.max_bytes > 0 && bytes + rec.len() as u64 > self.max_bytes {
            return Err(WalError::Full { bytes, cap: self.max_bytes });
        }
        if events.is_empty() && source.is_none() {
            return Ok(Some((w.next, w.next)));
        }
        if w.seg_len >= self.segment_bytes {
            let path = seg_path(&self.dir, w.next);
            let mut file = OpenOptions::new().create(true).read(true).append(true).open(&path).map_err(io(&path))?;
            let doc = CheckpointDoc { sources: w.sources.clone(), ids: w.seen.hex() };
            let map = serde_json::to_vec(&doc).map_err(|e| WalError::Corrupt(0, e.to_string()))?;
            let cp = encode(CHECKPOINT, w.next, 0, "", &map);
            file.write_all(&cp).map_err(io(&path))?;
            file.sync_data().map_err(io(&path))?;
            self.total.fetch_add(cp.len() as u64, std::sync::atomic::Ordering::Relaxed);
            File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
            let sources = std::mem::take(&mut w.sources);
            let seen = std::mem::take(&mut w.seen);
            *w = Writer { file, path, seg_start: w.next, seg_len: cp.len() as u64, next: w.next, sources, seen };
        }
        let path = w.path.clone();
        w.file.write_all(&rec).map_err(io(&path))?;
        w.file.sync_data().map_err(io(&path))?;
        w.seg_len += rec.len() as u64;
        self.total.fetch_add(rec.len() as u64, std::sync::atomic::Ordering::Relaxed);
        w.next = first + u64::from(count);
        if let Some((g, seq)) = source {
            w.sources.insert(g.to_string(), seq);
        }
        for k in keys.iter().zip(&keep).filter(|(_, keep)| **keep).filter_map(|(k, _)| *k) {
            w.seen.insert(k);
        }
        let end = w.next;
        if let Some(batch) = shared.filter(|_| dropped == 0 && count > 0) {
            // Before the new end is announced, so a sink woken by it finds the batch here.
            let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            tail.push_back((first, batch.clone()));
            let mut held: usize = tail.iter().map(|(_, b)| b.capacity()).sum();
            while held > TAIL_EVENTS && tail.len() > 1 {
                held -= tail.pop_front().map(|(_, b)| b.capacity()).unwrap_or(0);
            }
        }
        drop(w);
        self.end.send_replace(end);
        Ok(Some((first, end)))
    }

    /// Reads events from `offset` on, at most `max` of them (whole records, so possibly fewer). Blocking.
    pub fn read_from(&self, offset: u64, max: usize) -> Result<Vec<(u64, CallEvent)>, WalError> {
        let segs = segments(&self.dir)?;
        let mut out = Vec::new();
        let start_idx = segs.iter().rposition(|(s, _)| *s <= offset).unwrap_or(0);
        for (_, path) in &segs[start_idx..] {
            let mut r = BufReader::new(File::open(path).map_err(io(path))?);
            loop {
                match read_record(&mut r, Want::EventsFrom(offset)) {
                    Ok(Some(Rec::Checkpoint { .. })) => continue,
                    Ok(Some(Rec::Events { first, count, events, .. })) => {
                        if first + u64::from(count) <= offset {
                            continue;
                        }
                        for (i, e) in events.into_iter().enumerate() {
                            let o = first + i as u64;
                            if o >= offset {
                                out.push((o, e));
                            }
                        }
                        if out.len() >= max {
                            return Ok(out);
                        }
                    }
                    Ok(None) => break,
                    // A record being written right now, or a torn tail: stop here.
                    Err(_) => break,
                }
            }
        }
        Ok(out)
    }

    /// Deletes segments wholly below `confirmed` (the smallest sink cursor). Never the active one.
    pub fn collect_garbage(&self, confirmed: u64) -> Result<u64, WalError> {
        let segs = segments(&self.dir)?;
        let active = self.writer.lock().map(|w| w.seg_start).unwrap_or(0);
        let mut freed = 0;
        for pair in segs.windows(2) {
            let ((start, path), (next_start, _)) = (&pair[0], &pair[1]);
            if *next_start <= confirmed && *start != active {
                let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(path).map_err(io(path))?;
                freed += len;
                self.total.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(freed)
    }
}

/// Replaces `path` with `bytes` through a fsynced temp file and a rename: readers see the old or the new
/// content, never half of it.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable only once the directory is: without this a crash can bring back the
    // old cursor, and a sink would write its last batch again.
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// A sink's position in the log: `committed` (everything below is confirmed by the sink) and, while a
/// batch is being written, `inflight` (its end). Persisted as `<name>.cursor` next to the segments.
pub struct Cursor {
    path: PathBuf,
    pub committed: u64,
    pub inflight: Option<u64>,
}

impl Cursor {
    pub fn load(dir: &Path, name: &str) -> Result<Cursor, WalError> {
        let path = dir.join(format!("{name}.cursor"));
        let (committed, inflight) = match std::fs::read_to_string(&path) {
            Ok(s) => {
                let mut it = s.split_whitespace();
                let c = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let i = it.next().and_then(|v| v.parse().ok());
                (c, i)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, None),
            Err(e) => return Err(WalError::Io { path, source: e }),
        };
        Ok(Cursor { path, committed, inflight })
    }

    fn save(&self) -> Result<(), WalError> {
        let text = match self.inflight {
            Some(i) => format!("{} {i}\n", self.committed),
            None => format!("{}\n", self.committed),
        };
        write_atomically(&self.path, text.as_bytes()).map_err(io(&self.path))
    }

    /// Records that the batch `[committed, end)` is about to be written.
    pub fn begin(&mut self, end: u64) -> Result<(), WalError> {
        self.inflight = Some(end);
        self.save()
    }

    /// Records that everything below `end` is confirmed.
    pub fn commit(&mut self, end: u64) -> Result<(), WalError> {
        self.committed = end;
        self.inflight = None;
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: u64) -> CallEvent {
        CallEvent { event_id: format!("e{i}"), cost_nanousd: i, ..Default::default() }
    }

    /// Live events (`Ids::New`) are neither looked up in the window nor added to it; checked ones are.
    #[test]
    fn new_events_skip_the_window_and_checked_ones_use_it() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1 << 20, 0).unwrap();
        let batch = |ids: &[u64]| Arc::new(ids.iter().map(|i| ev(*i)).collect::<Vec<_>>());
        assert_eq!(wal.append_shared(&batch(&[1, 2]), None, Ids::New).unwrap(), Some((0, 2)));
        assert!(wal.writer.lock().unwrap().seen.set.is_empty(), "new events take no room in the window");
        // Not remembered, so a checked batch with the same id goes in.
        assert_eq!(wal.append_shared(&batch(&[1]), None, Ids::Check).unwrap(), Some((2, 3)));
        // Remembered now: checked again it is left out, unchecked it is not looked up.
        assert_eq!(wal.append_shared(&batch(&[1, 3]), None, Ids::Check).unwrap(), Some((3, 4)));
        assert_eq!(wal.append_shared(&batch(&[1]), None, Ids::New).unwrap(), Some((4, 5)));
        assert_eq!(wal.duplicates.load(std::sync::atomic::Ordering::Relaxed), 1);
        let got: Vec<String> = wal.read_from(0, 100).unwrap().into_iter().map(|(_, e)| e.event_id).collect();
        assert_eq!(got, ["e1", "e2", "e1", "e3", "e1"]);
    }

    #[test]
    fn records_of_the_earlier_object_form_are_read_and_remembered_after_an_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        // A segment as the release before positional records wrote it: one event per line, as a JSON object.
        let old: Vec<CallEvent> = (0..3).map(ev).collect();
        let mut payload = Vec::new();
        for e in &old {
            serde_json::to_writer(&mut payload, e).unwrap();
            payload.push(b'\n');
        }
        let path = seg_path(dir.path(), 0);
        let doc = serde_json::to_vec(&CheckpointDoc { sources: Sources::new(), ids: String::new() }).unwrap();
        let mut bytes = encode(CHECKPOINT, 0, 0, "", &doc);
        bytes.extend(encode(MAGIC, 0, 3, "", &payload));
        std::fs::write(&path, bytes).unwrap();

        let wal = Wal::open(dir.path(), 1 << 20, 0).unwrap();
        assert_eq!(wal.end(), 3);
        // New records are positional lines; old and new read back alike.
        assert_eq!(wal.append(&[ev(3), ev(4)], None).unwrap(), Some((3, 5)));
        let got: Vec<CallEvent> = wal.read_from(0, 100).unwrap().into_iter().map(|(_, e)| e).collect();
        assert_eq!(got, (0..5).map(ev).collect::<Vec<_>>());
        let raw = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("[0,\"e3\","), "a positional line for e3 in {text}");
        drop(wal);
        // After a restart the window knows the ids of both forms: a resent event is left out.
        let wal = Wal::open(dir.path(), 1 << 20, 0).unwrap();
        assert_eq!(wal.append(&[ev(1)], None).unwrap(), None);
        assert_eq!(wal.append(&[ev(4), ev(5)], None).unwrap(), Some((5, 6)));
        assert_eq!(wal.duplicates.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn appends_reads_truncates_torn_tails_and_collects_segments() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 2_000, 0).unwrap();
        for i in 0..10 {
            assert_eq!(wal.append(&[ev(2 * i), ev(2 * i + 1)], Some(("gw", i))).unwrap(), Some((2 * i, 2 * i + 2)));
        }
        assert_eq!(wal.end(), 20);
        let got = wal.read_from(5, 100).unwrap();
        assert_eq!(got.first().map(|(o, e)| (*o, e.event_id.clone())), Some((5, "e5".into())));
        assert_eq!(got.len(), 15);
        assert!(segments(dir.path()).unwrap().len() > 1, "segments roll at the size limit");
        drop(wal);

        // A crash mid-append leaves half a record: it is cut off, and the log goes on after the last whole one.
        let (_, last) = segments(dir.path()).unwrap().pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(b"TGW1\x40\x00\x00\x00garbage").unwrap();
        drop(f);
        let wal = Wal::open(dir.path(), 2_000, 0).unwrap();
        assert_eq!(wal.end(), 20);
        // A resent batch (same source sequence) is not appended twice, also after a restart and a roll.
        assert_eq!(wal.append(&[ev(18), ev(19)], Some(("gw", 9))).unwrap(), None);
        assert_eq!(wal.append(&[ev(20)], None).unwrap(), Some((20, 21)));
        assert_eq!(wal.read_from(0, 1000).unwrap().len(), 21);

        // Segments below every cursor go; the active one stays.
        let freed = wal.collect_garbage(21).unwrap();
        assert!(freed > 0);
        assert_eq!(segments(dir.path()).unwrap().len(), 1);
        assert_eq!(wal.read_from(20, 10).unwrap().len(), 1);

        // A flipped byte inside a record is caught by its checksum and cut off, not parsed.
        drop(wal);
        let (_, last) = segments(dir.path()).unwrap().pop().unwrap();
        let mut bytes = std::fs::read(&last).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x55;
        std::fs::write(&last, bytes).unwrap();
        let wal = Wal::open(dir.path(), 2_000, 0).unwrap();
        assert!(wal.end() < 21, "the corrupt record was dropped, end {}", wal.end());

        let mut c = Cursor::load(dir.path(), "parquet").unwrap();
        assert_eq!((c.committed, c.inflight), (0, None));
        c.begin(12).unwrap();
        let c2 = Cursor::load(dir.path(), "parquet").unwrap();
        assert_eq!((c2.committed, c2.inflight), (0, Some(12)));
        c.commit(12).unwrap();
        assert_eq!(Cursor::load(dir.path(), "parquet").unwrap().committed, 12);
    }

    /// A sink reading from its cursor gets exactly the events from there on, and the records below the
    /// cursor are passed over by their headers: a byte flipped inside one of them is never read.
    #[test]
    fn reads_from_any_offset_without_reading_the_records_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1 << 20, 0).unwrap();
        for i in 0..10 {
            wal.append(&[ev(3 * i), ev(3 * i + 1), ev(3 * i + 2)], None).unwrap();
        }
        for from in 0..30 {
            let got = wal.read_from(from, 1000).unwrap();
            assert!(got.iter().all(|(o, e)| *o == e.cost_nanousd), "offsets name their events");
            assert_eq!(got.iter().map(|(o, _)| *o).collect::<Vec<_>>(), (from..30).collect::<Vec<_>>(), "from {from}");
            // At most `max`, in whole records: the record holding `from` is read to its end.
            let some = wal.read_from(from, 1).unwrap();
            assert_eq!(some.len() as u64, 3 - from % 3, "from {from}");
        }
        // Flipped on disk under the open log (which would cut it off at its next start).
        let (_, seg) = segments(dir.path()).unwrap().pop().unwrap();
        let mut f = OpenOptions::new().read(true).write(true).open(&seg).unwrap();
        let at = (HEADER + 10) as u64; // inside the first record's payload (events 0..3)
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[b[0] ^ 0x55]).unwrap();
        drop(f);
        assert_eq!(wal.read_from(0, 1000).unwrap().len(), 0, "a corrupt record is not parsed");
        assert_eq!(wal.read_from(3, 1000).unwrap().len(), 27, "records below the offset are skipped unread");
    }

    #[test]
    fn the_tail_holds_recent_whole_batches_without_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1 << 20, 0).unwrap();
        let batch = |from: u64, n: u64| Arc::new((from..from + n).map(ev).collect::<Vec<_>>());
        wal.append_shared(&batch(0, 3), None, Ids::Check).unwrap();
        wal.append(&[ev(3)], None).unwrap(); // not shared: a gap in the tail
        wal.append_shared(&batch(4, 2), None, Ids::Check).unwrap();
        wal.append_shared(&batch(6, 4), None, Ids::Check).unwrap();
        let offsets = |at: u64| -> Vec<u64> {
            wal.tail_from(at)
                .iter()
                .flat_map(|(first, evs)| {
                    evs.iter().enumerate().map(move |(i, e)| {
                        assert_eq!(e.cost_nanousd, first + i as u64, "a batch's first offset names its events");
                        first + i as u64
                    })
                })
                .collect()
        };
        assert_eq!(offsets(1), [0, 1, 2], "stops at the gap");
        assert!(offsets(3).is_empty(), "the unshared batch is read from disk");
        assert_eq!(offsets(5), [4, 5, 6, 7, 8, 9]);
        assert!(offsets(10).is_empty());
        // Bounded: old batches leave as new ones come.
        for i in 0..(2 * TAIL_EVENTS as u64 / 100) {
            wal.append_shared(&batch(10 + 100 * i, 100), None, Ids::Check).unwrap();
        }
        assert!(offsets(0).is_empty());
        let held = wal.tail.lock().unwrap().iter().map(|(_, b)| b.len()).sum::<usize>();
        assert!(held <= TAIL_EVENTS && held > TAIL_EVENTS - 100, "{held}");
    }

    /// The tail's bound is on the memory its batches keep: one event in room for 64 counts as 64.
    #[test]
    fn the_tail_bounds_the_room_its_batches_keep_not_their_events() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 64 << 20, 0).unwrap();
        let room = 64;
        for i in 0..TAIL_EVENTS as u64 {
            let mut b = Vec::with_capacity(room);
            b.push(ev(i));
            wal.append_shared(&Arc::new(b), None, Ids::New).unwrap();
        }
        let tail = wal.tail.lock().unwrap();
        let kept: usize = tail.iter().map(|(_, b)| b.capacity()).sum();
        assert!(kept <= TAIL_EVENTS, "{kept} event slots kept for {} events", tail.len());
        assert_eq!(tail.len(), TAIL_EVENTS / room, "the newest batches that fit");
        assert_eq!(tail.back().map(|(first, _)| *first), Some(TAIL_EVENTS as u64 - 1));
    }

    #[test]
    fn a_full_log_refuses_appends() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 1 << 20, 3_000).unwrap();
        let mut refused = false;
        for i in 0..100 {
            if let Err(WalError::Full { .. }) = wal.append(&[ev(i)], None) {
                refused = true;
                break;
            }
        }
        assert!(refused);
    }
}
