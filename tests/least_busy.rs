//! `least_busy` through the real binary over three mock inference engines (two vLLM, one of them with
//! the pre-0.10 KV gauge name, and one SGLang), each scraped every 300 ms: calls go to the shortest
//! queue and follow it when the queues change; between equal queues the emptier KV cache wins; when
//! the metrics fail (error status, a page that never comes, no page at all) the gateway's own calls in
//! flight spread the traffic and nothing fails; once the pages come back, so does the engine view.
//!
//! Every expectation follows from the queue depths and KV figures the test sets: the waits below only
//! let the gateway read them (bounded, never asserted on).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Gateway, Opts, ENG_KEY};
use futures_util::future::join_all;
use std::time::{Duration, Instant};
use tollgate_mock::MockUpstream;

struct Engines {
    gw: Gateway,
    /// e1 (vLLM), e2 (SGLang), e3 (vLLM, legacy KV gauge).
    e: [MockUpstream; 3],
}

const NAMES: [&str; 3] = ["e1", "e2", "e3"];
const KINDS: [&str; 3] = ["vllm", "sglang", "vllm"];

async fn engines() -> Engines {
    let e = [
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    ];
    let mut extra = String::new();
    for (i, m) in e.iter().enumerate() {
        extra.push_str(&format!(
            "[[upstreams]]\nname = \"{}\"\nkind = \"openai_compatible\"\nbase_url = \"{}\"\nmodels = [\"busy-{}\"]\n\
             engine = \"{}\"\nengine_poll_ms = 300\nrequest_timeout_ms = 2000\n[prices.\"busy-{}\"]\ninput = 1\noutput = 1\n",
            NAMES[i],
            m.base_url(),
            i + 1,
            KINDS[i],
            i + 1
        ));
    }
    extra.push_str(
        "[[routes]]\nmodel = \"busy\"\nstrategy = \"least_busy\"\n\
         targets = [{ upstream = \"e1\", model = \"busy-1\" }, { upstream = \"e2\", model = \"busy-2\" }, \
         { upstream = \"e3\", model = \"busy-3\" }]\n",
    );
    let gw = Gateway::start_with(Opts { extra, ..Opts::default() }).await;
    Engines { gw, e }
}

impl Engines {
    /// Sets what each engine's `/metrics` says (`None`: no page, 404).
    fn set(&self, specs: [Option<&str>; 3]) {
        for (i, spec) in specs.iter().enumerate() {
            let s = spec.map(|s| format!("engine={},{s}{}", KINDS[i], if i == 2 { ",legacy_kv" } else { "" }));
            self.e[i].set_engine(s.as_deref().unwrap_or("")).unwrap();
        }
    }

    async fn metrics(&self) -> String {
        self.gw.http.get(format!("{}/metrics", self.gw.url)).send().await.unwrap().text().await.unwrap()
    }

