//! Budget notifications: a soft threshold or the cap crossed by settled spend gives one structured log
//! line, a counter (`tollgate_budget_threshold_crossings_total`) and, when `budget_settings.webhook_url`
//! is set, a JSON POST. Posts go through a bounded queue to one sender task: when it is full the
//! notification is logged as not delivered (the log line and the counter still happened).

use crate::budget::ledger::Crossing;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use prometheus_client::encoding::DescriptorEncoder;
use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tollgate_events::prom::{self, Kind};
use tracing::warn;

const QUEUE: usize = 1024;

pub struct Notifier {
    webhook: RwLock<Option<String>>,
    tx: mpsc::Sender<(String, String)>,
    rx: Mutex<Option<mpsc::Receiver<(String, String)>>>,
    counts: Mutex<BTreeMap<(String, u32), u64>>,
}

impl Notifier {
    pub fn new() -> Notifier {
        let (tx, rx) = mpsc::channel(QUEUE);
        Notifier { webhook: RwLock::new(None), tx, rx: Mutex::new(Some(rx)), counts: Mutex::new(BTreeMap::new()) }
    }

    pub fn set_webhook(&self, url: Option<String>) {
        *self.webhook.write().unwrap_or_else(|p| p.into_inner()) = url;
    }

    pub fn crossed(&self, c: Crossing) {
        let kind = if c.percent >= 100 { "cap" } else { "soft_threshold" };
        warn!(
            budget = %c.budget,
            kind,
            percent = c.percent,
            spent_nanousd = c.spent,
            cap_nanousd = c.cap,
            "budget threshold crossed"
        );
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry((c.budget.clone(), c.percent)).or_default() += 1;
        let url = self.webhook.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(url) = url {
            let body = serde_json::json!({
                "type": "budget_threshold_crossed",
                "kind": kind,
                "budget": c.budget,
                "percent": c.percent,
                "spent_nanousd": c.spent,
                "spent_usd": tollgate_events::format_usd(c.spent),
                "cap_nanousd": c.cap,
                "cap_usd": tollgate_events::format_usd(c.cap),
                "resets_at": crate::budget::http::rfc3339(c.window_end_us),
            });
            if self.tx.try_send((url, body.to_string())).is_err() {
                warn!(budget = %c.budget, "webhook queue full: notification not posted");
            }
        }
    }

    /// Starts the webhook sender (once).
    pub fn start(&self) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client: Client<_, Full<Bytes>> = Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        tokio::spawn(async move {
            while let Some((url, body)) = rx.recv().await {
                let req = http::Request::post(&url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)));
                let Ok(req) = req else {
                    warn!(%url, "webhook URL rejected");
                    continue;
                };
                match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                    Ok(Ok(r)) if r.status().is_success() => {}
                    Ok(Ok(r)) => warn!(%url, status = %r.status(), "webhook answered with an error"),
                    Ok(Err(error)) => warn!(%url, %error, "webhook post failed"),
                    Err(_) => warn!(%url, "webhook post timed out"),
                }
            }
        });
    }

    pub fn encode_metrics(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let counts: Vec<((String, String), u64)> = self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((b, p), n)| ((b.clone(), p.to_string()), *n))
            .collect();
        prom::encode_family(
            e,
            "tollgate_budget_threshold_crossings",
            "Times settled spend crossed a soft threshold or the cap (percent 100).",
            Kind::Counter,
            counts.iter().map(|((b, p), n)| (vec![("budget", b.as_str()), ("percent", p.as_str())], *n as f64)),
        )
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new()
    }
}
