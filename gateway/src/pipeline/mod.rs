//! The request pipeline: one [`CallCtx`] per request walks fixed phases, each a room of its own:
//! authenticate → parse → admission (a list of steps) → route → attempt (repeatable) → respond → finish.
//! [`Pipeline::run`] is the runner; the retry decision lives here and nowhere else: a failed attempt is
//! followed by another only when it failed before any byte reached the client, the failure may succeed
//! elsewhere or later, the route has attempts left, its retry budget allows one, and a `Retry-After`
//! on the same target is short enough to wait for.

pub mod attempt;
pub mod authenticate;
pub mod count_tokens;
pub mod parse;

use crate::admission::{AdmissionStep, Admit};
use crate::call::{CallCtx, RequestMeta};
use crate::error::GatewayError;
use crate::finish::{CallGuard, Meter};
use crate::keys::KeyStore;
use crate::respond;
use crate::routing::{Ask, Plan, RouteTable, Target, Who};
use attempt::{AttemptInput, Attempted, Failure};
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;
use std::sync::Arc;
use std::time::Duration;
use tollgate_events::{CallEvent, ClientApi, Endpoint};

/// The phases' configuration, built once at start.
pub struct Pipeline {
    pub keys: KeyStore,
    pub routes: Arc<RouteTable>,
    pub admission: Vec<Box<dyn AdmissionStep>>,
    pub meter: Meter,
    pub max_request_bytes: usize,
    /// `gateway.body_read_timeout_ms`.
    pub body_read_timeout_ms: u64,
    /// `gateway.max_sse_line_bytes`.
    pub max_sse_line_bytes: usize,
}

/// `finish_reason` of an attempt that another attempt followed (a failed attempt has no finish reason
/// of its own: nothing of it reached the client). Each request has exactly one event without it, its
/// last, which is what reports count as the request.
pub const RETRIED: &str = "retried";

/// Longest pause between two attempts on the same target when the provider gave no `Retry-After`.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

impl Pipeline {
    fn ctx(&self, headers: HeaderMap, endpoint: Endpoint, client: ClientApi) -> CallCtx {
        let request_id = parse::request_id(&headers);
        let guard = CallGuard::new(
            self.meter.clone(),
            CallEvent { endpoint, client_api: client, request_id: request_id.clone(), ..Default::default() },
        );
        CallCtx {
            endpoint,
            client,
            request_id,
            headers,
            key: None,
            body: Bytes::new(),
            meta: RequestMeta::default(),
            stream: false,
            model: String::new(),
            route: None,
            guard,
            priced: Vec::new(),
            json: None,
        }
    }

    /// authenticate → parse → admission. `Ok(Some(_))`: an admission step answered the call.
    async fn admit(&self, ctx: &mut CallCtx, body: Body, steps: bool) -> Result<Option<Response>, GatewayError> {
        authenticate::authenticate(&self.keys, ctx)?;
        parse::parse(ctx, body, self.max_request_bytes, self.body_read_timeout_ms, &self.routes).await?;
        if steps {
            for step in &self.admission {
                if let Admit::Answer(r) = step.admit(ctx).await? {
                    return Ok(Some(r));
                }
            }
        }
        Ok(None)
    }

