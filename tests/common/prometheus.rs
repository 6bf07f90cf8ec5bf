//! Debian's Prometheus for tests: `promtool check metrics` on an exposition, and a real Prometheus
//! server in a temp dir on a free port that scrapes a target every second.

#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = "install Debian's Prometheus: apt-get install -y prometheus (provides prometheus and promtool)";

/// Runs `promtool check metrics` on `text`; returns (exit code, what promtool printed).
pub fn promtool_check(text: &str) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}); {INSTALL}"));
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), said)
}

pub struct PromServer {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl PromServer {
    /// Starts Prometheus scraping `target` (`host:port`) at `/metrics` every second, with an optional
    /// bearer token.
    pub async fn start(target: &str, bearer: Option<&str>) -> PromServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = super::free_port();
        let auth = bearer.map(|t| format!("    authorization:\n      credentials: \"{t}\"\n")).unwrap_or_default();
        let cfg = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tollgate\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n{auth}    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        let cfg_path = dir.path().join("prometheus.yml");
        std::fs::write(&cfg_path, cfg).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run prometheus ({e}); {INSTALL}"));
        let s = PromServer { child, url: format!("http://127.0.0.1:{port}"), _dir: dir, http: reqwest::Client::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = s.http.get(format!("{}/-/ready", s.url)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready: {}", s.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query; returns `data.result`.
    pub async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let r = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .expect("query prometheus");
        let v: serde_json::Value = r.json().await.expect("json");
        assert_eq!(v["status"], "success", "query `{promql}` failed: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `promql` until it returns at least one series (bounded wait; not a timing assertion).
    pub async fn wait_series(&self, promql: &str, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let r = self.query(promql).await;
            if !r.is_empty() {
                return r;
            }
            if Instant::now() >= deadline {
                let targets = self.http.get(format!("{}/api/v1/targets", self.url)).send().await;
                let t = match targets {
                    Ok(t) => t.text().await.unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                panic!("`{promql}` returned no series; targets: {t}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The state of the one scrape target (`up`, last error).
    pub async fn target_health(&self) -> serde_json::Value {
        let v: serde_json::Value = self
            .http
            .get(format!("{}/api/v1/targets", self.url))
            .send()
            .await
            .expect("targets")
            .json()
            .await
            .expect("json");
        v["data"]["activeTargets"][0].clone()
    }
}

impl Drop for PromServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
