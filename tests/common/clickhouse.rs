//! A real `clickhouse-server` (Debian's package) for the tests: started once per test binary in a temp
//! dir on free ports with a generated config, and killed when the test binary exits (a watchdog process
//! waits for the test process to go away). Each test uses its own database.

#![allow(clippy::zombie_processes)] // the watchdog reaps the server when the test process ends

use super::free_port;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct ChServer {
    pub http_port: u16,
    pub dir: std::path::PathBuf,
    bin: String,
    pid: std::sync::atomic::AtomicU32,
}

const INSTALL_HINT: &str = "clickhouse-server not found: these tests need a real ClickHouse server. Install \
     Debian's package with `apt-get install -y clickhouse-server` (./scripts/test.sh does this when it is missing)";

fn server_binary() -> String {
    for candidate in ["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    let which = Command::new("sh").args(["-c", "command -v clickhouse-server"]).output();
    match which {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => panic!("{INSTALL_HINT}"),
    }
}

impl ChServer {
    /// The shared server of this test binary.
    pub fn get() -> &'static ChServer {
        static SERVER: OnceLock<ChServer> = OnceLock::new();
        SERVER.get_or_init(ChServer::start)
    }

    /// A server of the caller's own (for tests that stop it).
    pub fn start_private() -> ChServer {
        ChServer::start()
    }

    fn spawn(bin: &str, dir: &std::path::Path) -> std::process::Child {
        Command::new(bin)
            .arg(format!("--config-file={}/config.xml", dir.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).map(Stdio::from).unwrap_or(Stdio::null()))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}. {INSTALL_HINT}"))
    }

    /// kill -9: an outage.
    pub fn kill(&self) {
        let pid = self.pid.load(Ordering::SeqCst);
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ping() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again on the same data and ports.
    pub fn restart(&self) {
        let child = ChServer::spawn(&self.bin, &self.dir);
        self.pid.store(child.id(), Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.ping() {
            assert!(Instant::now() < deadline, "clickhouse-server did not come back");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start() -> ChServer {
        let bin = server_binary();
        let dir = std::env::temp_dir().join(format!("tollgate-ch-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(dir.join("data")).expect("ch dir");
        let http_port = free_port();
        let tcp_port = free_port();
        let d = dir.display();
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog><console>0</console></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <mark_cache_size>67108864</mark_cache_size>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
"#
        );
        let users = r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default>
  </users>
  <quotas><default></default></quotas>
</yandex>
"#;
        std::fs::write(dir.join("config.xml"), config).expect("write config");
        std::fs::write(dir.join("users.xml"), users).expect("write users");
        let child = ChServer::spawn(&bin, &dir);
        // The watchdog: kills the server (also a restarted one) and removes its files once this test
        // process is gone.
        let watchdog = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; pkill -9 -f '{d}/config.xml' 2>/dev/null; kill -9 {ch} 2>/dev/null; rm -rf '{d}'",
            me = std::process::id(),
            ch = child.id(),
        );
        Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("watchdog");
        let server = ChServer { http_port, dir: dir.clone(), bin, pid: std::sync::atomic::AtomicU32::new(child.id()) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if server.ping() {
                return server;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                panic!("clickhouse-server did not answer within 60 s; error log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.http_port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /ping HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.contains("Ok.")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// A database name no other test in this run uses.
    pub fn fresh_database(&self, prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
    }

    /// Runs one statement over HTTP and returns the body; panics with the server's message on failure.
    pub async fn query(&self, sql: &str) -> String {
        let (status, body) = self.try_query(sql).await;
        assert!(status.is_success(), "clickhouse: {sql}\n{body}");
        body
    }

    pub async fn try_query(&self, sql: &str) -> (reqwest::StatusCode, String) {
        let r = reqwest::Client::new()
            .post(format!("{}/?output_format_json_quote_64bit_integers=0", self.url()))
            .body(sql.to_string())
            .send()
            .await
            .expect("clickhouse http");
        let status = r.status();
        (status, r.text().await.unwrap_or_default())
    }

    /// Rows of a query as JSON objects.
    pub async fn rows(&self, sql: &str) -> Vec<serde_json::Value> {
        let body = self.query(&format!("{sql} FORMAT JSON")).await;
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["data"].as_array().cloned().unwrap_or_default()
    }
}
