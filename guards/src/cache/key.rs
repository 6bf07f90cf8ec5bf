//! Cache keys: tenant + client API + model + the request fields that change the answer, in a canonical
//! form (object keys sorted, no insignificant whitespace), hashed with SHA-256. Fields that only label the
//! call (`user`, `metadata`, `store`, …) are left out, so two clients that differ only in those share an
//! entry. A sampled request (`temperature` above 0, or absent: the providers' default is 1) is cached only
//! when the policy allows it: its answer is meant to vary.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// SHA-256 of the canonical key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// What may be cached.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyPolicy {
    /// Cache requests whose `temperature` is above 0 or absent.
    pub sampled: bool,
}

/// Why a request is not cacheable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uncacheable {
    /// `temperature` > 0 or absent, and the policy does not allow sampled requests.
    Sampled,
    /// `n` > 1 asks for several different answers.
    SeveralChoices,
    /// The body is not a JSON object.
    NotAnObject,
}

/// Fields that label a call without changing its answer.
const IGNORED: &[&str] = &["user", "metadata", "store", "safety_identifier", "prompt_cache_key", "service_tier"];

/// Key version: bump when the material changes, so that old entries stop matching.
const VERSION: &[u8] = b"tollgate-cache-v1";

pub fn cache_key(
    tenant: &str,
    client_api: &str,
    endpoint: &str,
    model: &str,
    body: &Value,
    policy: KeyPolicy,
) -> Result<CacheKey, Uncacheable> {
    let obj = body.as_object().ok_or(Uncacheable::NotAnObject)?;
    if endpoint != "embeddings" {
        let t = obj.get("temperature").and_then(Value::as_f64);
        if !policy.sampled && t.is_none_or(|t| t > 0.0) {
            return Err(Uncacheable::Sampled);
        }
        if obj.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
            return Err(Uncacheable::SeveralChoices);
        }
    }
    let mut h = Sha256::new();
    for part in [VERSION, tenant.as_bytes(), client_api.as_bytes(), endpoint.as_bytes(), model.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let mut canon = Vec::with_capacity(256);
    let mut keys: Vec<&String> = obj.keys().filter(|k| !IGNORED.contains(&k.as_str()) && *k != "model").collect();
    keys.sort();
    canon.push(b'{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            canon.push(b',');
        }
        canonical(&Value::String(k.clone()), &mut canon);
        canon.push(b':');
        canonical(&obj[k], &mut canon);
    }
    canon.push(b'}');
    h.update(&canon);
    Ok(CacheKey(h.finalize().into()))
}

/// JSON with object keys sorted at every level, whatever order the parser kept.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(&Value::String(k.clone()), out);
                out.push(b':');
                canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        // 0 and 0.0 (and 1e0) are the same value to a provider.
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                out.extend_from_slice((f as i64).to_string().as_bytes())
            }
            _ => out.extend_from_slice(n.to_string().as_bytes()),
        },
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(tenant: &str, body: Value) -> Result<CacheKey, Uncacheable> {
        cache_key(tenant, "openai", "chat", "gpt-4o", &body, KeyPolicy::default())
    }

    #[test]
    fn same_answer_same_key() {
        let a = key(
            "t",
            json!({"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": "hi"}], "user": "u1"}),
        );
        let b: Value = serde_json::from_str(
            r#"{ "messages" : [ {"content":"hi","role":"user"} ],"temperature":0.0, "metadata": {"x": 1}, "model":"gpt-4o"}"#,
        )
        .unwrap();
        assert_eq!(a, key("t", b));
        // Another tenant, another prompt, another stream flag, another model: another key.
        assert_ne!(a, key("u", json!({"temperature": 0, "messages": [{"role": "user", "content": "hi"}]})));
        assert_ne!(a, key("t", json!({"temperature": 0, "messages": [{"role": "user", "content": "hi!"}]})));
        assert_ne!(
            a,
            key("t", json!({"temperature": 0, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        );
        let other_model = cache_key(
            "t",
            "openai",
            "chat",
            "gpt-4o-mini",
            &json!({"temperature": 0, "messages": [{"role": "user", "content": "hi"}]}),
            KeyPolicy::default(),
        );
        assert_ne!(Ok(a.unwrap()), other_model);
    }

    #[test]
    fn sampled_requests_need_the_policy() {
        let body = json!({"temperature": 0.7, "messages": []});
        assert_eq!(key("t", body.clone()), Err(Uncacheable::Sampled));
        assert_eq!(key("t", json!({"messages": []})), Err(Uncacheable::Sampled));
        assert!(cache_key("t", "openai", "chat", "m", &body, KeyPolicy { sampled: true }).is_ok());
        assert_eq!(key("t", json!({"temperature": 0, "n": 3})), Err(Uncacheable::SeveralChoices));
        assert!(cache_key("t", "openai", "embeddings", "m", &json!({"input": "x"}), KeyPolicy::default()).is_ok());
    }
}
