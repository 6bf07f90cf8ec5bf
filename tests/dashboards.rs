//! The Grafana dashboards in `dashboards/`, every panel's query run against real servers:
//! * ClickHouse: each panel's SQL, with the plugin's macros and the dashboard's variables expanded the way
//!   `grafana-clickhouse-datasource` expands them, runs on the 18.16 server over a fixed data set and
//!   returns the numbers computed here from that data set; the same SQL then runs on a current ClickHouse
//!   (26.x in the `chdb-core` wheel) and must give the same types and answers.
//! * Prometheus: each panel's PromQL runs on a real Prometheus that scrapes the `tollgate` binary under
//!   traffic, and returns series carrying every label its legend names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::clickhouse::ChServer;
use common::prometheus::PromServer;
use common::{Gateway, Opts, ENG_KEY, FIN_KEY};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tollgate_clickhouse::sink::{Landed, PendingRows};
use tollgate_clickhouse::{ClickHouseConfig, ClickHouseSink};
use tollgate_events::{CallEvent, Endpoint, Outcome, UsageSource};

fn dashboard(name: &str) -> Value {
    let path = format!("{}/dashboards/tollgate-{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Panels with their queries: (panel id, title, [query text]).
fn panels(d: &Value, field: &str) -> Vec<(u64, String, Vec<(String, String)>)> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let q = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (t[field].as_str().unwrap().to_string(), t["legendFormat"].as_str().unwrap_or("").to_string()))
                .collect();
            (p["id"].as_u64().unwrap(), p["title"].as_str().unwrap().to_string(), q)
        })
        .collect()
}

