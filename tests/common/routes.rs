//! Several mock upstreams behind one gateway, for routing tests: upstreams `a` and `b` (each its own
//! mock instance, steerable with `set_directives`) serving `route-a` and `route-b`, plus `dead`, an
//! upstream whose port refuses connections. Routes are written by the test.

use super::{free_port, Gateway, Opts};
use tollgate_mock::MockUpstream;

/// Prices of the routed models, USD per million tokens (input, output).
pub const A_PRICE: (u64, u64) = (1, 2);
pub const B_PRICE: (u64, u64) = (3, 5);

/// Exact nano-USD of `input` and `output` tokens at `(in, out)` USD per million tokens.
pub fn cost_at(price: (u64, u64), input: u64, output: u64) -> u64 {
    (input * price.0 * 1_000_000_000 + output * price.1 * 1_000_000_000 + 500_000) / 1_000_000
}

pub struct Fleet {
    pub gw: Gateway,
    pub a: MockUpstream,
    pub b: MockUpstream,
}

/// Starts mocks `a` and `b` and a gateway whose config adds them (timeouts: headers 800 ms, idle
/// 800 ms) and the test's `routes` (TOML with `[[routes]]`).
pub async fn fleet(routes: &str) -> Fleet {
    fleet_with(routes, Opts::default()).await
}

/// As [`fleet`], with the harness's other knobs (`opts.extra` is replaced).
pub async fn fleet_with(routes: &str, opts: Opts) -> Fleet {
    let a = MockUpstream::start().await.expect("mock a");
    let b = MockUpstream::start().await.expect("mock b");
    let up = |name: &str, base: &str, model: &str| {
        format!(
            "[[upstreams]]\nname = \"{name}\"\nkind = \"openai_compatible\"\nbase_url = \"{base}\"\nmodels = [\"{model}\"]\n\
             request_timeout_ms = 800\nidle_timeout_ms = 800\nconnect_timeout_ms = 500\n"
        )
    };
    let dead = format!("http://127.0.0.1:{}/v1", free_port());
    let extra = format!(
        "{}{}{}[prices.\"route-a\"]\ninput = {}\noutput = {}\n[prices.\"route-b\"]\ninput = {}\noutput = {}\n\
         [prices.\"route-dead\"]\ninput = 1\noutput = 1\n{routes}",
        up("a", &a.base_url(), "route-a"),
        up("b", &b.base_url(), "route-b"),
        up("dead", &dead, "route-dead"),
        A_PRICE.0,
        A_PRICE.1,
        B_PRICE.0,
        B_PRICE.1,
    );
    let gw = Gateway::start_with(Opts { extra, ..opts }).await;
    Fleet { gw, a, b }
}

impl Fleet {
    /// POSTs an OpenAI chat body to `model` with a request id; returns status and body text.
    pub async fn chat(&self, key: &str, model: &str, prompt: &str, rid: &str) -> (u16, String) {
        let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": prompt}]});
        let r = self
            .gw
            .http
            .post(format!("{}/v1/chat/completions", self.gw.url))
            .bearer_auth(key)
            .header("x-request-id", rid)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// The events of one request, by attempt.
    pub async fn attempts(&self, rid: &str) -> Vec<serde_json::Value> {
        self.gw
            .sql(&format!(
                "SELECT attempt, upstream, served_model, route, routing_strategy, fallback_from, outcome, status_code, \
                 error_type, input_tokens, output_tokens, cost_nanousd, usage_source FROM calls \
                 WHERE request_id = '{rid}' ORDER BY attempt"
            ))
            .await
    }

    /// `/v1/routes` as JSON.
    pub async fn routes(&self, key: &str) -> serde_json::Value {
        let r = self.gw.http.get(format!("{}/v1/routes", self.gw.url)).bearer_auth(key).send().await.expect("routes");
        assert_eq!(r.status(), 200);
        r.json().await.expect("json")
    }
}
