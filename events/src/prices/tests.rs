//! Unit tests of matching, tiers, versions and catalog parsing. Expected nano-USD amounts are computed
//! here from the published per-million rates (USD x 10^9 per million tokens = nano-USD per 1000 tokens
//! x 1000), not read back from the table.

use super::*;

const DAY_US: i64 = 86_400_000_000;

fn price(t: &PriceTable, m: &str) -> ModelPrice {
    t.get(m).unwrap_or_else(|| panic!("no price for {m}")).clone()
}

#[test]
fn builtin_table_parses_every_entry() {
    let c = parse_catalog(PriceTable::builtin_catalog_text(), CatalogFormat::Tollgate).unwrap();
    let t = PriceTable::builtin();
    assert_eq!(t.len(), c.models.len());
    assert!(t.len() >= 100, "{}", t.len());
    assert_eq!(c.read_on.as_deref(), Some(BUILTIN_PRICES_READ_ON));
}

#[test]
fn exact_costs_in_nano_usd() {
    let t = PriceTable::builtin();
    let mini = price(&t, "gpt-4o-mini");
    // 1000 in x $0.15/M = 150_000 nano; 500 out x $0.60/M = 300_000 nano.
    assert_eq!(mini.cost_nanousd(&Usage { input: 1000, output: 500, ..Default::default() }), 450_000);
    // Cached at $0.075/M = 75 nano-USD per token.
    assert_eq!(mini.cost_nanousd(&Usage { input: 1000, cached_input: 1000, ..Default::default() }), 75_000);
    let mut t2 = PriceTable::default();
    t2.set("f", &PriceSpec { input: "0.0375".into(), output: "0".into(), ..Default::default() }, "config").unwrap();
    let f = price(&t2, "f");
    // 37.5 nano per token: one rounding, half up, per call.
    assert_eq!(f.cost_nanousd(&Usage { input: 1, ..Default::default() }), 38);
    assert_eq!(f.cost_nanousd(&Usage { input: 2, ..Default::default() }), 75);
    assert_eq!(f.cost_nanousd(&Usage { input: 3, ..Default::default() }), 113);

    let sonnet = price(&t, "claude-sonnet-4-5");
    // 10_000 in: 2_000 cache reads at $0.30/M, 3_000 cache writes at $3.75/M, 5_000 at $3/M; 1_000 out at $15/M.
    let u = Usage { input: 10_000, output: 1_000, cached_input: 2_000, cache_write: 3_000, ..Default::default() };
    assert_eq!(sonnet.cost_nanousd(&u), 15_000_000 + 600_000 + 11_250_000 + 15_000_000);
    // The same with 1_000 of the writes at the 1-hour rate ($6/M instead of $3.75/M).
    let u1h = Usage { cache_write_1h: 1_000, ..u };
    assert_eq!(sonnet.cost_nanousd(&u1h), 15_000_000 + 600_000 + 2_000 * 3_750 + 1_000 * 6_000 + 15_000_000);

    let o3 = price(&t, "o3");
    // Reasoning is part of output and priced at the output rate: no double counting.
    let u = Usage { input: 100, output: 300, reasoning: 200, ..Default::default() };
    assert_eq!(o3.cost_nanousd(&u), 100 * 2_000 + 300 * 8_000);
}

#[test]
fn no_look_alike_prefix_matches() {
    let t = PriceTable::builtin();
    // Each of these was priced as its prefix before: o1-pro as o1 (10x too low), claude-opus-4-6 as
    // claude-opus-4 (3x too high), gpt-5-pro as gpt-5.
    assert_eq!(price(&t, "o1-pro").standard.base.input, 150_000_000_000);
    assert_eq!(price(&t, "claude-opus-4-6").standard.base.input, 5_000_000_000);
    assert_eq!(price(&t, "gpt-5-pro").standard.base.output, 120_000_000_000);
    // Not in the table, and no longer priced as `gpt-4o` / `o3` / `claude-sonnet-4-5`.
    for m in ["gpt-4o-audio-preview", "o3-ultra", "claude-sonnet-4-5-experimental", "gpt-4ox", "llama-3"] {
        assert!(t.get(m).is_none(), "{m} must not match a look-alike");
    }
}

