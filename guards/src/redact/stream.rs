//! Redaction of text that arrives in pieces (the content deltas of a streamed response), holding back only
//! what could still become a match.
//!
//! Every detector pattern is compiled into one anchored lazy DFA. While text arrives, the redactor keeps the
//! DFA states of every *possible match in progress* (one per start position, and of two starts in the same
//! state only the earlier, since their futures are the same). Text before the earliest live start cannot be
//! part of any future match, so it is released at once with its complete matches masked; the rest waits for
//! the next piece. In plain prose that is the current word (an e-mail address could still grow out of it);
//! inside a digit run, the run; inside a PEM block, the block. Text is only ever cut at UTF-8 character
//! boundaries. [`MAX_HOLD`] bounds what is held (and so memory) whatever the input.

use super::detect::{Detectors, Found, Kind};
use super::Counts;
use crate::GuardError;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::hybrid::LazyStateID;
use regex_automata::util::start;
use regex_automata::Anchored;
use std::sync::Arc;

/// Most bytes held back at once. A possible match longer than this is released unmasked (a PEM block of a
/// 4096-bit RSA key is about 3.3 KB).
pub const MAX_HOLD: usize = 16 * 1024;
/// Bytes of released text kept as look-behind context for word boundaries.
const CONTEXT: usize = 4;

/// The detectors and the DFA that knows which text may still grow into a match; shared by all streams.
pub struct Redactor {
    detectors: Detectors,
    dfa: DFA,
}

impl Redactor {
    pub fn new(kinds: &[Kind]) -> Result<Arc<Redactor>, GuardError> {
        let detectors = Detectors::new(kinds)?;
        let dfa = DFA::builder()
            .configure(DFA::config().cache_capacity(1 << 20).skip_cache_capacity_check(true))
            .build_many(&detectors.patterns())
            .map_err(|e| GuardError::Config { key: "redaction.kinds".into(), message: e.to_string() })?;
        Ok(Arc::new(Redactor { detectors, dfa }))
    }

    pub fn detectors(&self) -> &Detectors {
        &self.detectors
    }

    /// Masks every match in `text`; `None` when there is none.
    pub fn redact(&self, text: &str, counts: &mut Counts) -> Option<String> {
        let found = self.detectors.find(text, 0);
        if found.is_empty() {
            return None;
        }
        Some(apply(text, 0, text.len(), &found, counts))
    }
}

/// `hay[from..to]` with the matches inside it masked.
fn apply(hay: &str, from: usize, to: usize, found: &[Found], counts: &mut Counts) -> String {
    let mut out = String::with_capacity(to - from);
    let mut at = from;
    for f in found.iter().filter(|f| f.start >= from && f.end <= to) {
        out.push_str(&hay[at..f.start]);
        out.push_str(f.kind.mask());
        counts.add(f.kind);
        at = f.end;
    }
    out.push_str(&hay[at..to]);
    out
}

/// One stream's redaction state.
pub struct StreamRedactor {
    r: Arc<Redactor>,
    cache: Cache,
    /// Released text's last bytes (context) followed by the held text.
    buf: String,
    /// Where the held text starts in `buf`.
    held_from: usize,
    /// Possible matches in progress: (start in `buf`, DFA state after the bytes so far).
    live: Vec<(usize, LazyStateID)>,
    clears: usize,
    /// The DFA's cache kept clearing: hold everything rather than trust stale states.
    degraded: bool,
    pub counts: Counts,
}

impl StreamRedactor {
    pub fn new(r: Arc<Redactor>) -> StreamRedactor {
        let cache = r.dfa.create_cache();
        StreamRedactor {
            r,
            cache,
            buf: String::new(),
            held_from: 0,
            live: Vec::new(),
            clears: 0,
            degraded: false,
            counts: Counts::default(),
        }
    }

    /// Bytes currently held back.
    pub fn held(&self) -> usize {
        self.buf.len() - self.held_from
    }

    /// Takes the next piece of text; returns what can be released now, masked.
    pub fn push(&mut self, text: &str) -> String {
        let old = self.buf.len();
        self.buf.push_str(text);
        if self.degraded || self.cache.clear_count() != self.clears || !self.advance(old) {
            self.rebuild();
        }
        let mut safe =
            if self.degraded { self.held_from } else { self.live.iter().map(|l| l.0).min().unwrap_or(self.buf.len()) };
        if self.buf.len() - self.held_from > MAX_HOLD {
            let mut force = self.buf.len() - MAX_HOLD / 2;
            while !self.buf.is_char_boundary(force) {
                force += 1;
            }
            safe = safe.max(force);
            self.live.retain(|l| l.0 >= safe);
        }
        self.release(safe)
    }

