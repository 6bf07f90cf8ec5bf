//! tollgate on a real ClickHouse cluster (ZooKeeper + two 18.16 servers started here): the migrations
//! `ON CLUSTER` (ReplicatedMergeTree local tables under Distributed ones, the rollup included), the sink
//! inserting through the Distributed table so that a batch sent twice lands once, and the reports read
//! through it equal to the single server's to the nano-dollar. Two shards (every call on exactly one
//! server) and one shard of two replicas (every call on both, even when one is killed mid-load).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::clickhouse::ChServer;
use common::cluster::{Cluster, Topology, CLUSTER};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_clickhouse::sink::{Landed, PendingRows};
use tollgate_clickhouse::{ClickHouseConfig, ClickHouseSink};
use tollgate_events::CallEvent;
use tollgate_query::{parse_group_by, QueryConfig, QueryService, SpendFilter, SpendRequest, TimeRange};

/// 2026-11-01 00:00 UTC.
const NOV1: i64 = 1_793_491_200_000_000;

fn call(i: u64) -> CallEvent {
    let dept = ["engineering", "finance", "research"][(i % 3) as usize];
    let ts = NOV1 + (i as i64) * 37_000_000;
    CallEvent {
        schema_version: tollgate_events::SCHEMA_VERSION,
        // UUIDv7 ids as the gateway makes them (their time is the call's start): the pending lookup of a
        // budget sync bounds itself by that time.
        event_id: format!("{:08x}-{:04x}-7000-8000-{i:012x}", ts / 1000 >> 16, (ts / 1000) & 0xffff),
        request_id: format!("req-{i}"),
        ts_start_us: ts,
        ts_end_us: ts + 400_000,
        tenant: "acme".into(),
        department: dept.into(),
        team: format!("{dept}-t{}", i % 2).into(),
        user: format!("u{}", i % 11).into(),
        api_key_id: format!("key-{}", i % 4).into(),
        served_model: ["gpt-4o", "claude-x"][(i % 2) as usize].into(),
        requested_model: "m".into(),
        input_tokens: 100 + i % 50,
        output_tokens: i % 30,
        cost_nanousd: 1_234_567 + i * 1_001,
        latency_ms: 200 + (i % 700) as u32,
        ttft_ms: 20 + (i % 90) as u32,
        ..Default::default()
    }
}

fn cluster_cfg(url: String, db: &str) -> ClickHouseConfig {
    let mut c = ClickHouseConfig::new(url, db);
    c.cluster = Some(CLUSTER.into());
    c.request_timeout_ms = 60_000;
    c
}

