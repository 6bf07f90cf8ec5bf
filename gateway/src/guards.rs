//! The admission guards and the response cache as the request path uses them: context-window limit,
//! prompt-injection rules (and classifier hooks), request redaction, cache lookup (each an admission step
//! in `admission/`, which calls in here), and the [`ResponsePlan`] that `respond` turns into a filter on
//! the client's response body that masks secrets and fills the cache. The logic lives in
//! `tollgate-guards`; this file turns its answers into call-event fields and errors in the client's shape.

use crate::admission::Admit;
use crate::call::CallCtx;
use crate::error::GatewayError;
use crate::finish::CallGuard;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use tollgate_events::{CallEvent, ClientApi, Outcome, PriceTable, UsageSource};
use tollgate_guards::cache::{CachePlan, CachedResponse, ResponseCache};
use tollgate_guards::classifier::{Classification, Classifier, OnError};
use tollgate_guards::config::{validate_guards, CacheConfig, ContextConfig, GuardConfig, RedactMode, RedactionConfig};
use tollgate_guards::context::{ContextCheck, ContextLimiter};
use tollgate_guards::extract::segments;
use tollgate_guards::metrics::GuardMetrics;
use tollgate_guards::redact::{redact_json, Counts, Kind, Redactor, SseFormat, SseRedactor};
use tollgate_guards::rules::{Action, Hit, RuleEngine};
use tollgate_guards::GuardError;
use tracing::{info, warn};

/// The config sections of this feature, as they appear at the top level of `tollgate.toml`.
#[derive(Debug, Clone, Default)]
pub struct GuardsConfig {
    pub guards: Vec<GuardConfig>,
    pub redaction: RedactionConfig,
    pub cache: Option<CacheConfig>,
    pub context: ContextConfig,
}

impl GuardsConfig {
    /// Pure checks (no I/O): rules compile, values are in range.
    pub fn validate(&self) -> Result<(), GuardError> {
        validate_guards(&self.guards)?;
        if let Some(c) = &self.cache {
            c.validate()?;
        }
        self.context.catalog()?;
        if self.redaction.responses == RedactMode::Block {
            return Err(GuardError::Config {
                key: "redaction.responses".into(),
                message: "responses can be `off` or `redact`".into(),
            });
        }
        Ok(())
    }
}

pub struct Guards {
    pub metrics: Arc<GuardMetrics>,
    rules: Option<RuleEngine>,
    /// (index of the guard in `rules`, its classifier).
    classifiers:
        Vec<(usize, Classifier<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>>)>,
    context: Option<ContextLimiter>,
    redactor: Option<Arc<Redactor>>,
    redaction: RedactionConfig,
    pub cache: Option<Arc<ResponseCache>>,
}

/// Which admission steps have something configured.
pub struct Configured {
    pub context: bool,
    pub injection: bool,
    pub redaction: bool,
    pub cache: bool,
}

impl Guards {
    /// Which of the guards' admission steps can act (the others return at once for every call).
    pub fn configured(&self) -> Configured {
        Configured {
            context: self.context.is_some(),
            injection: self.rules.is_some(),
            redaction: self.redactor.is_some(),
            cache: self.cache.is_some(),
        }
    }

    /// No guard, no cache, no context limit.
    pub fn disabled() -> Guards {
        Guards {
            metrics: Arc::new(GuardMetrics::default()),
            rules: None,
            classifiers: Vec::new(),
            context: None,
            redactor: None,
            redaction: RedactionConfig::default(),
            cache: None,
        }
    }

    /// Builds everything and opens the cache store (connects to Redis).
    pub async fn start(cfg: &GuardsConfig) -> Result<Arc<Guards>, GuardError> {
        cfg.validate()?;
        let client = crate::http_client::http_client(std::time::Duration::from_secs(5));
        let metrics = Arc::new(GuardMetrics::default());
        let rules = if cfg.guards.is_empty() { None } else { Some(validate_guards(&cfg.guards)?) };
        let mut classifiers = Vec::new();
        for (i, g) in cfg.guards.iter().enumerate() {
            if let Some(c) = &g.classifier {
                classifiers.push((i, Classifier::new(c.clone(), client.clone(), &format!("guards[{i}].classifier"))?));
            }
        }
        let context = cfg
            .context
            .enabled
            .then(|| cfg.context.catalog().map(|c| ContextLimiter::new(c, cfg.context.policies.clone())))
            .transpose()?;
        let redactor = if cfg.redaction.requests != RedactMode::Off || cfg.redaction.responses != RedactMode::Off {
            let kinds = if cfg.redaction.kinds.is_empty() { Kind::ALL.to_vec() } else { cfg.redaction.kinds.clone() };
            Some(Redactor::new(&kinds)?)
        } else {
            None
        };
        let cache = match &cfg.cache {
            Some(c) => {
                let rc = ResponseCache::start(c.clone(), metrics.clone()).await?;
                info!(backend = rc.backend(), models = ?c.models, "response cache on");
                Some(Arc::new(rc))
            }
            None => None,
        };
        Ok(Arc::new(Guards { metrics, rules, classifiers, context, redactor, redaction: cfg.redaction.clone(), cache }))
    }

