//! Admission step: refuses a prompt that cannot fit its model's context window (or a key's or route's
//! `max_input_tokens` policy) before it is sent and billed: 400 `context_length_exceeded`, outcome
//! `rejected_context`. Logic: `Guards::context_step`.

use super::{AdmissionStep, Admit, AdmitFuture};
use crate::call::CallCtx;
use crate::guards::Guards;
use std::sync::Arc;

pub struct ContextLimitStep(pub Arc<Guards>);

impl AdmissionStep for ContextLimitStep {
    fn name(&self) -> &'static str {
        "context_limit"
    }

    fn admit<'a>(&'a self, ctx: &'a mut CallCtx) -> AdmitFuture<'a> {
        AdmitFuture::ready(self.0.context_step(ctx).map(|()| Admit::Continue))
    }
}
