//! Virtual keys: looked up by the SHA-256 of what the client sends, so neither the config nor the logs
//! ever hold a usable key. Each key carries who pays for its calls.

use crate::config::ValidatedKey;
use crate::error::GatewayError;
use http::HeaderMap;
use sha2::Digest;
use std::collections::HashMap;
use std::sync::Arc;
use tollgate_events::CallEvent;

pub struct KeyStore {
    by_digest: HashMap<[u8; 32], Arc<ValidatedKey>>,
}

impl KeyStore {
    pub fn new(keys: &[ValidatedKey]) -> KeyStore {
        KeyStore { by_digest: keys.iter().map(|k| (k.digest, Arc::new(k.clone()))).collect() }
    }

    /// Reads `Authorization: Bearer <key>`, or `x-api-key` / `api-key` as Anthropic and Azure SDKs send.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<ValidatedKey>, GatewayError> {
        let key = presented_key(headers).ok_or(GatewayError::MissingKey)?;
        let digest: [u8; 32] = sha2::Sha256::digest(key.as_bytes()).into();
        self.by_digest.get(&digest).cloned().ok_or(GatewayError::InvalidKey)
    }
}

/// The key a client presented: `Authorization: Bearer`, `x-api-key` or `api-key`.
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

impl ValidatedKey {
    pub fn may_use(&self, model: &str) -> bool {
        self.cfg.models.is_empty() || self.cfg.models.iter().any(|m| m == model)
    }

    /// Fills the attribution fields, applying `x-tollgate-*` overrides when the key allows them.
    pub fn attribute(&self, ev: &mut CallEvent, headers: &HeaderMap) {
        let c = &self.cfg;
        ev.api_key_id = c.id.as_str().into();
        ev.tenant = c.tenant.as_str().into();
        ev.department = c.department.as_str().into();
        ev.team = c.team.as_str().into();
        ev.project = c.project.as_str().into();
        ev.user = c.user.as_str().into();
        ev.tags.clone_from(&c.tags);
        if !c.allow_attribution_headers {
            return;
        }
        let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
        if let Some(v) = h("x-tollgate-project") {
            ev.project = v.into();
        }
        if let Some(v) = h("x-tollgate-user") {
            ev.user = v.into();
        }
        if let Some(v) = h("x-tollgate-tags") {
            for pair in v.split(',') {
                if let Some((k, val)) = pair.split_once('=') {
                    ev.tags.insert(k.trim().to_string(), val.trim().to_string());
                }
            }
        }
    }
}
