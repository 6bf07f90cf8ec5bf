//! Budgets and token/request rate limits at admission: the call's estimate (prompt bytes / 4 plus its
//! output bound, priced at its route's first target) is reserved on every budget and limit that covers
//! it, or the call is refused (429), or a `downgrade` budget moves it to a cheaper model's route. The
//! reservation is settled with the real cost of all the request's attempts once the last is priced.

use super::{AdmissionStep, Admit, AdmitFuture};
use crate::billable::glue::with_model_for;
use crate::budget::{Admission, BudgetSystem};
use crate::call::CallCtx;
use crate::error::GatewayError;
use crate::finish::PricedObserver;
use crate::routing::RouteTable;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tollgate_events::{CallEvent, Endpoint};

pub struct BudgetStep {
    budgets: Arc<BudgetSystem>,
    routes: Arc<RouteTable>,
}

impl BudgetStep {
    pub fn new(budgets: Arc<BudgetSystem>, routes: Arc<RouteTable>) -> BudgetStep {
        BudgetStep { budgets, routes }
    }

    fn check(&self, ctx: &mut CallCtx) -> Result<Admit, GatewayError> {
        let Some(route) = ctx.route.clone() else { return Ok(Admit::Continue) };
        let input = (ctx.body.len() as u64).div_ceil(4);
        let output = if ctx.endpoint == Endpoint::Embeddings {
            0
        } else {
            ctx.meta.output_bound().unwrap_or_else(|| self.budgets.default_output_tokens())
        };
        let key = ctx.key.clone();
        let may_use = move |m: &str| key.as_ref().is_none_or(|k| k.may_use(m));
        let admitted = self.budgets.admit(&ctx.guard.event, route.price_model(), input, output, &may_use)?;
        // A call no budget or limit covers has nothing to settle: no observer, no per-event bookkeeping.
        if !admitted.admission.is_empty() {
            ctx.priced.push(Arc::new(BudgetSettle::new(admitted.admission)));
        }
        let Some((cheaper, budget)) = admitted.downgrade else { return Ok(Admit::Continue) };
        let route = self.routes.get(&cheaper).ok_or_else(|| GatewayError::UnknownModel(cheaper.clone()))?;
        ctx.body = with_model_for(ctx.endpoint, &ctx.headers, &ctx.body, &cheaper)?;
        tracing::debug!(%budget, from = %ctx.model, to = %cheaper, "budget downgrade");
        let ev = &mut ctx.guard.event;
        ev.served_model = cheaper.as_str().into();
        ev.fallback_from = std::mem::replace(&mut ctx.model, cheaper).into();
        ev.routing_strategy = "budget_downgrade".into();
        ctx.route = Some(route.clone());
        Ok(Admit::Continue)
    }
}

impl AdmissionStep for BudgetStep {
    fn name(&self) -> &'static str {
        "budget"
    }

    fn admit<'a>(&'a self, ctx: &'a mut CallCtx) -> AdmitFuture<'a> {
        AdmitFuture::ready(self.check(ctx))
    }
}

/// Sums the cost and tokens of a request's attempts as metering prices them; settles the reservation
/// when the request's last event has been priced (the last reference goes).
#[derive(Debug)]
pub struct BudgetSettle {
    admission: Mutex<Option<Admission>>,
    /// (event id, cost) of each priced attempt: the ledger counts a request's events by id.
    events: Mutex<Vec<(String, u64)>>,
    tokens: AtomicU64,
}

impl BudgetSettle {
    pub fn new(admission: Admission) -> BudgetSettle {
        BudgetSettle {
            admission: Mutex::new(Some(admission)),
            events: Mutex::new(Vec::new()),
            tokens: AtomicU64::new(0),
        }
    }
}

impl PricedObserver for BudgetSettle {
    fn priced(&self, ev: &CallEvent) {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push((ev.event_id.clone(), ev.cost_nanousd));
        self.tokens.fetch_add(ev.input_tokens.saturating_add(ev.output_tokens), Ordering::Relaxed);
    }
}

impl Drop for BudgetSettle {
    fn drop(&mut self) {
        let admission = self.admission.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(a) = admission {
            let events = std::mem::take(self.events.get_mut().unwrap_or_else(|p| p.into_inner()));
            a.settle(&events, *self.tokens.get_mut());
        }
    }
}