#[test]
fn dashboards_use_datasource_variables_and_unique_panel_ids() {
    for (name, var, kind) in
        [("clickhouse", "ch", "grafana-clickhouse-datasource"), ("prometheus", "prom", "prometheus")]
    {
        let d = dashboard(name);
        let ids: Vec<u64> = d["panels"].as_array().unwrap().iter().map(|p| p["id"].as_u64().unwrap()).collect();
        assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "{name}: duplicate panel ids {ids:?}");
        let vars = d["templating"]["list"].as_array().unwrap();
        assert!(vars.iter().any(|v| v["type"] == "datasource" && v["name"] == var && v["query"] == kind), "{name}");
        let want = json!({"type": kind, "uid": format!("${{{var}}}")});
        for p in d["panels"].as_array().unwrap() {
            assert_eq!(p["datasource"], want, "{name} panel {}", p["id"]);
            for t in p["targets"].as_array().unwrap() {
                assert_eq!(t["datasource"], want, "{name} panel {}", p["id"]);
            }
        }
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(v["datasource"], want, "{name} variable {}", v["name"]);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// ClickHouse

/// 2026-11-02 00:00:00 UTC.
const DAY0: i64 = 1_793_577_600;
const FROM: i64 = DAY0;
const TO: i64 = DAY0 + 3 * 86_400 - 1;
const INTERVAL_S: i64 = 21_600;

/// Expands the plugin's macros (as `pkg/macros` of grafana-clickhouse-datasource does) and the
/// dashboard's variables (Grafana's formats: `:singlequote`, `:sqlstring`, plain; a custom all value is
/// inserted unformatted).
fn expand(sql: &str, vars: &BTreeMap<&str, Vec<&str>>) -> String {
    let mut s = sql.to_string();
    // `$__timeFilter(col)` → `col >= toDateTime(from) AND col <= toDateTime(to)`.
    while let Some(i) = s.find("$__timeFilter(") {
        let close = i + s[i..].find(')').unwrap();
        let col = s[i + "$__timeFilter(".len()..close].trim().to_string();
        s.replace_range(i..=close, &format!("{col} >= toDateTime({FROM}) AND {col} <= toDateTime({TO})"));
    }
    while let Some(i) = s.find("$__timeInterval(") {
        let close = i + s[i..].find(')').unwrap();
        let col = s[i + "$__timeInterval(".len()..close].trim().to_string();
        s.replace_range(i..=close, &format!("toStartOfInterval(toDateTime({col}), INTERVAL {INTERVAL_S} second)"));
    }
    s = s
        .replace("$__fromTime", &format!("toDateTime({FROM})"))
        .replace("$__toTime", &format!("toDateTime({TO})"))
        .replace("$__interval_s", &INTERVAL_S.to_string());
    for (name, values) in vars {
        let all = values == &vec!["$__all"];
        let quoted = |vs: &Vec<&str>| {
            vs.iter()
                .map(|v| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
                .collect::<Vec<_>>()
                .join(",")
        };
        let single = if all { "'__all'".to_string() } else { quoted(values) };
        s = s
            .replace(&format!("${{{name}:singlequote}}"), &single)
            .replace(&format!("${{{name}:sqlstring}}"), &single)
            .replace(&format!("${{{name}}}"), &values.join(","))
            .replace(&format!("${name}"), &values.join(","));
    }
    assert!(!s.contains('$'), "unexpanded macro or variable in:\n{s}");
    s
}

const DEPTS: [&str; 3] = ["engineering", "finance", "research"];
const MODELS: [&str; 3] = ["gpt-4o", "gpt-4o-mini", "claude-x"];

/// The fixed data set: 3 days of calls in the range plus some on the day before (outside it).
fn seed() -> Vec<CallEvent> {
    let mut out = Vec::new();
    for i in 0..300u64 {
        let dept = DEPTS[(i % 3) as usize];
        let team = ["core", "web"][(i / 3 % 2) as usize];
        let outcome = match i % 11 {
            0 => Outcome::UpstreamError,
            5 => Outcome::RejectedBudget,
            7 => Outcome::Timeout,
            _ => Outcome::Ok,
        };
        let stream = i % 2 == 0;
        let (input, output) = (100 + i * 7 % 900, 10 + i * 13 % 400);
        // Every fourth call is a second attempt of the call before it (same request id).
        let request = if i % 4 == 3 { i - 1 } else { i };
        let ts_s = DAY0 - 86_400 + (i as i64) * 1_153 + 17;
        out.push(CallEvent {
            schema_version: tollgate_events::SCHEMA_VERSION,
            event_id: format!("ev-{i:04}"),
            request_id: format!("req-{request:04}"),
            ts_start_us: ts_s * 1_000_000 + (i as i64 * 7_919) % 1_000_000,
            ts_end_us: ts_s * 1_000_000 + 2_000_000,
            tenant: "acme".into(),
            department: dept.into(),
            team: team.into(),
            project: "p".into(),
            user: ["alice", "bob", "carol", "dan"][(i % 4) as usize].into(),
            api_key_id: format!("{dept}-key").into(),
            endpoint: Endpoint::Chat,
            stream,
            provider: "openai".into(),
            upstream: "u".into(),
            requested_model: MODELS[(i % 5 % 3) as usize].into(),
            served_model: MODELS[(i % 5 % 3) as usize].into(),
            attempt: if i % 4 == 3 { 2 } else { 1 },
            status_code: match outcome {
                Outcome::Ok => 200,
                Outcome::RejectedBudget => 429,
                Outcome::Timeout => 504,
                _ => 502,
            },
            outcome,
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: if i % 6 == 0 { input / 2 } else { 0 },
            usage_source: match i % 7 {
                0 => UsageSource::Estimated,
                3 => UsageSource::EstimatedApprox,
                _ => UsageSource::Provider,
            },
            cost_nanousd: if outcome == Outcome::RejectedBudget { 0 } else { input * 2_500 + output * 10_000 + i },
            cache_hit: i % 9 == 4,
            saved_nanousd: if i % 9 == 4 { 1_000_000 + i * 3 } else { 0 },
            latency_ms: (50 + i * 37 % 2_000) as u32,
            ttft_ms: if stream { (5 + i * 11 % 300) as u32 } else { 0 },
            ..Default::default()
        });
    }
    out
}

fn ts_s(e: &CallEvent) -> i64 {
    e.ts_start_us.div_euclid(1_000_000)
}
fn in_range(e: &CallEvent) -> bool {
    (FROM..=TO).contains(&ts_s(e))
}
fn bucket(e: &CallEvent) -> i64 {
    ts_s(e) / INTERVAL_S * INTERVAL_S
}
fn time_text(s: i64) -> String {
    chrono::DateTime::from_timestamp(s, 0).unwrap().format("%Y-%m-%d %H:%M:%S").to_string()
}
fn usd(n: u64) -> f64 {
    n as f64 / 1e9
}
/// ClickHouse's `quantileExact(level)`: the element at `level × n` (truncated) of the sorted values.
fn quantile_exact(mut v: Vec<u32>, level: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((level * v.len() as f64) as usize).min(v.len() - 1);
    f64::from(v[i])
}

/// A time series of sums per (bucket, key), in the panel's order.
fn series(
    events: &[&CallEvent],
    key: impl Fn(&CallEvent) -> String,
    value: impl Fn(&CallEvent) -> u64,
) -> Vec<(i64, String, u64)> {
    let mut m: BTreeMap<(i64, String), u64> = BTreeMap::new();
    for e in events {
        *m.entry((bucket(e), key(e))).or_default() += value(e);
    }
    m.into_iter().map(|((t, k), v)| (t, k, v)).collect()
}

/// The rows each ClickHouse panel must return over the seeded data, computed from the events.
fn expected(panel: u64, events: &[CallEvent], depts: &[&str]) -> Vec<Value> {
    let sel: Vec<&CallEvent> =
        events.iter().filter(|e| in_range(e) && depts.contains(&e.department.as_str())).collect();
    match panel {
        1 | 2 | 3 => {
            let (col, key): (&str, Box<dyn Fn(&CallEvent) -> String>) = match panel {
                1 => ("department", Box::new(|e| e.department.to_string())),
                2 => ("team", Box::new(|e| format!("{}/{}", e.department, e.team))),
                _ => ("model", Box::new(|e| e.served_model.to_string())),
            };
            series(&sel, key, |e| e.cost_nanousd)
                .into_iter()
                .map(|(t, k, v)| json!({"time": time_text(t), col: k, "usd": usd(v)}))
                .collect()
        }
        4 => {
            let mut m: BTreeMap<(String, String, String, String), (u64, u64, u64, u64)> = BTreeMap::new();
            for e in &sel {
                let a = m
                    .entry((e.department.to_string(), e.team.to_string(), e.user.to_string(), e.api_key_id.to_string()))
                    .or_default();
                a.0 += 1;
                a.1 += e.input_tokens;
                a.2 += e.output_tokens;
                a.3 += e.cost_nanousd;
            }
            let mut rows: Vec<_> = m.into_iter().collect();
            rows.sort_by(|a, b| usd(b.1 .3).total_cmp(&usd(a.1 .3)).then(a.0.cmp(&b.0)));
            rows.truncate(20);
            rows.into_iter()
                .map(|((d, t, u, k), (c, i, o, cost))| {
                    json!({"department": d, "team": t, "user": u, "api_key_id": k, "calls": c, "input_tokens": i,
                        "output_tokens": o, "cost_usd": usd(cost)})
                })
                .collect()
        }
        5 => {
            let eng: Vec<&CallEvent> = events.iter().filter(|e| in_range(e) && e.department == "engineering").collect();
            let mut cum = 0u64;
            series(&eng, |_| String::new(), |e| e.cost_nanousd)
                .into_iter()
                .map(|(t, _, v)| {
                    cum += v;
                    json!({"time": time_text(t), "remaining_usd": 1000.0 - usd(cum), "spent_usd": usd(cum)})
                })
                .collect()
        }
        6 => {
            let mut m: BTreeMap<String, (BTreeSet<String>, u64)> = BTreeMap::new();
            for e in &sel {
                let a = m.entry(e.served_model.to_string()).or_default();
                a.0.insert(e.request_id.clone());
                a.1 += e.cost_nanousd;
            }
            m.into_iter()
                .map(|(model, (reqs, cost))| {
                    let n = reqs.len() as u64;
                    json!({"model": model, "requests": n, "cost_usd": usd(cost),
                        "usd_per_request": cost as f64 / n as f64 / 1e9})
                })
                .collect()
        }
        7 => {
            let mut m: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
            for e in &sel {
                let a = m.entry(e.usage_source.as_str()).or_default();
                a.0 += 1;
                a.1 += e.input_tokens + e.output_tokens;
            }
            m.into_iter().map(|(s, (c, t))| json!({"source": s, "calls": c, "tokens": t})).collect()
        }
        8 => {
            let mut m: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
            for e in &sel {
                let a = m.entry(bucket(e)).or_default();
                a.0 += e.saved_nanousd;
                a.1 += u64::from(e.cache_hit);
            }
            m.into_iter().map(|(t, (s, h))| json!({"time": time_text(t), "saved_usd": usd(s), "hits": h})).collect()
        }
        9 => {
            let mut m: BTreeMap<String, Vec<&CallEvent>> = BTreeMap::new();
            for e in sel.iter().filter(|e| e.outcome == Outcome::Ok) {
                m.entry(e.served_model.to_string()).or_default().push(e);
            }
            m.into_iter()
                .map(|(model, es)| {
                    let lat: Vec<u32> = es.iter().map(|e| e.latency_ms).collect();
                    let ttft: Vec<u32> = es.iter().filter(|e| e.stream && e.ttft_ms > 0).map(|e| e.ttft_ms).collect();
                    json!({"model": model, "calls": es.len(),
                        "p50_ms": quantile_exact(lat.clone(), 0.5), "p95_ms": quantile_exact(lat.clone(), 0.95),
                        "p99_ms": quantile_exact(lat, 0.99),
                        "ttft_p50_ms": quantile_exact(ttft.clone(), 0.5), "ttft_p95_ms": quantile_exact(ttft, 0.95)})
                })
                .collect()
        }
        10 => {
            let errs: Vec<&CallEvent> = sel.iter().copied().filter(|e| e.outcome != Outcome::Ok).collect();
            series(&errs, |e| e.outcome.as_str().to_string(), |_| 1)
                .into_iter()
                .map(|(t, o, n)| json!({"time": time_text(t), "outcome": o, "calls": n}))
                .collect()
        }
        11 => {
            let mut m: BTreeMap<&str, u64> = BTreeMap::new();
            for e in &sel {
                *m.entry(e.outcome.as_str()).or_default() += 1;
            }
            let total = sel.len() as f64;
            m.into_iter().map(|(o, n)| json!({"outcome": o, "calls": n, "share": n as f64 / total})).collect()
        }
        12 => {
            let mut rows = sel.clone();
            rows.sort_by(|a, b| b.ts_start_us.cmp(&a.ts_start_us).then(a.event_id.cmp(&b.event_id)));
            rows.truncate(100);
            rows.into_iter()
                .map(|e| {
                    json!({"time": time_text(ts_s(e)), "request_id": e.request_id, "department": e.department,
                        "team": e.team, "user": e.user, "api_key_id": e.api_key_id, "model": e.served_model,
                        "status_code": e.status_code, "outcome": e.outcome.as_str(), "input_tokens": e.input_tokens,
                        "output_tokens": e.output_tokens, "cost_usd": usd(e.cost_nanousd), "latency_ms": e.latency_ms,
                        "ttft_ms": e.ttft_ms})
                })
                .collect()
        }
        other => panic!("panel {other} has no expectation: add one"),
    }
}

/// ClickHouse prints a whole Float64 as `1339`; compare every number as an f64 (all values here are
/// below 2^53, so integers stay exact).
fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), numbers_as_f64(v))).collect()),
        other => other.clone(),
    }
}

