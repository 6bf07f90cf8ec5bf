//! The built-in page at `/ui` in headless Chromium (Debian's `chromium` driven through `chromedriver`'s
//! WebDriver API): each view against a store seeded through the real binary shows the numbers the query
//! API gives, draws its SVG chart, and is saved as a screenshot under the test's temp dir.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{free_port, Gateway, Opts, ENG_KEY, FIN_KEY, HDR_KEY};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = "install Debian's Chromium: apt-get install -y chromium chromium-driver";

/// A headless Chromium session through chromedriver.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run chromedriver ({e}); {INSTALL}"));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| panic!("no chromium binary; {INSTALL}"));
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-dev-shm-usage", "--window-size=1280,1000"]}}}});
        let v: Value = http.post(format!("{base}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        Browser { driver, base, session, http }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if v["value"].get("error").is_some() {
            panic!("webdriver {path}: {v}");
        }
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "url", Some(json!({ "url": url }))).await;
    }

    async fn js(&self, script: &str) -> Value {
        self.cmd(reqwest::Method::POST, "execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// Waits until the page says it drew `view` (or failed).
    async fn ready(&self, view: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.js("return [document.body.dataset.ready || '', document.body.dataset.error || ''];").await;
            if v[0] == view {
                return;
            }
            assert!(v[1] == "", "view {view} failed: {}", v[1]);
            assert!(Instant::now() < deadline, "view {view} did not draw");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, path: &std::path::Path) {
        let b64 = self.cmd(reqwest::Method::GET, "screenshot", None).await;
        let png = base64_decode(b64.as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::process::Command::new("curl").args(["-s", "-X", "DELETE", &url]).output();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        let k = chunk.len() - 1;
        out.extend_from_slice(&n.to_be_bytes()[1..=k]);
    }
    out
}

async fn api_get(gw: &Gateway, path: &str) -> Value {
    let r = gw.http.get(format!("{}{path}", gw.url)).bearer_auth(ENG_KEY).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

async fn api_sql(gw: &Gateway, sql: &str) -> Value {
    let r = gw.post("/v1/sql", Some(ENG_KEY), &json!({ "sql": sql }).to_string()).await;
    assert!(r.status().is_success());
    r.json().await.unwrap()
}

async fn seed(gw: &Gateway) -> u64 {
    let mut n = 0;
    let calls: [(&str, &str, &str, bool); 6] = [
        (ENG_KEY, "house-llm", "prompt_tokens=1000,tokens=200", false),
        (ENG_KEY, "house-llm", "prompt_tokens=2000,tokens=50,first_delay_ms=20", true),
        (ENG_KEY, "gpt-4o", "prompt_tokens=300,tokens=30,first_delay_ms=10", true),
        (FIN_KEY, "gpt-4o-mini", "prompt_tokens=800,tokens=100", false),
        (HDR_KEY, "house-llm", "prompt_tokens=5000,tokens=500", false),
        (ENG_KEY, "house-llm", "status=500", false),
    ];
    for round in 0..3 {
        for (i, (key, model, d, stream)) in calls.iter().enumerate() {
            let body = format!(
                r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"r{round} MOCK[{d}]"}}]}}"#
            );
            let r = gw
                .http
                .post(format!("{}/v1/chat/completions", gw.url))
                .bearer_auth(key)
                .header("x-request-id", format!("ui-{round}-{i}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let _ = r.bytes().await;
            n += 1;
        }
    }
    n
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_shows_the_api_numbers_and_draws_its_chart() {
    let extra = r#"
[budget_settings]
sync_interval_ms = 200
ingest_lag_ms = 0
[[budgets]]
id = "eng-month"
scope = "department"
match = "engineering"
period = "month"
cap_usd = "0.5"
[[budgets]]
id = "research-day"
scope = "department"
match = "research"
period = "day"
cap_usd = "0.01"
"#;
    let gw = Gateway::start_with(Opts { extra: extra.into(), ..Opts::default() }).await;
    let n = seed(&gw).await;
    gw.wait_events(n).await;
    let shots = tempfile::tempdir().unwrap();
    let b = Browser::start().await;
    let day = today();

    // The page is served by the binary, with its own assets only.
    let r = gw.http.get(format!("{}/ui", gw.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));

    // Spend.
    b.goto(&format!("{}/ui#spend?key={ENG_KEY}&from={day}&to={day}&group=department", gw.url)).await;
    b.ready("spend").await;
    let page = b
        .js("return [...document.querySelectorAll('#spend-table tbody tr')].map(tr => [tr.dataset.group, \
             tr.querySelector('.calls').textContent, tr.querySelector('.cost').textContent]);")
        .await;
    let api = api_get(&gw, &format!("/v1/showback?from={day}&to={day}&group_by=department")).await;
    let want: Vec<Value> = api["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!([r["department"], r["calls"].to_string(), r["cost_usd"]]))
        .collect();
    assert_eq!(page, Value::Array(want), "spend table");
    assert_eq!(page.as_array().unwrap().len(), 3, "three departments");
    let total = b.js("return document.querySelector('#spend-table tfoot .cost').textContent;").await;
    assert_eq!(total, api["total"]["cost_usd"]);
    let bars = b.js("return document.querySelectorAll('#spend-chart svg rect[data-series]').length;").await;
    assert!(bars.as_u64().unwrap() >= 3, "spend chart bars: {bars}");
    assert!(b.js("return location.hash").await.as_str().unwrap().find("key=").is_none(), "key left in the URL");
    b.screenshot(&shots.path().join("spend.png")).await;

    // Budgets: numbers from /v1/budgets, a burn-down line each.
    b.goto(&format!("{}/ui#budgets", gw.url)).await;
    b.ready("budgets").await;
    let api = api_get(&gw, "/v1/budgets").await;
    for bud in api["budgets"].as_array().unwrap() {
        let id = bud["id"].as_str().unwrap();
        let got = b
            .js(&format!(
                "const c = document.querySelector('[data-budget=\"{id}\"]'); return c && [c.querySelector('.spent').textContent, \
                 c.querySelector('.cap').textContent, c.querySelector('.projected').textContent, \
                 c.querySelectorAll('svg polyline.actual').length, c.querySelector('.exhaustion').textContent];"
            ))
            .await;
        assert_eq!(got[0], bud["spent_usd"], "{id} spent");
        assert_eq!(got[1], bud["cap_usd"], "{id} cap");
        // The projection moves with the clock between the two reads; it is at least the spend.
        let nanos = |v: &Value| v.as_str().unwrap().replace('.', "").parse::<u64>().unwrap();
        assert!(nanos(&got[2]) >= nanos(&bud["spent_usd"]), "{id} projected {got}");
        assert_eq!(got[3], 1, "{id} burn-down chart");
        assert!(!got[4].as_str().unwrap().is_empty());
    }
    assert_eq!(api["budgets"].as_array().unwrap().len(), 2);
    let errors = b.js("return [...document.querySelectorAll('#budget-list .error')].map(e => e.textContent);").await;
    assert_eq!(errors, json!([]), "the burn-down history query failed");
    b.screenshot(&shots.path().join("budgets.png")).await;

    // Latency.
    b.goto(&format!("{}/ui#latency?from={day}&to={day}", gw.url)).await;
    b.ready("latency").await;
    let page = b
        .js("return [...document.querySelectorAll('#latency-table tbody tr')].map(tr => [tr.dataset.model, \
             tr.querySelector('.p50').textContent, tr.querySelector('.p95').textContent, tr.querySelector('.p99').textContent, \
             tr.querySelector('.ttft-p95').textContent]);")
        .await;
    let api = api_get(&gw, &format!("/v1/latency?from={day}&to={day}&group_by=model")).await;
    let want: Vec<Value> = api["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let t = if r["ttft_ms"].is_null() { "-".to_string() } else { r["ttft_ms"]["p95"].to_string() };
            json!([
                r["model"],
                r["latency_ms"]["p50"].to_string(),
                r["latency_ms"]["p95"].to_string(),
                r["latency_ms"]["p99"].to_string(),
                t
            ])
        })
        .collect();
    assert_eq!(page, Value::Array(want), "latency table");
    let bars = b.js("return document.querySelectorAll('#latency-chart svg rect[data-series]').length;").await;
    assert_eq!(bars.as_u64().unwrap(), 3 * api["rows"].as_array().unwrap().len() as u64);
    b.screenshot(&shots.path().join("latency.png")).await;

    // Recent calls, filtered, and one call's detail.
    b.goto(&format!("{}/ui#calls?department=engineering", gw.url)).await;
    b.ready("calls").await;
    let page = b
        .js("return [...document.querySelectorAll('#calls-table tbody tr')].map(tr => [tr.dataset.event, \
             tr.querySelector('.cost').dataset.value, tr.querySelector('.outcome').textContent]);")
        .await;
    let api = api_sql(
        &gw,
        "SELECT event_id, cost_nanousd, outcome FROM calls WHERE department = 'engineering' \
         ORDER BY ts_start DESC, event_id DESC LIMIT 100",
    )
    .await;
    let want: Vec<Value> = api["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!([r["event_id"], r["cost_nanousd"].to_string(), r["outcome"]]))
        .collect();
    assert_eq!(want.len(), 12, "4 engineering calls a round, 3 rounds");
    assert_eq!(page, Value::Array(want.clone()), "recent calls");
    b.js("document.querySelector('#calls-table tbody button').click(); return 0;").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let detail = loop {
        let d = b
            .js("const e = document.getElementById('call-detail'); return e.hidden ? null : \
                 [document.getElementById('call-detail-id').textContent, \
                 document.querySelector('[data-field=cost_nanousd]').textContent];")
            .await;
        if !d.is_null() {
            break d;
        }
        assert!(Instant::now() < deadline, "call detail did not open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(detail[0], want[0][0]);
    assert!(detail[1].as_str().unwrap().starts_with(want[0][1].as_str().unwrap()), "{detail}");
    b.screenshot(&shots.path().join("calls.png")).await;

    // SQL console, and its CSV.
    let sql = "SELECT department, count(*) AS calls, sum(cost_nanousd) AS cost_nanousd FROM calls GROUP BY department ORDER BY department";
    let q: String = url_encode(sql);
    b.goto(&format!("{}/ui#sql?q={q}", gw.url)).await;
    b.ready("sql").await;
    let page = b
        .js("return [...document.querySelectorAll('#sql-table tbody tr')].map(tr => [...tr.cells].map(c => c.textContent));")
        .await;
    let api = api_sql(&gw, sql).await;
    let want: Vec<Value> = api["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!([r["department"], r["calls"].to_string(), r["cost_nanousd"].to_string()]))
        .collect();
    assert_eq!(page, Value::Array(want), "sql result");
    let csv = b.js("return document.getElementById('sql-csv').dataset.csv;").await;
    let mut want_csv = String::from("department,calls,cost_nanousd\r\n");
    for r in api["rows"].as_array().unwrap() {
        want_csv.push_str(&format!("{},{},{}\r\n", r["department"].as_str().unwrap(), r["calls"], r["cost_nanousd"]));
    }
    assert_eq!(csv, Value::String(want_csv));
    b.screenshot(&shots.path().join("sql.png")).await;

    for f in ["spend", "budgets", "latency", "calls", "sql"] {
        let len = std::fs::metadata(shots.path().join(format!("{f}.png"))).unwrap().len();
        assert!(len > 10_000, "{f}.png is {len} bytes");
    }
    if let Ok(dir) = std::env::var("TOLLGATE_UI_SHOTS") {
        for f in ["spend", "budgets", "latency", "calls", "sql"] {
            let _ = std::fs::copy(shots.path().join(format!("{f}.png")), format!("{dir}/{f}.png"));
        }
    }
}

/// A wrong key: the page says so and shows no numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_query_rights_gets_an_error_not_data() {
    let gw = Gateway::start().await;
    let b = Browser::start().await;
    b.goto(&format!("{}/ui#spend?key={FIN_KEY}", gw.url)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = b.js("return document.body.dataset.error || '';").await;
        if e.as_str().unwrap().contains("refused") {
            break;
        }
        assert!(Instant::now() < deadline, "no error shown: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = b.js("return document.querySelectorAll('#spend-table tbody tr').length;").await;
    assert_eq!(rows, 0);
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (c as char).to_string(),
            _ => format!("%{c:02X}"),
        })
        .collect()
}
