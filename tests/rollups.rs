//! Rollups on both engines answer exactly what the raw call log answers: Parquet compaction (few sorted
//! files + a daily summary, swapped in atomically, late events, crash leftovers, repeated runs) and
//! ClickHouse's materialized rollup (with the backfill of rows stored before the migration), checked on a
//! fixed data set against money computed here from the generated calls, to the nano-dollar; latency
//! percentiles from the histogram within the stated bound and identical on both engines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::clickhouse::ChServer;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tollgate_clickhouse::sink::{Landed, PendingRows};
use tollgate_clickhouse::{ClickHouseConfig, ClickHouseSink};
use tollgate_collector::parquet::{compact_days, merge_open_days, CallsLock, CompactionConfig, SUMMARY_FILE};
use tollgate_collector::{ParquetSink, ParquetSinkConfig, PendingBatch};
use tollgate_events::{CallEvent, Endpoint, Outcome};
use tollgate_query::{
    parse_group_by, PercentileMethod, QueryConfig, QueryService, ShowbackRow, SpendFilter, SpendRequest, TimeRange,
    HISTOGRAM_RELATIVE_ERROR,
};

/// 2026-11-01 00:00 UTC.
const NOV1: i64 = 1_793_491_200_000_000;
const HOUR: i64 = 3_600_000_000;
const DEPTS: [&str; 3] = ["engineering", "finance", "research"];
const MODELS: [&str; 4] = ["gpt-4o", "gpt-4o-mini", "claude-x", "house-llm"];

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Call `i` of `n`, spread over three days (Nov 1-3) plus a few on Oct 31 and Nov 4.
fn call(i: u64, n: u64) -> CallEvent {
    let r = mix(i);
    let dept = DEPTS[(r % 3) as usize];
    let ts = NOV1 - 6 * HOUR + ((i as i128 * (84 * HOUR) as i128) / n as i128) as i64;
    let mut tags = BTreeMap::new();
    tags.insert("env".to_string(), if r % 5 == 0 { "dev" } else { "prod" }.to_string());
    CallEvent {
        schema_version: tollgate_events::SCHEMA_VERSION,
        event_id: format!("ev-{i:08}"),
        request_id: format!("req-{i}"),
        ts_start_us: ts,
        ts_end_us: ts + 500_000,
        tenant: if r % 7 == 0 { "globex" } else { "acme" }.into(),
        department: dept.into(),
        team: format!("{dept}-t{}", (r >> 8) % 3).into(),
        project: format!("p{}", (r >> 12) % 4).into(),
        user: format!("u{}", (r >> 16) % 25).into(),
        api_key_id: format!("key-{}", (r >> 20) % 6).into(),
        tags,
        endpoint: if (r >> 24) % 4 == 0 { Endpoint::Messages } else { Endpoint::Chat },
        provider: "openai".into(),
        upstream: format!("up{}", (r >> 26) % 2).into(),
        requested_model: MODELS[((r >> 28) % 4) as usize].into(),
        served_model: MODELS[((r >> 28) % 4) as usize].into(),
        route: "default".into(),
        outcome: match (r >> 32) % 10 {
            0 => Outcome::UpstreamError,
            1 => Outcome::RejectedBudget,
            _ => Outcome::Ok,
        },
        input_tokens: 10 + (r >> 36) % 3_000,
        output_tokens: (r >> 40) % 700,
        cached_input_tokens: (r >> 44) % 5,
        cost_nanousd: 1_000_003 * ((r >> 20) % 900) + (r % 997),
        saved_nanousd: if (r >> 50) % 9 == 0 { 77_777 } else { 0 },
        cache_hit: (r >> 50) % 9 == 0,
        latency_ms: ((r >> 33) % 9_000) as u32 + if r % 11 == 0 { 40_000 } else { 3 },
        ttft_ms: if r % 4 == 0 { 0 } else { ((r >> 37) % 700) as u32 + 1 },
        ..Default::default()
    }
}

