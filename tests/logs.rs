//! Request logs and the cost header through the real binary: `--log-format json` gives one JSON object
//! per line, one `request` line per call with ids, model, status, outcome, tokens, cost and latency (never
//! the key or the prompt), a `warn` line with the status for upstream errors; `x-tollgate-cost-usd` on
//! non-stream answers for keys that ask for it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{bin, Gateway, Opts, ENG_KEY, UPSTREAM_SECRET};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const COST_KEY: &str = "sk-client-cost-0004";
const SECRET_PROMPT: &str = "PROMPT-SECRET-7781";

fn house_cost(input: u64, output: u64) -> u64 {
    ((u128::from(input) * 37_500_000 + u128::from(output) * 1_100_000_000 + 500_000) / 1_000_000) as u64
}

fn usd(n: u64) -> String {
    format!("{}.{:09}", n / 1_000_000_000, n % 1_000_000_000)
}

async fn call(gw: &Gateway, key: &str, rid: &str, directive: &str, stream: bool) -> reqwest::Response {
    let body = format!(
        r#"{{"model":"house-llm","stream":{stream},"messages":[{{"role":"user","content":"{SECRET_PROMPT} MOCK[{directive}]"}}]}}"#
    );
    let r = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(key)
        .header("x-request-id", rid)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_request_logs_and_the_cost_header() {
    let extra = format!(
        "[[keys]]\nid = \"cost-key\"\nhash = \"{}\"\ndepartment = \"ops\"\ncost_header = true\n",
        common::hash(COST_KEY)
    );
    let mut gw = Gateway::start_with(Opts { extra, ..Opts::default() }).await;
    // The same config, run again with JSON logs. (One request first: the SIGTERM handler is installed
    // just after the `listening on` line.)
    gw.http.get(format!("{}/healthz", gw.url)).send().await.unwrap();
    let st = gw.stop();
    assert!(st.success(), "{st:?}: {}", gw.log());
    let log_path = gw.dir.path().join("json.log");
    let mut child = Command::new(bin())
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&gw.config)
        .env("TG_TEST_UPSTREAM_KEY", UPSTREAM_SECRET)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("listening on"));
    std::thread::spawn(move || for _ in lines {});

    let r = call(&gw, COST_KEY, "log-cost", "prompt_tokens=1000,tokens=200", false).await;
    assert_eq!(r.status(), 200);
    let header = r.headers().get("x-tollgate-cost-usd").map(|v| v.to_str().unwrap().to_string());
    let body: Value = r.json().await.unwrap();
    assert_eq!(header.as_deref(), Some(usd(house_cost(1000, 200)).as_str()), "exact cost header");
    assert_eq!(body["usage"]["prompt_tokens"], 1000, "the body still arrives whole: {body}");

    let r = call(&gw, COST_KEY, "log-cost-stream", "prompt_tokens=10,tokens=5", true).await;
    assert!(r.headers().get("x-tollgate-cost-usd").is_none(), "not on streams");
    r.bytes().await.unwrap();
    let r = call(&gw, ENG_KEY, "log-plain", "prompt_tokens=100,tokens=7", false).await;
    assert!(r.headers().get("x-tollgate-cost-usd").is_none(), "only for keys that ask");
    r.bytes().await.unwrap();
    let r = call(&gw, ENG_KEY, "log-500", "status=503", false).await;
    assert_eq!(r.status(), 503);
    r.bytes().await.unwrap();
    let r = call(&gw, "sk-not-a-key", "log-401", "", false).await;
    assert_eq!(r.status(), 401);

    // Metering writes the lines off the request path: wait for all five.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (text, lines) = loop {
        let text = std::fs::read_to_string(&log_path).unwrap();
        let lines: Vec<Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        let n = lines.iter().filter(|l| l["message"] == "request").count();
        if n >= 5 {
            break (text, lines);
        }
        assert!(Instant::now() < deadline, "{n} request lines:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();

    let req = |rid: &str| -> &Value {
        let found: Vec<&Value> = lines.iter().filter(|l| l["message"] == "request" && l["request_id"] == rid).collect();
        assert_eq!(found.len(), 1, "one request line for {rid}:\n{text}");
        found[0]
    };
    let l = req("log-cost");
    assert_eq!(l["level"], "INFO");
    assert_eq!(l["target"], "tollgate::request");
    assert_eq!(l["key_id"], "cost-key");
    assert_eq!(l["model"], "house-llm");
    assert_eq!(l["status"], 200);
    assert_eq!(l["outcome"], "ok");
    assert_eq!(l["input_tokens"], 1000);
    assert_eq!(l["output_tokens"], 200);
    assert_eq!(l["cost_nanousd"], house_cost(1000, 200));
    assert_eq!(l["cost_usd"], usd(house_cost(1000, 200)));
    assert!(l["latency_ms"].as_u64().is_some() && l["event_id"].as_str().is_some());
    assert_eq!(req("log-cost-stream")["stream"], true);
    assert_eq!(req("log-plain")["key_id"], "eng-key");
    let e = req("log-500");
    assert_eq!((e["status"].as_u64(), e["outcome"].as_str()), (Some(503), Some("upstream_error")));
    let warn: Vec<&Value> =
        lines.iter().filter(|l| l["message"] == "upstream error" && l["request_id"] == "log-500").collect();
    assert_eq!(warn.len(), 1, "{text}");
    assert_eq!(warn[0]["level"], "WARN");
    assert_eq!(warn[0]["status"], 503);
    assert_eq!(req("log-401")["outcome"], "unauthorized");

    for secret in [COST_KEY, ENG_KEY, "sk-not-a-key", UPSTREAM_SECRET, SECRET_PROMPT] {
        assert!(!text.contains(secret), "the log holds `{secret}`");
    }
}