    /// Runs a metered call (chat, completions, embeddings, messages) through every phase.
    pub async fn run(&self, req: Request, endpoint: Endpoint, client: ClientApi) -> Response {
        let (parts, body) = req.into_parts();
        let mut ctx = self.ctx(parts.headers, endpoint, client);
        let admitted = self.admit(&mut ctx, body, true).await;
        ctx.guard.priced.clone_from(&ctx.priced);
        match admitted {
            Ok(Some(answer)) => return answer,
            Ok(None) => {}
            Err(e) => return respond::fail(&mut ctx.guard, e, &ctx.request_id),
        }
        let Some(route) = ctx.route.clone() else {
            let e = GatewayError::UnknownModel(ctx.model.clone());
            return respond::fail(&mut ctx.guard, e, &ctx.request_id);
        };
        // Route.
        let ask = Ask {
            input_tokens: (ctx.body.len() as u64).div_ceil(4),
            output_bound: if endpoint == Endpoint::Embeddings { Some(0) } else { ctx.meta.output_bound() },
            stream: ctx.stream,
        };
        let who = Who { key_id: &ctx.guard.event.api_key_id, user: &ctx.guard.event.user, ask };
        let mut plan = Plan::new(route.clone(), &who);
        if ctx.guard.event.routing_strategy.is_empty() {
            ctx.guard.event.routing_strategy = route.label.as_str().into();
        }
        // A Responses request continuing a stored response goes to the upstream that holds it.
        let pinned = crate::billable::glue::pinned_target(ctx.endpoint, &ctx.body, &route);
        let Some(first) = pinned.or_else(|| plan.next_target()) else {
            return respond::fail(
                &mut ctx.guard,
                GatewayError::NoHealthyTarget(route.spec.model.clone()),
                &ctx.request_id,
            );
        };
        let CallCtx { endpoint, client, request_id, headers, body, meta, stream, model, guard, priced, .. } = ctx;
        // Later attempts start from the first one's event (attribution, request) with their own identity.
        let base = plan.has_more().then(|| guard.event.clone());
        let input = AttemptInput {
            endpoint,
            client,
            request_id: &request_id,
            headers: &headers,
            body: &body,
            meta: &meta,
            stream,
            body_model: &model,
            max_line: self.max_sse_line_bytes,
        };
        let response_plan = guard.response_plan.clone();
        let mut target = first;
        let wants_cost = guard.wants_cost;
        let mut guard = guard;
        loop {
            if target.observes_ends() {
                target.attempt_started();
                guard.ended.push(target.clone());
            }
            guard.event.predicted_cost_nanousd = route.predicted_cost(&target, &ask);
            let hold = plan.has_more();
            let mut failure = match attempt::attempt(&input, &target, guard, hold).await {
                Attempted::Answered(resp) => return resp,
                Attempted::Failed(f) => *f,
            };
            let retry = base.as_ref().and_then(|b| Some((b, self.retry(&mut plan, &failure)?)));
            let Some((base, (next, wait))) = retry else {
                return failure.respond(&request_id);
            };
            let from = failure.target.id.clone();
            // Marks the attempt as not the request's last, so reports count each request once.
            failure.guard.event.finish_reason = RETRIED.into();
            // The failed attempt's event is emitted here; nothing of it reached the client.
            drop(failure);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let mut ev = (**base).clone();
            ev.fallback_from = from.as_str().into();
            guard = CallGuard::new(self.meter.clone(), ev);
            guard.event.attempt = u16::try_from(plan.attempts).unwrap_or(u16::MAX);
            guard.priced.clone_from(&priced);
            guard.wants_cost = wants_cost;
            guard.response_plan.clone_from(&response_plan);
            target = next;
        }
    }

    /// Whether and where a failed attempt is retried, and after how long.
    fn retry(&self, plan: &mut Plan, f: &Failure) -> Option<(Arc<Target>, Duration)> {
        if !f.retryable || !plan.has_more() {
            return None;
        }
        let route = plan.route.clone();
        // Waiting only matters when the next attempt goes to the same target.
        let same = plan.peek().is_some_and(|t| Arc::ptr_eq(t, &f.target));
        let wait = if same {
            let backoff = Duration::from_millis(25 << plan.attempts.min(6)).min(MAX_BACKOFF);
            match f.retry_after {
                Some(ra) if ra > Duration::from_millis(route.spec.max_retry_wait_ms) => return None,
                Some(ra) => ra.max(backoff),
                None => backoff,
            }
        } else {
            Duration::ZERO
        };
        if !route.retry_budget.try_retry(std::time::Instant::now()) {
            tracing::debug!(route = %route.spec.model, "retry budget used up; no retry");
            return None;
        }
        let next = plan.next_target()?;
        Some((next, wait))
    }

    /// `/v1/messages/count_tokens` (not metered as a model call; no admission steps, no retries).
    pub async fn count_tokens(&self, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let mut ctx = self.ctx(parts.headers, Endpoint::Other, ClientApi::Anthropic);
        if let Err(e) = self.admit(&mut ctx, body, false).await {
            return respond::fail(&mut ctx.guard, e, &ctx.request_id);
        }
        count_tokens::count_tokens(ctx).await
    }
}