fn calls(n: u64) -> Vec<CallEvent> {
    (0..n).map(|i| call(i, n)).collect()
}

/// The money and counts a showback must give, computed here from the calls themselves.
fn expected(
    events: &[CallEvent],
    range: &TimeRange,
    key: impl Fn(&CallEvent) -> Vec<String>,
) -> BTreeMap<Vec<String>, (u64, u64, u64)> {
    let mut m: BTreeMap<Vec<String>, (u64, u64, u64)> = BTreeMap::new();
    for e in events.iter().filter(|e| e.ts_start_us >= range.from_us && e.ts_start_us < range.to_us) {
        let v = m.entry(key(e)).or_default();
        // Showback's `calls` are billable requests: the gateway's refusals are counted in `rejected`.
        let refused = matches!(
            e.outcome,
            Outcome::Unauthorized
                | Outcome::InvalidRequest
                | Outcome::RejectedBudget
                | Outcome::RejectedRateLimit
                | Outcome::RejectedGuard
                | Outcome::RejectedContext
        );
        v.0 += u64::from(!refused);
        v.1 += e.input_tokens;
        v.2 += e.cost_nanousd;
    }
    // As `as_map`, a group of refusals only (no billable request) is left out.
    m.retain(|_, v| v.0 > 0);
    m
}

fn as_map(rows: &[ShowbackRow]) -> BTreeMap<Vec<String>, (u64, u64, u64)> {
    rows.iter()
        .filter(|r| r.totals.calls > 0)
        .map(|r| {
            (
                r.group.iter().map(|(_, v)| v.clone()).collect(),
                (r.totals.calls, r.totals.input_tokens, r.totals.cost_nanousd),
            )
        })
        .collect()
}

fn ranges() -> Vec<(&'static str, TimeRange)> {
    vec![
        ("the month", TimeRange::parse(Some("2026-11-01"), Some("2026-11-30")).unwrap()),
        ("everything", TimeRange::parse(Some("2026-10-01"), None).unwrap()),
        ("partial days", TimeRange::parse(Some("2026-10-31T20:30:00Z"), Some("2026-11-03T07:15:00Z")).unwrap()),
        ("within one day", TimeRange::parse(Some("2026-11-02T01:00:00Z"), Some("2026-11-02T05:00:00Z")).unwrap()),
    ]
}

type Key = fn(&CallEvent) -> Vec<String>;

fn groupings() -> Vec<(&'static str, Key)> {
    vec![
        ("", |_| vec![]),
        ("department", |e| vec![e.department.to_string()]),
        ("department,team,model", |e| vec![e.department.to_string(), e.team.to_string(), e.served_model.to_string()]),
        ("tenant,user,key", |e| vec![e.tenant.to_string(), e.user.to_string(), e.api_key_id.to_string()]),
        ("outcome,date", |e| vec![e.outcome.as_str().to_string(), tollgate_events::date_of_day(e.day())]),
        ("model,upstream,endpoint", |e| {
            vec![e.served_model.to_string(), e.upstream.to_string(), e.endpoint.as_str().to_string()]
        }),
        // Not in the rollup: always raw.
        ("stream,department", |e| vec![e.stream.to_string(), e.department.to_string()]),
    ]
}

