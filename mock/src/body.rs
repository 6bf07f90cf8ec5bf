//! Response body that hands out pre-built frames one by one, with optional pacing, cut and hang.

use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::Shared;

/// Where a streamed body stops early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Send every frame.
    Never,
    /// Before frame `n`, fail the body so hyper aborts the connection mid-response.
    Cut(usize),
    /// Before frame `n`, stay pending until the client goes away.
    Hang(usize),
}

/// A 2xx body: counted as answered when its last frame is handed to hyper, and as
/// dropped early when it goes away before that.
pub(crate) struct FramesBody {
    frames: Vec<Bytes>,
    next: usize,
    /// Frames in this range are each preceded by `delay`.
    delayed: Range<usize>,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    stop: Stop,
    /// `Some(len)` for a single whole body whose length is known up front.
    exact_len: Option<u64>,
    done: bool,
    cut_yielded: bool,
    shared: Arc<Shared>,
}

impl FramesBody {
    /// One whole body (non-stream JSON), sent with a content-length.
    pub(crate) fn whole(data: Bytes, shared: Arc<Shared>) -> Self {
        let len = data.len() as u64;
        Self {
            frames: vec![data],
            next: 0,
            delayed: 0..0,
            delay: Duration::ZERO,
            sleep: None,
            stop: Stop::Never,
            exact_len: Some(len),
            done: false,
            cut_yielded: false,
            shared,
        }
    }

    /// A chunked stream of frames; `delayed` frames wait `delay` before going out.
    pub(crate) fn stream(
        frames: Vec<Bytes>,
        delayed: Range<usize>,
        delay: Duration,
        stop: Stop,
        shared: Arc<Shared>,
    ) -> Self {
        let delayed = if delay.is_zero() { 0..0 } else { delayed };
        Self {
            frames,
            next: 0,
            delayed,
            delay,
            sleep: None,
            stop,
            exact_len: None,
            done: false,
            cut_yielded: false,
            shared,
        }
    }
}

impl Body for FramesBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let i = this.next;
        match this.stop {
            Stop::Cut(at) if at == i => {
                // hyper drops its unflushed buffer on a body error; yield once so it flushes
                // the frames already handed over, then fail.
                if !this.cut_yielded {
                    this.cut_yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                this.done = true;
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "MOCK cut: stream ended abruptly",
                ))));
            }
            // Never woken on purpose: hyper still watches the socket and drops us on hang-up.
            Stop::Hang(at) if at == i => return Poll::Pending,
            _ => {}
        }
        if i >= this.frames.len() {
            this.done = true;
            return Poll::Ready(None);
        }
        if this.delayed.contains(&i) {
            let delay = this.delay;
            let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        let frame = std::mem::take(&mut this.frames[i]);
        this.next = i + 1;
        if this.next == this.frames.len() {
            this.done = true;
            // Counted before the bytes leave so a client holding the whole body always sees it.
            this.shared.answered.fetch_add(1, Ordering::Relaxed);
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len {
            Some(len) if self.next == 0 => SizeHint::with_exact(len),
            Some(_) => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}

impl Drop for FramesBody {
    fn drop(&mut self) {
        if self.next < self.frames.len() {
            self.shared.dropped_early.fetch_add(1, Ordering::Relaxed);
        }
    }
}
