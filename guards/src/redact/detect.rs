//! The secret and PII detectors: one pattern per kind, plus the checks a pattern cannot make (Luhn for card
//! numbers, ISO 13616 mod-97 for IBANs, digit counts for phone numbers). Patterns use ASCII word
//! boundaries only, so that the streaming redactor's lazy DFA never has to give up on non-ASCII text.

use crate::GuardError;
use regex::{Regex, RegexSet};
use serde::Deserialize;

/// What a detector looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Provider API keys by their published shapes: OpenAI/Anthropic `sk-…`, Stripe `sk_live_…`, Google
    /// `AIza…`, GitHub `ghp_…`/`github_pat_…`, Slack `xox?-…`, Hugging Face `hf_…`, Groq `gsk_…`, GitLab
    /// `glpat-…`, xAI `xai-…`, Perplexity `pplx-…`.
    ApiKey,
    /// PEM and PGP private-key blocks, BEGIN to END.
    PrivateKey,
    /// JSON Web Tokens (`eyJ….eyJ….…`).
    Jwt,
    /// AWS access key ids (`AKIA…`, `ASIA…`) and `aws_secret_access_key = …` assignments.
    AwsKey,
    Email,
    /// International numbers with `+` (8 to 15 digits) and North-American `(555) 123-4567` forms.
    Phone,
    /// 13 to 19 digits (spaces or dashes allowed) that pass the Luhn check and start like a card number.
    Card,
    /// IBANs that pass the mod-97 check.
    Iban,
}

impl Kind {
    pub const ALL: [Kind; 8] =
        [Kind::ApiKey, Kind::PrivateKey, Kind::Jwt, Kind::AwsKey, Kind::Email, Kind::Phone, Kind::Card, Kind::Iban];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ApiKey => "api_key",
            Kind::PrivateKey => "private_key",
            Kind::Jwt => "jwt",
            Kind::AwsKey => "aws_key",
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Card => "card",
            Kind::Iban => "iban",
        }
    }

    /// What replaces a match.
    pub fn mask(self) -> &'static str {
        match self {
            Kind::ApiKey => "[REDACTED:api_key]",
            Kind::PrivateKey => "[REDACTED:private_key]",
            Kind::Jwt => "[REDACTED:jwt]",
            Kind::AwsKey => "[REDACTED:aws_key]",
            Kind::Email => "[REDACTED:email]",
            Kind::Phone => "[REDACTED:phone]",
            Kind::Card => "[REDACTED:card]",
            Kind::Iban => "[REDACTED:iban]",
        }
    }

    pub(crate) fn pattern(self) -> &'static str {
        match self {
            Kind::ApiKey => concat!(
                r"(?-u:\b)(?:sk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)[0-9]{2}-)?[A-Za-z0-9_-]{20,}",
                r"|[sr]k_(?:live|test)_[0-9A-Za-z]{20,}|AIza[0-9A-Za-z_-]{35}|gh[pousr]_[A-Za-z0-9]{36,}",
                r"|github_pat_[A-Za-z0-9_]{22,}|xox[abposr]-[A-Za-z0-9-]{10,}|hf_[A-Za-z0-9]{30,}",
                r"|gsk_[A-Za-z0-9]{40,}|glpat-[A-Za-z0-9_-]{20,}|xai-[A-Za-z0-9]{40,}|pplx-[A-Za-z0-9]{40,})"
            ),
            Kind::PrivateKey => concat!(
                r"-----BEGIN[A-Z ]{0,24} PRIVATE KEY(?: BLOCK)?-----[\s\S]*?",
                r"-----END[A-Z ]{0,24} PRIVATE KEY(?: BLOCK)?-----"
            ),
            Kind::Jwt => r"(?-u:\b)eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
            Kind::AwsKey => concat!(
                r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z2-7]{16}(?-u:\b)",
                r#"|(?i:aws_?secret_?(?:access_?)?key)["']?[ \t]*[:=][ \t]*["']?[A-Za-z0-9/+]{40}(?-u:\b)"#
            ),
            Kind::Email => concat!(
                r"(?-u:\b)[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?",
                r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?-u:\b)"
            ),
            Kind::Phone => concat!(
                r"(?:\+[1-9][0-9]{0,2}[ .-]?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{1,4}(?:[ .-]?[0-9]{2,4}){2,4}",
                r"|(?:\([2-9][0-9]{2}\)[ .-]?|(?-u:\b)[2-9][0-9]{2}[ .-])[0-9]{3}[ .-][0-9]{4})(?-u:\b)"
            ),
            Kind::Card => r"(?-u:\b)(?:[0-9][ -]?){12,18}[0-9](?-u:\b)",
            Kind::Iban => r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?-u:\b)",
        }
    }

    /// The checks a pattern cannot make.
    fn valid(self, m: &str) -> bool {
        match self {
            Kind::Card => {
                let digits: Vec<u8> = m.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
                card_shape(&digits) && luhn(&digits)
            }
            Kind::Iban => {
                let compact: String = m.chars().filter(|c| *c != ' ').collect();
                (15..=34).contains(&compact.len()) && iban_mod97(&compact)
            }
            Kind::Phone => {
                let n = m.bytes().filter(u8::is_ascii_digit).count();
                if m.starts_with('+') {
                    (8..=15).contains(&n)
                } else {
                    n == 10
                }
            }
            Kind::ApiKey | Kind::PrivateKey | Kind::Jwt | Kind::AwsKey | Kind::Email => true,
        }
    }
}

