//! The upstream's response body as the metering body reads it.

use crate::inline_client::Lease;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The upstream's response body, with its first frame already read when the attempt phase waited for
/// it (so that a silent or broken upstream could still be retried), and the connection it arrives on:
/// reading the body drives the connection, and its end hands the connection back for the next call.
pub struct UpstreamBody {
    first: Option<Frame<Bytes>>,
    rest: Incoming,
    lease: Option<Lease>,
}

impl UpstreamBody {
    pub fn new(rest: Incoming, lease: Lease) -> UpstreamBody {
        UpstreamBody { first: None, rest, lease: Some(lease) }
    }

    /// Puts back a frame read ahead, to be the next one read.
    pub fn hold(&mut self, frame: Frame<Bytes>) {
        debug_assert!(self.first.is_none());
        self.first = Some(frame);
    }

    /// After a frame: a body of known length whose last byte has been read is over without a further
    /// poll (which its reader may never make).
    fn release_if_ended(&mut self, cx: &mut Context<'_>) {
        if self.rest.is_end_stream() {
            if let Some(lease) = self.lease.take() {
                lease.release(cx);
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(f) = self.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        let mut drove = false;
        loop {
            match Pin::new(&mut self.rest).poll_frame(cx) {
                Poll::Ready(Some(frame)) => {
                    if frame.is_ok() {
                        self.release_if_ended(cx);
                    }
                    return Poll::Ready(Some(frame));
                }
                Poll::Ready(None) => {
                    if let Some(lease) = self.lease.take() {
                        lease.release(cx);
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
            // Nothing buffered: let the connection read (and hand over) what has arrived, then look again.
            match self.lease.as_mut() {
                Some(lease) if !drove => {
                    lease.poll_conn(cx);
                    drove = true;
                }
                _ => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    /// Exact when the upstream sent a length (hyper counts it down as frames are read), the held frame
    /// included.
    fn size_hint(&self) -> SizeHint {
        let held = self.first.as_ref().and_then(Frame::data_ref).map_or(0, |d| d.len() as u64);
        match self.rest.size_hint().exact() {
            Some(rest) => SizeHint::with_exact(rest.saturating_add(held)),
            None => SizeHint::default(),
        }
    }
}

impl Drop for UpstreamBody {
    /// A body read to its end whose last poll did not see the end (the reader stopped at
    /// `is_end_stream`) still hands its connection back.
    fn drop(&mut self) {
        if self.first.is_none() {
            self.release_if_ended(&mut Context::from_waker(std::task::Waker::noop()));
        }
    }
}