async fn ch_json(ch: &ChServer, db: &str, sql: &str, format: &str) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}/?database={db}&output_format_json_quote_64bit_integers=0", ch.url()))
        .body(format!("{sql}\nFORMAT {format}"))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(status.is_success(), "ClickHouse 18.16 refused:\n{sql}\n{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_panels_return_the_expected_numbers_on_18_16_and_26() {
    let ch = ChServer::get();
    let db = ch.fresh_database("dash");
    let dir = tempfile::tempdir().unwrap();
    let cfg = ClickHouseConfig::new(ch.url(), db.clone());
    tollgate_clickhouse::migrate(&cfg).await.unwrap();
    let mut sink = ClickHouseSink::open(cfg, dir.path()).unwrap();
    let events = seed();
    let mut p = PendingRows::default();
    sink.append(&mut p, &Arc::new(events.clone()));
    for mut b in sink.seal(&mut p).unwrap() {
        assert_eq!(sink.write(&mut b).await.unwrap(), Landed::Inserted);
    }
    assert!(events.iter().any(|e| !in_range(e)), "the data set must reach outside the range");

    let d = dashboard("clickhouse");
    let all: BTreeMap<&str, Vec<&str>> =
        [("department", vec!["$__all"]), ("budget_department", vec!["engineering"]), ("budget_usd", vec!["1000"])]
            .into();
    // Variables' own queries.
    for v in d["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query") {
        let got = ch_json(ch, &db, &expand(v["query"].as_str().unwrap(), &all), "JSON").await;
        let names: Vec<&str> =
            got["data"].as_array().unwrap().iter().map(|r| r["department"].as_str().unwrap()).collect();
        assert_eq!(names, DEPTS, "variable {}", v["name"]);
    }
    let mut compat = Vec::new();
    for (id, title, queries) in panels(&d, "rawSql") {
        assert_eq!(queries.len(), 1, "panel {id}");
        assert!(!queries[0].0.contains("$__timeInterval"), "panel {id}: 18.16 has no toStartOfInterval");
        for depts in [&DEPTS[..], &["finance", "research"][..]] {
            let mut vars = all.clone();
            if depts.len() < 3 {
                vars.insert("department", depts.to_vec());
            }
            let sql = expand(&queries[0].0, &vars);
            let got = ch_json(ch, &db, &sql, "JSON").await;
            let want = expected(id, &events, depts);
            assert!(!want.is_empty(), "panel {id} ({title}) expects rows");
            assert_eq!(
                numbers_as_f64(&got["data"]),
                numbers_as_f64(&Value::Array(want)),
                "panel {id} ({title}) for {depts:?}:\n{sql}"
            );
            let compact = ch_json(ch, &db, &sql, "JSONCompact").await;
            let meta: Vec<[String; 2]> = compact["meta"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| [c["name"].as_str().unwrap().into(), c["type"].as_str().unwrap().into()])
                .collect();
            compat.push(json!({"sql": sql, "meta": meta, "data": compact["data"]}));
        }
    }

    // The same SQL on a current ClickHouse.
    let ddl: Vec<String> = tollgate_clickhouse::MIGRATIONS.iter().flat_map(|m| m.statements()).collect();
    let rows = reqwest::Client::new()
        .post(format!("{}/?database={db}", ch.url()))
        .body("SELECT * FROM calls ORDER BY event_id FORMAT JSONEachRow")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let spec = json!({"ddl": ddl, "rows": rows, "queries": compat});
    let path = dir.path().join("dashboards-compat.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/chdb_compat.py");
    let out = Command::new("python3").arg(script).arg(&path).output().expect("python3");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains(" 0 failures"), "current ClickHouse disagrees with 18.16:\n{text}");
}