#[test]
fn date_suffix_alias_and_provider_prefix_rules() {
    let t = PriceTable::builtin();
    let at = i64::MAX;
    let (p, how) = t.lookup("claude-3-5-haiku-20241022", at).unwrap();
    assert_eq!((p.model.as_str(), how), ("claude-3-5-haiku", MatchKind::DateSuffix));
    let (p, how) = t.lookup("o3-mini-2099-01-31", at).unwrap();
    assert_eq!((p.model.as_str(), how), ("o3-mini", MatchKind::DateSuffix));
    let (p, how) = t.lookup("claude-3-5-sonnet@20240620", at).unwrap();
    assert_eq!((p.model.as_str(), how), ("claude-3-5-sonnet", MatchKind::DateSuffix));
    // A dated entry with its own price wins over the date rule: gpt-4o-2024-05-13 cost $5/M, not $2.50.
    let (p, how) = t.lookup("gpt-4o-2024-05-13", at).unwrap();
    assert_eq!((p.standard.base.input, how), (5_000_000_000, MatchKind::Exact));
    let (p, how) = t.lookup("claude-3-5-sonnet-latest", at).unwrap();
    assert_eq!((p.model.as_str(), how), ("claude-3-5-sonnet", MatchKind::Alias));
    let (p, how) = t.lookup("openai/gpt-4o", at).unwrap();
    assert_eq!((p.model.as_str(), how), ("gpt-4o", MatchKind::ProviderPrefix));
    // Not dates: wrong month, no dash, a version number.
    assert!(t.lookup("gpt-4o-2024-13-06", at).is_none());
    assert!(t.lookup("gpt-4o20240806", at).is_none());
    assert!(t.lookup("gpt-4o-0613", at).is_none());
    assert_eq!(strip_date_suffix("gpt-4o-2024-08-06"), Some("gpt-4o"));
    assert_eq!(strip_date_suffix("claude-3-5-haiku-20241022"), Some("claude-3-5-haiku"));
    assert_eq!(strip_date_suffix("gpt-4o"), None);
}

#[test]
fn unknown_served_model_uses_route_fallback_or_nothing() {
    let mut t = PriceTable::builtin();
    assert!(t.resolve("gpt-4o-audio-preview", "gpt-4o", "openai", 0).is_none());
    t.set_route_fallback("openai", "gpt-4o");
    let (p, how) = t.resolve("gpt-4o-audio-preview", "gpt-4o", "openai", 0).unwrap();
    assert_eq!((p.model.as_str(), how), ("gpt-4o", MatchKind::RouteFallback));
    assert!(t.resolve("gpt-4o-audio-preview", "gpt-4o", "other-upstream", 0).is_none());
    // No served model (the call failed before the provider named one): the requested model prices it.
    let (p, _) = t.resolve("", "gpt-4o-mini", "x", 0).unwrap();
    assert_eq!(p.model, "gpt-4o-mini");
}

#[test]
fn long_context_and_service_tiers() {
    let t = PriceTable::builtin();
    // gemini-style tiers in a catalog: above 200K input tokens the whole call costs more.
    let cat: Catalog = serde_json::from_str(
        r#"{"format":"tollgate-prices/1","name":"t","models":{"m":[{"input":"1.25","output":"10","cached_input":"0.125",
            "above":[{"input_tokens":200000,"input":"2.5","output":"15"}],
            "service_tiers":{"priority":{"input":"2.25","output":"18","above":[{"input_tokens":200000,"input":"4.5"}]},
                             "batch":{"input":"0.625"}}}]}}"#,
    )
    .unwrap();
    let mut t2 = PriceTable::default();
    t2.merge_catalog(&cat, PriceSource::Catalog).unwrap();
    let m = price(&t2, "m");
    let at = |input, tier| Usage { input, output: 1000, service_tier: tier, ..Default::default() };
    // 200_000 is not above 200K: base rates. 200_000 x 1_250 + 1000 x 10_000.
    assert_eq!(m.cost(&at(200_000, ServiceTier::Standard)).nanousd, 250_000_000 + 10_000_000);
    // 200_001: every token at the long-context rates.
    assert_eq!(m.cost(&at(200_001, ServiceTier::Standard)).nanousd, 200_001 * 2_500 + 1000 * 15_000);
    let c = m.cost(&at(1000, ServiceTier::Priority));
    assert_eq!(c.nanousd, 1000 * 2_250 + 1000 * 18_000);
    assert_eq!(c.price_id, "m@catalog#priority");
    // The priority tier's own long-context input rate; its output falls back to the priority base.
    assert_eq!(m.cost(&at(300_000, ServiceTier::Priority)).nanousd, 300_000 * 4_500 + 1000 * 18_000);
    // Batch sets only input: output stays at the standard $10/M; cache reads at the standard $0.125/M.
    assert_eq!(m.cost(&at(1000, ServiceTier::Batch)).nanousd, 1000 * 625 + 1000 * 10_000);
    // Flex has no rates: standard, and the price id says nothing of a tier.
    let c = m.cost(&at(1000, ServiceTier::Flex));
    assert_eq!((c.nanousd, c.price_id.as_str()), (1000 * 1_250 + 1000 * 10_000, "m@catalog"));
    // Built-in gpt-4o: priority $4.25/M in, $17/M out; batch $1.25/$5.
    let g = price(&t, "gpt-4o");
    assert_eq!(g.cost(&at(1000, ServiceTier::Priority)).nanousd, 1000 * 4_250 + 1000 * 17_000);
    assert_eq!(g.cost(&at(1000, ServiceTier::Batch)).nanousd, 1000 * 1_250 + 1000 * 5_000);
    // Reasoning on the batch tier is billed at the batch output rate ($5/M), not the standard $10/M.
    let u = Usage { input: 1000, output: 1000, reasoning: 400, service_tier: ServiceTier::Batch, ..Default::default() };
    assert_eq!(g.cost(&u).nanousd, 1000 * 1_250 + 1000 * 5_000);
    assert_eq!(ServiceTier::parse("scale"), ServiceTier::Priority);
    assert_eq!(ServiceTier::parse("default"), ServiceTier::Standard);
    assert_eq!(ServiceTier::parse(" Batches "), ServiceTier::Batch);
    assert_eq!(ServiceTier::parse("FLEX"), ServiceTier::Flex);
    assert_eq!(ServiceTier::parse("Priority"), ServiceTier::Priority);
    assert_eq!(ServiceTier::parse("flexible"), ServiceTier::Standard);
    assert_eq!(ServiceTier::parse("ſcale"), ServiceTier::Standard);
}

