//! `tollgate prices import|show|diff` and `tollgate reprice`: wiring between the price catalog (events
//! crate) and the two stores (collector's Parquet files, ClickHouse). The logic lives in those crates.

use clap::Subcommand;
use std::path::{Path, PathBuf};
use tollgate_events::prices::manage;
use tollgate_events::prices::reprice::{RepriceAudit, RepriceChange, RepriceScope};
use tollgate_events::prices::store;
use tollgate_events::{format_usd, PriceTable};

#[derive(Subcommand)]
pub enum PricesCmd {
    /// Import a catalog file (tollgate's JSON/TOML format or LiteLLM's
    /// model_prices_and_context_window.json) into the data directory. New and changed prices apply from
    /// --effective-from (default: now); a running server picks them up on SIGHUP or POST /admin/reload.
    Import {
        file: PathBuf,
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
        /// RFC 3339 time or YYYY-MM-DD (UTC) from which the imported prices apply.
        #[arg(long)]
        effective_from: Option<String>,
    },
    /// Show the prices in force (USD per million tokens), or one model's match, versions and tiers.
    Show {
        model: Option<String>,
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Show what importing FILE would change against the prices in force.
    Diff {
        file: PathBuf,
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
    },
}

/// The prices in force for `config` (built-in, imported, config), or the built-in table alone when there
/// is no config file.
fn table_for(config: &Path, load: &dyn Fn(&Path) -> Result<PriceTable, String>) -> Result<PriceTable, String> {
    if config.exists() {
        load(config)
    } else {
        Ok(PriceTable::builtin())
    }
}

/// Runs a `prices` subcommand; `load` reads a config into its price table, `data_dir` its data dir,
/// `check` validates it whole.
pub fn prices(
    cmd: PricesCmd,
    load: &dyn Fn(&Path) -> Result<PriceTable, String>,
    data_dir: &dyn Fn(&Path) -> Result<PathBuf, String>,
    check: &dyn Fn(&Path) -> Result<(), String>,
) -> Result<(), String> {
    match cmd {
        PricesCmd::Import { file, config, effective_from } => {
            let dir = data_dir(&config)?;
            let now = chrono_now();
            let from = match effective_from {
                Some(s) => {
                    let us = tollgate_events::parse_effective_from(&s)
                        .ok_or_else(|| format!("--effective-from: `{s}` is not an RFC 3339 time or YYYY-MM-DD"))?;
                    rfc3339(us)
                }
                None => rfc3339(now),
            };
            let stamp = from.replace([':', '-'], "");
            let (sum, report) = store::import_file(&dir, &file, &from, &stamp).map_err(|e| e.to_string())?;
            println!(
                "imported {}: {} new, {} changed, {} unchanged models, {} aliases; effective from {from}",
                file.display(),
                sum.added,
                sum.changed,
                sum.unchanged,
                sum.aliases
            );
            if let Some(r) = report {
                println!(
                    "LiteLLM file: {} entries without per-token prices skipped, {} rates rounded to nano-USD per million, {} kinds of price not billed by tollgate",
                    r.not_token_priced,
                    r.rounded,
                    r.ignored_keys.len()
                );
            }
            println!(
                "stored in {}; reload a running server with SIGHUP or POST /admin/reload",
                store::catalog_path(&dir).display()
            );
            if let Err(e) = check(&config) {
                eprintln!("note: the config does not load yet: {e}");
            }
            Ok(())
        }
        PricesCmd::Show { model, config } => {
            let t = table_for(&config, load)?;
            match model {
                None => print!("{}", manage::show_all(&t)),
                Some(m) => match manage::show_model(&t, &m) {
                    Some(text) => print!("{text}"),
                    None => {
                        return Err(format!(
                            "no price for `{m}`: no exact name, alias or date-suffix match (calls to it are stored as unpriced unless their upstream has fallback_price)"
                        ))
                    }
                },
            }
            Ok(())
        }
        PricesCmd::Diff { file, config } => {
            let t = table_for(&config, load)?;
            let (c, _) = store::read_catalog_file(&file).map_err(|e| e.to_string())?;
            print!("{}", manage::diff(&t, &c).map_err(|e| e.to_string())?);
            Ok(())
        }
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

fn rfc3339(us: i64) -> String {
    tollgate_query::TimeRange::render(us - us.rem_euclid(1_000_000)).replace("+00:00", "Z")
}

/// What `tollgate reprice` needs from the config.
pub struct RepriceTarget {
    pub data_dir: PathBuf,
    pub parquet: bool,
    pub clickhouse: Option<tollgate_clickhouse::ClickHouseConfig>,
    pub prices: PriceTable,
}

/// `tollgate reprice`: recompute the cost of stored events in the range with the prices in force.
pub async fn reprice(
    t: RepriceTarget,
    from: &str,
    to: &str,
    model: Option<String>,
    dry_run: bool,
    who: String,
) -> anyhow::Result<()> {
    let range = tollgate_query::TimeRange::parse(Some(from), Some(to))?;
    let scope = RepriceScope { from_us: range.from_us, to_us: range.to_us, model: model.clone() };
    let head = |engine: &str| RepriceAudit {
        reprice_id: uuid_like(),
        at: rfc3339(chrono_now()),
        who: who.clone(),
        engine: engine.to_string(),
        from_us: scope.from_us,
        to_us: scope.to_us,
        model: model.clone().unwrap_or_default(),
        ..Default::default()
    };
    let verb = if dry_run { "would change" } else { "changed" };
    if t.parquet {
        let prices = t.prices.clone();
        let (dir, sc) = (t.data_dir.clone(), scope.clone());
        let r = tokio::task::spawn_blocking(move || {
            tollgate_collector::reprice::reprice_parquet(&dir, &prices, &sc, dry_run)
        })
        .await??;
        let audit = RepriceAudit::of(&r.changes, head("parquet"));
        print_summary("parquet", verb, &audit, &r.changes);
        println!("parquet: {} files read, {} rewritten", r.files_read, r.files_rewritten);
        if !dry_run && !r.changes.is_empty() {
            store::append_reprice_audit(&t.data_dir, &audit)?;
        }
    }
    if let Some(ch) = &t.clickhouse {
        let changes = tollgate_clickhouse::reprice::plan(ch, &t.prices, &scope).await?;
        let audit = RepriceAudit::of(&changes, head("clickhouse"));
        print_summary("clickhouse", verb, &audit, &changes);
        if !dry_run && !changes.is_empty() {
            tollgate_clickhouse::reprice::apply(ch, &changes, &audit).await?;
            store::append_reprice_audit(&t.data_dir, &audit)?;
        }
    }
    Ok(())
}

fn print_summary(engine: &str, verb: &str, a: &RepriceAudit, changes: &[RepriceChange]) {
    let sign = if a.delta_nanousd < 0 { "-" } else { "+" };
    println!(
        "{engine}: {verb} {} events: {} USD -> {} USD ({sign}{} USD); audit id {}",
        changes.len(),
        format_usd(a.old_total_nanousd),
        format_usd(a.new_total_nanousd),
        format_usd(a.delta_nanousd.unsigned_abs()),
        a.reprice_id
    );
    for g in &a.by_price {
        println!(
            "  {} -> {}: {} events, {} -> {} USD",
            if g.old_price_id.is_empty() { "-" } else { &g.old_price_id },
            g.new_price_id,
            g.events,
            format_usd(g.old_cost_nanousd),
            format_usd(g.new_cost_nanousd)
        );
    }
}

/// A time-ordered id for one re-price run.
fn uuid_like() -> String {
    format!("reprice-{}", chrono_now())
}
