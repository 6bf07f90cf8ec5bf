//! Exact money: USD amounts as integer nano-dollars, parsed from and rendered to decimal text without floats.

/// A money amount that cannot be represented exactly in nano-USD.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MoneyError {
    #[error("`{0}` is not a decimal USD amount")]
    NotDecimal(String),
    #[error("`{0}` has more than 9 decimal places (nano-USD is the smallest unit)")]
    TooPrecise(String),
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// Parses `"2.5"`, `"0.0375"`, `"15"` into nano-USD (`2_500_000_000`, `37_500_000`, `15_000_000_000`).
pub fn parse_usd_to_nano(text: &str) -> Result<u64, MoneyError> {
    let t = text.trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return Err(MoneyError::NotDecimal(text.to_string()));
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 9 {
        return Err(MoneyError::TooPrecise(text.to_string()));
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().map_err(|_| MoneyError::TooLarge(text.to_string()))? };
    let mut frac_nanos: u64 = 0;
    for (i, b) in frac.bytes().enumerate() {
        frac_nanos += u64::from(b - b'0') * 10u64.pow(8 - i as u32);
    }
    int.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac_nanos))
        .ok_or_else(|| MoneyError::TooLarge(text.to_string()))
}

/// Renders nano-USD as a decimal USD string with all nine places: `1_500` → `"0.000001500"`.
pub fn format_usd(nanos: u64) -> String {
    let mut s = String::with_capacity(30);
    // Writing to a `String` cannot fail.
    let _ = write_usd(&mut s, nanos);
    s
}

/// [`format_usd`]'s text, written into `out` (no string of its own).
pub fn write_usd(out: &mut impl std::fmt::Write, nanos: u64) -> std::fmt::Result {
    write!(out, "{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(parse_usd_to_nano("2.5"), Ok(2_500_000_000));
        assert_eq!(parse_usd_to_nano("0.0375"), Ok(37_500_000));
        assert_eq!(parse_usd_to_nano("15"), Ok(15_000_000_000));
        assert_eq!(parse_usd_to_nano(".5"), Ok(500_000_000));
        assert_eq!(parse_usd_to_nano("0.000000001"), Ok(1));
        assert_eq!(parse_usd_to_nano("1.1000000000"), Ok(1_100_000_000));
        assert!(matches!(parse_usd_to_nano("0.0000000001"), Err(MoneyError::TooPrecise(_))));
        assert!(matches!(parse_usd_to_nano("-1"), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(parse_usd_to_nano("1e3"), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(parse_usd_to_nano("."), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(parse_usd_to_nano("99999999999999999999"), Err(MoneyError::TooLarge(_))));
    }

    #[test]
    fn formats_all_nine_places() {
        assert_eq!(format_usd(0), "0.000000000");
        assert_eq!(format_usd(1_500), "0.000001500");
        assert_eq!(format_usd(12_345_678_901), "12.345678901");
    }
}
