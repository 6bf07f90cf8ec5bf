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

/// Where each of [`REQUIRED`] stands in the [`Positional`](crate::Positional) array (declaration order):
/// an array that ends before one of them lacks it.
const REQUIRED_AT: [usize; 9] = [0, 1, 3, 24, 27, 28, 32, 33, 34];

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
///
/// The object form takes two passes over the line: one that only looks at the top-level keys (no key or
/// value is built, except `schema_version`'s), then serde's derived parse of the event. The positional
/// form (what gateways ship) takes one: its length says which fields it has.
pub fn parse_wire_event(line: &[u8]) -> Result<CallEvent, WireEventError> {
    if line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return parse_positional(line);
    }
    let found: Presence = serde_json::from_slice(line).map_err(|e| WireEventError::Json(e.to_string()))?;
    if let Some(missing) = REQUIRED.iter().enumerate().find(|(i, _)| found.seen & (1 << i) == 0) {
        return Err(WireEventError::Missing(missing.1));
    }
    let version = found.version.unwrap_or(0);
    if version == 0 || version > u64::from(SCHEMA_VERSION) {
        return Err(WireEventError::Version { found: version });
    }
    serde_json::from_slice(line).map_err(|e| WireEventError::Json(e.to_string()))
}

fn parse_positional(line: &[u8]) -> Result<CallEvent, WireEventError> {
    struct Seq;
    impl<'de> serde::de::Visitor<'de> for Seq {
        type Value = (CallEvent, usize);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a call event as a JSON array")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<(CallEvent, usize), A::Error> {
            crate::event::positional_seq(seq)
        }
    }
    let json = |e: serde_json::Error| WireEventError::Json(e.to_string());
    let mut de = serde_json::Deserializer::from_slice(line);
    let (ev, n) = serde::Deserializer::deserialize_seq(&mut de, Seq).map_err(json)?;
    de.end().map_err(json)?;
    if let Some(i) = REQUIRED_AT.iter().position(|at| *at >= n) {
        return Err(WireEventError::Missing(REQUIRED[i]));
    }
    if ev.schema_version == 0 || ev.schema_version > SCHEMA_VERSION {
        return Err(WireEventError::Version { found: u64::from(ev.schema_version) });
    }
    Ok(ev)
}

/// The first pass's answer: which of [`REQUIRED`] are there (bit `i` for `REQUIRED[i]`), and the schema
/// version when it is an unsigned integer.
struct Presence {
    seen: u32,
    version: Option<u64>,
}

impl<'de> Deserialize<'de> for Presence {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Presence, D::Error> {
        d.deserialize_map(PresenceVisitor)
    }
}

struct PresenceVisitor;