/// Issuer prefix and length of the major card networks (Visa, Mastercard, Amex, Discover, JCB, Diners,
/// UnionPay): a Luhn-valid run of digits of another shape is not taken for a card.
fn card_shape(d: &[u8]) -> bool {
    let n = d.len();
    let p = |k: usize| d.iter().take(k).fold(0u32, |a, x| a * 10 + u32::from(*x));
    match d.first() {
        Some(4) => matches!(n, 13 | 16 | 19),
        Some(5) => (51..=55).contains(&p(2)) && n == 16,
        Some(2) => (2221..=2720).contains(&p(4)) && n == 16,
        Some(3) => match p(2) {
            34 | 37 => n == 15,
            35 => (16..=19).contains(&n),
            36 | 38 | 39 => (14..=19).contains(&n),
            30 => (300..=305).contains(&p(3)) && (14..=19).contains(&n),
            _ => false,
        },
        Some(6) => (p(4) == 6011 || p(2) == 65 || (644..=649).contains(&p(3)) || p(2) == 62) && (16..=19).contains(&n),
        _ => false,
    }
}

/// Luhn checksum over digits (most significant first).
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let d = u32::from(*d);
        sum += if i % 2 == 1 {
            let x = d * 2;
            if x > 9 {
                x - 9
            } else {
                x
            }
        } else {
            d
        };
    }
    sum.is_multiple_of(10)
}

