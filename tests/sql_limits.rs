//! Issue 15 through the real binary, query side: no `/v1/sql` request can take the process down or
//! grow it without bound. Deep expressions answer (or are refused as too complex) instead of
//! overflowing a stack; `query.memory_limit_mb` bounds what a function may build; EXPLAIN works; a body
//! over 2 MB is refused in JSON.

// Test code: failing loudly is its job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::hostile::peak_rss;
use common::*;
use serde_json::{json, Value};

async fn sql(gw: &Gateway, text: &str) -> (u16, Value) {
    let r = gw.post("/v1/sql", Some(ENG_KEY), &json!({ "sql": text }).to_string()).await;
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    let v = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON ({status}): {body:.200}"));
    (status, v)
}

/// The gateway still serves LLM calls.
async fn still_alive(gw: &Gateway) {
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "alive?"}]}).to_string();
    let r = gw.post("/v1/chat/completions", Some(ENG_KEY), &body).await;
    assert_eq!(r.status(), 200, "the process must survive; log:\n{}", gw.log());
}

/// Item 1: 1,000-term expressions, OR lists, UNION ALLs and `||` chains answer correctly (they
/// overflowed the query thread's stack and killed the process); past the guard's bound the answer is a
/// 400 `query_too_complex`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_sql_answers_or_is_refused_and_never_kills_the_process() {
    let gw = Gateway::start().await;
    still_alive(&gw).await;
    gw.wait_events(1).await;

    let sum = format!("SELECT {} AS n", vec!["1"; 1000].join("+"));
    let (st, v) = sql(&gw, &sum).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"][0]["n"], 1000);

    let ors: Vec<String> = (0..1000).map(|i| format!("input_tokens = {i}")).collect();
    let (st, v) = sql(&gw, &format!("SELECT count(*) AS n FROM calls WHERE {}", ors.join(" OR "))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"][0]["n"], 1);

    let unions = vec!["SELECT 1 AS x"; 1000].join(" UNION ALL ");
    let (st, v) = sql(&gw, &format!("SELECT count(*) AS n FROM ({unions})")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"][0]["n"], 1000);

    let concat = format!("SELECT length({}) AS n", vec!["'ab'"; 1000].join(" || "));
    let (st, v) = sql(&gw, &concat).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"][0]["n"], 2000);

    let huge = format!("SELECT {} AS n", vec!["1"; 15_000].join("+"));
    let (st, v) = sql(&gw, &huge).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["code"], "query_too_complex");
    let nested = format!("SELECT {}1{} AS n", "(".repeat(200), ")".repeat(200));
    let (st, v) = sql(&gw, &nested).await;
    assert_eq!(st, 400, "{v}");

    still_alive(&gw).await;
}

/// Items 4 and 9 and the body limit of item 10: functions cannot build more than
/// `query.memory_limit_mb`, EXPLAIN answers, a body over 2 MB is a JSON 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_memory_explain_and_body_bounds() {
    let gw = Gateway::start_with(Opts { query: "memory_limit_mb = 64".into(), ..Opts::default() }).await;
    still_alive(&gw).await;
    gw.wait_events(1).await;
    let pid = gw.child.as_ref().unwrap().id();
    let before = peak_rss(pid);

    for blowup in [
        "SELECT length(repeat('x', 300000000)) AS n",
        "SELECT length(repeat(repeat('x', 20000), 20000)) AS n",
        "SELECT length(lpad('x', 300000000)) AS n",
        "SELECT length(replace(repeat('a', 20000), 'a', repeat('b', 20000))) AS n",
        "SELECT cardinality(array_repeat(1, 300000000)) AS n",
        "SELECT cardinality(range(1, 300000000)) AS n",
        "SELECT max(length(repeat(department, 100000000))) AS n FROM calls",
    ] {
        let (st, v) = sql(&gw, blowup).await;
        assert_eq!(st, 400, "{blowup}: {v}");
        assert_eq!(v["error"]["code"], "memory_limit_exceeded", "{blowup}: {v}");
    }
    let grown = peak_rss(pid).saturating_sub(before);
    assert!(grown < 96 * 1024 * 1024, "peak RSS grew by {grown} bytes with a 64 MB limit");

    // Within the limit the same functions work.
    let (st, v) = sql(&gw, "SELECT length(repeat('x', 1000000)) AS n, length(lpad('x', 10)) AS p").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!((v["rows"][0]["n"].as_u64(), v["rows"][0]["p"].as_u64()), (Some(1_000_000), Some(10)));

    let (st, v) = sql(&gw, "EXPLAIN SELECT count(*) FROM calls").await;
    assert_eq!(st, 200, "{v}");
    let plans: Vec<&str> = v["rows"].as_array().unwrap().iter().filter_map(|r| r["plan_type"].as_str()).collect();
    assert!(plans.contains(&"logical_plan") && plans.contains(&"physical_plan"), "{v}");

    let big = format!("SELECT '{}' AS x", "y".repeat(3 * 1024 * 1024));
    let r = gw.post("/v1/sql", Some(ENG_KEY), &json!({ "sql": big }).to_string()).await;
    assert_eq!(r.status(), 413);
    // The rest of the body was not read: the client is told not to reuse the connection (it did, and its
    // next request failed).
    assert_eq!(r.headers().get("connection").map(|v| v.to_str().unwrap()), Some("close"));
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "body_too_large");

    still_alive(&gw).await;
}
