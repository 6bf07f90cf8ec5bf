//! Routes through the real binary over several mock upstreams, each with its own failure settings:
//! weighted splits and sticky users, fallback on 500 / 429 / refused connections / header timeouts /
//! silence before the first byte, what is never retried (a 400, a stream that already sent bytes), the
//! retry budget under load, circuit breakers (open, skip, half-open probe, close; all open → 503 in
//! both client shapes) and one event per attempt.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::routes::{cost_at, fleet, A_PRICE, B_PRICE};
use common::{s, u, ENG_KEY, HDR_KEY};
use futures_util::StreamExt;
use std::time::{Duration, Instant};

const FALLBACK: &str = r#"
[[routes]]
model = "chat"
strategy = "fallback"
targets = [{ upstream = "a", model = "route-a" }, { upstream = "b", model = "route-b" }]
breaker = { consecutive_failures = 0, error_rate_percent = 0 }
retry_budget = { percent = 100, min_retries = 10 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_90_10_over_2000_calls_and_sticky_users() {
    let f = fleet(
        r#"
[[routes]]
model = "canary"
strategy = "weighted"
targets = [{ upstream = "a", model = "route-a", weight = 90 }, { upstream = "b", model = "route-b", weight = 10 }]
[[routes]]
model = "ab"
strategy = "weighted"
sticky = "user"
targets = [{ upstream = "a", model = "route-a", weight = 50 }, { upstream = "b", model = "route-b", weight = 50 }]
"#,
    )
    .await;
    let n = 2000;
    let body = r#"{"model":"canary","messages":[{"role":"user","content":"hi MOCK[tokens=1]"}]}"#;
    let url = format!("{}/v1/chat/completions", f.gw.url);
    let sent = futures_util::stream::iter(0..n)
        .map(|_| {
            let req = f.gw.http.post(&url).bearer_auth(ENG_KEY).header("content-type", "application/json").body(body);
            async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
        })
        .buffer_unordered(16)
        .collect::<Vec<u16>>()
        .await;
    assert!(sent.iter().all(|s| *s == 200), "every call answered");
    let (a, b) = (f.a.received(), f.b.received());
    assert_eq!(a + b, n);
    // 90 % ± 3 points.
    assert!((1740..=1860).contains(&a), "a got {a} of {n}, b {b}");

    // Sticky: each user stays on one target; users spread over both.
    for user in 0..24 {
        for call in 0..3 {
            let r = f
                .gw
                .http
                .post(&url)
                .bearer_auth(HDR_KEY)
                .header("x-tollgate-user", format!("user-{user}"))
                .header("x-request-id", format!("sticky-{user}-{call}"))
                .json(&serde_json::json!({"model": "ab", "messages": [{"role": "user", "content": "MOCK[tokens=1]"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    f.gw.wait_events(n + 72).await;
    let rows = f
        .gw
        .sql("SELECT \"user\", count(DISTINCT upstream) AS targets, count(*) AS calls, min(upstream) AS up FROM calls WHERE route = 'ab' GROUP BY \"user\"")
        .await;
    assert_eq!(rows.len(), 24);
    assert!(rows.iter().all(|r| u(r, "targets") == 1 && u(r, "calls") == 3), "{rows:?}");
    let on_a = rows.iter().filter(|r| s(r, "up") == "a").count();
    assert!((1..24).contains(&on_a), "sticky users should spread over both targets: {on_a} of 24 on a");
    let strat = f.gw.sql("SELECT DISTINCT routing_strategy FROM calls WHERE route = 'canary'").await;
    assert_eq!(strat.len(), 1);
    assert_eq!(s(&strat[0], "routing_strategy"), "weighted");
}

/// Checks a request that failed on `a` with `first_outcome`/`first_status` and was answered by `b`.
async fn assert_fell_back(f: &common::routes::Fleet, rid: &str, first_outcome: &str, first_status: u64) {
    let ev = f.attempts(rid).await;
    assert_eq!(ev.len(), 2, "{ev:?}");
    let (one, two) = (&ev[0], &ev[1]);
    assert_eq!((u(one, "attempt"), s(one, "upstream"), s(one, "served_model")), (1, "a", "route-a"));
    assert_eq!((s(one, "outcome"), u(one, "status_code")), (first_outcome, first_status), "{one}");
    assert_eq!((u(two, "attempt"), s(two, "upstream"), s(two, "outcome")), (2, "b", "ok"));
    assert_eq!(s(two, "fallback_from"), "a/route-a");
    assert_eq!((s(one, "route"), s(two, "route")), ("chat", "chat"));
    assert_eq!((s(one, "routing_strategy"), s(two, "routing_strategy")), ("fallback", "fallback"));
    // The mock reports the usage it was asked for; b's price applies to b's attempt.
    assert_eq!((u(two, "input_tokens"), u(two, "output_tokens")), (40, 3));
    assert_eq!(u(two, "cost_nanousd"), cost_at(B_PRICE, 40, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_on_500_429_refused_header_timeout_and_silence() {
    let f = fleet(&format!(
        "{FALLBACK}\n[[routes]]\nmodel = \"chat-dead\"\nstrategy = \"fallback\"\n\
         targets = [{{ upstream = \"dead\", model = \"route-dead\" }}, {{ upstream = \"b\", model = \"route-b\" }}]\n"
    ))
    .await;
    let prompt = "MOCK[tokens=3,prompt_tokens=40]";

    f.a.set_directives("status=500").unwrap();
    let (st, body) = f.chat(ENG_KEY, "chat", prompt, "fb-500").await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"model\":\"route-b\""), "{body}");

    f.a.set_directives("status=429,retry_after=30").unwrap();
    assert_eq!(f.chat(ENG_KEY, "chat", prompt, "fb-429").await.0, 200);

    f.a.set_directives("first_delay_ms=3000").unwrap();
    assert_eq!(f.chat(ENG_KEY, "chat", prompt, "fb-timeout").await.0, 200);

    // Headers, then nothing: idle before the first byte is a failure too (streams only hold the
    // answer back until its first frame when another attempt could follow).
    f.a.set_directives("silent").unwrap();
    let r = f
        .gw
        .http
        .post(format!("{}/v1/chat/completions", f.gw.url))
        .bearer_auth(ENG_KEY)
        .header("x-request-id", "fb-silent")
        .json(&serde_json::json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("route-b") && text.trim_end().ends_with("data: [DONE]"), "{text}");

    assert_eq!(f.chat(ENG_KEY, "chat-dead", prompt, "fb-refused").await.0, 200);
    f.a.set_directives("").unwrap();

    f.gw.wait_events(10).await;
    assert_fell_back(&f, "fb-500", "upstream_error", 500).await;
    assert_fell_back(&f, "fb-429", "upstream_error", 429).await;
    assert_fell_back(&f, "fb-timeout", "timeout", 504).await;
    assert_fell_back(&f, "fb-silent", "timeout", 504).await;
    let silent = f.attempts("fb-silent").await;
    assert_eq!(s(&silent[0], "error_type"), "upstream_idle_timeout");
    let refused = f.attempts("fb-refused").await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!((s(&refused[0], "upstream"), s(&refused[0], "outcome")), ("dead", "upstream_error"));
    assert_eq!(s(&refused[0], "error_type"), "upstream_unreachable");
    assert_eq!((s(&refused[1], "upstream"), s(&refused[1], "fallback_from")), ("b", "dead/route-dead"));
    // Refused and errored attempts bill nothing; the timed-out one never answered, so its prompt is
    // estimated and priced at a's rates.
    for rid in ["fb-500", "fb-429", "fb-refused"] {
        assert_eq!(u(&f.attempts(rid).await[0], "cost_nanousd"), 0, "{rid}");
    }
    let timed_out = &f.attempts("fb-timeout").await[0];
    assert_eq!(s(timed_out, "usage_source"), "estimated_approx");
    assert_eq!(u(timed_out, "cost_nanousd"), cost_at(A_PRICE, u(timed_out, "input_tokens"), 0));
    assert!(u(timed_out, "input_tokens") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_the_same_target_is_waited_for_and_400_or_sent_bytes_are_not_retried() {
    let f = fleet(&format!(
        "{FALLBACK}\n[[routes]]\nmodel = \"solo\"\nmax_attempts = 2\nmax_retry_wait_ms = 1500\n\
         targets = [{{ upstream = \"a\", model = \"route-a\" }}]\n"
    ))
    .await;
    // One 429 with Retry-After: 1, then a's normal answer, on the same target after the wait.
    f.a.set_directives_for("status=429,retry_after=1", 1).unwrap();
    let t = Instant::now();
    assert_eq!(f.chat(ENG_KEY, "solo", "MOCK[tokens=2,prompt_tokens=10]", "solo-429").await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(1000), "Retry-After was not honoured");
    assert_eq!(f.a.received(), 2);

    // A 400 is the request's fault: relayed, b never called.
    f.a.set_directives("status=400").unwrap();
    let (st, body) = f.chat(ENG_KEY, "chat", "MOCK[tokens=2]", "no-retry-400").await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(f.b.received(), 0);

    // A stream cut after bytes reached the client: the client sees the cut, b is never called.
    f.a.set_directives("cut=2").unwrap();
    let r = f
        .gw
        .http
        .post(format!("{}/v1/chat/completions", f.gw.url))
        .bearer_auth(ENG_KEY)
        .header("x-request-id", "no-retry-cut")
        .json(&serde_json::json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "MOCK[tokens=5]"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = r.text().await;
    assert!(got.map(|t| !t.contains("[DONE]")).unwrap_or(true), "the cut stream must not complete");
    assert_eq!(f.b.received(), 0, "a stream that sent bytes is never retried");
    f.a.set_directives("").unwrap();

    f.gw.wait_events(4).await;
    let solo = f.attempts("solo-429").await;
    assert_eq!(solo.len(), 2);
    assert_eq!((u(&solo[0], "status_code"), s(&solo[1], "outcome")), (429, "ok"));
    assert_eq!(s(&solo[1], "fallback_from"), "a/route-a");
    assert_eq!(u(&solo[1], "cost_nanousd"), cost_at(A_PRICE, 10, 2));
    let bad = f.attempts("no-retry-400").await;
    assert_eq!(bad.len(), 1);
    assert_eq!((s(&bad[0], "outcome"), u(&bad[0], "status_code")), ("upstream_error", 400));
    let cut = f.attempts("no-retry-cut").await;
    assert_eq!(cut.len(), 1);
    assert_eq!((s(&cut[0], "outcome"), s(&cut[0], "error_type")), ("upstream_error", "upstream_stream_cut"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_bounds_attempts_when_every_target_fails() {
    let f = fleet(
        r#"
[[routes]]
model = "down"
strategy = "fallback"
max_attempts = 3
targets = [{ upstream = "a", model = "route-a" }, { upstream = "b", model = "route-b" }]
breaker = { consecutive_failures = 0, error_rate_percent = 0 }
retry_budget = { percent = 20, window_ms = 60000, min_retries = 2 }
"#,
    )
    .await;
    f.a.set_directives("status=503").unwrap();
    f.b.set_directives("status=503").unwrap();
    let n = 150u64;
    let url = format!("{}/v1/chat/completions", f.gw.url);
    let body = r#"{"model":"down","messages":[{"role":"user","content":"MOCK[tokens=1]"}]}"#;
    let statuses = futures_util::stream::iter(0..n)
        .map(|_| {
            let req = f.gw.http.post(&url).bearer_auth(ENG_KEY).header("content-type", "application/json").body(body);
            async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
        })
        .buffer_unordered(8)
        .collect::<Vec<u16>>()
        .await;
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    let upstream_calls = f.a.received() + f.b.received();
    // Without a budget: 3 attempts each (450). With it: n + 20 % of n + 2.
    assert!(upstream_calls >= n, "{upstream_calls}");
    assert!(upstream_calls <= n + n / 5 + 2, "{upstream_calls} upstream calls for {n} requests");
    f.gw.wait_events(upstream_calls).await;
    let rows =
        f.gw.sql("SELECT count(*) AS events, count(DISTINCT request_id) AS requests FROM calls WHERE route = 'down'")
            .await;
    assert_eq!((u(&rows[0], "events"), u(&rows[0], "requests")), (upstream_calls, n));
    let metrics = f.gw.http.get(format!("{}/metrics", f.gw.url)).send().await.unwrap().text().await.unwrap();
    let retries = upstream_calls - n;
    assert!(metrics.contains(&format!("tollgate_route_retries_total{{route=\"down\"}} {retries}")), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_skips_probes_and_closes_and_all_open_is_503_in_both_shapes() {
    let f = fleet(
        r#"
[[routes]]
model = "guarded"
strategy = "fallback"
targets = [{ upstream = "a", model = "route-a" }, { upstream = "b", model = "route-b" }]
breaker = { consecutive_failures = 3, cooldown_ms = 700 }
[[routes]]
model = "lonely"
targets = [{ upstream = "b", model = "route-b" }]
breaker = { consecutive_failures = 2, cooldown_ms = 60000 }
"#,
    )
    .await;
    let prompt = "MOCK[tokens=1]";
    f.a.set_directives("status=500").unwrap();
    for i in 0..3 {
        assert_eq!(f.chat(ENG_KEY, "guarded", prompt, &format!("br-{i}")).await.0, 200);
    }
    assert_eq!(f.a.received(), 3);
    let target_state = |routes: &serde_json::Value, route: &str, upstream: &str| {
        routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == route)
            .and_then(|r| r["targets"].as_array().unwrap().iter().find(|t| t["upstream"] == upstream).cloned())
            .unwrap()
    };
    let open = target_state(&f.routes(ENG_KEY).await, "guarded", "a");
    assert_eq!(open["breaker"], "open", "{open}");
    assert_eq!(open["recent_failures"], 3);
    // Open: a is skipped, b answers alone.
    for i in 3..6 {
        assert_eq!(f.chat(ENG_KEY, "guarded", prompt, &format!("br-{i}")).await.0, 200);
    }
    assert_eq!(f.a.received(), 3, "an open breaker's target is not called");
    let metrics = f.gw.http.get(format!("{}/metrics", f.gw.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tollgate_breaker_state{route=\"guarded\",target=\"a/route-a\"} 1"), "{metrics}");
    // After the cool-down one probe goes to a; a has recovered, so the breaker closes.
    f.a.set_directives("").unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(target_state(&f.routes(ENG_KEY).await, "guarded", "a")["breaker"], "half_open");
    assert_eq!(f.chat(ENG_KEY, "guarded", prompt, "br-probe").await.0, 200);
    assert_eq!(f.a.received(), 4);
    // The probe's end is recorded when its response body is dropped, just after the client read it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while target_state(&f.routes(ENG_KEY).await, "guarded", "a")["breaker"] != "closed" {
        assert!(Instant::now() < deadline, "the breaker did not close after a successful probe");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.chat(ENG_KEY, "guarded", prompt, "br-after").await.0, 200);
    assert_eq!(f.a.received(), 5);

    // Every target open: 503 in the client's own shape, one event each.
    f.b.set_directives("status=502").unwrap();
    for i in 0..2 {
        assert_eq!(f.chat(ENG_KEY, "lonely", prompt, &format!("lonely-{i}")).await.0, 502);
    }
    let (st, body) = f.chat(ENG_KEY, "lonely", prompt, "lonely-openai").await;
    assert_eq!(st, 503);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "no_healthy_upstream", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("lonely"));
    let r = f
        .gw
        .http
        .post(format!("{}/v1/messages", f.gw.url))
        .header("x-api-key", ENG_KEY)
        .header("anthropic-version", "2023-06-01")
        .header("x-request-id", "lonely-anthropic")
        .json(
            &serde_json::json!({"model": "lonely", "max_tokens": 5, "messages": [{"role": "user", "content": prompt}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("api_error")), "{v}");
    assert_eq!(f.b.received(), 3 + 3 + 2, "the all-open calls never reached b");

    f.gw.wait_events(15).await;
    for rid in ["lonely-openai", "lonely-anthropic"] {
        let ev = f.attempts(rid).await;
        assert_eq!(ev.len(), 1, "{rid}: {ev:?}");
        assert_eq!((s(&ev[0], "outcome"), u(&ev[0], "status_code")), ("upstream_error", 503));
        assert_eq!(s(&ev[0], "error_type"), "no_healthy_upstream");
    }
    // While a was open, b served first attempts: one event each.
    assert_eq!(f.attempts("br-4").await.len(), 1);
}

/// Four requests over a fallback route: two fail on `a` and succeed on `b`, one succeeds on `a`, one
/// fails on both. Reports must count 4 requests (each by its last attempt), 7 attempts, and the money
/// of every attempt.
async fn check_count_once(f: &common::routes::Fleet) {
    let prompt = "MOCK[tokens=3,prompt_tokens=40]";
    f.a.set_directives_for("status=500", 2).unwrap();
    assert_eq!(f.chat(ENG_KEY, "chat", prompt, "co-1").await.0, 200);
    assert_eq!(f.chat(ENG_KEY, "chat", prompt, "co-2").await.0, 200);
    assert_eq!(f.chat(ENG_KEY, "chat", prompt, "co-3").await.0, 200);
    f.a.set_directives_for("status=500", 1).unwrap();
    f.b.set_directives_for("status=500", 1).unwrap();
    assert_eq!(f.chat(ENG_KEY, "chat", prompt, "co-4").await.0, 500);
    f.gw.wait_events(7).await;
    let money = 2 * cost_at(B_PRICE, 40, 3) + cost_at(A_PRICE, 40, 3);
    let show = |group: &'static str| async move {
        let r =
            f.gw.http
                .get(format!("{}/v1/showback?from=2000-01-01&group_by={group}", f.gw.url))
                .bearer_auth(ENG_KEY)
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        v
    };
    // On ClickHouse a whole-day showback reads the daily rollup, which a materialized view fills as part of
    // each insert but makes visible a moment after the raw rows `wait_events` counted: wait for the calls to
    // show there (the figures are then checked exactly).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut by_dept = show("department").await;
    while u(&by_dept["total"], "calls") < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        by_dept = show("department").await;
    }
    let total = &by_dept["total"];
    assert_eq!((u(total, "calls"), u(total, "attempts"), u(total, "cost_nanousd")), (4, 7, money), "{by_dept}");
    let row = |v: &serde_json::Value, k: &str, val: &str| {
        v["rows"].as_array().unwrap().iter().find(|r| r[k] == val).cloned().unwrap_or_else(|| panic!("{val} in {v}"))
    };
    let by_up = show("upstream").await;
    let (a, b) = (row(&by_up, "upstream", "a"), row(&by_up, "upstream", "b"));
    assert_eq!((u(&a, "calls"), u(&a, "attempts"), u(&a, "cost_nanousd")), (1, 4, cost_at(A_PRICE, 40, 3)));
    assert_eq!((u(&b, "calls"), u(&b, "attempts"), u(&b, "cost_nanousd")), (3, 3, 2 * cost_at(B_PRICE, 40, 3)));
    let by_outcome = show("outcome").await;
    let (ok, err) = (row(&by_outcome, "outcome", "ok"), row(&by_outcome, "outcome", "upstream_error"));
    assert_eq!((u(&ok, "calls"), u(&ok, "attempts")), (3, 3));
    assert_eq!((u(&err, "calls"), u(&err, "attempts")), (1, 4));

    let day = f.gw.sql("SELECT min(date) AS d FROM calls").await;
    let month = s(&day[0], "d")[..7].to_string();
    let r =
        f.gw.http
            .get(format!("{}/v1/chargeback?month={month}&by=department", f.gw.url))
            .bearer_auth(ENG_KEY)
            .send()
            .await
            .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let line = &v["rows"][0];
    assert_eq!((u(line, "calls"), u(line, "attempts"), u(line, "cost_nanousd")), (4, 7, money), "{v}");
    assert_eq!((u(&v["total"], "calls"), u(&v["total"], "attempts")), (4, 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn showback_and_chargeback_count_requests_once_and_money_over_attempts_on_datafusion() {
    let f = fleet(FALLBACK).await;
    check_count_once(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn showback_and_chargeback_count_requests_once_and_money_over_attempts_on_clickhouse() {
    let ch = common::clickhouse::ChServer::get();
    let db = ch.fresh_database("routes");
    let routes =
        format!("{FALLBACK}\n[clickhouse]\nurl = \"{}\"\ndatabase = \"{db}\"\nflush_interval_ms = 100\n", ch.url());
    let opts = common::Opts {
        collector: "flush_interval_ms = 100\nsinks = [\"clickhouse\"]".into(),
        query: "engine = \"clickhouse\"".into(),
        ..common::Opts::default()
    };
    let f = common::routes::fleet_with(&routes, opts).await;
    check_count_once(&f).await;
}