#[test]
fn versions_apply_from_their_time_and_sources_layer() {
    let mut t = PriceTable::builtin();
    let dec1 = parse_effective_from("2026-12-01").unwrap();
    let cat: Catalog = serde_json::from_str(
        r#"{"format":"tollgate-prices/1","name":"acme","models":{"gpt-4o":[
            {"effective_from":"2026-12-01","input":"2","output":"8"},
            {"effective_from":"2027-01-01T00:00:00Z","version":"jan","input":"1","output":"4"}]}}"#,
    )
    .unwrap();
    t.merge_catalog(&cat, PriceSource::Catalog).unwrap();
    let at_of = |t: &PriceTable, us| t.lookup("gpt-4o", us).unwrap().0.price_id.clone();
    let at = |us| at_of(&t, us);
    assert_eq!(at(dec1 - 1), format!("gpt-4o@builtin-{BUILTIN_PRICES_READ_ON}"));
    assert_eq!(at(dec1), "gpt-4o@catalog-2026-12-01");
    assert_eq!(at(dec1 + 31 * DAY_US), "gpt-4o@jan");
    // A dated served name follows the same versions.
    assert_eq!(t.lookup("gpt-4o-2024-08-06", dec1).unwrap().0.price_id, "gpt-4o@catalog-2026-12-01");
    assert_eq!(t.lookup("gpt-4o-2099-08-06", dec1).unwrap().0.price_id, "gpt-4o@catalog-2026-12-01");
    // Config beats both, from its own start; its version names its rates.
    let spec = PriceSpec { input: "3".into(), output: "9".into(), ..Default::default() };
    t.set("gpt-4o", &spec, "config").unwrap();
    let id = at_of(&t, 0);
    assert!(id.starts_with("gpt-4o@config-") && id.len() == "gpt-4o@config-".len() + 8, "{id}");
    let mut t3 = PriceTable::default();
    t3.set("gpt-4o", &PriceSpec { input: "3.5".into(), ..spec }, "config").unwrap();
    assert_ne!(t3.get("gpt-4o").unwrap().price_id, id, "a changed config price gets a new id");
}

#[test]
fn staleness_warning_after_90_days() {
    let t = PriceTable::builtin();
    let read = chrono::NaiveDate::parse_from_str(BUILTIN_PRICES_READ_ON, "%Y-%m-%d").unwrap();
    assert!(t.staleness_warning(read + chrono::Duration::days(90)).is_none());
    let w = t.staleness_warning(read + chrono::Duration::days(91)).unwrap();
    assert!(w.contains("91 days") && w.contains("tollgate prices import"), "{w}");
    let mut t2 = PriceTable::builtin();
    let newer = (read + chrono::Duration::days(60)).format("%Y-%m-%d").to_string();
    let cat = Catalog { format: CATALOG_FORMAT.into(), read_on: Some(newer), ..Default::default() };
    t2.merge_catalog(&cat, PriceSource::Catalog).unwrap();
    assert!(t2.staleness_warning(read + chrono::Duration::days(91)).is_none());
}

