//! Delivery defects on the money path (issue 14, item 9), with real processes: a spill file replayed
//! again after a crash is stored once (dedup by event id at the collector); two gateways configured with
//! the same `gateway_id` do not drop each other's batches; a ClickHouse set-up error (missing database)
//! is retried until fixed instead of dead-lettering the calls; a batch dead-lettered for its data lands
//! with `tollgate deadletter replay`, once, however often the command runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use arrow::array::AsArray;
use common::clickhouse::ChServer;
use common::{bin, free_port, s, u, Gateway, Opts, ENG_KEY};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tollgate_events::{CallEvent, Outcome, SCHEMA_VERSION};

/// house-llm: 37.5 nano-USD per input token, 1,100 per output token; a call's total is rounded half
/// up to the nano-dollar.
fn house_cost(input: u64, output: u64) -> u64 {
    (input * 375 + output * 11_000 + 5) / 10
}

fn body(output: u64, prompt: u64) -> String {
    format!(
        r#"{{"model":"house-llm","messages":[{{"role":"user","content":"MOCK[tokens={output},prompt_tokens={prompt}]"}}]}}"#
    )
}

async fn call(gw: &Gateway, rid: &str, output: u64, prompt: u64) {
    let r = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(ENG_KEY)
        .header("x-request-id", rid)
        .body(body(output, prompt))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{rid}");
}

/// Waits up to 90 s: the sink's retry backoff grows to 30 s while ClickHouse is not set up, so on a
/// loaded machine the retry after `migrate` may come that late.
async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A crash after the spill file was sent but before it was removed leaves it to be sent again at the
/// next start: the collector recognises the events by id and stores each once. Main stored them twice.
#[tokio::test]
async fn a_spill_file_replayed_twice_is_stored_once() {
    // Small log segments: the dedup window must survive segment rolls and garbage collection too.
    let mut gw = Gateway::start_with(Opts {
        collector: "flush_interval_ms = 100\nwal_segment_bytes = 2048".into(),
        ..Opts::default()
    })
    .await;
    assert!(gw.stop().success());
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    let events: Vec<CallEvent> = (0..20u64)
        .map(|i| CallEvent {
            schema_version: SCHEMA_VERSION,
            event_id: format!("019ad000-0000-7000-8000-{i:012}"),
            request_id: format!("spill-{i}"),
            ts_start_us: now_us,
            ts_end_us: now_us + 1_000,
            department: "engineering".into(),
            api_key_id: "eng-key".into(),
            requested_model: "house-llm".into(),
            served_model: "house-llm".into(),
            provider: "openai".into(),
            outcome: Outcome::Ok,
            status_code: 200,
            input_tokens: 10 + i,
            output_tokens: 5,
            cost_nanousd: house_cost(10 + i, 5),
            ..Default::default()
        })
        .collect();
    let expected_cost: u64 = (0..20u64).map(|i| house_cost(10 + i, 5)).sum();
    let text: String = events.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
    let replaying = gw.data_dir().join("spool").join("overflow.replaying");
    std::fs::create_dir_all(replaying.parent().unwrap()).unwrap();
    for round in 0..2 {
        std::fs::write(&replaying, &text).unwrap();
        gw.spawn();
        gw.http = reqwest::Client::new(); // no pooled connection to the old process
        wait_for("the spill replay", || {
            let gone = !replaying.exists();
            async move { gone }
        })
        .await;
        // A later call is written after the replayed events: once it is queryable, so are they.
        let rid = format!("after-{round}");
        call(&gw, &rid, 3, 8).await;
        wait_for("the call after the replay", || {
            let gw = &gw;
            let rid = rid.clone();
            async move { !gw.sql(&format!("SELECT 1 AS x FROM calls WHERE request_id = '{rid}'")).await.is_empty() }
        })
        .await;
        let rows = gw
            .sql("SELECT count(*) AS n, count(DISTINCT event_id) AS d, sum(cost_nanousd) AS c FROM calls WHERE request_id LIKE 'spill-%'")
            .await;
        assert_eq!((u(&rows[0], "n"), u(&rows[0], "d")), (20, 20), "round {round}: {rows:?}");
        assert_eq!(u(&rows[0], "c"), expected_cost);
        let m = gw.http.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
        let dups = if round == 0 { 0 } else { 20 };
        assert!(m.contains(&format!("tollgate_wal_duplicate_events_total {dups}")), "{m}");
        assert!(gw.stop().success());
    }
}

