//! A real ClickHouse cluster for the tests: ZooKeeper (Debian's `zookeeperd` jar, run directly) and two
//! `clickhouse-server`s (Debian's 18.16) in temp dirs on free ports, as two shards or as one shard with
//! two replicas. A watchdog kills all three and removes their files when the test process exits.

#![allow(clippy::zombie_processes)] // the watchdog reaps the servers when the test process ends

use super::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const CLUSTER: &str = "tg";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Topology {
    /// Two shards of one replica each: every row lives on exactly one server.
    TwoShards,
    /// One shard with two replicas: every row lives on both servers.
    TwoReplicas,
}

pub struct Node {
    pub http_port: u16,
    pub dir: PathBuf,
    pid: AtomicU32,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub dir: PathBuf,
}

const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
const CH_BIN: &str = "/usr/sbin/clickhouse-server";

fn need(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} not found: the cluster tests need Debian's `{package}` (`apt-get install -y {package}`; \
         ./scripts/test.sh installs it when missing)"
    );
}

/// Kills the processes (also servers restarted since: their pids are in `*/pid`) and removes the files
/// once the test process is gone.
fn watchdog(pids: &[u32], dir: &Path) {
    let kills: String = pids.iter().map(|p| format!("kill -9 {p} 2>/dev/null; ")).collect();
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; {kills} \
         for f in '{d}'/*/pid; do kill -9 $(cat \"$f\") 2>/dev/null; done; rm -rf '{d}'",
        me = std::process::id(),
        d = dir.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("watchdog");
}

fn ping_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /ping HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.contains("Ok.")
}

/// A query's answer over plain HTTP (empty on any failure).
fn http_get(port: u16, sql: &str) -> String {
    use std::io::{Read, Write};
    let q: String = sql
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(format!("GET /?query={q} HTTP/1.0\r\n\r\n").as_bytes()).is_err() {
        return String::new();
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

fn ruok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    // `srvr` is in ZooKeeper's default four-letter-word whitelist.
    if s.write_all(b"srvr").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.contains("Mode:")
}

impl Cluster {
    pub fn start(topology: Topology) -> Cluster {
        need(ZK_JAR, "zookeeperd");
        need(CH_BIN, "clickhouse-server");
        let dir = std::env::temp_dir().join(format!("tollgate-cluster-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(dir.join("zk/conf")).unwrap();
        let zk_port = free_port();
        std::fs::write(
            dir.join("zk/conf/zoo.cfg"),
            format!(
                "tickTime=500\ndataDir={d}/zk/data\nclientPort={zk_port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\nminSessionTimeout=1000\nmaxSessionTimeout=60000\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let zk = Command::new("java")
            .args([
                "-Xmx256m",
                "-cp",
                &format!("{}/zk/conf:{ZK_JAR}", dir.display()),
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                &format!("{}/zk/conf/zoo.cfg", dir.display()),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("zk/stderr.log")).map(Stdio::from).unwrap_or(Stdio::null()))
            .spawn()
            .expect("starting ZooKeeper (java)");
        let mut pids = vec![zk.id()];
        // ZooKeeper must answer before the servers start: 18.16's DDL worker crashes the server when its
        // first ZooKeeper session cannot be opened.
        let deadline = Instant::now() + Duration::from_secs(90);
        while !ruok(zk_port) {
            if Instant::now() > deadline {
                watchdog(&pids, &dir);
                panic!("ZooKeeper did not start; see {}/zk/stderr.log", dir.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }

        let ports: Vec<(u16, u16, u16)> = (0..2).map(|_| (free_port(), free_port(), free_port())).collect();
        let replica = |tcp: u16| format!("<replica><host>127.0.0.1</host><port>{tcp}</port></replica>");
        let shards = match topology {
            Topology::TwoShards => ports
                .iter()
                .map(|p| format!("<shard><internal_replication>true</internal_replication>{}</shard>", replica(p.1)))
                .collect::<String>(),
            Topology::TwoReplicas => format!(
                "<shard><internal_replication>true</internal_replication>{}{}</shard>",
                replica(ports[0].1),
                replica(ports[1].1)
            ),
        };
        let mut nodes = Vec::new();
        for (i, (http, tcp, inter)) in ports.iter().enumerate() {
            let n = dir.join(format!("ch{}", i + 1));
            std::fs::create_dir_all(&n).unwrap();
            let d = n.display();
            let shard = match topology {
                Topology::TwoShards => i + 1,
                Topology::TwoReplicas => 1,
            };
            let config = format!(
                r#"<?xml version="1.0"?>
<yandex>
  <logger><level>information</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog><console>0</console></logger>
  <http_port>{http}</http_port><tcp_port>{tcp}</tcp_port>
  <interserver_http_port>{inter}</interserver_http_port><interserver_http_host>127.0.0.1</interserver_http_host>
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path><tmp_path>{d}/tmp/</tmp_path><user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <mark_cache_size>67108864</mark_cache_size>
  <users_config>{d}/users.xml</users_config><default_profile>default</default_profile><default_database>default</default_database>
  <max_concurrent_queries>100</max_concurrent_queries>
  <remote_servers><{CLUSTER}>{shards}</{CLUSTER}></remote_servers>
  <zookeeper><node><host>127.0.0.1</host><port>{zk_port}</port></node><session_timeout_ms>5000</session_timeout_ms></zookeeper>
  <macros><shard>{shard:02}</shard><replica>node{i}</replica></macros>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</yandex>
"#
            );
            let users = r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
"#;
            std::fs::write(n.join("config.xml"), config).unwrap();
            std::fs::write(n.join("users.xml"), users).unwrap();
            let node = Node { http_port: *http, dir: n, pid: AtomicU32::new(0) };
            node.spawn();
            pids.push(node.pid.load(Ordering::SeqCst));
            // One at a time: two 18.16 servers creating the DDL queue's ZooKeeper path at once can crash
            // one of them. The first has made it once it lists it.
            node.wait_up();
            let deadline = Instant::now() + Duration::from_secs(30);
            while i == 0
                && !http_get(
                    node.http_port,
                    "SELECT count() FROM system.zookeeper WHERE path = '/clickhouse/task_queue'",
                )
                .starts_with('1')
            {
                assert!(Instant::now() < deadline, "the DDL queue did not appear in ZooKeeper");
                std::thread::sleep(Duration::from_millis(100));
            }
            nodes.push(node);
        }
        watchdog(&pids, &dir);
        Cluster { nodes, dir }
    }
}

impl Node {
    fn spawn(&self) {
        let child: Child = Command::new(CH_BIN)
            .arg(format!("--config-file={}/config.xml", self.dir.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("stderr.log")).map(Stdio::from).unwrap_or(Stdio::null()))
            .spawn()
            .expect("starting clickhouse-server");
        self.pid.store(child.id(), Ordering::SeqCst);
        let _ = std::fs::write(self.dir.join("pid"), child.id().to_string());
    }

    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ping_http(self.http_port) {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                panic!("clickhouse-server did not answer within 60 s; error log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// kill -9.
    pub fn kill(&self) {
        let pid = self.pid.load(Ordering::SeqCst);
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ping_http(self.http_port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again on its data and ports.
    pub fn restart(&self) {
        self.spawn();
        self.wait_up();
    }

    pub async fn query(&self, sql: &str) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/?output_format_json_quote_64bit_integers=0", self.url()))
            .body(sql.to_string())
            .send()
            .await
            .expect("clickhouse http");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "clickhouse: {sql}\n{body}");
        body
    }

    /// The first number of a one-value query.
    pub async fn number(&self, sql: &str) -> u64 {
        self.query(sql).await.trim().parse().unwrap_or_else(|_| panic!("not a number from {sql}"))
    }
}