/// Every showback and spend question answered by `rollup` equals the raw service's answer and the money
/// computed from the events.
/// `full: false` asks a few of the questions only (the states between the main checks).
async fn same_answers(events: &[CallEvent], rollup: &QueryService, raw: &QueryService, what: &str, full: bool) {
    for (rname, range) in ranges().into_iter().filter(|(r, _)| full || r.starts_with('p')) {
        for (gname, key) in groupings().into_iter().filter(|(g, _)| full || g.len() > 12) {
            let g = parse_group_by(Some(gname), &[]).unwrap();
            let want = expected(events, &range, key);
            let got = rollup.showback(&range, &g).await.unwrap();
            let plain = raw.showback(&range, &g).await.unwrap();
            assert_eq!(got, plain, "{what}: rollup and raw differ (rows and order) for {rname} by {gname:?}");
            assert_eq!(as_map(&got), want, "{what}: showback {rname} by {gname:?}");
        }
        let scopes = [("department", "finance"), ("user", "u7"), ("key", "key-3"), ("team", "research-t1")];
        for (scope, value) in scopes.into_iter().take(if full { 4 } else { 1 }) {
            let f = SpendFilter::scope(scope, value).unwrap();
            let col = |e: &CallEvent| match scope {
                "department" => e.department.to_string(),
                "user" => e.user.to_string(),
                "key" => e.api_key_id.to_string(),
                _ => e.team.to_string(),
            };
            let want: u64 = events
                .iter()
                .filter(|e| e.ts_start_us >= range.from_us && e.ts_start_us < range.to_us && col(e) == value)
                .map(|e| e.cost_nanousd)
                .sum();
            assert_eq!(
                rollup.spend(&range, &SpendRequest::of(f.clone())).await.unwrap().others_nanousd,
                want,
                "{what}: spend {scope}={value} over {rname}"
            );
            assert_eq!(
                raw.spend(&range, &SpendRequest::of(f.clone())).await.unwrap().others_nanousd,
                want,
                "{what}: raw spend {scope}={value} over {rname}"
            );
        }
        if full {
            grouped_spend(events, &range, rollup, &format!("{what}, {rname}")).await;
            grouped_spend(events, &range, raw, &format!("{what}, {rname}, raw")).await;
        }
        let tag = SpendFilter::Tag("env".into(), "dev".into());
        let want: u64 = events
            .iter()
            .filter(|e| e.ts_start_us >= range.from_us && e.ts_start_us < range.to_us && e.tags["env"] == "dev")
            .map(|e| e.cost_nanousd)
            .sum();
        assert_eq!(
            rollup.spend(&range, &SpendRequest::of(tag.clone())).await.unwrap().others_nanousd,
            want,
            "{what}: tag spend over {rname}"
        );
    }
}

/// Budgets of every kind asked together (`spend_many`, as a budget sync asks them), with extra keys
/// and pending ids (some stored and matching, some stored but another scope's, some outside the range,
/// some unknown): each answer is the money computed here from the events.
async fn grouped_spend(events: &[CallEvent], range: &TimeRange, svc: &QueryService, what: &str) {
    type Pick = fn(&CallEvent) -> String;
    let budgets: [(&str, &str, &[&str], Pick); 6] = [
        ("department", "finance", &["key-3"], |e| e.department.to_string()),
        ("user", "u7", &[], |e| e.user.to_string()),
        ("team", "research-t1", &["key-1", "key-3"], |e| e.team.to_string()),
        ("key", "key-3", &[], |e| e.api_key_id.to_string()),
        ("department", "engineering", &[], |e| e.department.to_string()),
        ("tag", "dev", &["key-5"], |e| e.tags["env"].clone()),
    ];
    let pending: Vec<String> =
        events.iter().step_by(37).map(|e| e.event_id.clone()).chain(["ev-unknown".to_string()]).collect();
    let reqs: Vec<SpendRequest> = budgets
        .iter()
        .enumerate()
        .map(|(n, (scope, value, keys, _))| SpendRequest {
            filter: if *scope == "tag" {
                SpendFilter::Tag("env".into(), (*value).into())
            } else {
                SpendFilter::scope(scope, value).unwrap()
            },
            keys: keys.iter().map(|k| (*k).to_string()).collect(),
            // Every budget but the second asks about pending calls (each a different share of them).
            pending: if n == 1 { Vec::new() } else { pending.iter().skip(n % 3).step_by(2).cloned().collect() },
        })
        .collect();
    let got = svc.spend_many(range, &reqs).await.unwrap();
    assert_eq!(got.len(), reqs.len());
    let (mut held, mut asked) = (0, 0);
    for (((scope, value, keys, pick), req), answer) in budgets.iter().zip(&reqs).zip(&got) {
        let selected: Vec<&CallEvent> = events
            .iter()
            .filter(|e| e.ts_start_us >= range.from_us && e.ts_start_us < range.to_us)
            .filter(|e| pick(e) == *value || keys.contains(&e.api_key_id.as_str()))
            .collect();
        let others: u64 = selected.iter().filter(|e| !req.pending.contains(&e.event_id)).map(|e| e.cost_nanousd).sum();
        let mut present: Vec<String> =
            selected.iter().filter(|e| req.pending.contains(&e.event_id)).map(|e| e.event_id.clone()).collect();
        present.sort();
        assert_eq!(answer.others_nanousd, others, "{what}: grouped spend {scope}={value}");
        assert_eq!(answer.present, present, "{what}: pending calls held, {scope}={value}");
        held += present.len();
        asked += req.pending.len();
    }
    assert!(held > 0 && held < asked, "{what}: some pending calls must be held and some not ({held} of {asked})");
}

