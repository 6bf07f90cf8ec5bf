//! A client connection's task polls everything of its calls itself: hyper's server side, the handler,
//! and the upstream connection with its response and body (`inline_client`). hyper's channels between
//! those parts (the response's oneshot, the body's `want` signal, the dispatcher's own yields) wake the
//! task while it is being polled. tokio answers a wake during a poll by putting the task at the back of
//! its worker's queue and waking a parked worker to come and steal it ("yield"): a futex wake-up and a
//! second worker's park and unpark for nothing, one to two per call, which at one client was most of
//! `serve`'s CPU and the call moving between workers (bench/RESULTS.md, eleventh round).
//!
//! [`PollInPlace`] wraps the connection's future with a waker of its own: a wake that arrives while the
//! future is being polled only marks it, and the future is polled again in place once it returns
//! `Pending`; a wake from anywhere else (the I/O driver, a timer, another task) is passed to the task's
//! waker as usual. At most [`IN_PLACE`] polls in a row, and none once the task has used its cooperative
//! budget: then the wake goes to the scheduler, so a busy connection still lets others run.

use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Polls in a row within one poll by the scheduler.
const IN_PLACE: usize = 8;

/// The future is being polled.
const POLLING: u8 = 1;
/// It was woken since that poll began (or since it was last polled).
const WOKEN: u8 = 2;

struct Shared {
    state: AtomicU8,
    /// The task's own waker, as of the last poll.
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.fetch_or(WOKEN, Ordering::AcqRel) & POLLING == 0 {
            self.task.wake();
        }
    }
}

/// See the module documentation.
pub struct PollInPlace<F> {
    inner: Pin<Box<F>>,
    shared: Arc<Shared>,
    waker: Waker,
}

impl<F: Future> PollInPlace<F> {
    pub fn new(inner: F) -> PollInPlace<F> {
        let shared = Arc::new(Shared { state: AtomicU8::new(0), task: AtomicWaker::new() });
        let waker = Waker::from(shared.clone());
        PollInPlace { inner: Box::pin(inner), shared, waker }
    }
}

impl<F: Future> Future for PollInPlace<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.shared.task.register(cx.waker());
        let mut own = Context::from_waker(&this.waker);
        for _ in 0..IN_PLACE {
            // A wake from elsewhere before this point already went to the scheduler; clearing it here
            // costs at most one spurious poll later.
            this.shared.state.store(POLLING, Ordering::Release);
            if let Poll::Ready(out) = this.inner.as_mut().poll(&mut own) {
                this.shared.state.store(0, Ordering::Release);
                return Poll::Ready(out);
            }
            if this.shared.state.compare_exchange(POLLING, 0, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return Poll::Pending;
            }
            // Woken while it was polled: go again here, unless the task has used its budget (tokio's
            // resources then return `Pending` until the scheduler has run others).
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
        }
        this.shared.state.store(0, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Wakes itself during its first `wakes` polls, then finishes, counting its polls.
    struct SelfWaking {
        wakes: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for SelfWaking {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            let n = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.wakes == 0 {
                return Poll::Ready(n);
            }
            self.wakes -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Counts the wakes of the task's own waker.
    struct Counter(AtomicUsize);
    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_wake_during_the_poll_is_a_poll_in_place_not_a_wake_of_the_task() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut f = PollInPlace::new(SelfWaking { wakes: 3, polls: polls.clone() });
        let out = Pin::new(&mut f).poll(&mut Context::from_waker(&waker));
        assert_eq!(out, Poll::Ready(4), "three self-wakes, then ready, all in one poll");
        assert_eq!(counter.0.load(Ordering::SeqCst), 0, "the task was never woken");
    }

    #[test]
    fn past_the_limit_the_task_is_woken_and_polled_again() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut f = PollInPlace::new(SelfWaking { wakes: IN_PLACE + 2, polls: polls.clone() });
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), IN_PLACE);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "handed to the scheduler once");
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(IN_PLACE + 3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wake_from_another_task_reaches_the_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let waiting = tokio::spawn(PollInPlace::new(async move { rx.await.unwrap_or(0) + 1 }));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        tx.send(41).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
        assert_eq!(got.expect("woken").expect("joined"), 42);
    }

    /// Wakes itself at every poll until `stop` is set; gives up (returning `None`) after `limit` polls.
    struct Busy {
        stop: Arc<std::sync::atomic::AtomicBool>,
        polls: usize,
        limit: usize,
    }

    impl Future for Busy {
        type Output = Option<usize>;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<usize>> {
            self.polls += 1;
            if self.stop.load(Ordering::SeqCst) {
                return Poll::Ready(Some(self.polls));
            }
            if self.polls >= self.limit {
                return Poll::Ready(None);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_task_that_keeps_waking_itself_still_lets_others_run() {
        // A connection that always has more to do must not starve the rest of its worker: on one thread,
        // the task that sets `stop` only runs if the busy one goes back to the scheduler. tokio's own
        // `yield_now` defers its wake past the poll, so the busy future wakes itself directly, the way
        // hyper's dispatcher yields.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = tokio::spawn(PollInPlace::new(Busy { stop: stop.clone(), polls: 0, limit: 1_000_000 }));
        let other = tokio::spawn(async move { stop.store(true, Ordering::SeqCst) });
        other.await.unwrap();
        let polls = busy.await.unwrap();
        assert!(polls.is_some_and(|n| n > 1), "the busy task was polled until it saw `stop`: {polls:?}");
    }
}