    /// Waits until the gateway reads these queue depths (`None`: stale) for e1, e2, e3.
    async fn wait_seen(&self, want: [Option<f64>; 3]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.metrics().await;
            let seen: Vec<Option<f64>> = (0..3)
                .map(|i| {
                    let labels = format!("{{upstream=\"{}\",engine=\"{}\"}}", NAMES[i], KINDS[i]);
                    if gauge(&text, &format!("tollgate_engine_metrics_stale{labels}")) != Some(0.0) {
                        return None;
                    }
                    gauge(&text, &format!("tollgate_engine_queue_depth{labels}"))
                })
                .collect();
            if seen == want {
                return;
            }
            assert!(Instant::now() < deadline, "the gateway did not read {want:?}; it has {seen:?}:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `n` calls one after the other; returns which engine served each.
    async fn run(&self, n: usize, tag: &str) -> Vec<usize> {
        let mut out = Vec::new();
        for i in 0..n {
            let before: Vec<u64> = self.e.iter().map(|m| m.received()).collect();
            assert_eq!(call(&self.gw, &format!("{tag}-{i}")).await, 200);
            let after: Vec<u64> = self.e.iter().map(|m| m.received()).collect();
            let served: Vec<usize> = (0..3).filter(|&j| after[j] > before[j]).collect();
            assert_eq!(served.len(), 1, "one attempt per call: {before:?} -> {after:?}");
            out.push(served[0]);
        }
        out
    }

    fn received(&self) -> [u64; 3] {
        [self.e[0].received(), self.e[1].received(), self.e[2].received()]
    }
}

fn gauge(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn count(v: &[usize], e: usize) -> usize {
    v.iter().filter(|x| **x == e).count()
}

async fn call(gw: &Gateway, rid: &str) -> u16 {
    let body = serde_json::json!({"model": "busy", "max_tokens": 10,
        "messages": [{"role": "user", "content": "MOCK[tokens=3]"}]});
    let r = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(ENG_KEY)
        .header("x-request-id", rid)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_busy_follows_engine_queues_and_falls_back_to_calls_in_flight() {
    let f = engines().await;

    // Queues 8, 0, 3, every KV cache at 20 %: e2 scores 0.8 against 3.8 and 8.8, even with one call of
    // its own still in flight, so it takes every call.
    f.set([Some("waiting=8,running=2,kv=0.2"), Some("waiting=0,running=1,kv=0.2"), Some("waiting=3,kv=0.2")]);
    f.wait_seen([Some(8.0), Some(0.0), Some(3.0)]).await;
    let first = f.run(20, "short").await;
    assert_eq!(first, vec![1; 20], "the shortest queue takes the calls");

    // The queues change mid-run: e1 empties, e2 fills. Traffic follows.
    f.set([Some("waiting=0,kv=0.2"), Some("waiting=12,kv=0.2"), Some("waiting=3,kv=0.2")]);
    f.wait_seen([Some(0.0), Some(12.0), Some(3.0)]).await;
    let moved = f.run(20, "moved").await;
    assert_eq!(moved, vec![0; 20], "calls follow the queue that emptied");

    // Equal (empty) queues: the KV cache decides. e1 at 95 % scores 3.8, e3 at 10 % 0.4.
    f.set([Some("waiting=0,kv=0.95"), Some("waiting=12,kv=0.2"), Some("waiting=0,kv=0.1")]);
    f.wait_seen([Some(0.0), Some(12.0), Some(0.0)]).await;
    let kv = f.run(20, "kv").await;
    assert_eq!(kv, vec![2; 20], "the emptier KV cache takes the calls");
    let text = f.metrics().await;
    assert_eq!(gauge(&text, "tollgate_engine_kv_usage{upstream=\"e1\",engine=\"vllm\"}"), Some(0.95));
    assert_eq!(gauge(&text, "tollgate_engine_kv_usage{upstream=\"e3\",engine=\"vllm\"}"), Some(0.1), "legacy name");

    // The metrics go: e1 answers 500, e2's page never comes (the scrape times out), e3 has none. Every
    // reading goes stale and the gateway's own calls in flight decide: all equal, so the targets take
    // turns, and in bursts the loaded ones are skipped. Nothing fails.
    f.set([Some("status=500"), Some("hang"), None]);
    f.wait_seen([None, None, None]).await;
    let before = f.received();
    let turns = f.run(30, "stale").await;
    for e in 0..3 {
        assert!(count(&turns, e) >= 5, "every target takes a share without metrics: {turns:?}");
    }
    for e in &f.e {
        e.set_directives("first_delay_ms=50").unwrap();
    }
    for wave in 0..4 {
        let calls = (0..6).map(|i| {
            let rid = format!("burst-{wave}-{i}");
            let gw = &f.gw;
            async move { call(gw, &rid).await }
        });
        let statuses = join_all(calls).await;
        assert_eq!(statuses, vec![200; 6], "no call fails without engine metrics");
    }
    let after = f.received();
    let burst: Vec<u64> = (0..3).map(|i| after[i] - before[i] - count(&turns, i) as u64).collect();
    assert_eq!(burst.iter().sum::<u64>(), 24, "one attempt per call: {burst:?}");
    assert!(burst.iter().all(|n| *n >= 4), "calls in flight spread the bursts: {burst:?}");
    let text = f.metrics().await;
    for (i, name) in NAMES.iter().enumerate() {
        let errors = gauge(
            &text,
            &format!("tollgate_engine_scrape_errors_total{{upstream=\"{name}\",engine=\"{}\"}}", KINDS[i]),
        );
        assert!(errors.unwrap_or(0.0) >= 1.0, "{name}'s failed scrapes are counted:\n{text}");
    }

    // The pages come back: the polling tasks survived their failures and the engine view returns.
    for e in &f.e {
        e.set_directives("").unwrap();
    }
    f.set([Some("waiting=5,kv=0.2"), Some("waiting=0,kv=0.2"), Some("waiting=9,kv=0.2")]);
    f.wait_seen([Some(5.0), Some(0.0), Some(9.0)]).await;
    let back = f.run(10, "back").await;
    assert_eq!(back, vec![1; 10], "the engine view is back");
    let log = f.gw.log();
    assert!(log.contains("engine metrics scrape failed"), "failures are logged:\n{log}");
    assert!(log.contains("engine metrics readable again"), "and so is the recovery:\n{log}");
    println!("{}", log.lines().filter(|l| l.contains("engine metrics")).collect::<Vec<_>>().join("\n"));

    // Every call is recorded as a least_busy decision, in its event and in /metrics.
    let total = 20 + 20 + 20 + 30 + 24 + 10;
    f.gw.wait_events(total).await;
    let rows =
        f.gw.sql("SELECT routing_strategy, count(*) AS n FROM calls WHERE route = 'busy' GROUP BY routing_strategy")
            .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0]["routing_strategy"].as_str(), rows[0]["n"].as_u64()), (Some("least_busy"), Some(total)));
    let text = f.metrics().await;
    let decisions: f64 = (1..=3)
        .map(|i| {
            let series = format!(
                "tollgate_route_decisions_total{{route=\"busy\",strategy=\"least_busy\",target=\"e{i}/busy-{i}\"}}"
            );
            gauge(&text, &series).unwrap_or_else(|| panic!("{series} missing:\n{text}"))
        })
        .sum();
    assert_eq!(decisions, total as f64);
    assert_eq!(gauge(&text, "tollgate_route_in_flight{route=\"busy\",target=\"e2/busy-2\"}"), Some(0.0));
    let (code, said) = common::prometheus::promtool_check(&text);
    assert_eq!(code, 0, "promtool: {said}");
    let routes: serde_json::Value =
        f.gw.http
            .get(format!("{}/v1/routes", f.gw.url))
            .bearer_auth(ENG_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let route = routes["routes"].as_array().unwrap().iter().find(|r| r["model"] == "busy").unwrap();
    let e2 = &route["targets"][1];
    assert_eq!((e2["in_flight"].as_u64(), e2["engine"]["engine"].as_str()), (Some(0), Some("sglang")), "{e2}");
    assert_eq!((e2["engine"]["queue_depth"].as_f64(), e2["engine"]["stale"].as_bool()), (Some(0.0), Some(false)));
}