fn nearest_rank(mut v: Vec<u32>) -> [u32; 3] {
    v.sort_unstable();
    let n = v.len();
    let pick = |p: f64| v[((p * n as f64) as usize).min(n - 1)];
    [pick(0.5), pick(0.95), pick(0.99)]
}

/// Histogram percentiles (forced: threshold 0) are within the stated bound of the exact ones computed
/// here, say so, and are returned; exact ones are exact.
async fn latency_checks(
    events: &[CallEvent],
    approx: &QueryService,
    exact: &QueryService,
) -> Vec<tollgate_query::LatencyRow> {
    let range = TimeRange::parse(Some("2026-10-31T20:30:00Z"), Some("2026-11-03T07:15:00Z")).unwrap();
    let g = parse_group_by(Some("model"), &[]).unwrap();
    let rows = approx.latency(&range, &g).await.unwrap();
    let exact_rows = exact.latency(&range, &g).await.unwrap();
    assert_eq!(rows.len(), MODELS.len());
    for (row, ex) in rows.iter().zip(&exact_rows) {
        assert_eq!(row.percentiles, PercentileMethod::Histogram);
        assert_eq!(ex.percentiles, PercentileMethod::Exact);
        assert_eq!((&row.group, row.calls), (&ex.group, ex.calls));
        let model = &row.group[0].1;
        let mine: Vec<&CallEvent> = events
            .iter()
            .filter(|e| {
                e.ts_start_us >= range.from_us
                    && e.ts_start_us < range.to_us
                    && &e.served_model == model
                    && e.outcome == Outcome::Ok
            })
            .collect();
        assert_eq!(row.calls, mine.len() as u64);
        let lat = nearest_rank(mine.iter().map(|e| e.latency_ms).collect());
        assert_eq!(ex.latency_ms, lat, "exact path");
        for (got, want) in row.latency_ms.iter().zip(lat) {
            let err = (f64::from(*got) - f64::from(want)).abs() / f64::from(want.max(1));
            assert!(err <= HISTOGRAM_RELATIVE_ERROR, "{model}: {got} vs exact {want}");
        }
        let ttft = nearest_rank(mine.iter().map(|e| e.ttft_ms).filter(|t| *t > 0).collect());
        for (got, want) in row.ttft_ms.unwrap().iter().zip(ttft) {
            let err = (f64::from(*got) - f64::from(want)).abs() / f64::from(want.max(1));
            assert!(err <= HISTOGRAM_RELATIVE_ERROR, "{model} ttft: {got} vs exact {want}");
        }
    }
    rows
}

fn configs() -> (QueryConfig, QueryConfig, QueryConfig) {
    let rollup = QueryConfig::default();
    let raw = QueryConfig { rollups: false, exact_percentiles_max_calls: u64::MAX, ..QueryConfig::default() };
    let approx = QueryConfig { exact_percentiles_max_calls: 0, ..QueryConfig::default() };
    (rollup, raw, approx)
}

async fn write_parquet(sink: &mut ParquetSink, events: &[CallEvent], batch: usize) {
    for chunk in events.chunks(batch) {
        let mut p = PendingBatch::default();
        for e in chunk {
            sink.append(&mut p, e);
        }
        let sealed = sink.seal(&mut p).unwrap();
        sink.write(sealed).await.unwrap();
    }
}