impl<'de> serde::de::Visitor<'de> for PresenceVisitor {
    type Value = Presence;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Presence, A::Error> {
        let mut p = Presence { seen: 0, version: None };
        while let Some(key) = map.next_key_seed(RequiredKey)? {
            match key {
                Some(i) if REQUIRED[i] == "schema_version" => {
                    p.seen |= 1 << i;
                    p.version = map.next_value::<serde_json::Value>()?.as_u64();
                }
                Some(i) => {
                    p.seen |= 1 << i;
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(p)
    }
}

/// A key read as its index in [`REQUIRED`], without building it.
struct RequiredKey;

impl<'de> serde::de::DeserializeSeed<'de> for RequiredKey {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RequiredKey {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(REQUIRED.iter().position(|k| *k == v))
    }
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

    #[test]
    fn positional_lines_are_checked_like_objects() {
        let full = CallEvent {
            schema_version: SCHEMA_VERSION,
            event_id: "e1".into(),
            ts_start_us: 3,
            outcome: crate::Outcome::Timeout,
            input_tokens: 27,
            output_tokens: 28,
            usage_source: crate::UsageSource::EstimatedApprox,
            cost_nanousd: 42,
            price_id: "p34".into(),
            team: "t".into(),
            ..Default::default()
        };
        let object: serde_json::Value = serde_json::to_value(&full).unwrap();
        let values: Vec<serde_json::Value> =
            serde_json::to_value(crate::Positional(&full)).unwrap().as_array().unwrap().clone();
        // Each required field is where REQUIRED_AT says.
        for (name, at) in REQUIRED.iter().zip(REQUIRED_AT) {
            assert_eq!(values[at], object[*name], "{name} at {at}");
            assert_ne!(values[at], serde_json::to_value(CallEvent::default()).unwrap()[*name], "{name}");
        }
        let line = |v: &[serde_json::Value]| serde_json::to_vec(v).unwrap();
        assert_eq!(parse_wire_event(&line(&values)).unwrap(), full);
        assert_eq!(parse_wire_event(&[b"  ".as_slice(), &line(&values)].concat()).unwrap(), full);
        // Cut before each required field: that field is missing (the first one the array lacks).
        for (name, at) in REQUIRED.iter().zip(REQUIRED_AT) {
            assert_eq!(parse_wire_event(&line(&values[..at])).unwrap_err(), WireEventError::Missing(name));
        }
        // Cut after the last required field (all of `full`'s later fields are defaults): read as an older
        // release's shorter array.
        assert_eq!(parse_wire_event(&line(&values[..35])).unwrap(), full);
        // A later release's longer array: read up to what this build knows, when its version is known.
        let mut longer = values.clone();
        longer.push(serde_json::json!({"new": 1}));
        assert_eq!(parse_wire_event(&line(&longer)).unwrap(), full);
        for (version, err) in [(0, Some(0)), (99, Some(99)), (1, None)] {
            let mut v = values.clone();
            v[0] = version.into();
            match err {
                Some(found) => assert_eq!(parse_wire_event(&line(&v)).unwrap_err(), WireEventError::Version { found }),
                None => assert_eq!(parse_wire_event(&line(&v)).unwrap().schema_version, 1),
            }
        }
        for bad in ["[", "[1,", "[\"x\"]", "[1] x", "[-1]"] {
            assert!(matches!(parse_wire_event(bad.as_bytes()), Err(WireEventError::Json(_))), "{bad}");
        }
        assert_eq!(parse_wire_event(b"[]").unwrap_err(), WireEventError::Missing("schema_version"));
    }

    /// The three-pass form this replaced (every key into a map, the version, then the event), kept as the
    /// reference the one-pass key scan must agree with.
    fn reference(line: &[u8]) -> Result<CallEvent, WireEventError> {
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

    fn same(line: &str) {
        let (got, want) = (parse_wire_event(line.as_bytes()), reference(line.as_bytes()));
        match (&got, &want) {
            (Ok(a), Ok(b)) => assert_eq!(serde_json::to_value(a).unwrap(), serde_json::to_value(b).unwrap(), "{line}"),
            // Error texts from serde may word the first pass's complaint differently; the kind must agree.
            (Err(WireEventError::Json(_)), Err(WireEventError::Json(_))) => {}
            _ => assert_eq!(got, want, "{line}"),
        }
    }

    #[test]
    fn agrees_with_the_three_pass_reference() {
        let full =
            CallEvent { schema_version: SCHEMA_VERSION, cost_nanousd: 42, event_id: "e1".into(), ..Default::default() };
        let base: serde_json::Value = serde_json::to_value(&full).unwrap();
        same(&base.to_string());
        // Each field removed in turn, required or not.
        for k in base.as_object().unwrap().keys() {
            let mut v = base.clone();
            v.as_object_mut().unwrap().remove(k);
            same(&v.to_string());
        }
        // Versions of every shape.
        for version in ["null", "0", "1", "99", "-1", "1.5", "\"1\"", "[]", "{}"] {
            let line = base.to_string().replacen(
                &format!("\"schema_version\":{SCHEMA_VERSION}"),
                &format!("\"schema_version\":{version}"),
                1,
            );
            assert_ne!(line, base.to_string());
            same(&line);
        }
        // An escaped key is the same key; an unknown field is ignored; a repeated one is refused by the event.
        let text = base.to_string();
        let escaped = text.replacen("\"cost_nanousd\"", "\"cost\\u005fnanousd\"", 1);
        assert_ne!(escaped, text);
        assert_eq!(parse_wire_event(escaped.as_bytes()).unwrap().cost_nanousd, 42);
        same(&escaped);
        same(&text.replacen('{', "{\"not_a_field\":[1,{\"a\":null}],", 1));
        same(&text.replacen('{', "{\"cost_nanousd\":7,", 1));
        // Not an object (an array is the positional form, tested above), broken, trailing bytes.
        for line in ["null", "1", "\"x\"", "{", "{}", &format!("{text} x"), &text[..text.len() - 1]] {
            same(line);
        }
    }
}
