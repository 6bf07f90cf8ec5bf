//! The admission phase: steps that each may let a call through, answer it themselves (a cache hit) or
//! refuse it with an error in the client's shape (the call's one event records why). A step is one
//! file implementing [`AdmissionStep`], registered by one line in [`steps`], in the order they run.

pub mod budget;
pub mod cache;
pub mod context_limit;
pub mod injection;
pub mod redact;

use crate::budget::BudgetSystem;
use crate::call::CallCtx;
use crate::error::GatewayError;
use crate::guards::Guards;
use crate::routing::RouteTable;
use axum::response::Response;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a step decided.
pub enum Admit {
    Continue,
    /// The step answered the call itself (and finished its event).
    Answer(Response),
}

pub type AdmitFuture<'a> = Pin<Box<dyn Future<Output = Result<Admit, GatewayError>> + Send + 'a>>;

/// One admission check.
pub trait AdmissionStep: Send + Sync {
    fn name(&self) -> &'static str;
    fn admit<'a>(&'a self, ctx: &'a mut CallCtx) -> AdmitFuture<'a>;
    /// Whether the step can ever do anything with this configuration (a guard nobody configured cannot;
    /// guards are fixed at start). Steps that cannot are left out of the list, so a call does not pay
    /// for their boxed future.
    fn active(&self) -> bool {
        true
    }
}

/// The steps every metered call passes, in order (those that can act with this configuration).
pub fn steps(
    budgets: &Arc<BudgetSystem>,
    routes: &Arc<RouteTable>,
    guards: &Arc<Guards>,
) -> Vec<Box<dyn AdmissionStep>> {
    let all: Vec<Box<dyn AdmissionStep>> = vec![
        Box::new(context_limit::ContextLimitStep(guards.clone())),
        Box::new(injection::InjectionStep(guards.clone())),
        Box::new(redact::RedactStep(guards.clone())),
        Box::new(budget::BudgetStep::new(budgets.clone(), routes.clone())),
        Box::new(cache::CacheStep(guards.clone())),
    ];
    all.into_iter().filter(|s| s.active()).collect()
}