fn day_files(dir: &Path, date: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("calls").join(format!("date={date}")))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

const N: u64 = 12_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_compaction_and_summaries_answer_like_the_raw_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = calls(N);
    let mut sink = ParquetSink::open(ParquetSinkConfig::new(dir.path().to_path_buf())).unwrap();
    write_parquet(&mut sink, &events, 500).await;
    let before = day_files(dir.path(), "2026-11-02");
    assert!(before.len() >= 8, "many small files per day: {before:?}");

    let (rc, rawc, approxc) = configs();
    let rollup = QueryService::open(dir.path().to_path_buf(), rc).unwrap();
    let raw = QueryService::open(dir.path().to_path_buf(), rawc).unwrap();
    let approx = QueryService::open(dir.path().to_path_buf(), approxc).unwrap();
    // No summaries yet: the rollup path reads the raw files for every day.
    same_answers(&events, &rollup, &raw, "before compaction", false).await;

    let lock = CallsLock::open(dir.path()).unwrap();
    let cfg = CompactionConfig { rows_per_file: 2_000, ..CompactionConfig::new(dir.path().to_path_buf()) };
    // Only what the sink committed is compacted: with nothing committed, nothing happens.
    assert!(compact_days(&cfg, &lock, 0, "2100-01-01").unwrap().is_empty());

    // Open days (Nov 3 and 4 here) have their sink files merged once there are enough of them, and only
    // those below the committed cursor; no summary is written for a day that is still open.
    let merge = CompactionConfig { merge_parts: 4, ..CompactionConfig::new(dir.path().to_path_buf()) };
    let nov3 = day_files(dir.path(), "2026-11-03");
    assert!(nov3.len() >= 5 && nov3.iter().all(|f| f.starts_with("part-")), "{nov3:?}");
    // `part-<offset, 20 digits>.parquet`
    let last: u64 = nov3.last().unwrap()[5..25].parse().unwrap();
    let off = CompactionConfig { merge_parts: 0, ..merge.clone() };
    assert!(merge_open_days(&off, &lock, u64::MAX, "2026-11-03").unwrap().is_empty(), "0 turns merging off");
    let done = merge_open_days(&merge, &lock, last, "2026-11-03").unwrap();
    assert_eq!(done.iter().map(|d| d.date.as_str()).collect::<Vec<_>>(), ["2026-11-03"], "Nov 4 has too few files");
    let merged = day_files(dir.path(), "2026-11-03");
    assert_eq!(merged.len(), 2, "{merged:?}");
    assert!(
        merged[0].starts_with("compact-") && merged[1] == *nov3.last().unwrap(),
        "uncommitted file left: {merged:?}"
    );
    assert_eq!(day_files(dir.path(), "2026-11-02"), before, "closed days are not merged");
    same_answers(&events, &rollup, &raw, "after merging an open day", true).await;
    // Late files for Nov 3 make a second small merged file; two small merged files are merged again.
    let more: Vec<CallEvent> = (0..150)
        .map(|i| {
            let mut e = call(N + 1_000 + i, N);
            e.ts_start_us = NOV1 + 48 * HOUR + (i as i64) * 60_000_000;
            e
        })
        .collect();
    write_parquet(&mut sink, &more, 50).await;
    events.extend(more);
    merge_open_days(&merge, &lock, u64::MAX, "2026-11-03").unwrap();
    let twice = day_files(dir.path(), "2026-11-03");
    assert!(twice.len() == 2 && twice.iter().all(|f| f.starts_with("compact-")), "{twice:?}");
    let again = CompactionConfig { merge_parts: 2, ..merge.clone() };
    merge_open_days(&again, &lock, u64::MAX, "2026-11-03").unwrap();
    let once = day_files(dir.path(), "2026-11-03");
    assert!(once.len() == 1 && once[0].starts_with("compact-"), "{once:?}");
    assert!(!day_files(dir.path(), "2026-11-04").contains(&SUMMARY_FILE.to_string()));
    same_answers(&events, &rollup, &raw, "after merging merged files", false).await;

    let done = compact_days(&cfg, &lock, u64::MAX, "2026-11-04").unwrap();
    assert_eq!(
        done.iter().map(|d| d.date.as_str()).collect::<Vec<_>>(),
        ["2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03"]
    );
    let after = day_files(dir.path(), "2026-11-02");
    assert!(after.contains(&SUMMARY_FILE.to_string()), "{after:?}");
    assert!(after.iter().all(|f| f.starts_with("compact-") || f == SUMMARY_FILE), "{after:?}");
    assert!(after.len() <= 4, "few large files: {after:?}");
    assert!(!day_files(dir.path(), "2026-11-04").contains(&SUMMARY_FILE.to_string()), "Nov 4 is not closed");
    // Sorted by attribution: the departments come in order within a compacted file.
    let first = dir.path().join("calls/date=2026-11-02").join(&after[0]);
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(first).unwrap())
            .unwrap()
            .build()
            .unwrap();
    let mut keys = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let t = arrow::array::AsArray::as_string::<i32>(b.column_by_name("tenant").unwrap()).clone();
        let d = arrow::array::AsArray::as_string::<i32>(b.column_by_name("department").unwrap()).clone();
        for i in 0..b.num_rows() {
            keys.push((t.value(i).to_string(), d.value(i).to_string()));
        }
    }
    assert!(keys.windows(2).all(|w| w[0] <= w[1]), "compacted rows are sorted by tenant, department");
    same_answers(&events, &rollup, &raw, "after compaction", true).await;
    let approx_rows = latency_checks(&events, &approx, &raw).await;

    // Compacting again changes nothing and doubles nothing.
    assert!(compact_days(&cfg, &lock, u64::MAX, "2026-11-04").unwrap().is_empty());
    // A crash after an exchange leaves the old files in the staging directory: invisible to readers and
    // removed by the next run.
    let staging = dir.path().join("compaction/date=2026-11-02");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(dir.path().join("calls/date=2026-11-02").join(&after[0]), staging.join(&after[0])).unwrap();
    same_answers(&events, &rollup, &raw, "with a crash leftover", false).await;
    compact_days(&cfg, &lock, u64::MAX, "2026-11-04").unwrap();
    assert!(!staging.exists());

    // Late events for a compacted day: the sink's new file removes the day's summary (it would not cover
    // the file), so the day is read raw, and the next compaction folds the file in.
    let late: Vec<CallEvent> = (0..300)
        .map(|i| {
            let mut e = call(N + i, N);
            e.ts_start_us = NOV1 + 24 * HOUR + (i as i64) * 60_000_000;
            e
        })
        .collect();
    write_parquet(&mut sink, &late, 100).await;
    events.extend(late);
    assert!(!day_files(dir.path(), "2026-11-02").contains(&SUMMARY_FILE.to_string()));
    same_answers(&events, &rollup, &raw, "late events", true).await;
    // This time through `tollgate compact`, which reads the sink's committed cursor from the data dir.
    std::fs::create_dir_all(dir.path().join("wal")).unwrap();
    std::fs::write(dir.path().join("wal/parquet.cursor"), "100000000\n").unwrap();
    let config = dir.path().join("tollgate.toml");
    std::fs::write(&config, format!("[storage]\ndata_dir = {:?}\n", dir.path().display().to_string())).unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["compact", "--config", config.to_str().unwrap(), "--before", "2026-11-04"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("2026-11-02:") && text.contains("compacted 1 days before 2026-11-04"), "{text}");
    assert!(day_files(dir.path(), "2026-11-02").contains(&SUMMARY_FILE.to_string()));
    same_answers(&events, &rollup, &raw, "after compacting the late events", false).await;
    let _ = approx_rows;
}

