//! The upstream's response body as the metering body reads it.

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The upstream's response body, with its first frame already read when the attempt phase waited for
/// it (so that a silent or broken upstream could still be retried).
pub struct UpstreamBody {
    first: Option<Frame<Bytes>>,
    rest: Incoming,
}

impl UpstreamBody {
    pub fn new(first: Option<Frame<Bytes>>, rest: Incoming) -> UpstreamBody {
        UpstreamBody { first, rest }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(f) = self.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
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
