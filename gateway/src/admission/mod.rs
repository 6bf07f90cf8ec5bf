//! The admission phase: steps that each may let a call through, answer it themselves (a cache hit) or
//! refuse it with an error in the client's shape (the call's one event records why). A step is one
//! file implementing [`AdmissionStep`], registered by one line in [`steps`], in the order they run.

pub mod budget;

use crate::budget::BudgetSystem;
use crate::call::CallCtx;
use crate::error::GatewayError;
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
}

/// The steps every metered call passes, in order.
pub fn steps(budgets: &Arc<BudgetSystem>, routes: &Arc<RouteTable>) -> Vec<Box<dyn AdmissionStep>> {
    vec![Box::new(budget::BudgetStep::new(budgets.clone(), routes.clone()))]
}
