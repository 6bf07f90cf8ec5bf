//! The external classifier hook: for teams that run a model-based injection or moderation detector, the
//! request's texts are sent to an HTTP endpoint that speaks OpenAI's moderation API
//! (`POST {"model", "input": [texts]}` → `{"results": [{"flagged", "categories": {name: bool}}]}`), with a
//! timeout. When the classifier errs or is late, `on_error` decides: `allow` (fail open: the call goes on,
//! the failure is logged and counted) or `block` (fail closed).

use crate::GuardError;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::Client;
use serde::Deserialize;
use std::time::Duration;

/// What to do when the classifier cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Fail open: let the call through.
    #[default]
    Allow,
    /// Fail closed: refuse the call.
    Block,
}

/// `[guards.classifier]`: where and how to call the classifier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// The endpoint, e.g. `http://localhost:8000/v1/moderations`.
    pub url: String,
    /// Environment variable holding a bearer token for it, if it needs one.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// `model` sent in the request body.
    #[serde(default = "default_model")]
    pub model: String,
    /// Time allowed for the whole call.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// `allow` (fail open, the default) or `block` (fail closed).
    #[serde(default)]
    pub on_error: OnError,
    /// Categories that count; empty = the result's `flagged`.
    #[serde(default)]
    pub categories: Vec<String>,
}

fn default_model() -> String {
    "omni-moderation-latest".into()
}
fn default_timeout_ms() -> u64 {
    500
}

/// The classifier's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    Clean,
    /// Flagged; the categories that were true (or `flagged` when none is named).
    Flagged(Vec<String>),
    /// No usable answer (error, timeout, bad JSON): the message says why.
    Unavailable(String),
}

#[derive(Deserialize)]
struct ModerationResponse {
    results: Vec<ModerationResult>,
}

#[derive(Deserialize)]
struct ModerationResult {
    #[serde(default)]
    flagged: bool,
    #[serde(default)]
    categories: serde_json::Map<String, serde_json::Value>,
}

/// A ready client for one classifier endpoint; `C` is the HTTP connector (the gateway passes its TLS one).
pub struct Classifier<C> {
    cfg: ClassifierConfig,
    uri: Uri,
    auth: Option<HeaderValue>,
    client: Client<C, Full<Bytes>>,
}

impl<C: Connect + Clone + Send + Sync + 'static> Classifier<C> {
    /// `key` is the config path, for errors.
    pub fn new(cfg: ClassifierConfig, client: Client<C, Full<Bytes>>, key: &str) -> Result<Classifier<C>, GuardError> {
        let uri: Uri = cfg.url.parse().map_err(|_| GuardError::Config {
            key: format!("{key}.url"),
            message: format!("`{}` is not a URL", cfg.url),
        })?;
        if cfg.timeout_ms == 0 {
            return Err(GuardError::Config {
                key: format!("{key}.timeout_ms"),
                message: "must be greater than 0".into(),
            });
        }
        let auth = cfg
            .api_key_env
            .as_ref()
            .and_then(|v| std::env::var(v).ok())
            .and_then(|k| HeaderValue::from_str(&format!("Bearer {k}")).ok())
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        Ok(Classifier { cfg, uri, auth, client })
    }

    pub fn on_error(&self) -> OnError {
        self.cfg.on_error
    }

    /// Classifies the texts (one request, all of them as `input`).
    pub async fn classify(&self, texts: &[&str]) -> Classification {
        let body = serde_json::json!({"model": self.cfg.model, "input": texts}).to_string();
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(a) = &self.auth {
            req = req.header(header::AUTHORIZATION, a.clone());
        }
        let Ok(req) = req.body(Full::new(Bytes::from(body))) else {
            return Classification::Unavailable("request could not be built".into());
        };
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let bytes = http_body_util::Limited::new(resp.into_body(), 1 << 20)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("status {status}"));
            }
            serde_json::from_slice::<ModerationResponse>(&bytes).map_err(|e| format!("bad JSON: {e}"))
        };
        match tokio::time::timeout(Duration::from_millis(self.cfg.timeout_ms), call).await {
            Err(_) => Classification::Unavailable(format!("no answer within {} ms", self.cfg.timeout_ms)),
            Ok(Err(e)) => Classification::Unavailable(e),
            Ok(Ok(r)) => self.judge(&r),
        }
    }

    fn judge(&self, r: &ModerationResponse) -> Classification {
        let mut hits: Vec<String> = Vec::new();
        for res in &r.results {
            if self.cfg.categories.is_empty() {
                if res.flagged {
                    let mut named: Vec<String> = res
                        .categories
                        .iter()
                        .filter(|(_, v)| v.as_bool() == Some(true))
                        .map(|(k, _)| k.clone())
                        .collect();
                    if named.is_empty() {
                        named.push("flagged".into());
                    }
                    hits.extend(named);
                }
            } else {
                hits.extend(
                    self.cfg
                        .categories
                        .iter()
                        .filter(|c| res.categories.get(c.as_str()).and_then(|v| v.as_bool()) == Some(true))
                        .cloned(),
                );
            }
        }
        hits.sort();
        hits.dedup();
        if hits.is_empty() {
            Classification::Clean
        } else {
            Classification::Flagged(hits)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::client::legacy::connect::HttpConnector;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server on a free port answering every request with `body` after `delay`.
    async fn server(body: &'static str, delay: Duration) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut got = Vec::new();
                    loop {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&got);
                        if let Some(h) = text.find("\r\n\r\n") {
                            let len: usize = text[..h]
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if got.len() >= h + 4 + len {
                                break;
                            }
                        }
                    }
                    tokio::time::sleep(delay).await;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}/v1/moderations")
    }

    fn classifier(url: String, categories: Vec<String>, on_error: OnError) -> Classifier<HttpConnector> {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new());
        let cfg = ClassifierConfig { url, api_key_env: None, model: "m".into(), timeout_ms: 200, on_error, categories };
        Classifier::new(cfg, client, "guards.x.classifier").unwrap()
    }

    #[tokio::test]
    async fn reads_moderation_answers_and_times_out() {
        let flagged = server(
            r#"{"id":"x","results":[{"flagged":true,"categories":{"jailbreak":true,"violence":false}}]}"#,
            Duration::ZERO,
        )
        .await;
        let c = classifier(flagged.clone(), vec![], OnError::Allow);
        assert_eq!(c.classify(&["hi"]).await, Classification::Flagged(vec!["jailbreak".into()]));
        let c = classifier(flagged, vec!["violence".into()], OnError::Allow);
        assert_eq!(c.classify(&["hi"]).await, Classification::Clean);
        let slow = server(r#"{"results":[{"flagged":false}]}"#, Duration::from_millis(1500)).await;
        let c = classifier(slow, vec![], OnError::Block);
        assert!(matches!(c.classify(&["hi"]).await, Classification::Unavailable(m) if m.contains("200 ms")));
        assert_eq!(c.on_error(), OnError::Block);
        let c = classifier("http://127.0.0.1:1/x".into(), vec![], OnError::Allow);
        assert!(matches!(c.classify(&["hi"]).await, Classification::Unavailable(_)));
    }
}