    /// Whether any step needs the request body parsed.
    pub fn active(&self) -> bool {
        self.rules.is_some() || self.context.is_some() || self.redactor.is_some() || self.cache.is_some()
    }

    fn redaction_applies(&self, key_id: &str, model: &str) -> bool {
        let r = &self.redaction;
        (r.keys.is_empty() || r.keys.iter().any(|k| k == key_id))
            && (r.models.is_empty() || r.models.iter().any(|m| m == model))
    }

    /// Context-window limit: refuses a prompt that cannot fit (the count used goes in the event's tags as
    /// `context_tokens`; its token columns stay 0, as for every call refused before an upstream).
    pub fn context(
        &self,
        ev: &mut CallEvent,
        model: &str,
        body: &Value,
        body_len: usize,
        max_output: Option<u64>,
    ) -> Result<(), GatewayError> {
        let Some(limiter) = &self.context else { return Ok(()) };
        match limiter.check(&ev.api_key_id, &ev.requested_model, model, body, body_len, max_output) {
            ContextCheck::Fits { counted: None } => Ok(()),
            ContextCheck::Fits { counted: Some(n) } => {
                GuardMetrics::inc(&self.metrics.context_counted);
                ev.tags.insert("context_tokens".into(), n.to_string());
                Ok(())
            }
            ContextCheck::TooLong(t) => {
                GuardMetrics::inc(&self.metrics.context_counted);
                GuardMetrics::inc(&self.metrics.context_rejected);
                ev.tags.insert("context_tokens".into(), t.tokens.to_string());
                ev.usage_source = UsageSource::None;
                Err(GatewayError::ContextLengthExceeded(t.message(model)))
            }
        }
    }

