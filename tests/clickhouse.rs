//! ClickHouse as the fleet store, against a real `clickhouse-server` (Debian's 18.16 package) started by
//! the harness: migrations, the sink's idempotence and dead-letter path, every field round-tripped, the
//! read-only SQL endpoint, and traffic through `tollgate serve` with both sinks giving the same reports
//! from both engines to the nano-dollar. `chdb_compat` replays the same DDL, data and report queries on a
//! current ClickHouse (26.x, embedded in the `chdb-core` wheel).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::clickhouse::ChServer;
use common::{bin, s, u, Gateway, Opts, ENG_KEY, FIN_KEY, HDR_KEY};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_clickhouse::sink::{Landed, PendingRows};
use tollgate_clickhouse::{ClickHouseConfig, ClickHouseSink};
use tollgate_events::{CallEvent, ClientApi, Endpoint, Outcome, UsageSource};

fn event(i: u64, department: &str, ts_us: i64) -> CallEvent {
    let mut tags = BTreeMap::new();
    tags.insert("env".to_string(), "prod".to_string());
    tags.insert("ticket".to_string(), format!("T-{i}"));
    CallEvent {
        schema_version: tollgate_events::SCHEMA_VERSION,
        event_id: format!("ev-{i:06}"),
        request_id: format!("req-{i}"),
        ts_start_us: ts_us,
        ts_end_us: ts_us + 1_234_567,
        tenant: "acme".into(),
        department: department.into(),
        team: "core".into(),
        project: "search".into(),
        user: "alice".into(),
        api_key_id: "eng-key".into(),
        tags,
        endpoint: Endpoint::Messages,
        client_api: ClientApi::Anthropic,
        stream: i.is_multiple_of(2),
        provider: "anthropic".into(),
        upstream: "claude".into(),
        requested_model: "claude-x".into(),
        served_model: "claude-x-2026".into(),
        route: "default".into(),
        routing_strategy: "cost".into(),
        attempt: 2,
        fallback_from: "gpt-4o".into(),
        status_code: 200,
        outcome: Outcome::ClientDisconnect,
        error_type: "none".into(),
        finish_reason: "end_turn".into(),
        input_tokens: 1_000 + i,
        output_tokens: 50 + i,
        cached_input_tokens: 600,
        cache_write_tokens: 100,
        reasoning_tokens: 7,
        usage_source: UsageSource::Estimated,
        cost_nanousd: 123_456_789_012 + i,
        price_id: "claude-x@2026-11-01".into(),
        latency_ms: 1_235,
        ttft_ms: 99,
        upstream_latency_ms: 1_200,
        gateway_overhead_us: 35,
        request_bytes: 4_096,
        response_bytes: 65_536,
        cache_hit: i.is_multiple_of(3),
        saved_nanousd: 9_876_543_210 + i,
        guard: "injection:override-01".into(),
        predicted_cost_nanousd: 123_000_000_000 + i,
    }
}

async fn sink_for(ch: &ChServer, db: &str, dir: &std::path::Path) -> ClickHouseSink {
    let cfg = ClickHouseConfig::new(ch.url(), db);
    tollgate_clickhouse::migrate(&cfg).await.expect("migrate");
    ClickHouseSink::open(cfg, dir).expect("open sink")
}

/// Seals one batch of the given events (all in one month).
fn seal(sink: &mut ClickHouseSink, events: Vec<CallEvent>) -> tollgate_clickhouse::sink::Batch {
    let mut p = PendingRows::default();
    sink.append(&mut p, &Arc::new(events));
    let mut batches = sink.seal(&mut p).expect("seal");
    assert_eq!(batches.len(), 1);
    batches.remove(0)
}

async fn count(ch: &ChServer, db: &str, filter: &str) -> u64 {
    let rows = ch.rows(&format!("SELECT count() AS n FROM {db}.calls WHERE {filter}")).await;
    u(&rows[0], "n")
}

