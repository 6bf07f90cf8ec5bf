//! What `tollgate prices import|show|diff` compute: merging an imported catalog into the stored one as
//! new versions, and the text tables shown to people. Pure: the caller reads and writes the files.

use super::{
    usd_per_m, Catalog, MatchKind, ModelPrice, PriceError, PriceSource, PriceTable, RateCard, Rates, CATALOG_FORMAT,
};
use std::fmt::Write;

/// What an import changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub added: usize,
    pub changed: usize,
    pub unchanged: usize,
    pub aliases: usize,
}

/// Merges `incoming` into the stored catalog. A model whose latest stored version bills alike is left
/// alone; a new or changed one gets a version effective from `effective_from` (RFC 3339) named
/// `<source name>-<stamp>`. Entries that carry their own `effective_from` keep it.
pub fn import_merge(
    stored: Option<Catalog>,
    incoming: &Catalog,
    effective_from: &str,
    stamp: &str,
) -> Result<(Catalog, ImportSummary), PriceError> {
    let mut out = stored.unwrap_or_else(|| Catalog {
        format: CATALOG_FORMAT.into(),
        name: "imported".into(),
        ..Default::default()
    });
    let mut sum = ImportSummary::default();
    let source = if incoming.name.is_empty() { "import" } else { incoming.name.as_str() };
    for (model, entries) in &incoming.models {
        for e in entries {
            // Validate before touching the stored catalog.
            e.to_price(model, PriceSource::Catalog, None)?;
            let versions = out.models.entry(model.clone()).or_default();
            let mut new = e.clone();
            if new.effective_from.is_none() {
                if versions.last().is_some_and(|last| last.same_rates(e, model)) {
                    sum.unchanged += 1;
                    continue;
                }
                new.effective_from = Some(effective_from.to_string());
            }
            if new.version.is_none() {
                new.version = Some(format!("{source}-{stamp}"));
            }
            if versions.is_empty() {
                sum.added += 1;
            } else {
                sum.changed += 1;
            }
            versions.retain(|v| v.effective_from != new.effective_from);
            versions.push(new);
            versions.sort_by_key(|v| v.effective_from.as_deref().and_then(super::parse_effective_from).unwrap_or(0));
        }
    }
    for (alias, target) in &incoming.aliases {
        if out.aliases.insert(alias.clone(), target.clone()).as_ref() != Some(target) {
            sum.aliases += 1;
        }
    }
    let read_on = incoming.read_on.clone().unwrap_or_else(|| effective_from.chars().take(10).collect());
    if out.read_on.as_ref().is_none_or(|r| *r < read_on) {
        out.read_on = Some(read_on);
    }
    Ok((out, sum))
}

fn rates_cells(r: &Rates) -> [String; 6] {
    [r.input, r.cached_input, r.cache_write, r.cache_write_1h, r.output, r.reasoning].map(usd_per_m)
}