    /// Prompt-injection rules, then classifier hooks. A block refuses the call; a flag is recorded in the
    /// event's `guard`; a log is a log line. Every match is counted.
    pub async fn injection(&self, ev: &mut CallEvent, body: &Value) -> Result<(), GatewayError> {
        let Some(rules) = &self.rules else { return Ok(()) };
        let mut verdict = rules.check(body, &ev.api_key_id, &ev.requested_model);
        for (gi, c) in &self.classifiers {
            let g = &rules.guards()[*gi];
            if !g.applies(&ev.api_key_id, &ev.requested_model) {
                continue;
            }
            let texts: Vec<&str> =
                segments(body).into_iter().filter(|s| g.roles.contains(s.role)).map(|s| s.text).collect();
            if texts.is_empty() {
                continue;
            }
            GuardMetrics::inc(&self.metrics.classifier_calls);
            let rule = match c.classify(&texts).await {
                Classification::Clean => continue,
                Classification::Flagged(cats) => format!("classifier.{}", cats.join("+")),
                Classification::Unavailable(why) => {
                    GuardMetrics::inc(&self.metrics.classifier_errors);
                    warn!(guard = %g.name, reason = %why, on_error = ?c.on_error(), "classifier unavailable");
                    match c.on_error() {
                        OnError::Allow => continue,
                        OnError::Block => "classifier.unavailable".to_string(),
                    }
                }
            };
            verdict.hits.push(Hit {
                guard: g.name.clone(),
                rule,
                action: g.action,
                role: tollgate_guards::extract::Role::User,
            });
        }
        for h in &verdict.hits {
            self.metrics.matched(&h.guard, &h.rule, h.action);
            if h.action == Action::Log {
                info!(guard = %h.guard, rule = %h.rule, role = h.role.as_str(), request_id = %ev.request_id, "guard rule matched");
            }
        }
        match verdict.decisive() {
            Some(h) if h.action == Action::Block => {
                ev.guard = h.label().into();
                Err(GatewayError::GuardBlocked { guard: h.guard.clone(), rule: h.rule.clone() })
            }
            Some(h) if h.action == Action::Flag => {
                ev.guard = h.label().into();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Request redaction: masks secrets and PII in place (`redact`) or refuses the call (`block`).
    /// Returns whether the body changed. Counts go in the event's tags (`redacted_request = "email:1"`).
    pub fn redact_request(&self, ev: &mut CallEvent, body: &mut Value) -> Result<bool, GatewayError> {
        let Some(r) = &self.redactor else { return Ok(false) };
        if self.redaction.requests == RedactMode::Off || !self.redaction_applies(&ev.api_key_id, &ev.requested_model) {
            return Ok(false);
        }
        let mut probe = body.clone();
        let counts = redact_json(r, &mut probe);
        if counts.total() == 0 {
            return Ok(false);
        }
        ev.tags.insert("redacted_request".into(), counts.summary());
        self.metrics.redacted("request", &counts);
        if self.redaction.requests == RedactMode::Block {
            GuardMetrics::inc(&self.metrics.requests_blocked_by_redaction);
            ev.guard = "redaction:block".into();
            let kinds: Vec<&str> = counts.iter().map(|(k, _)| k.as_str()).collect();
            return Err(GatewayError::SensitiveData(kinds.join(", ")));
        }
        *body = probe;
        Ok(true)
    }

    /// The cache plan for this request and, when there is one to look up, the stored answer.
    pub async fn cache_lookup(
        &self,
        headers: &HeaderMap,
        ev: &CallEvent,
        model: &str,
        body: &Value,
    ) -> (Option<CachePlan>, Option<Arc<CachedResponse>>) {
        let Some(cache) = &self.cache else { return (None, None) };
        let Some(plan) = cache.plan(headers, &ev.tenant, ev.client_api.as_str(), ev.endpoint.as_str(), model, body)
        else {
            return (None, None);
        };
        let hit = if plan.lookup { cache.get(&plan.key).await } else { None };
        (Some(plan), hit)
    }

    /// Answers a call from the cache: the stored bytes, and an event with `cache_hit`, no tokens, no cost
    /// and `saved_nanousd` = the stored usage priced as the call itself would be now (same model, same
    /// price table and rules).
    pub fn hit_response(
        &self,
        guard: &mut CallGuard,
        hit: &CachedResponse,
        rid: &str,
        prices: &PriceTable,
    ) -> Response {
        let mut shadow = CallEvent {
            served_model: hit.served_model.as_str().into(),
            requested_model: guard.event.requested_model.clone(),
            upstream: hit.upstream.as_str().into(),
            ts_start_us: guard.event.ts_start_us,
            input_tokens: hit.input_tokens,
            output_tokens: hit.output_tokens,
            cached_input_tokens: hit.cached_input_tokens,
            cache_write_tokens: hit.cache_write_tokens,
            reasoning_tokens: hit.reasoning_tokens,
            ..Default::default()
        };
        prices.price_event(&mut shadow, Default::default(), 0);
        let saved = shadow.cost_nanousd;
        self.metrics.cache_saved_nanousd.fetch_add(saved, std::sync::atomic::Ordering::Relaxed);
        let ev = &mut guard.event;
        ev.cache_hit = true;
        ev.saved_nanousd = saved;
        ev.served_model = hit.served_model.as_str().into();
        ev.provider = hit.provider.as_str().into();
        ev.upstream = hit.upstream.as_str().into();
        ev.finish_reason = hit.finish_reason.as_str().into();
        ev.usage_source = UsageSource::None;
        ev.response_bytes = hit.body.len() as u64;
        guard.mark_content();
        guard.finish(Outcome::Ok, hit.status);
        let mut r = Response::new(Body::from(hit.body.clone()));
        *r.status_mut() = StatusCode::from_u16(hit.status).unwrap_or(StatusCode::OK);
        let ct = HeaderValue::from_str(&hit.content_type).unwrap_or(HeaderValue::from_static("application/json"));
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
        if hit.stream {
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        r.headers_mut().insert("x-tollgate-cache", HeaderValue::from_static("hit"));
        crate::respond::with_request_id(r, rid)
    }

    /// The response-side work for this call, if any: redaction of the response, cache fill.
    fn response_plan(self: &Arc<Self>, ev: &CallEvent, cache: Option<CachePlan>) -> Option<Arc<ResponsePlan>> {
        let redact = self.redaction.responses == RedactMode::Redact
            && self.redactor.is_some()
            && self.redaction_applies(&ev.api_key_id, &ev.requested_model);
        if !redact && cache.is_none() {
            return None;
        }
        Some(Arc::new(ResponsePlan { guards: self.clone(), redact, cache }))
    }

    /// The context-window step.
    pub fn context_step(&self, ctx: &mut CallCtx) -> Result<(), GatewayError> {
        let Some(limiter) = self.context.as_ref().filter(|_| inspectable(ctx)) else { return Ok(()) };
        let len = ctx.body.len();
        let output = ctx.meta.output_bound();
        let served = ctx.route.as_ref().map(|r| r.price_model()).unwrap_or(&ctx.model);
        // Most prompts are far below every limit: then the body is not parsed for this step.
        if limiter.fits_unread(&ctx.guard.event.api_key_id, &ctx.guard.event.requested_model, served, len, output) {
            return Ok(());
        }
        let served = served.to_string();
        let body = parsed(&mut ctx.json, &ctx.body)?;
        self.context(&mut ctx.guard.event, &served, body, len, output)
    }

    /// The prompt-injection step.
    pub async fn injection_step(&self, ctx: &mut CallCtx) -> Result<(), GatewayError> {
        if self.rules.is_none() || !inspectable(ctx) {
            return Ok(());
        }
        let body = parsed(&mut ctx.json, &ctx.body)?;
        self.injection(&mut ctx.guard.event, body).await
    }

    /// The request-redaction step; also plans response redaction.
    pub fn redact_step(self: &Arc<Self>, ctx: &mut CallCtx) -> Result<(), GatewayError> {
        if self.redactor.is_none() || !inspectable(ctx) {
            return Ok(());
        }
        let body = parsed(&mut ctx.json, &ctx.body)?;
        if self.redact_request(&mut ctx.guard.event, body)? {
            ctx.body =
                serde_json::to_vec(body).map(Bytes::from).map_err(|e| GatewayError::InvalidBody(e.to_string()))?;
        }
        ctx.guard.response_plan = self.response_plan(&ctx.guard.event, None);
        Ok(())
    }

    /// The cache step: a hit answers the call here; otherwise the fill is planned.
    pub async fn cache_step(self: &Arc<Self>, ctx: &mut CallCtx) -> Result<Admit, GatewayError> {
        if self.cache.is_none() || !inspectable(ctx) {
            return Ok(Admit::Continue);
        }
        let prices = ctx.guard.meter().prices().current();
        let body = parsed(&mut ctx.json, &ctx.body)?;
        let (plan, hit) = self.cache_lookup(&ctx.headers, &ctx.guard.event, &ctx.model, body).await;
        if let Some(hit) = hit {
            return Ok(Admit::Answer(self.hit_response(&mut ctx.guard, &hit, &ctx.request_id, &prices)));
        }
        if plan.is_some() {
            ctx.guard.response_plan = self.response_plan(&ctx.guard.event, plan);
        }
        Ok(Admit::Continue)
    }
}

/// Whether the guards read this call's request: JSON bodies only; a `multipart/form-data` upload (audio
/// transcriptions and translations) has no text to check, redact or cache by.
fn inspectable(ctx: &CallCtx) -> bool {
    !crate::billable::glue::is_upload(ctx.endpoint)
}

/// The request body as JSON, parsed once for every step that reads it.
fn parsed<'a>(json: &'a mut Option<Value>, body: &Bytes) -> Result<&'a mut Value, GatewayError> {
    if json.is_none() {
        *json = Some(serde_json::from_slice(body).map_err(|e| GatewayError::InvalidBody(e.to_string()))?);
    }
    json.as_mut().ok_or_else(|| GatewayError::InvalidBody("expected a JSON body".into()))
}

/// What happens to the response of a call: masking (response redaction) and/or a cache fill.
pub struct ResponsePlan {
    guards: Arc<Guards>,
    redact: bool,
    cache: Option<CachePlan>,
}

impl ResponsePlan {
    /// `x-tollgate-cache` for an answer from upstream: `miss`, or `bypass` when the client asked for a
    /// fresh answer.
    pub fn cache_header(&self) -> Option<&'static str> {
        self.cache.map(|p| if p.lookup { "miss" } else { "bypass" })
    }

    /// The filter for the response body the client receives.
    pub fn filter(&self, ev: &CallEvent, stream: bool) -> Option<Box<dyn ClientFilter>> {
        let g = &self.guards;
        let redact = g.redactor.as_ref().filter(|_| self.redact).cloned().map(|r| {
            if stream {
                let fmt = match ev.client_api {
                    ClientApi::Openai => SseFormat::OpenAi,
                    ClientApi::Anthropic => SseFormat::Anthropic,
                };
                ResponseRedaction::Stream(Box::new(SseRedactor::new(r, fmt)))
            } else {
                ResponseRedaction::Json { r, buf: Vec::new() }
            }
        });
        let fill = match (&g.cache, self.cache) {
            (Some(c), Some(p)) if p.store => Some(CacheFill {
                max: c.max_entry_bytes(),
                cache: c.clone(),
                plan: p,
                buf: Vec::new(),
                over: false,
                content_type: if stream { "text/event-stream" } else { "application/json" }.to_string(),
            }),
            _ => None,
        };
        if redact.is_none() && fill.is_none() {
            return None;
        }
        Some(Box::new(GuardBodyFilter { redact, fill, stream, metrics: g.metrics.clone() }))
    }
}

/// Sees every byte the client gets from an upstream response, after translation.
pub trait ClientFilter: Send {
    /// Returns what to send now instead of `b`.
    fn on_chunk(&mut self, b: Bytes) -> Bytes;
    /// The upstream's body ended: returns the bytes still held; `guard` is the call's (usage known).
    fn on_end(&mut self, guard: &mut CallGuard) -> Bytes;
}

enum ResponseRedaction {
    Stream(Box<SseRedactor>),
    /// A JSON body is masked whole, once it is complete.
    Json {
        r: Arc<Redactor>,
        buf: Vec<u8>,
    },
}

struct CacheFill {
    cache: Arc<ResponseCache>,
    plan: CachePlan,
    buf: Vec<u8>,
    max: usize,
    /// Larger than the cache takes: no longer collected.
    over: bool,
    content_type: String,
}

struct GuardBodyFilter {
    redact: Option<ResponseRedaction>,
    fill: Option<CacheFill>,
    stream: bool,
    metrics: Arc<GuardMetrics>,
}

impl GuardBodyFilter {
    fn collect(&mut self, b: &[u8]) {
        if let Some(f) = &mut self.fill {
            if !f.over && f.buf.len() + b.len() <= f.max {
                f.buf.extend_from_slice(b);
            } else {
                f.over = true;
                f.buf = Vec::new();
            }
        }
    }
}

impl ClientFilter for GuardBodyFilter {
    fn on_chunk(&mut self, b: Bytes) -> Bytes {
        let out = match &mut self.redact {
            None => b,
            Some(ResponseRedaction::Stream(s)) => Bytes::from(s.push(&b)),
            Some(ResponseRedaction::Json { buf, .. }) => {
                buf.extend_from_slice(&b);
                Bytes::new()
            }
        };
        self.collect(&out);
        out
    }

