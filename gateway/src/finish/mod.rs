//! The finish phase: every call (each upstream attempt, or the one rejection) ends in exactly one event,
//! emitted by its `CallGuard` however the call ended; observers then learn how it went. Two kinds, by
//! when they run:
//! - [`EndObserver`]: at the moment an attempt ends, on the request path (circuit breakers, routing
//!   statistics; keep them to a lock and a few additions);
//! - [`PricedObserver`]: once the metering task has counted and priced the event (budget settlement).

pub mod meter;

pub use meter::{now_us, run_metering, CallGuard, Meter, MeterReceiver};

use tollgate_events::CallEvent;

/// Told how an attempt ended, the moment it ends (its event is final except for estimated usage and cost).
pub trait EndObserver: Send + Sync {
    fn ended(&self, ev: &CallEvent);
}

/// Told each priced event of the call it rides on, in the metering task. Shared by a request's attempts;
/// dropped once the request's last event is priced, so a `Drop` can act on the whole request.
pub trait PricedObserver: Send + Sync + std::fmt::Debug {
    fn priced(&self, ev: &CallEvent);
}