fn from_text(p: &ModelPrice) -> String {
    if p.effective_from_us == 0 {
        "-".into()
    } else {
        chrono::DateTime::from_timestamp_micros(p.effective_from_us)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().map(|r| r.get(c).map_or(0, String::len)).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r.iter().enumerate().map(|(i, v)| format!("{v:<w$}", w = widths[i])).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

const HEADER: [&str; 6] = ["input", "cached", "write_5m", "write_1h", "output", "reasoning"];

/// `tollgate prices show`: every model's price in force now, USD per million tokens.
pub fn show_all(t: &PriceTable) -> String {
    let mut rows = vec![["model", "price_id"]
        .iter()
        .chain(HEADER.iter())
        .chain(["max_in", "max_out"].iter())
        .map(|s| s.to_string())
        .collect::<Vec<_>>()];
    for (model, _) in t.models() {
        let Some(p) = t.get(model) else { continue };
        let mut r = vec![model.to_string(), p.price_id.clone()];
        r.extend(rates_cells(&p.standard.base));
        r.push(p.max_input_tokens.map_or("-".into(), |n| n.to_string()));
        r.push(p.max_output_tokens.map_or("-".into(), |n| n.to_string()));
        rows.push(r);
    }
    let mut out = format!("prices in USD per million tokens; {} models\n", t.len());
    out.push_str(&table(&rows));
    out
}

fn card_rows(rows: &mut Vec<Vec<String>>, label: &str, c: &RateCard) {
    let mut r = vec![label.to_string()];
    r.extend(rates_cells(&c.base));
    rows.push(r);
    for (threshold, rates) in &c.above {
        let mut r = vec![format!("{label} above {threshold} input tokens")];
        r.extend(rates_cells(rates));
        rows.push(r);
    }
}

/// `tollgate prices show MODEL`: how the name matches, and every version with its tiers. `None` when
/// nothing matches.
pub fn show_model(t: &PriceTable, name: &str) -> Option<String> {
    let (now, how) = t.lookup(name, i64::MAX)?;
    let mut out = String::new();
    let via = match how {
        MatchKind::Exact => String::new(),
        other => format!(" ({} of `{}`)", other.as_str(), now.model),
    };
    let _ = writeln!(out, "{name}: priced as {}{via}", now.price_id);
    if let (Some(i), o) = (now.max_input_tokens, now.max_output_tokens) {
        let _ = writeln!(out, "context window {i} tokens, max output {}", o.map_or("-".into(), |o| o.to_string()));
    }
    let versions = t.models().into_iter().find(|(m, _)| *m == now.model).map(|(_, v)| v).unwrap_or(&[]);
    for v in versions.iter().rev() {
        let _ =
            writeln!(out, "\nversion {} (source {}, effective from {})", v.price_id, v.source.as_str(), from_text(v));
        let mut rows = vec![[""].iter().chain(HEADER.iter()).map(|s| s.to_string()).collect::<Vec<_>>()];
        card_rows(&mut rows, "standard", &v.standard);
        for (tier, card) in &v.service_tiers {
            card_rows(&mut rows, tier.as_str(), card);
        }
        out.push_str(&table(&rows));
    }
    Some(out)
}

/// `tollgate prices diff FILE`: what importing `incoming` would change against the prices in force.
pub fn diff(t: &PriceTable, incoming: &Catalog) -> Result<String, PriceError> {
    let mut out = String::new();
    let (mut added, mut changed, mut same) = (0, 0, 0);
    for (model, entries) in &incoming.models {
        let Some(e) = entries.last() else { continue };
        let new = e.to_price(model, PriceSource::Catalog, None)?;
        match t.lookup(model, i64::MAX).filter(|(_, how)| *how == MatchKind::Exact) {
            None => {
                added += 1;
                let [i, c, w, w1, o, r] = rates_cells(&new.standard.base);
                let _ = writeln!(
                    out,
                    "+ {model}: input {i} cached {c} write_5m {w} write_1h {w1} output {o} reasoning {r}"
                );
            }
            Some((old, _)) if same_billing(old, &new) => same += 1,
            Some((old, _)) => {
                changed += 1;
                let _ = write!(out, "~ {model} ({}):", old.price_id);
                let (a, b) = (rates_cells(&old.standard.base), rates_cells(&new.standard.base));
                for ((name, x), y) in HEADER.iter().zip(a.iter()).zip(b.iter()) {
                    if x != y {
                        let _ = write!(out, " {name} {x} -> {y}");
                    }
                }
                if old.standard.above != new.standard.above || old.service_tiers != new.service_tiers {
                    let _ = write!(out, " (tiers differ)");
                }
                let _ = writeln!(out);
            }
        }
    }
    let _ = writeln!(out, "{added} new, {changed} changed, {same} unchanged (USD per million tokens)");
    Ok(out)
}

fn same_billing(a: &ModelPrice, b: &ModelPrice) -> bool {
    a.standard == b.standard && a.service_tiers == b.service_tiers
}
