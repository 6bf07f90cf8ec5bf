//! Admission step: the prompt-injection guards (`[[guards]]`: built-in rule families, own patterns,
//! classifier hooks). A block refuses the call (400 `blocked_by_guard`, outcome `rejected_guard`); a flag
//! is recorded in the event's `guard`. Logic: `Guards::injection_step`.

use super::{AdmissionStep, Admit, AdmitFuture};
use crate::call::CallCtx;
use crate::guards::Guards;
use std::sync::Arc;

pub struct InjectionStep(pub Arc<Guards>);

impl AdmissionStep for InjectionStep {
    fn name(&self) -> &'static str {
        "injection"
    }

    fn admit<'a>(&'a self, ctx: &'a mut CallCtx) -> AdmitFuture<'a> {
        AdmitFuture::boxed(async move { self.0.injection_step(ctx).await.map(|()| Admit::Continue) })
    }
}
