//! Admission step: the exact-match response cache. A hit answers the call here (one event, `cache_hit`,
//! no cost, `saved_nanousd`); a miss plans the fill of the answer. Runs after budgets. Logic:
//! `Guards::cache_step`.

use super::{AdmissionStep, AdmitFuture};
use crate::call::CallCtx;
use crate::guards::Guards;
use std::sync::Arc;

pub struct CacheStep(pub Arc<Guards>);

impl AdmissionStep for CacheStep {
    fn name(&self) -> &'static str {
        "cache"
    }

    fn admit<'a>(&'a self, ctx: &'a mut CallCtx) -> AdmitFuture<'a> {
        AdmitFuture::boxed(self.0.cache_step(ctx))
    }
}
