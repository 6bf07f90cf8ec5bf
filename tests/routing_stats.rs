//! `/v1/routing-stats` through the real binary on both engines: the same fixed traffic lands in Parquet
//! and ClickHouse, and DataFusion and ClickHouse give identical per-target answers, whose counts and
//! money match what the test sent and the configured price.

// Test code: failing loudly is its job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::clickhouse::ChServer;
use common::{Gateway, Opts, ENG_KEY};
use std::time::{Duration, Instant};

fn ch_section(ch: &ChServer, db: &str) -> String {
    format!("[clickhouse]\nurl = \"{}\"\ndatabase = \"{db}\"\nflush_interval_ms = 100\n", ch.url())
}

async fn chat(gw: &Gateway, model: &str, prompt: &str) -> u16 {
    send(gw, model, prompt, false).await
}

async fn send(gw: &Gateway, model: &str, prompt: &str, stream: bool) -> u16 {
    let body = serde_json::json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]})
        .to_string();
    let r = gw.post("/v1/chat/completions", Some(ENG_KEY), &body).await;
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    status
}

async fn stats(gw: &Gateway, at: &str) -> serde_json::Value {
    let r = gw
        .http
        .get(format!("{}/v1/routing-stats?window=1h&at={at}", gw.url))
        .bearer_auth(ENG_KEY)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}; log:\n{}", gw.log());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_stats_agree_on_both_engines_and_match_the_traffic() {
    let ch = ChServer::get();
    let db = ch.fresh_database("rstats");
    let a = Gateway::start_with(Opts {
        collector: "flush_interval_ms = 100\nsinks = [\"parquet\", \"clickhouse\"]".into(),
        extra: ch_section(ch, &db),
        ..Opts::default()
    })
    .await;
    // house-llm is priced in the harness config at $0.0375 / $1.10 per million tokens: 37.5 and 1,100
    // nano-USD per input and output token.
    for i in 0..8 {
        let status = chat(&a, "house-llm", &format!("MOCK[prompt_tokens=100,tokens=20,delay_ms={}]", i % 3)).await;
        assert_eq!(status, 200);
    }
    // Streams give the targets a time to first token.
    for i in 0..3 {
        let prompt = format!("MOCK[prompt_tokens=100,tokens=20,first_delay_ms={}]", 5 * i);
        assert_eq!(send(&a, "house-llm", &prompt, true).await, 200);
    }
    for _ in 0..2 {
        assert_eq!(chat(&a, "house-llm", "MOCK[status=500]").await, 500);
    }
    for _ in 0..3 {
        assert_eq!(chat(&a, "gpt-4o-mini", "MOCK[prompt_tokens=10,tokens=5]").await, 200);
    }
    // A rejection before any attempt (unknown model) is not a target's attempt.
    assert_eq!(chat(&a, "no-such-model", "hi").await, 404);
    let sent = 17;
    a.wait_events(sent).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = ch.rows(&format!("SELECT count() AS n FROM {db}.calls")).await;
        if common::u(&n[0], "n") >= sent {
            break;
        }
        assert!(Instant::now() < deadline, "clickhouse did not get every event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = Gateway::start_with(Opts {
        query: "engine = \"clickhouse\"".into(),
        extra: ch_section(ch, &db),
        ..Opts::default()
    })
    .await;
    let at = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (x, y) = (stats(&a, &at).await, stats(&b, &at).await);
    assert_eq!(x, y, "datafusion and clickhouse differ");

    let targets = x["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{x}");
    let house = targets.iter().find(|t| t["model"] == "house-llm").unwrap();
    assert_eq!(house["upstream"], "mock");
    assert_eq!(house["requests"], 13);
    assert_eq!(house["ok"], 11);
    assert_eq!(house["errors"]["upstream_error"], 2);
    // Ratios are compared within a float's rounding: serde_json's parser may differ in the last bit.
    let close = |v: &serde_json::Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-12;
    assert!(close(&house["error_rate"], 2.0 / 13.0), "{house}");
    let per_ok_call: u64 = 100 * 37_500 / 1000 + 20 * 1_100;
    assert_eq!(house["cost_nanousd"], 11 * per_ok_call);
    assert_eq!(house["mean_cost_nanousd"], 11 * per_ok_call / 13);
    assert!(close(&house["mean_output_tokens"], 11.0 * 20.0 / 13.0), "{house}");
    let t = &house["ttft_ms"];
    assert!(t["p50"].as_u64().unwrap() <= t["p95"].as_u64().unwrap(), "{house}");
    assert!(house["tokens_per_second"].as_f64().unwrap() > 0.0);
    let p = &house["latency_ms"];
    assert!(p["p50"].as_u64().unwrap() <= p["p95"].as_u64().unwrap());
    let mini = targets.iter().find(|t| t["model"] == "gpt-4o-mini").unwrap();
    assert_eq!((mini["requests"].as_u64(), mini["error_rate"].as_f64()), (Some(3), Some(0.0)));

    // An empty window answers with no targets, and a bad window is a 400 in OpenAI's shape.
    let empty = stats(&a, "2001-01-01T00:00:00Z").await;
    assert_eq!(empty["targets"], serde_json::json!([]));
    let r =
        a.http.get(format!("{}/v1/routing-stats?window=5parsecs", a.url)).bearer_auth(ENG_KEY).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_parameter");
}