const NOV_2026: i64 = 1_795_000_000_000_000; // 2026-11-18 11:06:40 UTC

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_command_applies_each_migration_once_and_stops_on_a_server_error() {
    let ch = ChServer::get();
    let db = ch.fresh_database("mig");
    let run = |args: &[&str]| Command::new(bin()).arg("migrate").args(args).output().unwrap();
    let out = run(&["--config", "/nonexistent/tollgate.toml", "--clickhouse-url", &ch.url(), "--database", &db]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Every migration in the binary's list, in order (the list grows with each issue's migrations).
    let all: Vec<(u64, String)> =
        tollgate_clickhouse::MIGRATIONS.iter().map(|m| (u64::from(m.version), m.name.to_string())).collect();
    assert_eq!(all[..2], [(1, "calls".to_string()), (2, "event_v2".to_string())]);
    let versions: Vec<u32> = tollgate_clickhouse::MIGRATIONS.iter().map(|m| m.version).collect();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("applied migrations {versions:?}")), "{stdout}");
    let out = run(&["--config", "/nonexistent/tollgate.toml", "--clickhouse-url", &ch.url(), "--database", &db]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"), "{}", String::from_utf8_lossy(&out.stdout));
    let recorded = ch.rows(&format!("SELECT version, name FROM {db}.schema_migrations")).await;
    let mut recorded: Vec<(u64, String)> =
        recorded.iter().map(|r| (u(r, "version"), s(r, "name").to_string())).collect();
    recorded.sort();
    assert_eq!(recorded, all);
    let engine = ch
        .rows(&format!(
            "SELECT engine, partition_key, sorting_key FROM system.tables WHERE database = '{db}' AND name = 'calls'"
        ))
        .await;
    assert_eq!(s(&engine[0], "engine"), "MergeTree", "{engine:?}");

    // A server-side failure stops the command with the server's message (an unknown user here).
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, format!("[clickhouse]\nurl = \"{}\"\nuser = \"nobody_here\"\n", ch.url())).unwrap();
    let out = run(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nobody_here"), "{err}");
    // A bad database name is a config error naming the key.
    let out = run(&["--config", "/nonexistent/x.toml", "--clickhouse-url", &ch.url(), "--database", "x;DROP"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("clickhouse.database"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_round_trips_through_the_server() {
    let ch = ChServer::get();
    let db = ch.fresh_database("rt");
    let dir = tempfile::tempdir().unwrap();
    let mut sink = sink_for(ch, &db, dir.path()).await;
    let ev = event(7, "engineering", NOV_2026 + 123_456);
    let mut b = seal(&mut sink, vec![ev.clone()]);
    assert_eq!(sink.write(&mut b).await.unwrap(), Landed::Inserted);
    let rows =
        ch.rows(&format!("SELECT *, toString(ts_start) AS ts_text, toString(date) AS date_text FROM {db}.calls")).await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    let back = CallEvent {
        schema_version: u(r, "schema_version") as u16,
        event_id: s(r, "event_id").into(),
        request_id: s(r, "request_id").into(),
        ts_start_us: r["ts_start_us"].as_i64().unwrap(),
        ts_end_us: r["ts_end_us"].as_i64().unwrap(),
        tenant: s(r, "tenant").into(),
        department: s(r, "department").into(),
        team: s(r, "team").into(),
        project: s(r, "project").into(),
        user: s(r, "user").into(),
        api_key_id: s(r, "api_key_id").into(),
        tags: r["tag_keys"]
            .as_array()
            .unwrap()
            .iter()
            .zip(r["tag_values"].as_array().unwrap())
            .map(|(k, v)| (k.as_str().unwrap().to_string(), v.as_str().unwrap().to_string()))
            .collect(),
        endpoint: serde_json::from_value(r["endpoint"].clone()).unwrap(),
        client_api: serde_json::from_value(r["client_api"].clone()).unwrap(),
        stream: u(r, "stream") == 1,
        provider: s(r, "provider").into(),
        upstream: s(r, "upstream").into(),
        requested_model: s(r, "requested_model").into(),
        served_model: s(r, "served_model").into(),
        route: s(r, "route").into(),
        routing_strategy: s(r, "routing_strategy").into(),
        attempt: u(r, "attempt") as u16,
        fallback_from: s(r, "fallback_from").into(),
        status_code: u(r, "status_code") as u16,
        outcome: serde_json::from_value(r["outcome"].clone()).unwrap(),
        error_type: s(r, "error_type").into(),
        finish_reason: s(r, "finish_reason").into(),
        input_tokens: u(r, "input_tokens"),
        output_tokens: u(r, "output_tokens"),
        cached_input_tokens: u(r, "cached_input_tokens"),
        cache_write_tokens: u(r, "cache_write_tokens"),
        reasoning_tokens: u(r, "reasoning_tokens"),
        usage_source: serde_json::from_value(r["usage_source"].clone()).unwrap(),
        cost_nanousd: u(r, "cost_nanousd"),
        price_id: s(r, "price_id").into(),
        latency_ms: u(r, "latency_ms") as u32,
        ttft_ms: u(r, "ttft_ms") as u32,
        upstream_latency_ms: u(r, "upstream_latency_ms") as u32,
        gateway_overhead_us: u(r, "gateway_overhead_us") as u32,
        request_bytes: u(r, "request_bytes"),
        response_bytes: u(r, "response_bytes"),
        cache_hit: u(r, "cache_hit") == 1,
        saved_nanousd: u(r, "saved_nanousd"),
        guard: s(r, "guard").into(),
        predicted_cost_nanousd: u(r, "predicted_cost_nanousd"),
    };
    assert_eq!(back, ev);
    assert_eq!(s(r, "date_text"), ev.date());
    assert_eq!(s(r, "ts_text"), "2026-11-18 11:06:40");
    assert_eq!(s(r, "batch_id"), b.batch_id);
}

/// A TCP proxy in front of ClickHouse that, while `swallow` is set, passes requests through but throws
/// the server's answers away and hangs up: the insert happens, its acknowledgement is lost.
async fn lossy_proxy(target: u16, swallow: Arc<std::sync::atomic::AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let swallow = swallow.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { return };
                if !swallow.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = async {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                };
                let down = async {
                    // Read the whole answer (the insert is done once it starts coming), then drop it.
                    let mut buf = vec![0u8; 65536];
                    let _ = sr.read(&mut buf).await;
                    let _ = cw.shutdown().await;
                };
                tokio::join!(
                    async {
                        tokio::select! { _ = up => {}, _ = tokio::time::sleep(Duration::from_secs(30)) => {} }
                    },
                    down
                );
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_acknowledgement_was_lost_lands_once() {
    let ch = ChServer::get();
    let db = ch.fresh_database("idem");
    let dir = tempfile::tempdir().unwrap();
    let swallow = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let port = lossy_proxy(ch.http_port, swallow.clone()).await;
    let mut cfg = ClickHouseConfig::new(format!("http://127.0.0.1:{port}"), db.clone());
    cfg.insert_timeout_ms = 5_000;
    swallow.store(false, std::sync::atomic::Ordering::SeqCst);
    tollgate_clickhouse::migrate(&cfg).await.unwrap();
    let mut sink = ClickHouseSink::open(cfg, dir.path()).unwrap();

    let events: Vec<CallEvent> = (0..500).map(|i| event(i, "engineering", NOV_2026 + i as i64)).collect();
    let expected_cost: u64 = events.iter().map(|e| e.cost_nanousd).sum();
    let mut b = seal(&mut sink, events);
    swallow.store(true, std::sync::atomic::Ordering::SeqCst);
    let first = sink.write(&mut b).await;
    assert!(first.is_err(), "the acknowledgement was swallowed, the sink cannot know: {first:?}");
    // The insert did happen.
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(ch, &db, "1").await < 500 {
        assert!(Instant::now() < deadline, "the swallowed insert never landed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    swallow.store(false, std::sync::atomic::Ordering::SeqCst);
    // The retry finds the batch stored and does not send it again.
    assert_eq!(sink.write(&mut b).await.unwrap(), Landed::AlreadyPresent);
    assert_eq!(sink.write(&mut b).await.unwrap(), Landed::AlreadyPresent);
    assert_eq!(count(ch, &db, "1").await, 500);
    let sum = ch.rows(&format!("SELECT sum(cost_nanousd) AS c, uniqExact(event_id) AS ids FROM {db}.calls")).await;
    assert_eq!((u(&sum[0], "c"), u(&sum[0], "ids")), (expected_cost, 500));
    assert_eq!(sink.metrics.batches_already_present.load(std::sync::atomic::Ordering::Relaxed), 2);

    // A batch that was tried but never reached the server is inserted on the retry.
    let mut b2 = seal(&mut sink, vec![event(900, "finance", NOV_2026)]);
    swallow.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = sink.write(&mut b2).await;
    swallow.store(false, std::sync::atomic::Ordering::SeqCst);
    let again = sink.write(&mut b2).await.unwrap();
    assert!(matches!(again, Landed::AlreadyPresent | Landed::Inserted));
    assert_eq!(count(ch, &db, "department = 'finance'").await, 1);

    // Batch ids never repeat, even across a restart of the sink (offsets are reserved on disk).
    let id_before = b2.batch_id.clone();
    drop(sink);
    let mut reopened = ClickHouseSink::open(ClickHouseConfig::new(ch.url(), db.clone()), dir.path()).unwrap();
    let b3 = seal(&mut reopened, vec![event(901, "finance", NOV_2026)]);
    assert_ne!(b3.batch_id, id_before);
    assert_ne!(b3.batch_id, b.batch_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_batch_goes_to_the_dead_letter_file_and_the_next_one_lands() {
    let ch = ChServer::get();
    let db = ch.fresh_database("dlq");
    let dir = tempfile::tempdir().unwrap();
    let mut sink = sink_for(ch, &db, dir.path()).await;
    // Break the table under the sink: the column its inserts name is gone.
    ch.query(&format!("ALTER TABLE {db}.calls DROP COLUMN price_id")).await;
    let bad: Vec<CallEvent> = (0..3).map(|i| event(i, "engineering", NOV_2026)).collect();
    let mut b = seal(&mut sink, bad.clone());
    assert_eq!(sink.write(&mut b).await.unwrap(), Landed::DeadLettered);
    let path = dir.path().join("deadletter").join(format!("clickhouse-{}.jsonl", b.batch_id));
    let text = std::fs::read_to_string(&path).expect("dead-letter file");
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert!(header["error"].as_str().unwrap().contains("price_id"), "{header}");
    assert_eq!(header["rows"], 3);
    let stored: Vec<CallEvent> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(stored, bad, "the dead-letter file keeps the events whole");
    assert_eq!(sink.metrics.deadletter_batches.load(std::sync::atomic::Ordering::Relaxed), 1);

    // Fixed; the sink goes on with the next batch.
    ch.query(&format!("ALTER TABLE {db}.calls ADD COLUMN price_id String AFTER cost_nanousd")).await;
    let mut next = seal(&mut sink, vec![event(10, "finance", NOV_2026)]);
    assert_eq!(sink.write(&mut next).await.unwrap(), Landed::Inserted);
    assert_eq!(count(ch, &db, "1").await, 1);
}

fn chat(model: &str, prompt: &str, stream: bool) -> String {
    serde_json::json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]}).to_string()
}

async fn call(gw: &Gateway, rid: &str, key: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", rid)
        .header("x-tollgate-project", "labs")
        .header("x-tollgate-user", if rid.len().is_multiple_of(2) { "vera" } else { "sam" })
        .body(body.to_string());
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

/// A fixed mix: several departments and models, streams, upstream errors, rejections, a cut stream and a
/// client that hangs up.
async fn send_mix(gw: &Gateway) -> u64 {
    let mut n = 0;
    for i in 0..6u32 {
        let prompt = format!("MOCK[prompt_tokens={},tokens={},cached={}]", 100 + 37 * i, 3 + i, 10 * i);
        for (key, model) in
            [(ENG_KEY, "gpt-4o-mini"), (ENG_KEY, "gpt-4o"), (FIN_KEY, "gpt-4o-mini"), (HDR_KEY, "house-llm")]
        {
            let stream = i % 2 == 1;
            let r = call(gw, &format!("m-{i}-{n}"), Some(key), &chat(model, &prompt, stream)).await;
            assert_eq!(r.status(), 200);
            let _ = r.bytes().await.unwrap();
            n += 1;
        }
    }
    let r = call(gw, "m-500", Some(ENG_KEY), &chat("gpt-4o", "MOCK[status=500]", false)).await;
    assert_eq!(r.status(), 500);
    let r = call(gw, "m-nokey", None, &chat("gpt-4o", "x", false)).await;
    assert_eq!(r.status(), 401);
    let r = call(gw, "m-forbidden", Some(FIN_KEY), &chat("gpt-4o", "x", false)).await;
    assert_eq!(r.status(), 403);
    let r = call(gw, "m-cut", Some(ENG_KEY), &chat("gpt-4o-mini", "hello there MOCK[tokens=20,cut=3]", true)).await;
    let _ = r.bytes().await;
    let r = call(gw, "m-hangup", Some(HDR_KEY), &chat("gpt-4o-mini", "count MOCK[tokens=50,delay_ms=50]", true)).await;
    let mut stream = r.bytes_stream();
    let mut got = String::new();
    while let Some(Ok(b)) = stream.next().await {
        got.push_str(&String::from_utf8_lossy(&b));
        if got.contains("tok1 ") {
            break;
        }
    }
    drop(stream);
    n + 5
}

fn ch_section(ch: &ChServer, db: &str) -> String {
    format!("[clickhouse]\nurl = \"{}\"\ndatabase = \"{db}\"\nflush_interval_ms = 100\n", ch.url())
}

async fn get_json(gw: &Gateway, path: &str) -> serde_json::Value {
    let r = gw.http.get(format!("{}{path}", gw.url)).bearer_auth(ENG_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn get_text(gw: &Gateway, path: &str) -> String {
    let r = gw.http.get(format!("{}{path}", gw.url)).bearer_auth(ENG_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.unwrap()
}

async fn post_sql(gw: &Gateway, sql: &str) -> (u16, serde_json::Value) {
    let r = gw.post("/v1/sql", Some(ENG_KEY), &serde_json::json!({ "sql": sql }).to_string()).await;
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sinks_get_every_event_and_both_engines_give_the_same_answers() {
    let ch = ChServer::get();
    let db = ch.fresh_database("e2e");
    // Gateway A: both sinks, answers from DataFusion.
    let a = Gateway::start_with(Opts {
        collector: "flush_interval_ms = 100\nsinks = [\"parquet\", \"clickhouse\"]".into(),
        extra: ch_section(ch, &db),
        ..Opts::default()
    })
    .await;
    let sent = send_mix(&a).await;
    a.wait_events(sent).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(ch, &db, "1").await < sent {
        assert!(Instant::now() < deadline, "clickhouse got {} of {sent}; log:\n{}", count(ch, &db, "1").await, a.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Exactly once in each store.
    assert_eq!(a.wait_events(sent).await, sent);
    assert_eq!(count(ch, &db, "1").await, sent);
    let ids = ch.rows(&format!("SELECT uniqExact(event_id) AS n FROM {db}.calls")).await;
    assert_eq!(u(&ids[0], "n"), sent);
    let outcomes =
        ch.rows(&format!("SELECT toString(outcome) AS o, count() AS n FROM {db}.calls GROUP BY o ORDER BY o")).await;
    let outcomes: Vec<(String, u64)> = outcomes.iter().map(|r| (s(r, "o").to_string(), u(r, "n"))).collect();
    for o in ["client_disconnect", "invalid_request", "ok", "unauthorized", "upstream_error"] {
        assert!(outcomes.iter().any(|(x, _)| x == o), "no {o} in {outcomes:?}");
    }

    // Gateway B: the same ClickHouse database as its query engine.
    let b = Gateway::start_with(Opts {
        query: "engine = \"clickhouse\"".into(),
        extra: ch_section(ch, &db),
        ..Opts::default()
    })
    .await;
    for path in [
        "/v1/showback?from=2000-01-01",
        "/v1/showback?from=2000-01-01&group_by=department,team,model",
        "/v1/showback?from=2000-01-01&group_by=outcome,stream,endpoint,date",
        "/v1/showback?from=2000-01-01&group_by=key,user,project,provider,upstream,requested_model",
        "/v1/latency?from=2000-01-01",
        "/v1/latency?from=2000-01-01&group_by=department,model",
        "/v1/latency?from=2000-01-01&group_by=stream",
    ] {
        let (x, y) = (get_json(&a, path).await, get_json(&b, path).await);
        assert_eq!(x, y, "{path}: datafusion and clickhouse differ");
        assert!(!x["rows"].as_array().unwrap().is_empty(), "{path}: {x}");
    }
    let path = "/v1/showback?from=2000-01-01&group_by=department,model&format=csv";
    let (x, y) = (get_text(&a, path).await, get_text(&b, path).await);
    assert_eq!(x, y);
    // The total equals the sum of the events, to the nano-dollar, and is not trivially zero.
    let total = get_json(&b, "/v1/showback?from=2000-01-01").await["total"].clone();
    let direct = ch.rows(&format!("SELECT sum(cost_nanousd) AS c, count() AS n FROM {db}.calls")).await;
    assert_eq!(total["cost_nanousd"].as_u64(), direct[0]["c"].as_u64());
    assert!(u(&direct[0], "c") > 0);
    assert_eq!(total["calls"].as_u64(), Some(sent));

    // The same SQL over both engines.
    for sql in [
        "SELECT department, team, count(*) AS calls, sum(cost_nanousd) AS cost, sum(input_tokens) AS tin FROM calls GROUP BY department, team ORDER BY department, team",
        "SELECT served_model, max(output_tokens) AS mx, min(latency_ms) >= 0 AS ok FROM calls WHERE outcome = 'ok' GROUP BY served_model ORDER BY served_model",
        "SELECT request_id, cost_nanousd, usage_source, status_code FROM calls ORDER BY request_id",
    ] {
        let ((sa, va), (sb, vb)) = (post_sql(&a, sql).await, post_sql(&b, sql).await);
        assert_eq!((sa, sb), (200, 200), "{sql}: {va} / {vb}");
        let norm = |v: &serde_json::Value| -> Vec<Vec<String>> {
            v["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    r.as_object()
                        .unwrap()
                        .values()
                        .map(|x| match x {
                            serde_json::Value::Bool(b) => u8::from(*b).to_string(),
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .collect()
        };
        assert_eq!(norm(&va), norm(&vb), "{sql}");
        assert_eq!(va["row_count"], vb["row_count"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_on_clickhouse_is_read_only_and_sees_only_the_call_log() {
    let ch = ChServer::get();
    let db = ch.fresh_database("sqlro");
    let gw = Gateway::start_with(Opts {
        collector: "flush_interval_ms = 100\nsinks = [\"clickhouse\"]".into(),
        query: "engine = \"clickhouse\"\nsql_max_rows = 2".into(),
        extra: ch_section(ch, &db),
        ..Opts::default()
    })
    .await;
    for i in 0..3 {
        let r = call(&gw, &format!("q-{i}"), Some(ENG_KEY), &chat("gpt-4o-mini", "MOCK[tokens=1]", false)).await;
        assert_eq!(r.status(), 200);
    }
    gw.wait_events(3).await;
    let (st, v) = post_sql(&gw, "SELECT event_id FROM calls").await;
    assert_eq!(st, 200);
    assert_eq!((v["row_count"].as_u64(), v["truncated"].as_bool()), (Some(2), Some(true)), "{v}");

    for (bad, codes) in [
        ("INSERT INTO calls (event_id) VALUES ('x')", &["not_read_only"][..]),
        ("DROP TABLE calls", &["not_read_only"]),
        ("ALTER TABLE calls DELETE WHERE 1", &["not_read_only"]),
        ("SELECT name FROM system.tables", &["not_allowed"]),
        ("SELECT * FROM system.processes", &["not_allowed"]),
        ("SELECT * FROM default.calls", &["not_allowed"]),
        ("SELECT * FROM url('http://127.0.0.1:1/', CSV, 'a String')", &["not_allowed"]),
        ("SELECT * FROM calls SETTINGS readonly = 0", &["not_allowed"]),
        ("SELECT 1; DROP TABLE calls", &["not_read_only"]),
        ("SELECT no_such_column FROM calls", &["invalid_sql"]),
    ] {
        let (st, v) = post_sql(&gw, bad).await;
        assert_eq!(st, 400, "{bad} -> {v}");
        let code = v["error"]["code"].as_str().unwrap();
        assert!(codes.contains(&code), "{bad} -> {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // Injection payloads in report parameters are refused before any SQL exists.
    for path in [
        "/v1/showback?group_by=department;DROP%20TABLE%20calls",
        "/v1/showback?from=2026-01-01'%20OR%201=1--",
        "/v1/latency?group_by=department)%20FROM%20system.tables--",
    ] {
        let r = gw.http.get(format!("{}{path}", gw.url)).bearer_auth(ENG_KEY).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_parameter", "{path}: {v}");
    }
    // Nothing was changed.
    assert_eq!(count(ch, &db, "1").await, 3);
    assert_eq!(gw.wait_events(3).await, 3);
}

/// The same DDL, data and report queries on a current ClickHouse (26.x inside the `chdb-core` wheel)
/// give the same column types and answers as on the 18.16 server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_and_report_queries_give_the_same_answers_on_a_current_clickhouse() {
    let ch = ChServer::get();
    let db = ch.fresh_database("compat");
    let dir = tempfile::tempdir().unwrap();
    let mut sink = sink_for(ch, &db, dir.path()).await;
    // A data set spanning two months, several departments, models, outcomes and latencies.
    let mut events = Vec::new();
    for i in 0..240u64 {
        let mut e = event(
            i,
            ["engineering", "finance", "research"][(i % 3) as usize],
            NOV_2026 - (i as i64) * 3_600_000_000 * 7,
        );
        e.served_model = ["gpt-4o", "gpt-4o-mini", "claude-x"][(i % 4 % 3) as usize].into();
        e.outcome = if i % 5 == 0 { Outcome::UpstreamError } else { Outcome::Ok };
        e.latency_ms = (i * 37 % 1000) as u32 + 1;
        e.ttft_ms = if i % 6 == 0 { 0 } else { (i * 11 % 300) as u32 + 1 };
        events.push(e);
    }
    let mut p = PendingRows::default();
    sink.append(&mut p, &Arc::new(events));
    for mut b in sink.seal(&mut p).unwrap() {
        assert_eq!(sink.write(&mut b).await.unwrap(), Landed::Inserted);
    }
    assert_eq!(count(ch, &db, "1").await, 240);

    let ddl: Vec<String> = tollgate_clickhouse::MIGRATIONS.iter().flat_map(|m| m.statements()).collect();
    let rows = ch.query(&format!("SELECT * FROM {db}.calls ORDER BY event_id FORMAT JSONEachRow")).await;
    let chcfg = ClickHouseConfig::new(ch.url(), db.clone());
    let mut queries = Vec::new();
    for (from, to) in [(Some("2000-01-01"), None), (Some("2026-10-01"), Some("2026-10-31"))] {
        let range = tollgate_query::TimeRange::parse(from, to).unwrap();
        for group in ["", "department", "department,team,model", "outcome,stream,endpoint,date", "model"] {
            let g = tollgate_query::parse_group_by(Some(group), &[]).unwrap();
            for sql in tollgate_query::clickhouse_report_sql(chcfg.clone(), &range, &g) {
                // The answer of the 18.16 server, with the types it gave.
                let doc: serde_json::Value = serde_json::from_str(
                    &ch.query(&format!(
                        "SELECT * FROM ({}) FORMAT JSONCompact",
                        sql.replace("FROM calls", &format!("FROM {db}.calls"))
                    ))
                    .await,
                )
                .unwrap();
                let meta: Vec<[String; 2]> = doc["meta"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| [s(c, "name").to_string(), s(c, "type").to_string()])
                    .collect();
                queries.push(serde_json::json!({"sql": sql, "meta": meta, "data": doc["data"]}));
            }
        }
    }
    let nonempty = queries.iter().filter(|q| !q["data"].as_array().unwrap().is_empty()).count();
    assert!(nonempty > 10, "the reports must have something to compare");
    let spec = serde_json::json!({"ddl": ddl, "rows": rows, "queries": queries});
    let path = dir.path().join("compat.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/chdb_compat.py");
    let out = Command::new("python3").arg(script).arg(&path).output().expect("python3");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "current ClickHouse disagrees with 18.16:\n{text}");
    assert!(text.contains(" 0 failures"), "{text}");
}