    /// The end of the stream: releases everything held, masked.
    pub fn finish(&mut self) -> String {
        self.live.clear();
        self.release(self.buf.len())
    }

    /// Feeds `buf[from..]` to the live states and starts one at each character boundary. False when the
    /// DFA's cache was cleared (its state ids are then stale) or it gave up.
    fn advance(&mut self, from: usize) -> bool {
        let dfa = &self.r.dfa;
        let bytes = self.buf.as_bytes();
        for i in from..bytes.len() {
            let b = bytes[i];
            let mut next = Vec::with_capacity(self.live.len() + 1);
            if (b as i8) >= -0x40 {
                // A character starts here (not a UTF-8 continuation byte).
                let behind = if i == 0 { None } else { Some(bytes[i - 1]) };
                let cfg = start::Config::new().anchored(Anchored::Yes).look_behind(behind);
                match dfa.start_state(&mut self.cache, &cfg) {
                    Ok(s) => self.live.push((i, s)),
                    Err(_) => return false,
                }
            }
            for &(s, sid) in &self.live {
                let Ok(n) = dfa.next_state(&mut self.cache, sid, b) else { return false };
                if n.is_dead() {
                    continue;
                }
                if n.is_quit() {
                    return false;
                }
                // Two starts in the same state have the same future: keep the earlier.
                if !next.iter().any(|(_, x): &(usize, LazyStateID)| *x == n) {
                    next.push((s, n));
                }
            }
            self.live = next;
            if self.cache.clear_count() != self.clears {
                self.clears = self.cache.clear_count();
                return false;
            }
        }
        true
    }

    /// Recomputes the live states from the held text after the DFA's cache was cleared (its state ids are
    /// then stale): every start is walked afresh. If the cache keeps clearing, all held text stays held
    /// (until [`MAX_HOLD`] forces it out).
    fn rebuild(&mut self) {
        for _ in 0..3 {
            self.live.clear();
            self.clears = self.cache.clear_count();
            if self.walk_all() && self.cache.clear_count() == self.clears {
                self.degraded = false;
                return;
            }
        }
        self.live.clear();
        self.degraded = true;
    }

    fn walk_all(&mut self) -> bool {
        let dfa = &self.r.dfa;
        let bytes = self.buf.as_bytes();
        for s in self.held_from..bytes.len() {
            if !self.buf.is_char_boundary(s) {
                continue;
            }
            let behind = if s == 0 { None } else { Some(bytes[s - 1]) };
            let cfg = start::Config::new().anchored(Anchored::Yes).look_behind(behind);
            let Ok(mut sid) = dfa.start_state(&mut self.cache, &cfg) else { return false };
            for &b in &bytes[s..] {
                match dfa.next_state(&mut self.cache, sid, b) {
                    Ok(n) => sid = n,
                    Err(_) => return false,
                }
                if sid.is_dead() {
                    break;
                }
            }
            if sid.is_quit() {
                return false;
            }
            if !sid.is_dead() && !self.live.iter().any(|l| l.1 == sid) {
                self.live.push((s, sid));
            }
        }
        true
    }

    /// Releases `buf[held_from..safe]` (masked) and keeps the rest.
    fn release(&mut self, mut safe: usize) -> String {
        if safe <= self.held_from {
            return String::new();
        }
        let found = self.r.detectors.find(&self.buf, self.held_from);
        // A match that starts before `safe` but ends after it is held whole.
        if let Some(f) = found.iter().find(|f| f.start < safe && f.end > safe) {
            safe = f.start;
        }
        let out = apply(&self.buf, self.held_from, safe, &found, &mut self.counts);
        // Keep a little released text as context, then the held text.
        let mut ctx = safe.saturating_sub(CONTEXT);
        while !self.buf.is_char_boundary(ctx) {
            ctx -= 1;
        }
        self.buf.drain(..ctx);
        self.held_from = safe - ctx;
        for l in &mut self.live {
            l.0 -= ctx;
        }
        out
    }
}