/// Migrations 0001-0002 by hand (and recorded), as a database created before the rollup existed.
async fn database_before_rollup(ch: &ChServer, db: &str) -> ClickHouseConfig {
    let cfg = ClickHouseConfig::new(ch.url(), db);
    ch.query(&format!("CREATE DATABASE {db}")).await;
    ch.query(&format!(
        "CREATE TABLE {db}.schema_migrations (version UInt32, name String, checksum String, applied_at DateTime('UTC')) \
         ENGINE = MergeTree ORDER BY version"
    ))
    .await;
    for m in tollgate_clickhouse::MIGRATIONS.iter().filter(|m| m.version < 100) {
        for stmt in m.statements() {
            tollgate_clickhouse::run(cfg.client().query_raw(&stmt), std::time::Duration::from_secs(30)).await.unwrap();
        }
        ch.query(&format!(
            "INSERT INTO {db}.schema_migrations VALUES ({}, '{}', '{}', now())",
            m.version,
            m.name,
            m.checksum()
        ))
        .await;
    }
    cfg
}

async fn insert_clickhouse(sink: &mut ClickHouseSink, events: &[CallEvent], batch: usize) {
    for chunk in events.chunks(batch) {
        let mut p = PendingRows::default();
        sink.append(&mut p, &Arc::new(chunk.to_vec()));
        for mut b in sink.seal(&mut p).unwrap() {
            assert_eq!(sink.write(&mut b).await.unwrap(), Landed::Inserted);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_rollup_with_backfill_answers_like_the_raw_table_and_like_parquet() {
    let ch = ChServer::get();
    let db = ch.fresh_database("rollup");
    let cfg = database_before_rollup(ch, &db).await;
    let dir = tempfile::tempdir().unwrap();
    let events = calls(N);
    let mut sink = ClickHouseSink::open(cfg.clone(), dir.path()).unwrap();
    let (old, new) = events.split_at(events.len() / 2);
    insert_clickhouse(&mut sink, old, 1_000).await;
    // The rollup's migration backfills what is stored; the view takes everything after.
    let applied = tollgate_clickhouse::migrate(&cfg).await.unwrap();
    assert!(applied.contains(&161), "{applied:?}");
    let rolled = ch.rows(&format!("SELECT toUInt64(sum(calls)) AS n FROM {db}.calls_daily")).await;
    assert_eq!(rolled[0]["n"], old.len() as u64, "backfill");
    insert_clickhouse(&mut sink, new, 1_000).await;

    let (rc, rawc, approxc) = configs();
    let rollup = QueryService::open_clickhouse(cfg.clone(), rc);
    let raw = QueryService::open_clickhouse(cfg.clone(), rawc);
    let approx = QueryService::open_clickhouse(cfg.clone(), approxc);
    same_answers(&events, &rollup, &raw, "clickhouse", true).await;
    let ch_hist = latency_checks(&events, &approx, &raw).await;

    // The same calls in Parquet, compacted: both engines' histogram answers are the same numbers.
    let pdir = tempfile::tempdir().unwrap();
    let mut psink = ParquetSink::open(ParquetSinkConfig::new(pdir.path().to_path_buf())).unwrap();
    write_parquet(&mut psink, &events, 2_000).await;
    let lock = CallsLock::open(pdir.path()).unwrap();
    compact_days(&CompactionConfig::new(pdir.path().to_path_buf()), &lock, u64::MAX, "2026-11-04").unwrap();
    let df = QueryService::open(pdir.path().to_path_buf(), configs().2).unwrap();
    let df_raw = QueryService::open(pdir.path().to_path_buf(), configs().1).unwrap();
    let df_hist = latency_checks(&events, &df, &df_raw).await;
    assert_eq!(ch_hist, df_hist, "both engines read the same histogram");
    let month = TimeRange::parse(Some("2026-11-01"), Some("2026-11-30")).unwrap();
    let g = parse_group_by(Some("department,team,model"), &[]).unwrap();
    assert_eq!(rollup.showback(&month, &g).await.unwrap(), df.showback(&month, &g).await.unwrap());
}