#[test]
fn per_token_floats_become_exact_decimals() {
    assert_eq!(per_token_to_per_million(2.5e-6), Some(("2.5".into(), false)));
    assert_eq!(per_token_to_per_million(3.75e-8), Some(("0.0375".into(), false)));
    assert_eq!(per_token_to_per_million(0.00015), Some(("150".into(), false)));
    assert_eq!(per_token_to_per_million(1.1e-6), Some(("1.1".into(), false)));
    assert_eq!(per_token_to_per_million(0.0), Some(("0".into(), false)));
    // 1.234567891234e-10 per token = $0.0001234567891234/M: rounded to nano-USD per million.
    assert_eq!(per_token_to_per_million(1.234567891234e-10), Some(("0.000123457".into(), true)));
    assert_eq!(per_token_to_per_million(-1e-6), None);
}

#[test]
fn litellm_keys_and_tiers_convert() {
    let text = r#"{
      "sample_spec": {"input_cost_per_token": 0.0, "max_input_tokens": "max input tokens"},
      "g": {"input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 1.25e-07,
            "input_cost_per_token_above_200k_tokens": 2.5e-06, "output_cost_per_token_above_200k_tokens": 1.5e-05,
            "input_cost_per_token_priority": 2.25e-06, "input_cost_per_token_above_200k_tokens_priority": 4.5e-06,
            "input_cost_per_token_batches": 6.25e-07, "input_cost_per_audio_token": 1e-06,
            "cache_creation_input_token_cost": 1.5e-06, "cache_creation_input_token_cost_above_1hr": 2.5e-06,
            "max_input_tokens": 1048576, "max_output_tokens": 65535},
      "img": {"output_cost_per_image": 0.04},
      "g-latest": {"alias_of": "g"}
    }"#;
    let (c, report) = litellm_to_catalog(text).unwrap();
    assert_eq!(report.not_token_priced, 1);
    assert_eq!(report.ignored_keys.get("input_cost_per_audio_token"), Some(&1));
    let mut t = PriceTable::default();
    t.merge_catalog(&c, PriceSource::Catalog).unwrap();
    let g = price(&t, "g");
    assert_eq!(g.standard.base.input, 1_250_000_000);
    assert_eq!(g.standard.base.cached_input, 125_000_000);
    assert_eq!(g.standard.base.cache_write, 1_500_000_000);
    assert_eq!(g.standard.base.cache_write_1h, 2_500_000_000);
    assert_eq!(
        g.standard.above,
        // Reasoning follows the tier's output rate.
        vec![(
            200_000,
            Rates { input: 2_500_000_000, output: 15_000_000_000, reasoning: 15_000_000_000, ..g.standard.base }
        )]
    );
    assert_eq!(g.service_tiers[&ServiceTier::Priority].above[0].1.input, 4_500_000_000);
    assert_eq!(g.service_tiers[&ServiceTier::Batch].base.input, 625_000_000);
    assert_eq!(
        t.model_limits("g"),
        Some(ModelLimits { max_input_tokens: Some(1_048_576), max_output_tokens: Some(65_535) })
    );
    assert_eq!(t.lookup("g-latest", 0).unwrap().1, MatchKind::Alias);
}

#[test]
fn catalog_toml_and_errors() {
    let toml_text = r#"
format = "tollgate-prices/1"
name = "acme"
[aliases]
"house" = "house-llm"
[[models."house-llm"]]
input = "0.0375"
output = 1.1
[[models."house-llm".above]]
input_tokens = 128000
input = "0.075"
[models."house-llm".service_tiers.batch]
input = "0.01875"
"#;
    let c = parse_catalog(toml_text, CatalogFormat::TollgateToml).unwrap();
    let mut t = PriceTable::default();
    t.merge_catalog(&c, PriceSource::Catalog).unwrap();
    let p = price(&t, "house");
    assert_eq!((p.standard.base.input, p.standard.base.output), (37_500_000, 1_100_000_000));
    assert_eq!(p.standard.above[0], (128_000, Rates { input: 75_000_000, ..p.standard.base }));
    let bad = r#"{"format":"tollgate-prices/1","models":{"x":[{"input":"1.2.3"}]}}"#;
    let e = parse_catalog(bad, CatalogFormat::Tollgate).unwrap_err().to_string();
    assert_eq!(e, "prices.\"x\".input: `1.2.3` is not a decimal USD amount");
    let typo = r#"{"format":"tollgate-prices/1","models":{"x":[{"input":"1","ouptut":"2"}]}}"#;
    assert!(parse_catalog(typo, CatalogFormat::Tollgate).unwrap_err().to_string().contains("ouptut"));
    let tier = r#"{"format":"tollgate-prices/1","models":{"x":[{"input":"1","service_tiers":{"gold":{}}}]}}"#;
    assert!(parse_catalog(tier, CatalogFormat::Tollgate).unwrap_err().to_string().contains("gold"));
}

