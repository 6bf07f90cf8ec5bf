//! Admission step: masks secrets and personal data in the request before it is forwarded (or refuses it
//! in `block` mode), and plans the masking of the response. Logic: `Guards::redact_step`.

use super::{AdmissionStep, Admit, AdmitFuture};
use crate::call::CallCtx;
use crate::guards::Guards;
use std::sync::Arc;

pub struct RedactStep(pub Arc<Guards>);

impl AdmissionStep for RedactStep {
    fn name(&self) -> &'static str {
        "redact"
    }

    fn admit<'a>(&'a self, ctx: &'a mut CallCtx) -> AdmitFuture<'a> {
        AdmitFuture::ready(self.0.redact_step(ctx).map(|()| Admit::Continue))
    }
}