/// ISO 13616: move the first four characters to the end, letters to 10..35, the number mod 97 must be 1.
fn iban_mod97(iban: &str) -> bool {
    let b = iban.as_bytes();
    if b.len() < 5 {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

/// A validated match: byte range in the searched text, and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

/// The enabled detectors, compiled once.
pub struct Detectors {
    kinds: Vec<Kind>,
    regexes: Vec<Regex>,
    set: RegexSet,
}

impl Detectors {
    pub fn new(kinds: &[Kind]) -> Result<Detectors, GuardError> {
        let mut kinds = kinds.to_vec();
        kinds.sort();
        kinds.dedup();
        let cfg_err = |e: regex::Error| GuardError::Config { key: "redaction.kinds".into(), message: e.to_string() };
        let regexes = kinds.iter().map(|k| Regex::new(k.pattern())).collect::<Result<Vec<_>, _>>().map_err(cfg_err)?;
        let set = RegexSet::new(kinds.iter().map(|k| k.pattern())).map_err(cfg_err)?;
        Ok(Detectors { kinds, regexes, set })
    }

    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    pub(crate) fn patterns(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.pattern()).collect()
    }

    /// Validated, non-overlapping matches in `hay` that start at or after `from` (the bytes before `from`
    /// are context for word boundaries only), in order. Where two kinds overlap, the earlier start wins,
    /// then the longer match.
    pub fn find(&self, hay: &str, from: usize) -> Vec<Found> {
        let mut all = Vec::new();
        for i in self.set.matches(&hay[from..]).iter() {
            let kind = self.kinds[i];
            let re = &self.regexes[i];
            let mut at = from;
            while at <= hay.len() {
                let Some(m) = re.find_at(hay, at) else { break };
                if kind.valid(m.as_str()) {
                    all.push(Found { start: m.start(), end: m.end(), kind });
                }
                at = if m.end() > m.start() { m.end() } else { m.end() + 1 };
            }
        }
        all.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut out: Vec<Found> = Vec::with_capacity(all.len());
        for f in all {
            if out.last().is_none_or(|l| f.start >= l.end) {
                out.push(f);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds_in(text: &str) -> Vec<(Kind, String)> {
        let d = Detectors::new(&Kind::ALL).unwrap();
        d.find(text, 0).into_iter().map(|f| (f.kind, text[f.start..f.end].to_string())).collect()
    }

    #[test]
    fn finds_each_kind() {
        let cases: &[(&str, Kind, &str)] = &[
            ("key sk-proj-abcdefghijklmnopqrstuvwx123 here", Kind::ApiKey, "sk-proj-abcdefghijklmnopqrstuvwx123"),
            (
                "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx_yz-0123",
                Kind::ApiKey,
                "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx_yz-0123",
            ),
            (
                "token ghp_0123456789abcdefghijABCDEFGHIJ012345.",
                Kind::ApiKey,
                "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            ),
            ("AKIAIOSFODNN7EXAMPLE is the id", Kind::AwsKey, "AKIAIOSFODNN7EXAMPLE"),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                Kind::AwsKey,
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            ),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.SflKxwRJSMeKKF2QT4fwpM",
                Kind::Jwt,
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.SflKxwRJSMeKKF2QT4fwpM",
            ),
            ("mail jane.doe+x@mail.example.co.uk now", Kind::Email, "jane.doe+x@mail.example.co.uk"),
            ("call +44 20 7946 0958 today", Kind::Phone, "+44 20 7946 0958"),
            ("call (555) 123-4567 today", Kind::Phone, "(555) 123-4567"),
            ("card 4111 1111 1111 1111 ok", Kind::Card, "4111 1111 1111 1111"),
            ("card 5500-0000-0000-0004.", Kind::Card, "5500-0000-0000-0004"),
            ("iban DE89 3704 0044 0532 0130 00 thanks", Kind::Iban, "DE89 3704 0044 0532 0130 00"),
            ("GB82WEST12345698765432", Kind::Iban, "GB82WEST12345698765432"),
        ];
        for (text, kind, want) in cases {
            assert_eq!(kinds_in(text), vec![(*kind, want.to_string())], "{text}");
        }
        let pem = "x -----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK==\n-----END RSA PRIVATE KEY----- y";
        assert_eq!(kinds_in(pem)[0].0, Kind::PrivateKey);
        assert_eq!(kinds_in(pem)[0].1.len(), pem.len() - 4);
    }

    #[test]
    fn checksums_and_boundaries_reject_lookalikes() {
        for text in [
            "card 4111 1111 1111 1112",         // Luhn fails
            "iban DE89 3704 0044 0532 0130 01", // mod 97 fails
            "task-abcdefghijklmnopqrstuvwxyz",  // `sk-` inside a word
            "version 1.2.3, 2024-11-30, order 12345",
            "id 1234567",
        ] {
            assert!(kinds_in(text).is_empty(), "{text}: {:?}", kinds_in(text));
        }
        assert!(luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
    }
}
