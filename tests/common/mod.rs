//! Shared harness for end-to-end tests: a real mock upstream (OpenAI wire format) in this process and the
//! real `tollgate` binary as a child process on a free port, with a generated config in a temp dir.

#![allow(dead_code)]
// Test harness: failing loudly is its job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tollgate_mock::MockUpstream;

pub mod clickhouse;
pub mod cluster;
pub mod hostile;
pub mod prometheus;
pub mod routes;

pub const ENG_KEY: &str = "sk-client-eng-0001";
pub const FIN_KEY: &str = "sk-client-fin-0002";
pub const HDR_KEY: &str = "sk-client-hdr-0003";
pub const UPSTREAM_SECRET: &str = "upstream-secret-xyz";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

pub fn hash(key: &str) -> String {
    let out = Command::new(bin()).args(["hash-key", key]).output().expect("run hash-key");
    String::from_utf8(out.stdout).expect("utf8").trim().to_string()
}

pub struct Gateway {
    pub command: &'static str,
    pub child: Option<Child>,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub mock: MockUpstream,
    pub http: reqwest::Client,
}

/// Knobs a test may turn.
pub struct Opts {
    /// The lines of `[server]` after `listen`.
    pub server: String,
    pub gateway: String,
    pub collector: String,
    pub query: String,
    pub upstream_extra: String,
    /// Extra top-level sections (e.g. `[[upstreams]]`), appended to the config. `{mock_base}` and
    /// `{mock_root}` stand for the mock upstream's `http://addr/v1` and `http://addr`.
    pub extra: String,
    /// The subcommand that runs it: `serve` (default) or `gateway`.
    pub command: &'static str,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            server: "shutdown_grace_ms = 5000".into(),
            gateway: String::new(),
            collector: "flush_interval_ms = 100".into(),
            query: String::new(),
            upstream_extra: "request_timeout_ms = 1500\nidle_timeout_ms = 5000".into(),
            extra: String::new(),
            command: "serve",
        }
    }
}

impl Gateway {
    pub async fn start() -> Gateway {
        Gateway::start_with(Opts::default()).await
    }

    pub async fn start_with(opts: Opts) -> Gateway {
        let mock = MockUpstream::start().await.expect("mock upstream");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("tollgate.toml");
        // The port is filled in at each start (see below).
        let template = format!(
            r#"
[server]
listen = "127.0.0.1:{{port}}"
{server}
[storage]
data_dir = "{data}"
[gateway]
{gateway}
[collector]
{collector}
[query]
{query}
[[upstreams]]
name = "mock"
kind = "openai_compatible"
base_url = "{base}"
api_key_env = "TG_TEST_UPSTREAM_KEY"
models = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "house-llm"]
{upstream_extra}
[prices."house-llm"]
input = "0.0375"
output = 1.1
[[keys]]
id = "eng-key"
hash = "{eng}"
tenant = "acme"
department = "engineering"
team = "core"
project = "search"
user = "alice"
tags = {{ env = "test" }}
query = true
[[keys]]
id = "fin-key"
hash = "{fin}"
tenant = "acme"
department = "finance"
team = "ap"
models = ["gpt-4o-mini"]
[[keys]]
id = "hdr-key"
hash = "{hdr}"
department = "research"
allow_attribution_headers = true
{extra}
"#,
            data = dir.path().join("data").display(),
            server = opts.server,
            gateway = opts.gateway,
            collector = opts.collector,
            query = opts.query,
            base = mock.base_url(),
            upstream_extra = opts.upstream_extra,
            eng = hash(ENG_KEY),
            fin = hash(FIN_KEY),
            hdr = hash(HDR_KEY),
            extra = opts
                .extra
                .replace("{mock_base}", &mock.base_url())
                .replace("{mock_root}", &format!("http://{}", mock.addr())),
        );
        let mut gw = Gateway {
            command: opts.command,
            child: None,
            url: String::new(),
            dir,
            config,
            mock,
            http: reqwest::Client::new(),
        };
        // `free_port` only finds a port that was free a moment ago: another server of the suite may bind
        // it before tollgate does. Such a start is tried again on another port.
        for attempt in 1.. {
            let port = free_port();
            std::fs::write(&gw.config, template.replace("{port}", &port.to_string())).expect("write config");
            gw.url = format!("http://127.0.0.1:{port}");
            match gw.try_spawn() {
                Ok(()) => break,
                Err(log) if attempt < 5 && log.contains("Address already in use") => continue,
                Err(log) => panic!("tollgate exited before listening; log:\n{log}"),
            }
        }
        gw
    }

    /// Starts the binary and waits for its `listening on` line.
    pub fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("tollgate exited before listening; log:\n{log}");
        }
    }

    /// [`Gateway::spawn`], answering the log of a process that exited before listening.
    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let mut child = Command::new(bin())
            .args([self.command, "--config"])
            .arg(&self.config)
            .env("TG_TEST_UPSTREAM_KEY", UPSTREAM_SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn tollgate");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("listening on") => break,
                Some(Ok(_)) => continue,
                _ => {
                    let _ = child.wait();
                    return Err(self.log());
                }
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
        Ok(())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn base(&self) -> String {
        format!("{}/v1", self.url)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
        child.wait().expect("wait")
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &str) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send().await.expect("request")
    }

    /// Runs SQL through `/v1/sql` and returns the rows.
    pub async fn sql(&self, sql: &str) -> Vec<serde_json::Value> {
        let r = self.post("/v1/sql", Some(ENG_KEY), &serde_json::json!({ "sql": sql }).to_string()).await;
        let status = r.status();
        let v: serde_json::Value = r.json().await.expect("json");
        assert!(status.is_success(), "sql failed: {v}");
        v["rows"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until at least `n` events are queryable (bounded wait, not a timing assertion).
    pub async fn wait_events(&self, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self.sql("SELECT count(*) AS n FROM calls").await;
            let got = rows[0]["n"].as_u64().unwrap_or(0);
            if got >= n {
                return got;
            }
            if Instant::now() >= deadline {
                let ids = self.sql("SELECT request_id, outcome FROM calls").await;
                panic!("only {got} of {n} events arrived: {ids:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The one event for a request id (fails if there is not exactly one).
    pub async fn event(&self, request_id: &str) -> serde_json::Value {
        let rows = self.sql(&format!("SELECT * FROM calls WHERE request_id = '{request_id}'")).await;
        assert_eq!(rows.len(), 1, "expected exactly one event for {request_id}, got {rows:?}");
        rows[0].clone()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A port for a server the test starts itself (ClickHouse, ZooKeeper, Redis). Taken below the kernel's
/// ephemeral range (32768 and up): a port there that was free a moment ago can meanwhile become the
/// local end of any outgoing connection of a test running beside this one, and the server then fails
/// to bind it ("Address already in use"). Random, then checked by binding it.
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + (fastrand::u16(..) % 12_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let calls = dir.join("calls");
    for day in std::fs::read_dir(calls).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(day.path()).into_iter().flatten().flatten() {
            if f.path().extension().is_some_and(|e| e == "parquet") {
                out.push(f.path());
            }
        }
    }
    out
}

/// u64 field of a JSON row.
pub fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} missing in {v}"))
}

pub fn s<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("{k} missing in {v}"))
}