/// Sends `events` in batches of `batch`; failed attempts are retried as the collector does (the same
/// batch again, checked first).
async fn load(sink: &mut ClickHouseSink, events: &[CallEvent], batch: usize) {
    for chunk in events.chunks(batch) {
        let mut p = PendingRows::default();
        sink.append(&mut p, &Arc::new(chunk.to_vec()));
        for mut b in sink.seal(&mut p).unwrap() {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match sink.write(&mut b).await {
                    Ok(Landed::Inserted | Landed::AlreadyPresent) => break,
                    Ok(Landed::DeadLettered) => panic!("batch {} dead-lettered", b.batch_id),
                    Err(e) => {
                        assert!(Instant::now() < deadline, "batch {} never landed: {e}", b.batch_id);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }
}

/// The reports a finance team and a budget ask for, from one service.
async fn answers(svc: &QueryService) -> Vec<String> {
    let mut out = Vec::new();
    for (from, to) in
        [(Some("2026-11-01"), Some("2026-11-30")), (Some("2026-11-01T03:00:00Z"), Some("2026-11-02T05:00:00Z"))]
    {
        let range = TimeRange::parse(from, to).unwrap();
        for g in ["", "department", "department,team,model", "user,key"] {
            let g = parse_group_by(Some(g), &[]).unwrap();
            out.push(format!("{:?}", svc.showback(&range, &g).await.unwrap()));
        }
        let lat = svc.latency(&range, &parse_group_by(Some("model"), &[]).unwrap()).await.unwrap();
        out.push(format!("{lat:?}"));
        out.push(
            svc.spend(&range, &SpendRequest::of(SpendFilter::scope("department", "finance").unwrap()))
                .await
                .unwrap()
                .others_nanousd
                .to_string(),
        );
        // A sync with pending calls (finance's and others', held and not): the lookup goes through the
        // Distributed table on a cluster.
        let pending: Vec<String> = (0..600).step_by(7).map(|i| call(i).event_id).collect();
        let req = SpendRequest {
            filter: SpendFilter::scope("department", "finance").unwrap(),
            keys: vec!["key-3".into()],
            pending,
        };
        let a = svc.spend(&range, &req).await.unwrap();
        assert!(!a.present.is_empty() && a.present.len() < req.pending.len(), "{:?}", a.present);
        out.push(format!("{} {:?}", a.others_nanousd, a.present));
    }
    out
}

/// The same calls on the single test server: the answers the cluster must give.
async fn single_server_answers(events: &[CallEvent]) -> Vec<String> {
    let ch = ChServer::get();
    let db = ch.fresh_database("single");
    let cfg = ClickHouseConfig::new(ch.url(), db.clone());
    tollgate_clickhouse::migrate(&cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ClickHouseSink::open(cfg.clone(), dir.path()).unwrap();
    load(&mut sink, events, 1_000).await;
    answers(&QueryService::open_clickhouse(cfg, QueryConfig::default())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_take_every_call_exactly_once_and_answer_like_one_server() {
    let cluster = Cluster::start(Topology::TwoShards);
    let db = "fleet";
    let cfg = cluster_cfg(cluster.nodes[0].url(), db);
    let applied = tollgate_clickhouse::migrate(&cfg).await.unwrap();
    assert_eq!(applied, tollgate_clickhouse::MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>());
    // Every server has the tables, and the ledger is shared: migrating through the other server does nothing.
    for n in &cluster.nodes {
        let t = n.query(&format!("SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name")).await;
        for name in ["calls", "calls_daily", "calls_daily_local", "calls_daily_mv", "calls_local", "schema_migrations"]
        {
            assert!(t.lines().any(|l| l == name), "{name} missing on {}: {t}", n.url());
        }
        let engine = n
            .query(&format!("SELECT engine FROM system.tables WHERE database = '{db}' AND name = 'calls_local'"))
            .await;
        assert_eq!(engine.trim(), "ReplicatedMergeTree");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let again = tollgate_clickhouse::migrate(&cluster_cfg(cluster.nodes[1].url(), db)).await.unwrap();
        if again.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the ledger did not reach the other server: {again:?}");
    }

    let events: Vec<CallEvent> = (0..6_000).map(call).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ClickHouseSink::open(cfg.clone(), dir.path()).unwrap();
    load(&mut sink, &events[..4_000], 1_000).await;
    // A retry whose first attempt landed (lost acknowledgement): the same batch, same id and bytes, sent
    // again without looking first. Each shard drops the block it already has.
    sink.set_next_offset(2_000);
    let mut p = PendingRows::default();
    sink.append(&mut p, &Arc::new(events[2_000..3_000].to_vec()));
    for mut b in sink.seal(&mut p).unwrap() {
        assert_eq!(sink.write(&mut b).await.unwrap(), Landed::Inserted);
    }
    // …and once more with the check first, as the collector does after an unknown outcome.
    sink.set_next_offset(3_000);
    let mut p = PendingRows::default();
    sink.append(&mut p, &Arc::new(events[3_000..4_000].to_vec()));
    for mut b in sink.seal(&mut p).unwrap() {
        b.assume_tried();
        assert_eq!(sink.write(&mut b).await.unwrap(), Landed::AlreadyPresent);
    }
    sink.set_next_offset(4_000);
    load(&mut sink, &events[4_000..], 1_000).await;

    let on: Vec<u64> = {
        let mut v = Vec::new();
        for n in &cluster.nodes {
            v.push(n.number(&format!("SELECT count() FROM {db}.calls_local")).await);
        }
        v
    };
    assert!(on.iter().all(|c| *c > 1_000), "both shards hold calls: {on:?}");
    assert_eq!(on.iter().sum::<u64>(), events.len() as u64, "every call on exactly one shard: {on:?}");
    let n0 = &cluster.nodes[0];
    assert_eq!(n0.number(&format!("SELECT uniqExact(event_id) FROM {db}.calls")).await, events.len() as u64);
    let want: u64 = events.iter().map(|e| e.cost_nanousd).sum();
    assert_eq!(n0.number(&format!("SELECT sum(cost_nanousd) FROM {db}.calls")).await, want);
    assert_eq!(n0.number(&format!("SELECT sum(cost_nanousd) FROM {db}.calls_daily")).await, want, "rollup");

    let svc = QueryService::open_clickhouse(cfg, QueryConfig::default());
    assert_eq!(answers(&svc).await, single_server_answers(&events).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_lose_nothing_when_one_is_killed_mid_load() {
    let cluster = Cluster::start(Topology::TwoReplicas);
    let db = "fleet";
    let cfg = cluster_cfg(cluster.nodes[0].url(), db);
    tollgate_clickhouse::migrate(&cfg).await.unwrap();
    let events: Vec<CallEvent> = (0..6_000).map(call).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ClickHouseSink::open(cfg.clone(), dir.path()).unwrap();
    load(&mut sink, &events[..2_000], 500).await;
    let other = &cluster.nodes[1];
    other.kill();
    load(&mut sink, &events[2_000..5_000], 500).await;
    other.restart();
    load(&mut sink, &events[5_000..], 500).await;

    let want: u64 = events.iter().map(|e| e.cost_nanousd).sum();
    for n in &cluster.nodes {
        // The restarted replica fetches what it missed once its old ZooKeeper session has expired.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let c = n.number(&format!("SELECT count() FROM {db}.calls_local")).await;
            if c == events.len() as u64 {
                break;
            }
            assert!(c < events.len() as u64, "{} holds {c} rows: doubled", n.url());
            assert!(Instant::now() < deadline, "{} holds {c} of {} rows", n.url(), events.len());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(n.number(&format!("SELECT uniqExact(event_id) FROM {db}.calls_local")).await, events.len() as u64);
        assert_eq!(n.number(&format!("SELECT sum(cost_nanousd) FROM {db}.calls_local")).await, want);
        let deadline = Instant::now() + Duration::from_secs(30);
        while n.number(&format!("SELECT sum(cost_nanousd) FROM {db}.calls_daily_local")).await != want {
            assert!(Instant::now() < deadline, "rollup on {} does not match", n.url());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // Reports through either server equal the single server's.
    let single = single_server_answers(&events).await;
    for n in &cluster.nodes {
        let svc = QueryService::open_clickhouse(cluster_cfg(n.url(), db), QueryConfig::default());
        assert_eq!(answers(&svc).await, single, "through {}", n.url());
    }
}
