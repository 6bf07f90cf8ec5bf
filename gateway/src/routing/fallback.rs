//! `fallback`: the targets in the order written; a failure before the first byte moves to the next.

use super::{Route, Strategy, Who};
use crate::config::RouteSpec;

pub struct FallbackStrategy;

impl FallbackStrategy {
    pub fn build(_spec: &RouteSpec) -> Box<dyn Strategy> {
        Box::new(FallbackStrategy)
    }
}

impl Strategy for FallbackStrategy {
    fn order(&self, route: &Route, _who: &Who<'_>, out: &mut Vec<usize>) {
        out.extend(0..route.targets.len());
    }
}
