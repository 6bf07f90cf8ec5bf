//! Learning routes through the real binary over several mock upstreams: `least_cost` sends calls to the
//! cheapest target (predicted and actual cost recorded in each event, both computed here from the prices
//! and the tokens), moves when that target fails and its breaker opens, and keeps to its quality floor;
//! `least_latency` moves away from a target slowed down mid-run and comes back to it through
//! exploration once it is fast again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::routes::{cost_at, fleet, fleet_with, Fleet, A_PRICE, B_PRICE};
use common::{u, Opts, ENG_KEY};

/// Sends one chat call with `max_tokens`; returns (status, the exact body bytes sent).
async fn call(f: &Fleet, model: &str, prompt: &str, max_tokens: u64, rid: &str) -> (u16, usize) {
    let body = serde_json::json!({"model": model, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}]})
    .to_string();
    let len = body.len();
    let r =
        f.gw.http
            .post(format!("{}/v1/chat/completions", f.gw.url))
            .bearer_auth(ENG_KEY)
            .header("content-type", "application/json")
            .header("x-request-id", rid)
            .body(body)
            .send()
            .await
            .unwrap();
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    (status, len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_cost_takes_the_cheap_target_moves_when_it_fails_and_keeps_its_floor() {
    // b is written first (the better model) but a is cheaper: A_PRICE < B_PRICE on both kinds.
    let f = fleet(
        r#"
[[routes]]
model = "thrifty"
strategy = "least_cost"
targets = [{ upstream = "b", model = "route-b" }, { upstream = "a", model = "route-a" }]
breaker = { consecutive_failures = 2, cooldown_ms = 60000 }
retry_budget = { percent = 100, min_retries = 10 }
[[routes]]
model = "floored"
strategy = "least_cost"
quality_floor = "b/route-b"
targets = [{ upstream = "b", model = "route-b" }, { upstream = "a", model = "route-a" }]
"#,
    )
    .await;
    let prompt = "MOCK[prompt_tokens=40,tokens=12]";
    let mut sent = Vec::new();
    for i in 0..10 {
        let (status, len) = call(&f, "thrifty", prompt, 30, &format!("cheap-{i}")).await;
        assert_eq!(status, 200);
        sent.push(len);
    }
    assert_eq!((f.a.received(), f.b.received()), (10, 0), "the cheap target takes every call");

    // a fails: the first failures fall back to b within the call, then a's breaker opens and calls go
    // straight to b.
    f.a.set_directives("status=500").unwrap();
    for i in 0..6 {
        let (status, _) = call(&f, "thrifty", prompt, 30, &format!("failing-{i}")).await;
        assert_eq!(status, 200, "b answers");
    }
    assert_eq!(f.a.received(), 12, "two failures open a's breaker; it is not called again");
    assert_eq!(f.b.received(), 6);

    // The floor keeps calls on b although a is cheaper.
    for i in 0..3 {
        assert_eq!(call(&f, "floored", prompt, 30, &format!("floor-{i}")).await.0, 200);
    }
    assert_eq!((f.a.received(), f.b.received()), (12, 9));

    // Decisions per strategy and target: a was first choice for the 10 cheap calls and the 2 that
    // opened its breaker, b for the other 4 (a fallback attempt is not a decision).
    let metrics = f.gw.http.get(format!("{}/metrics", f.gw.url)).send().await.unwrap().text().await.unwrap();
    for (target, n) in [("a/route-a", 12), ("b/route-b", 4)] {
        let line = format!(
            "tollgate_route_decisions_total{{route=\"thrifty\",strategy=\"least_cost\",target=\"{target}\"}} {n}"
        );
        assert!(metrics.contains(&line), "{line} missing in\n{metrics}");
    }

    f.gw.wait_events(10 + 6 + 2 + 3).await;
    // Predicted: body bytes / 4 prompt tokens and max_tokens output at the target's price; actual: the
    // mock's usage at the same price.
    for (i, len) in sent.iter().enumerate() {
        let ev = &f.attempts(&format!("cheap-{i}")).await[0];
        let row =
            &f.gw.sql(&format!("SELECT predicted_cost_nanousd FROM calls WHERE request_id = 'cheap-{i}'")).await[0];
        assert_eq!(ev["upstream"], "a");
        assert_eq!(ev["routing_strategy"], "least_cost");
        assert_eq!(u(row, "predicted_cost_nanousd"), cost_at(A_PRICE, (*len as u64).div_ceil(4), 30));
        assert_eq!(u(ev, "cost_nanousd"), cost_at(A_PRICE, 40, 12));
    }
    let first_fail = f.attempts("failing-0").await;
    assert_eq!(first_fail.len(), 2, "{first_fail:?}");
    assert_eq!((first_fail[0]["upstream"].as_str(), first_fail[1]["upstream"].as_str()), (Some("a"), Some("b")));
    let later = f.attempts("failing-5").await;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0]["upstream"], "b");
    assert_eq!(u(&later[0], "cost_nanousd"), cost_at(B_PRICE, 40, 12));
    let pred = &f.gw.sql("SELECT predicted_cost_nanousd FROM calls WHERE request_id = 'failing-5'").await[0];
    assert!(u(pred, "predicted_cost_nanousd") > cost_at(A_PRICE, 40, 30), "b's prediction at b's price");
}

