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

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
