//! Reading call events that arrive from other processes (gateways shipping to a collector): the
//! `CallEvent` struct fills absent fields with defaults, which for money would mean a silent $0, so the
//! wire form is first checked for its schema version and the fields no event can lack.

use crate::event::{CallEvent, SCHEMA_VERSION};
use serde::Deserialize;

/// Fields every shipped event carries (the gateway serialises all of them).
const REQUIRED: &[&str] = &[
    "schema_version",
    "event_id",
    "ts_start_us",
    "outcome",
    "input_tokens",
    "output_tokens",
    "usage_source",
    "cost_nanousd",
    "price_id",
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireEventError {
    #[error("not a call event: {0}")]
    Json(String),
    #[error("schema_version {found} is not one this collector reads (1..={SCHEMA_VERSION})")]
    Version { found: u64 },
    #[error("required field `{0}` is missing")]
    Missing(&'static str),
}

/// Parses one JSON event, refusing unknown schema versions and events that lack a required field.
pub fn parse_wire_event(line: &[u8]) -> Result<CallEvent, WireEventError> {
    // Only the top-level keys are looked at; values are skipped without being built.
    #[derive(Deserialize)]
    struct Keys(std::collections::HashMap<String, serde::de::IgnoredAny>);
    #[derive(Deserialize)]
    struct Version {
        schema_version: Option<serde_json::Value>,
    }
    let keys: Keys = serde_json::from_slice(line).map_err(|e| WireEventError::Json(e.to_string()))?;
    if let Some(missing) = REQUIRED.iter().find(|k| !keys.0.contains_key(**k)) {
        return Err(WireEventError::Missing(missing));
    }
    let v: Version = serde_json::from_slice(line).map_err(|e| WireEventError::Json(e.to_string()))?;
    let found = v.schema_version.and_then(|v| v.as_u64()).unwrap_or(0);
    if found == 0 || found > u64::from(SCHEMA_VERSION) {
        return Err(WireEventError::Version { found });
    }
    serde_json::from_slice(line).map_err(|e| WireEventError::Json(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_version_and_required_fields() {
        let full =
            serde_json::to_vec(&CallEvent { schema_version: SCHEMA_VERSION, cost_nanousd: 42, ..Default::default() })
                .unwrap();
        assert_eq!(parse_wire_event(&full).unwrap().cost_nanousd, 42);
        let mut v: serde_json::Value = serde_json::from_slice(&full).unwrap();
        v.as_object_mut().unwrap().remove("cost_nanousd");
        let e = parse_wire_event(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(e, WireEventError::Missing("cost_nanousd"));
        let mut v: serde_json::Value = serde_json::from_slice(&full).unwrap();
        v["schema_version"] = 99.into();
        assert_eq!(parse_wire_event(v.to_string().as_bytes()).unwrap_err(), WireEventError::Version { found: 99 });
        v["schema_version"] = 0.into();
        assert_eq!(parse_wire_event(v.to_string().as_bytes()).unwrap_err(), WireEventError::Version { found: 0 });
        assert!(matches!(parse_wire_event(b"{\"event_id\":"), Err(WireEventError::Json(_))));
    }
}