/// Which upstream served each of `n` calls to `model`.
async fn run(f: &Fleet, n: usize, tag: &str) -> Vec<char> {
    let mut out = Vec::new();
    for i in 0..n {
        let (a0, b0) = (f.a.received(), f.b.received());
        let (status, _) = call(f, "fast", "MOCK[tokens=3]", 10, &format!("{tag}-{i}")).await;
        assert_eq!(status, 200);
        out.push(if f.a.received() > a0 {
            'a'
        } else if f.b.received() > b0 {
            'b'
        } else {
            '?'
        });
    }
    out
}

fn count(v: &[char], c: char) -> usize {
    v.iter().filter(|x| **x == c).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_latency_leaves_a_slowed_target_and_exploration_brings_it_back() {
    // The gateway's own view only: the store's 15-minute answer would (rightly) remember a's slow spell
    // for longer than this test runs. Blending is covered by the unit tests of `routing::stats`.
    let f = fleet_with(
        r#"
[[routes]]
model = "fast"
strategy = "least_latency"
explore_percent = 10
stats_window_ms = 1500
targets = [{ upstream = "a", model = "route-a" }, { upstream = "b", model = "route-b" }]
"#,
        Opts { gateway: "routing_stats_interval_ms = 0".into(), ..Opts::default() },
    )
    .await;
    // b is steadily slow; a is fast. The gap is wide: one answer of a's that a busy box (a debug build on
    // two cores) delays past b's latency is enough to send a few calls to b while it is in the window.
    f.b.set_directives("first_delay_ms=100").unwrap();
    let warm = run(&f, 40, "warm").await;
    assert!(count(&warm, 'a') >= 30, "the fast target takes most calls: {warm:?}");

    // a becomes slow: after at most 3 calls (one slow answer is enough for its p95), at least 80% of the
    // next 60 go to b. 60 calls, so that exploration (10%) misses a in all of them with probability
    // 0.9^60 = 0.2% only.
    f.a.set_directives("first_delay_ms=400").unwrap();
    let slow = run(&f, 63, "slow").await;
    let after = &slow[3..];
    assert!(count(after, 'b') >= 48, "traffic moves away from the slow target: {slow:?}");
    assert!(count(after, 'a') >= 1, "exploration still tries it: {slow:?}");

    // a is fast again: exploration finds it (once its slow answers leave the 1.5 s window) and calls
    // come back.
    f.a.set_directives("").unwrap();
    let back = run(&f, 120, "back").await;
    let tail = &back[80..];
    assert!(count(tail, 'a') >= 28, "traffic comes back to the recovered target: {back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_learns_from_the_first_ones_traffic_through_clickhouse() {
    let ch = common::clickhouse::ChServer::get();
    let db = ch.fresh_database("learn");
    let ch_section = format!("[clickhouse]\nurl = \"{}\"\ndatabase = \"{db}\"\nflush_interval_ms = 100\n", ch.url());
    let route = "[[routes]]\nmodel = \"fast\"\nstrategy = \"least_latency\"\nexplore_percent = 0\n\
                 targets = [{ upstream = \"a\", model = \"route-a\" }, { upstream = \"b\", model = \"route-b\" }]\n";
    // The first gateway finds a slow and b fast, and lands its events in ClickHouse.
    let first = fleet_with(
        &format!("{ch_section}{route}"),
        Opts { collector: "flush_interval_ms = 100\nsinks = [\"parquet\", \"clickhouse\"]".into(), ..Opts::default() },
    )
    .await;
    first.a.set_directives("first_delay_ms=200").unwrap();
    let seen = run(&first, 12, "first").await;
    assert_eq!(count(&seen, 'a'), 1, "one slow answer from a is enough: {seen:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ch.rows(&format!("SELECT count() AS n FROM {db}.calls")).await.first().map(|r| u(r, "n")).unwrap_or(0) < 12 {
        assert!(std::time::Instant::now() < deadline, "clickhouse did not get the first gateway's events");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The second gateway has seen no call itself and both its upstreams are fast; left alone it would
    // try a first (unknown targets go first, in the order written). It reads the fleet's statistics from
    // ClickHouse and starts on b.
    let second = fleet_with(
        &format!("{ch_section}{route}"),
        Opts {
            gateway: "routing_stats_interval_ms = 100".into(),
            query: "engine = \"clickhouse\"".into(),
            ..Opts::default()
        },
    )
    .await;
    // Bounded wait for its first read of the store (every 100 ms), not a timing assertion.
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let seen = run(&second, 5, "second").await;
    assert_eq!(seen, vec!['b'; 5], "the store's view of a keeps the second gateway on b");
    assert_eq!(second.a.received(), 0);
}
