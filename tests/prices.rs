//! Prices through the real binary: exact model matching (no look-alikes), unpriced calls, route fallback
//! prices, service and cache-lifetime tiers, bounds on provider usage, catalog import/show/diff with the
//! real LiteLLM catalog, reload without restart, and re-pricing stored events on both engines.
//!
//! Every expected cost is computed here from the published rate (USD per million tokens; $1/M is 1,000
//! nano-USD per token) and the token counts the mock reports, never read back from the code under test.

mod common;

use common::clickhouse::ChServer;
use common::{bin, s, u, Gateway, Opts, ENG_KEY};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

const READ_ON: &str = "2026-11-30";

fn extra_upstreams() -> String {
    r#"
[[upstreams]]
name = "mock2"
kind = "openai_compatible"
base_url = "{mock_base}"
models = ["o1-pro", "claude-opus-4-6", "gpt-5"]
[[upstreams]]
name = "local"
kind = "openai_compatible"
base_url = "{mock_base}"
models = ["o3-pro"]
fallback_price = "gpt-4o-mini"
[[upstreams]]
name = "claude"
kind = "anthropic"
base_url = "{mock_base}"
models = ["claude-sonnet-4-5"]
"#
    .into()
}

async fn call(g: &Gateway, path: &str, rid: &str, body: serde_json::Value) -> reqwest::Response {
    g.http
        .post(format!("{}{path}", g.url))
        .bearer_auth(ENG_KEY)
        .header("x-request-id", rid)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn chat(g: &Gateway, rid: &str, model: &str, text: &str) -> serde_json::Value {
    chat_with(g, rid, json!({"model": model, "messages": [{"role": "user", "content": text}]})).await
}

async fn chat_with(g: &Gateway, rid: &str, body: serde_json::Value) -> serde_json::Value {
    let r = call(g, "/v1/chat/completions", rid, body).await;
    assert!(r.status().is_success(), "{rid}: {} {}", r.status(), r.text().await.unwrap());
    wait_event(g, rid).await
}

/// Waits for the one event of `rid` (a bounded wait, not a timing assertion).
async fn wait_event(g: &Gateway, rid: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = g.sql(&format!("SELECT * FROM calls WHERE request_id = '{rid}'")).await;
        if rows.len() == 1 {
            return rows[0].clone();
        }
        assert!(Instant::now() < deadline, "no event for {rid}; log:\n{}", g.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric(g: &Gateway, name: &str) -> u64 {
    let text = g.http.get(format!("{}/metrics", g.url)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_match_exactly_and_unknown_served_models_are_unpriced_or_use_the_route_fallback() {
    let g = Gateway::start_with(Opts { extra: extra_upstreams(), ..Opts::default() }).await;
    // o1-pro: $150/M in, $600/M out (before: priced as o1, $15/$60).
    let ev = chat(&g, "p-o1pro", "o1-pro", "MOCK[prompt_tokens=1000,tokens=100]").await;
    assert_eq!(u(&ev, "cost_nanousd"), 1000 * 150_000 + 100 * 600_000, "{ev}");
    assert_eq!(s(&ev, "price_id"), format!("o1-pro@builtin-{READ_ON}"));
    // claude-opus-4-6: $5/M in, $25/M out (before: priced as claude-opus-4, $15/$75).
    let ev = chat(&g, "p-opus46", "claude-opus-4-6", "MOCK[prompt_tokens=1000,tokens=100]").await;
    assert_eq!(u(&ev, "cost_nanousd"), 1000 * 5_000 + 100 * 25_000, "{ev}");
    // The provider served a model the catalog does not know: not priced as the look-alike `gpt-4o`.
    let ev = chat(&g, "p-unknown", "gpt-4o", "MOCK[fixture=prices_served_unknown]").await;
    assert_eq!(s(&ev, "served_model"), "gpt-4o-audio-preview");
    assert_eq!((u(&ev, "cost_nanousd"), s(&ev, "price_id")), (0, "unpriced"), "{ev}");
    assert_eq!(u(&ev, "input_tokens"), 1000);
    assert_eq!(metric(&g, "tollgate_unpriced_events_total").await, 1);
    assert!(g.log().contains("stored as unpriced"), "{}", g.log());
    // The same on an upstream with `fallback_price = "gpt-4o-mini"`: $0.15/M in, $0.60/M out.
    let ev = chat(&g, "p-fallback", "o3-pro", "MOCK[fixture=prices_served_unknown]").await;
    assert_eq!(u(&ev, "cost_nanousd"), 1000 * 150 + 100 * 600, "{ev}");
    assert_eq!(s(&ev, "price_id"), format!("gpt-4o-mini@builtin-{READ_ON}"));
    assert_eq!(metric(&g, "tollgate_unpriced_events_total").await, 1);
    // A dated served name (gpt-4o-2024-08-06) is priced as gpt-4o, on the priority tier the response
    // names: $4.25/M in, $17/M out.
    let ev = chat(&g, "p-priority", "gpt-4o", "MOCK[fixture=prices_priority_tier]").await;
    assert_eq!(u(&ev, "cost_nanousd"), 1000 * 4_250 + 100 * 17_000, "{ev}");
    assert_eq!(s(&ev, "price_id"), format!("gpt-4o@builtin-{READ_ON}#priority"));
    // The flex tier asked for in the request, when the response names no tier: gpt-5 flex $0.625/$5.
    let body = json!({"model": "gpt-5", "service_tier": "flex",
        "messages": [{"role": "user", "content": "MOCK[fixture=prices_no_tier]"}]});
    let ev = chat_with(&g, "p-flex", body).await;
    assert_eq!(u(&ev, "cost_nanousd"), 1000 * 625 + 100 * 5_000, "{ev}");
    assert_eq!(s(&ev, "price_id"), format!("gpt-5@builtin-{READ_ON}#flex"));
    // Anthropic cache writes: 1,024 with the 5-minute lifetime ($3.75/M) and 1,024 with 1 hour ($6/M),
    // plus 48 plain input ($3/M), 10,240 cache reads ($0.30/M) and 27 output ($15/M).
    let r = call(
        &g,
        "/v1/messages",
        "p-1h",
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
        "messages": [{"role": "user", "content": "MOCK[fixture=prices_anthropic_cache_1h]"}]}),
    )
    .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let ev = wait_event(&g, "p-1h").await;
    assert_eq!(u(&ev, "cost_nanousd"), 48 * 3_000 + 10_240 * 300 + 1_024 * 3_750 + 1_024 * 6_000 + 27 * 15_000, "{ev}");
    assert_eq!(u(&ev, "cache_write_tokens"), 2048);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbelievable_provider_usage_is_capped_marked_and_counted() {
    let g = Gateway::start().await;
    // prompt_tokens -5 and completion_tokens 12.5: capped to 0 and 12; 12 x $0.60/M.
    let ev = chat(&g, "b-neg", "gpt-4o-mini", "MOCK[fixture=prices_usage_negative]").await;
    assert_eq!(s(&ev, "usage_source"), "capped", "{ev}");
    assert_eq!((u(&ev, "input_tokens"), u(&ev, "output_tokens")), (0, 12));
    assert_eq!(u(&ev, "cost_nanousd"), 12 * 600);
    // 900 billion prompt tokens for a 128K-token model: capped at 4 x 128,000 = 512,000 ($0.15/M).
    let ev = chat(&g, "b-huge", "gpt-4o-mini", "MOCK[fixture=prices_usage_absurd]").await;
    assert_eq!(s(&ev, "usage_source"), "capped", "{ev}");
    assert_eq!(u(&ev, "input_tokens"), 512_000);
    assert_eq!(u(&ev, "cost_nanousd"), 512_000 * 150 + 10 * 600);
    assert_eq!(metric(&g, "tollgate_usage_capped_total").await, 2);
    assert!(g.log().contains("counts capped"), "{}", g.log());
    // Sane usage is untouched.
    let ev = chat(&g, "b-ok", "gpt-4o-mini", "MOCK[prompt_tokens=1000,tokens=100]").await;
    assert_eq!(s(&ev, "usage_source"), "provider");
    assert_eq!(u(&ev, "cost_nanousd"), 1000 * 150 + 100 * 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_ingest_refuses_events_without_money_fields_or_with_unknown_versions() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndata_dir = \"{}\"\n[collector]\nlisten = \"127.0.0.1:{port}\"\nflush_interval_ms = 100\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(bin())
        .args(["collector", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    assert!(lines.next().unwrap().unwrap().starts_with("listening on"));
    let http = reqwest::Client::new();
    let full = serde_json::to_value(tollgate_events::CallEvent {
        schema_version: tollgate_events::SCHEMA_VERSION,
        event_id: "e1".into(),
        cost_nanousd: 5,
        ..Default::default()
    })
    .unwrap();
    let post = |body: String| {
        let http = http.clone();
        async move {
            let r = http.post(format!("http://127.0.0.1:{port}/v1/ingest")).body(body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let mut missing = full.clone();
    missing.as_object_mut().unwrap().remove("cost_nanousd");
    let (status, text) = post(missing.to_string()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("cost_nanousd"), "{text}");
    let mut future = full.clone();
    future["schema_version"] = 99.into();
    let (status, text) = post(future.to_string()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("schema_version 99"), "{text}");
    let (status, text) = post(full.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let _ = child.kill();
    let _ = child.wait();
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The real LiteLLM catalog, installed by `scripts/test.sh` from the `litellm` 1.110.2 wheel.
fn litellm_file() -> std::path::PathBuf {
    let p = std::env::var("TOLLGATE_LITELLM_PRICES").unwrap_or_default();
    let path = std::path::PathBuf::from(&p);
    assert!(
        !p.is_empty() && path.exists(),
        "TOLLGATE_LITELLM_PRICES must name litellm/model_prices_and_context_window_backup.json from the litellm \
         1.110.2 wheel (scripts/test.sh downloads it: pip download litellm==1.110.2 --no-deps)"
    );
    path
}

#[test]
fn builtin_table_agrees_with_the_real_litellm_catalog() {
    let text = std::fs::read_to_string(litellm_file()).unwrap();
    let (lite, report) = tollgate_events::litellm_to_catalog(&text).unwrap();
    assert!(lite.models.len() > 1000, "{}", lite.models.len());
    assert!(report.not_token_priced > 0);
    let builtin: tollgate_events::Catalog =
        serde_json::from_str(tollgate_events::PriceTable::builtin_catalog_text()).unwrap();
    let mut compared = 0;
    for (model, entries) in &builtin.models {
        if entries[0].note.is_some() {
            continue; // retired models, kept from the 2025-11-01 table
        }
        let theirs = &lite.models[model][0];
        assert!(entries[0].same_rates(theirs, model), "{model}: built-in {:?} vs LiteLLM {:?}", entries[0], theirs);
        compared += 1;
    }
    assert!(compared >= 90, "{compared}");
    // Published prices, read independently of both files.
    let mut t = tollgate_events::PriceTable::default();
    t.merge_catalog(&lite, tollgate_events::PriceSource::Catalog).unwrap();
    let g = t.get("gemini-2.5-pro").unwrap();
    assert_eq!((g.standard.base.input, g.standard.base.output), (1_250_000_000, 10_000_000_000));
    assert_eq!(g.standard.above[0].0, 200_000);
    assert_eq!((g.standard.above[0].1.input, g.standard.above[0].1.output), (2_500_000_000, 15_000_000_000));
    let o = t.get("claude-opus-4-6").unwrap();
    assert_eq!((o.standard.base.cache_write, o.standard.base.cache_write_1h), (6_250_000_000, 10_000_000_000));
    assert_eq!(t.model_limits("claude-opus-4-6").unwrap().max_input_tokens, Some(1_000_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litellm_import_show_diff_and_long_context_tier_through_the_binary() {
    let file = litellm_file();
    let mut g = Gateway::start().await;
    g.stop();
    let config = g.config.clone();
    let cfg = config.to_str().unwrap();
    // gemini-2.5-pro is not built in: a config serving it is refused until a catalog prices it.
    let text = std::fs::read_to_string(&config).unwrap();
    let gem = text.replace("models = [\"gpt-4o-mini\",", "models = [\"gemini-2.5-pro\", \"gpt-4o-mini\",");
    assert_ne!(gem, text);
    std::fs::write(&config, &gem).unwrap();
    let (ok, _, err) = run(&["check", "--config", cfg]);
    assert!(!ok && err.contains("gemini-2.5-pro") && err.contains("has no price"), "{err}");
    // diff against the prices in force: gemini is new; a changed gpt-4o shows old -> new.
    let (ok, out, err) = run(&["prices", "diff", file.to_str().unwrap(), "--config", cfg]);
    assert!(ok, "{err}");
    assert!(out.contains("+ gemini-2.5-pro: input 1.25 "), "{out}");
    let mine = config.with_file_name("mine.toml");
    std::fs::write(
        &mine,
        "format = \"tollgate-prices/1\"\nname = \"acme\"\n[[models.\"gpt-4o\"]]\ninput = \"3\"\noutput = 10\ncached_input = \"1.25\"\n",
    )
    .unwrap();
    let (ok, out, err) = run(&["prices", "diff", mine.to_str().unwrap(), "--config", cfg]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("~ gpt-4o (gpt-4o@builtin-{READ_ON}): input 2.5 -> 3")), "{out}");
    assert!(out.contains("0 new, 1 changed, 0 unchanged"), "{out}");
    // Import, effective from the start of 2026, so calls now use it.
    let (ok, out, err) =
        run(&["prices", "import", file.to_str().unwrap(), "--config", cfg, "--effective-from", "2026-01-01"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("effective from 2026-01-01T00:00:00Z"), "{out}");
    let (ok, out, err) = run(&["check", "--config", cfg]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&["prices", "show", "gemini-2.5-pro-2099-01-01", "--config", cfg]);
    assert!(ok, "{err}");
    assert!(out.contains("date suffix of `gemini-2.5-pro`"), "{out}");
    let tier = out.lines().find(|l| l.starts_with("standard above 200000 input tokens")).unwrap_or_default();
    assert_eq!(tier.split_whitespace().nth(5), Some("2.5"), "{out}");
    assert!(out.contains("context window 1048576 tokens"), "{out}");
    let (ok, _, err) = run(&["prices", "show", "o1-ultra", "--config", cfg]);
    assert!(!ok && err.contains("no price for `o1-ultra`"), "{err}");

    g.spawn();
    // 250,000 prompt tokens is above the 200K tier: every token at $2.50/M in and $15/M out.
    let ev = chat(&g, "l-long", "gemini-2.5-pro", "MOCK[prompt_tokens=250000,tokens=100]").await;
    assert_eq!(u(&ev, "cost_nanousd"), 250_000 * 2_500 + 100 * 15_000, "{ev}");
    assert_eq!(s(&ev, "price_id"), "gemini-2.5-pro@litellm-20260101T000000Z");
    let ev = chat(&g, "l-short", "gemini-2.5-pro", "MOCK[prompt_tokens=1000,tokens=100]").await;
    assert_eq!(u(&ev, "cost_nanousd"), 1000 * 1_250 + 100 * 10_000, "{ev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn price_changes_reload_on_sighup_and_admin_reload_with_new_versions() {
    let admin = "sk-admin-prices-1";
    let g = Gateway::start_with(Opts {
        extra: format!("[[admin_keys]]\nid = \"ops\"\nhash = \"{}\"\n", common::hash(admin)),
        ..Opts::default()
    })
    .await;
    // house-llm from the harness config: $0.0375/M in (37.5 nano per token), $1.10/M out.
    let ev = chat(&g, "r-1", "house-llm", "MOCK[prompt_tokens=1000,tokens=100]").await;
    assert_eq!(u(&ev, "cost_nanousd"), 37_500 + 110_000);
    let id1 = s(&ev, "price_id").to_string();
    assert!(id1.starts_with("house-llm@config-"), "{id1}");
    let text = std::fs::read_to_string(&g.config).unwrap();
    std::fs::write(&g.config, text.replace("input = \"0.0375\"", "input = \"0.5\"")).unwrap();
    let pid = g.child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !g.log().contains("prices reloaded") {
        assert!(Instant::now() < deadline, "no reload; log:\n{}", g.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ev = chat(&g, "r-2", "house-llm", "MOCK[prompt_tokens=1000,tokens=100]").await;
    assert_eq!(u(&ev, "cost_nanousd"), 1000 * 500 + 110_000);
    let id2 = s(&ev, "price_id").to_string();
    assert!(id2.starts_with("house-llm@config-") && id2 != id1, "{id1} {id2}");
    // POST /admin/reload: output to $2/M.
    let text = std::fs::read_to_string(&g.config).unwrap();
    std::fs::write(&g.config, text.replace("output = 1.1", "output = 2")).unwrap();
    let r = g.http.post(format!("{}/admin/reload", g.url)).bearer_auth(admin).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let ev = chat(&g, "r-3", "house-llm", "MOCK[prompt_tokens=1000,tokens=100]").await;
    assert_eq!(u(&ev, "cost_nanousd"), 1000 * 500 + 100 * 2_000);
    // A price that does not parse is refused and the running prices stay.
    let text = std::fs::read_to_string(&g.config).unwrap();
    std::fs::write(&g.config, text.replace("output = 2", "output = \"2.x\"")).unwrap();
    let r = g.http.post(format!("{}/admin/reload", g.url)).bearer_auth(admin).send().await.unwrap();
    assert!(!r.status().is_success());
    let ev = chat(&g, "r-4", "house-llm", "MOCK[prompt_tokens=1000,tokens=100]").await;
    assert_eq!(u(&ev, "cost_nanousd"), 1000 * 500 + 100 * 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprice_rewrites_parquet_files_and_audits_the_difference() {
    let mut g = Gateway::start().await;
    for i in 0..2 {
        chat(&g, &format!("rp-h{i}"), "house-llm", "MOCK[prompt_tokens=2000,tokens=300]").await;
    }
    chat(&g, "rp-m", "gpt-4o-mini", "MOCK[prompt_tokens=2000,tokens=300]").await;
    g.stop();
    // The price was wrong: house-llm really costs $0.10/M in and $2/M out.
    let text = std::fs::read_to_string(&g.config).unwrap();
    std::fs::write(&g.config, text.replace("input = \"0.0375\"\noutput = 1.1", "input = \"0.1\"\noutput = 2")).unwrap();
    let today = chrono_today();
    let cfg = g.config.to_str().unwrap().to_string();
    let args = ["reprice", "--config", &cfg, "--from", &today, "--to", &today, "--model", "house-llm", "--by", "alice"];
    let (ok, out, err) = run(&[&args[..], &["--dry-run"]].concat());
    assert!(ok, "{out}{err}");
    assert!(out.contains("parquet: would change 2 events"), "{out}");
    let old_each = 2000 * 37_500 / 1000 + 300 * 1_100; // 75_000 + 330_000
    let new_each = 2000 * 100 + 300 * 2_000; // 200_000 + 600_000
    let (ok, out, err) = run(&args);
    assert!(ok, "{out}{err}");
    assert!(out.contains("parquet: changed 2 events"), "{out}");
    assert!(out.contains(&format!("(+{} USD)", tollgate_events::format_usd(2 * (new_each - old_each)))), "{out}");
    let audit = std::fs::read_to_string(g.data_dir().join("prices/reprice-audit.jsonl")).unwrap();
    let a: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!((s(&a, "who"), s(&a, "engine"), s(&a, "model")), ("alice", "parquet", "house-llm"));
    assert_eq!(a["delta_nanousd"].as_i64().unwrap(), 2 * (new_each - old_each) as i64);
    assert_eq!(u(&a, "old_total_nanousd"), 2 * old_each);
    g.spawn();
    let rows = g.sql("SELECT request_id, cost_nanousd, price_id FROM calls ORDER BY request_id").await;
    let got: Vec<(String, u64)> = rows.iter().map(|r| (s(r, "request_id").to_string(), u(r, "cost_nanousd"))).collect();
    assert_eq!(
        got,
        vec![("rp-h0".into(), new_each), ("rp-h1".into(), new_each), ("rp-m".into(), 2000 * 150 + 300 * 600)]
    );
    // A second run finds nothing left to change.
    g.stop();
    let (ok, out, _) = run(&args);
    assert!(ok && out.contains("parquet: changed 0 events"), "{out}");
}

fn chrono_today() -> String {
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400;
    tollgate_events::date_of_day(days as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprice_corrects_clickhouse_in_place_with_adjustment_rows() {
    let ch = ChServer::get();
    let db = ch.fresh_database("reprice");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("t.toml");
    let write_cfg = |input: &str| {
        std::fs::write(
            &config,
            format!(
                "[storage]\ndata_dir = \"{}\"\n[collector]\nsinks = [\"clickhouse\"]\n[clickhouse]\nurl = \"{}\"\ndatabase = \"{db}\"\n\
                 [prices.\"house-llm\"]\ninput = \"{input}\"\noutput = 1\n",
                dir.path().join("data").display(),
                ch.url()
            ),
        )
        .unwrap()
    };
    write_cfg("1");
    let (ok, out, err) = run(&["migrate", "--config", config.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    // Three stored calls on 2026-11-18: two of house-llm (1,000 in, 100 out) and one of gpt-4o-mini.
    let day = 1_795_000_000_000_000i64;
    let rows: Vec<String> =
        [("a", "house-llm", 1_100_000u64), ("b", "house-llm", 1_100_000), ("c", "gpt-4o-mini", 210_000)]
            .iter()
            .enumerate()
            .map(|(i, (id, model, cost))| {
                json!({"schema_version": 2, "event_id": id, "request_id": id, "ts_start": "2026-11-18 11:06:40",
                "ts_start_us": day + i as i64, "ts_end_us": day + i as i64, "date": "2026-11-18",
                "served_model": model, "requested_model": model, "input_tokens": 1000, "output_tokens": 100,
                "usage_source": "provider", "cost_nanousd": cost, "price_id": format!("{model}@old"), "outcome": "ok",
                "endpoint": "chat", "client_api": "openai"})
                .to_string()
            })
            .collect();
    ch.query(&format!("INSERT INTO {db}.calls FORMAT JSONEachRow\n{}", rows.join("\n"))).await;
    // The fixed price: $2/M in, $1/M out.
    write_cfg("2");
    let cfg = config.to_str().unwrap();
    let (ok, out, err) = run(&[
        "reprice",
        "--config",
        cfg,
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-30",
        "--model",
        "house-llm",
        "--by",
        "bob",
    ]);
    assert!(ok, "{out}{err}");
    let new_each = 1000 * 2_000 + 100 * 1_000;
    assert!(out.contains("clickhouse: changed 2 events"), "{out}");
    let got = ch.rows(&format!("SELECT event_id, cost_nanousd, price_id FROM {db}.calls ORDER BY event_id")).await;
    let got: Vec<(String, u64)> = got.iter().map(|r| (s(r, "event_id").to_string(), u(r, "cost_nanousd"))).collect();
    assert_eq!(got, vec![("a".into(), new_each), ("b".into(), new_each), ("c".into(), 210_000)]);
    let total = ch.rows(&format!("SELECT sum(cost_nanousd) AS t FROM {db}.calls")).await;
    assert_eq!(u(&total[0], "t"), 2 * new_each + 210_000);
    let adj = ch.rows(&format!("SELECT event_id, old_cost_nanousd, new_cost_nanousd, new_price_id FROM {db}.price_adjustments ORDER BY event_id")).await;
    assert_eq!(adj.len(), 2, "{adj:?}");
    assert_eq!((u(&adj[0], "old_cost_nanousd"), u(&adj[0], "new_cost_nanousd")), (1_100_000, new_each));
    assert!(s(&adj[0], "new_price_id").starts_with("house-llm@config-"));
    let runs = ch.rows(&format!("SELECT who, events, delta_nanousd FROM {db}.price_reprices")).await;
    assert_eq!(runs.len(), 1);
    assert_eq!((s(&runs[0], "who"), u(&runs[0], "events")), ("bob", 2));
    let delta: i64 =
        runs[0]["delta_nanousd"].as_str().map(|v| v.parse().unwrap()).or(runs[0]["delta_nanousd"].as_i64()).unwrap();
    assert_eq!(delta, 2 * (new_each as i64 - 1_100_000));
}
