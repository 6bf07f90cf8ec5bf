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
use std::task::{Context, Poll};

/// What a step decided.
pub enum Admit {
    Continue,
    /// The step answered the call itself (and finished its event).
    Answer(Response),
}

/// A step's decision. Most steps decide at once and allocate nothing; a step that waits (the response
/// cache, an injection check calling out) boxes its future.
pub enum AdmitFuture<'a> {
    Ready(Option<Result<Admit, GatewayError>>),
    Boxed(Pin<Box<dyn Future<Output = Result<Admit, GatewayError>> + Send + 'a>>),
}

impl<'a> AdmitFuture<'a> {
    pub fn ready(decision: Result<Admit, GatewayError>) -> AdmitFuture<'a> {
        AdmitFuture::Ready(Some(decision))
    }

    pub fn boxed(f: impl Future<Output = Result<Admit, GatewayError>> + Send + 'a) -> AdmitFuture<'a> {
        AdmitFuture::Boxed(Box::pin(f))
    }
}

impl Future for AdmitFuture<'_> {
    type Output = Result<Admit, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            // Polled again after it answered: never again ready, as futures may do.
            AdmitFuture::Ready(decision) => decision.take().map_or(Poll::Pending, Poll::Ready),
            AdmitFuture::Boxed(f) => f.as_mut().poll(cx),
        }
    }
}

/// One admission check.
pub trait AdmissionStep: Send + Sync {
    fn name(&self) -> &'static str;
    fn admit<'a>(&'a self, ctx: &'a mut CallCtx) -> AdmitFuture<'a>;
}

/// The steps every metered call passes, in order. A guard step with nothing configured could never act
/// (guards are fixed at start), so it is left out rather than run as a boxed future that returns at
/// once on every call; budgets always run (budgets can be created at run time).
pub fn steps(
    budgets: &Arc<BudgetSystem>,
    routes: &Arc<RouteTable>,
    guards: &Arc<Guards>,
) -> Vec<Box<dyn AdmissionStep>> {
    let on = guards.configured();
    let all: [(bool, Box<dyn AdmissionStep>); 5] = [
        (on.context, Box::new(context_limit::ContextLimitStep(guards.clone()))),
        (on.injection, Box::new(injection::InjectionStep(guards.clone()))),
        (on.redaction, Box::new(redact::RedactStep(guards.clone()))),
        (true, Box::new(budget::BudgetStep::new(budgets.clone(), routes.clone()))),
        (on.cache, Box::new(cache::CacheStep(guards.clone()))),
    ];
    all.into_iter().filter_map(|(on, step)| on.then_some(step)).collect()
}