#[test]
fn cost_overflow_is_reported_not_hidden() {
    let mut t = PriceTable::default();
    t.set("big", &PriceSpec { input: "18446744073".into(), output: "0".into(), ..Default::default() }, "config")
        .unwrap();
    let c = price(&t, "big").cost(&Usage { input: u64::MAX, ..Default::default() });
    assert!(c.overflowed);
    assert_eq!(c.nanousd, u64::MAX);
    // Stored: capped to $1M and marked, never wrapped or saturated at u64::MAX.
    let mut t = PriceTable::default();
    t.set("big", &PriceSpec { input: "18446744073".into(), output: "0".into(), ..Default::default() }, "config")
        .unwrap();
    let mut ev = CallEvent { served_model: "big".into(), input_tokens: 90_000_000, ..Default::default() };
    let r = t.price_event(&mut ev, ServiceTier::Standard, 0);
    assert!(r.capped);
    assert_eq!((ev.cost_nanousd, ev.usage_source), (MAX_CALL_COST_NANOUSD, UsageSource::Capped));
}

#[test]
fn usage_bounds() {
    let lim = ModelLimits { max_input_tokens: Some(128_000), max_output_tokens: Some(16_384) };
    let b = bound_usage(1_000, 500, 200, 0, 100, Some(lim));
    assert!(!b.capped);
    // Above 4x the window: capped to it.
    let b = bound_usage(10_000_000, 100_000, 0, 0, 0, Some(lim));
    assert!(b.capped);
    assert_eq!((b.input, b.output), (512_000, 65_536));
    // Unknown model: the absolute bound.
    let b = bound_usage(u64::MAX, 1, 0, 0, 5, None);
    assert_eq!((b.input, b.output, b.reasoning, b.capped), (ABSOLUTE_TOKEN_BOUND, 1, 1, true));
    // Parts larger than their whole.
    let b = bound_usage(100, 10, 150, 0, 0, None);
    assert_eq!((b.cached_input, b.capped), (100, true));
    let r: Vec<ReportedTokens> = serde_json::from_str("[12, -5, 12.7, 1e30, \"7\", null]").unwrap();
    let got: Vec<(u64, bool)> = r.iter().map(|r| (r.value, r.anomalous)).collect();
    assert_eq!(got, vec![(12, false), (0, true), (12, true), (u64::MAX, true), (7, true), (0, false)]);
}

#[test]
fn reprice_keeps_one_hour_cache_writes_implied_by_the_old_cost() {
    let mut t = PriceTable::builtin();
    let u = Usage {
        input: 48 + 10_240 + 2_048,
        output: 27,
        cached_input: 10_240,
        cache_write: 2_048,
        cache_write_1h: 1_024,
        ..Default::default()
    };
    let old = price(&t, "claude-sonnet-4-5").cost(&u);
    assert_eq!(old.nanousd, 48 * 3_000 + 10_240 * 300 + 1_024 * 3_750 + 1_024 * 6_000 + 27 * 15_000);
    let ev = CallEvent {
        served_model: "claude-sonnet-4-5-20250929".into(),
        input_tokens: u.input,
        output_tokens: 27,
        cached_input_tokens: 10_240,
        cache_write_tokens: 2_048,
        cost_nanousd: old.nanousd,
        price_id: old.price_id.as_str().into(),
        ..Default::default()
    };
    // The fix: 1-hour cache writes cost $7/M. The event's 1,024 one-hour writes are read from its old cost.
    let spec = PriceSpec {
        input: "3".into(),
        output: "15".into(),
        cached_input: Some("0.3".into()),
        cache_write: Some("3.75".into()),
        cache_write_1h: Some("7".into()),
        ..Default::default()
    };
    t.set("claude-sonnet-4-5", &spec, "config").unwrap();
    let c = reprice::reprice_event(&t, &ev).unwrap();
    assert_eq!(c.new_cost_nanousd, 48 * 3_000 + 10_240 * 300 + 1_024 * 3_750 + 1_024 * 7_000 + 27 * 15_000);
    assert!(c.new_price_id.starts_with("claude-sonnet-4-5@config-"), "{}", c.new_price_id);
}