// ---------------------------------------------------------------------------------------------------
// Prometheus

/// The labels a legend names (`{{label}}`).
fn legend_labels(legend: &str) -> Vec<String> {
    legend.split("{{").skip(1).filter_map(|p| p.split_once("}}").map(|(l, _)| l.trim().to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_panels_return_labelled_series_from_a_scraped_tollgate() {
    let extra = r#"
[[budgets]]
id = "eng-month"
scope = "department"
match = "engineering"
period = "month"
cap_usd = "50"
[[rate_limits]]
id = "core-rpm"
scope = "team"
match = "core"
requests_per_minute = 100000
"#;
    let gw = Arc::new(Gateway::start_with(Opts { extra: extra.into(), ..Opts::default() }).await);
    let target = gw.url.trim_start_matches("http://").to_string();
    let prom = PromServer::start(&target, None).await;

    // Traffic for as long as the test polls: streams (TTFT), plain calls, an upstream error.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (gw, stop) = (gw.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (key, model, d, stream) = match i % 4 {
                    0 => (ENG_KEY, "house-llm", "prompt_tokens=500,tokens=40,first_delay_ms=15", true),
                    1 => (FIN_KEY, "gpt-4o-mini", "tokens=20", false),
                    2 => (ENG_KEY, "house-llm", "status=500", false),
                    _ => (ENG_KEY, "gpt-4o", "tokens=30,first_delay_ms=5", true),
                };
                let body = format!(
                    r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"MOCK[{d}]"}}]}}"#
                );
                if let Ok(r) = gw
                    .http
                    .post(format!("{}/v1/chat/completions", gw.url))
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    let _ = r.bytes().await;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };

    let d = dashboard("prometheus");
    let mut seen = BTreeMap::new();
    for (id, title, targets) in panels(&d, "expr") {
        for (expr, legend) in targets {
            let q = expr.replace("$__rate_interval", "20s");
            assert!(!q.contains('$'), "panel {id}: unexpanded variable in {q}");
            let series = prom.wait_series(&q, Duration::from_secs(45)).await;
            for s in &series {
                for l in legend_labels(&legend) {
                    assert!(s["metric"].get(&l).is_some(), "panel {id} ({title}): series without `{l}`: {s}\n{q}");
                }
                let v: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
                assert!(!v.is_nan(), "panel {id} ({title}): NaN from {q}");
            }
            seen.insert(q, series);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.await.unwrap();

    let has = |expr_part: &str, label: &str, value: &str| {
        seen.iter().filter(|(q, _)| q.contains(expr_part)).flat_map(|(_, s)| s).any(|s| s["metric"][label] == value)
    };
    assert!(has("tollgate_cost_nanousd_total", "department", "engineering"));
    assert!(has("tollgate_cost_nanousd_total", "department", "finance"));
    assert!(has("error_type!=", "error_type", "upstream_error"));
    assert!(has("tollgate_requests_total", "outcome", "ok"));
    assert!(has("tollgate_budget_remaining_nanousd", "budget", "eng-month"));
    assert!(has("tollgate_rate_limit_headroom_ratio", "window", "requests_per_minute"));
    assert!(has("gen_ai_server_time_to_first_token_seconds_bucket[20s])))", "gen_ai_request_model", "house-llm"));
    assert!(has("tollgate_tokens_total", "gen_ai_token_type", "output"));
    let t = prom.target_health().await;
    assert_eq!(t["health"], "up", "{t}");
    assert_eq!(t["lastError"], "", "{t}");
}