/// A `tollgate collector` process writing Parquet under its data dir.
struct CollectorProc {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl CollectorProc {
    fn start() -> CollectorProc {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "[storage]\ndata_dir = \"{}\"\n[collector]\nlisten = \"127.0.0.1:{port}\"\nflush_interval_ms = 100\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("collector.log")).unwrap();
        let mut child = Command::new(bin())
            .args(["collector", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("listening on") => break,
                Some(Ok(_)) => continue,
                _ => panic!("collector exited before listening"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        CollectorProc { child, dir, port }
    }

    /// Request ids in the collector's Parquet files.
    fn request_ids(&self) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        for f in common::parquet_files(&self.dir.path().join("data")) {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(&f).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let rid = batch.column_by_name("request_id").unwrap().as_string::<i32>().clone();
                ids.extend((0..batch.num_rows()).map(|i| rid.value(i).to_string()));
            }
        }
        ids
    }
}

impl Drop for CollectorProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two gateways configured with the same `gateway_id` (a copied config): the one that started first
/// has the lower batch sequences, and main's collector took its batches for resends and dropped them.
#[tokio::test]
async fn two_gateways_with_one_gateway_id_both_deliver() {
    let collector = CollectorProc::start();
    let ship = format!("[shipping]\ncollector_url = \"http://127.0.0.1:{}\"\ngateway_id = \"edge\"\n", collector.port);
    let first = Gateway::start_with(Opts { command: "gateway", extra: ship.clone(), ..Opts::default() }).await;
    let second = Gateway::start_with(Opts { command: "gateway", extra: ship, ..Opts::default() }).await;
    call(&second, "from-second", 2, 3).await;
    wait_for("the second gateway's call", || {
        let got = collector.request_ids().contains("from-second");
        async move { got }
    })
    .await;
    call(&first, "from-first", 2, 3).await;
    call(&second, "from-second-again", 2, 3).await;
    wait_for("both gateways' calls", || {
        let ids = collector.request_ids();
        let got = ids.contains("from-first") && ids.contains("from-second-again");
        async move { got }
    })
    .await;
    assert_eq!(collector.request_ids().len(), 3);
}

fn ch_gateway_opts(ch: &ChServer, db: &str) -> Opts {
    Opts {
        collector: "flush_interval_ms = 100\nsinks = [\"clickhouse\"]".into(),
        extra: format!(
            "[clickhouse]\nurl = \"{}\"\ndatabase = \"{db}\"\nflush_interval_ms = 100\nmigrate_on_start = false\n",
            ch.url()
        ),
        ..Opts::default()
    }
}

fn deadletter_files(data: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(data.join("deadletter"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    out.sort();
    out
}

async fn stored(ch: &ChServer, db: &str) -> (u64, u64) {
    let rows = ch.rows(&format!("SELECT count() AS n, sum(cost_nanousd) AS c FROM {db}.calls")).await;
    (u(&rows[0], "n"), u(&rows[0], "c"))
}

/// A missing database is an operator's to fix, not a reason to throw calls into the dead-letter
/// directory: the sink retries, and once `tollgate migrate` has run the calls land. Then a batch the
/// server refuses for its data (a column the table lacks) is dead-lettered and, once the table is
/// fixed, `tollgate deadletter replay` lands it exactly once.
#[tokio::test]
async fn set_up_errors_are_retried_and_dead_letters_replay_once() {
    let ch = ChServer::get();
    let db = ch.fresh_database("tg_retry");
    let gw = Gateway::start_with(ch_gateway_opts(ch, &db)).await;
    let mut expected = 0;
    for (i, (out, inp)) in [(5u64, 11u64), (7, 13), (9, 17)].into_iter().enumerate() {
        call(&gw, &format!("early-{i}"), out, inp).await;
        expected += house_cost(inp, out);
    }
    wait_for("failed inserts", || {
        let gw = &gw;
        async move {
            let m = gw.http.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
            m.lines().any(|l| l.starts_with("tollgate_clickhouse_insert_errors_total ") && !l.ends_with(" 0"))
        }
    })
    .await;
    assert!(deadletter_files(&gw.data_dir()).is_empty(), "a missing database dead-lettered calls");
    let out = Command::new(bin()).args(["migrate", "--config"]).arg(&gw.config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the retried calls", || async {
        ch.try_query(&format!("SELECT 1 FROM {db}.calls")).await.0.is_success() && stored(ch, &db).await.0 == 3
    })
    .await;
    assert_eq!(stored(ch, &db).await, (3, expected));

    // A data error: the table lacks a column the sink writes.
    ch.query(&format!("ALTER TABLE {db}.calls DROP COLUMN predicted_cost_nanousd")).await;
    let mut late = 0;
    for (i, (out, inp)) in [(4u64, 6u64), (8, 10)].into_iter().enumerate() {
        call(&gw, &format!("late-{i}"), out, inp).await;
        late += house_cost(inp, out);
    }
    wait_for("both late calls in dead-letter files", || {
        // Each file: a header line, then one event per line.
        let events: usize = deadletter_files(&gw.data_dir())
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default().lines().count().saturating_sub(1))
            .sum();
        async move { events == 2 }
    })
    .await;
    ch.query(&format!("ALTER TABLE {db}.calls ADD COLUMN predicted_cost_nanousd UInt64 DEFAULT 0")).await;
    let files = deadletter_files(&gw.data_dir());
    let replay = || Command::new(bin()).args(["deadletter", "replay", "--config"]).arg(&gw.config).output().unwrap();
    let out = replay();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("{} files replayed, 0 already stored, 0 left", files.len())), "{text}");
    assert_eq!(stored(ch, &db).await, (5, expected + late));
    assert!(deadletter_files(&gw.data_dir()).is_empty());
    // Again: nothing to do. And a file put back (a crash before it was moved) is recognised as stored.
    assert!(String::from_utf8_lossy(&replay().stdout).contains("0 files replayed, 0 already stored, 0 left"));
    let done = gw.data_dir().join("deadletter").join("replayed");
    for f in &files {
        std::fs::rename(done.join(f.file_name().unwrap()), f).unwrap();
    }
    let out = replay();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains(&format!("0 files replayed, {} already stored, 0 left", files.len())), "{text}");
    assert_eq!(stored(ch, &db).await, (5, expected + late));
    let ids =
        ch.rows(&format!("SELECT request_id FROM {db}.calls WHERE request_id LIKE 'late-%' ORDER BY request_id")).await;
    assert_eq!(ids.iter().map(|r| s(r, "request_id")).collect::<Vec<_>>(), ["late-0", "late-1"]);
}