    fn on_end(&mut self, guard: &mut CallGuard) -> Bytes {
        let mut counts = Counts::default();
        let tail = match &mut self.redact {
            None => Bytes::new(),
            Some(ResponseRedaction::Stream(s)) => {
                let t = Bytes::from(s.finish());
                counts = s.counts();
                t
            }
            Some(ResponseRedaction::Json { r, buf }) => {
                let raw = std::mem::take(buf);
                match serde_json::from_slice::<Value>(&raw) {
                    Ok(mut v) => {
                        counts = redact_json(r, &mut v);
                        if counts.total() > 0 {
                            Bytes::from(v.to_string())
                        } else {
                            Bytes::from(raw)
                        }
                    }
                    Err(_) => Bytes::from(raw),
                }
            }
        };
        if counts.total() > 0 {
            guard.event.tags.insert("redacted_response".into(), counts.summary());
            self.metrics.redacted("response", &counts);
        }
        self.collect(&tail);
        let ev = &guard.event;
        if let Some(f) = self.fill.take() {
            let complete = ev.status_code == 200
                && matches!(ev.outcome, Outcome::Ok)
                && guard.have_input_usage
                && guard.have_output_usage;
            if complete && !f.over {
                let stored_at_us = crate::finish::now_us();
                f.cache.put(
                    f.plan.key,
                    CachedResponse {
                        status: 200,
                        content_type: f.content_type,
                        stream: self.stream,
                        served_model: ev.served_model.to_string(),
                        provider: ev.provider.to_string(),
                        upstream: ev.upstream.to_string(),
                        finish_reason: ev.finish_reason.to_string(),
                        input_tokens: ev.input_tokens,
                        output_tokens: ev.output_tokens,
                        cached_input_tokens: ev.cached_input_tokens,
                        cache_write_tokens: ev.cache_write_tokens,
                        reasoning_tokens: ev.reasoning_tokens,
                        stored_at_us,
                        body: f.buf,
                    },
                );
            }
        }
        tail
    }
}
