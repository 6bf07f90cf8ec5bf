//! `MOCK[k=v,flag]` directives: how a test steers the mock through the prompt text alone.

/// Behaviour requested by the last `MOCK[...]` found in a request's text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    pub tokens: Option<u64>,
    pub prompt_tokens: Option<u64>,
    pub cached: u64,
    /// Anthropic `cache_creation_input_tokens`.
    pub cache_write: u64,
    pub reasoning: u64,
    pub delay_ms: u64,
    pub first_delay_ms: u64,
    pub status: Option<u16>,
    pub retry_after: Option<u64>,
    pub cut: Option<u64>,
    pub no_usage: bool,
    pub finish: Option<String>,
    pub fixture: Option<String>,
    pub hang: bool,
    /// Answer with a call of the request's first function tool instead of text (Responses, Anthropic).
    pub call: bool,
    /// Built-in web search calls to report in a Responses answer.
    pub web_search: u64,
    /// Stream: send the headers, then nothing (the body hangs before its first frame).
    pub silent: bool,
}

const OPEN: &str = "MOCK[";

/// The inside of the last complete `MOCK[...]` in `text`, if any.
fn last_in(text: &str) -> Option<&str> {
    let mut end = text.len();
    while let Some(start) = text.get(..end)?.rfind(OPEN) {
        let inner_start = start + OPEN.len();
        if let Some(close) = text.get(inner_start..)?.find(']') {
            return text.get(inner_start..inner_start + close);
        }
        end = start;
    }
    None
}

/// The inside of the last `MOCK[...]` over `texts`, taken in order (so the last text wins).
pub(crate) fn find_last<'a, I>(texts: I) -> Option<&'a str>
where
    I: DoubleEndedIterator<Item = &'a str>,
{
    texts.rev().find_map(last_in)
}

fn number<T: std::str::FromStr>(key: &str, value: Option<&str>) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("MOCK directive `{key}` needs a value"))?;
    value.parse().map_err(|_| format!("MOCK directive `{key}` has a bad value `{value}`"))
}

/// Parses the inside of `MOCK[...]`; unknown keys are an error so typos do not pass silently.
pub(crate) fn parse(inner: &str) -> Result<Directives, String> {
    let mut d = Directives::default();
    parse_into(&mut d, inner)?;
    Ok(d)
}

/// Applies the directives in `inner` on top of `d` (what it names replaces what `d` had).
pub(crate) fn parse_into(d: &mut Directives, inner: &str) -> Result<(), String> {
    for item in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (item, None),
        };
        match key {
            "tokens" => d.tokens = Some(number(key, value)?),
            "prompt_tokens" => d.prompt_tokens = Some(number(key, value)?),
            "cached" => d.cached = number(key, value)?,
            "cache_write" => d.cache_write = number(key, value)?,
            "reasoning" => d.reasoning = number(key, value)?,
            "delay_ms" => d.delay_ms = number(key, value)?,
            "first_delay_ms" => d.first_delay_ms = number(key, value)?,
            "status" => d.status = Some(number(key, value)?),
            "retry_after" => d.retry_after = Some(number(key, value)?),
            "cut" => d.cut = Some(number(key, value)?),
            "no_usage" => d.no_usage = true,
            "hang" => d.hang = true,
            "call" => d.call = true,
            "web_search" => d.web_search = number(key, value)?,
            "silent" => d.silent = true,
            "finish" => d.finish = Some(value.unwrap_or_default().to_owned()),
            "fixture" => {
                let name = value.unwrap_or_default();
                let safe = !name.is_empty()
                    && !name.contains("..")
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                if !safe {
                    return Err(format!("MOCK fixture name `{name}` is not a plain file name"));
                }
                d.fixture = Some(name.to_owned());
            }
            other => return Err(format!("unknown MOCK directive `{other}`")),
        }
    }
    Ok(())
}

/// Directives of the last `MOCK[...]` in `texts`, or the defaults when there is none, with this
/// instance's own directives (`instance`, same syntax) applied on top.
pub(crate) fn from_texts<'a, I>(texts: I, instance: Option<&str>) -> Result<Directives, String>
where
    I: DoubleEndedIterator<Item = &'a str>,
{
    let mut d = match find_last(texts) {
        Some(inner) => parse(inner)?,
        None => Directives::default(),
    };
    if let Some(inner) = instance {
        parse_into(&mut d, inner)?;
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_occurrence_wins() {
        let texts = ["MOCK[tokens=1]", "hi MOCK[tokens=2] and MOCK[tokens=3, no_usage] MOCK[oops"];
        let d = from_texts(texts.iter().copied(), None).unwrap();
        assert_eq!(d.tokens, Some(3));
        assert!(d.no_usage);
        assert_eq!(from_texts(["plain"].into_iter(), None).unwrap(), Directives::default());
        // The instance's own directives win over the prompt's for what they name.
        let d = from_texts(["MOCK[tokens=3,status=200]"].into_iter(), Some("status=500")).unwrap();
        assert_eq!((d.tokens, d.status), (Some(3), Some(500)));
    }

    #[test]
    fn parses_every_key() {
        let d = parse("tokens=7,prompt_tokens=11,cached=4,reasoning=2,delay_ms=1,first_delay_ms=3,status=429,retry_after=1,cut=2,no_usage,finish=length,fixture=openai_chat_stream_text,hang,call,web_search=2").unwrap();
        assert!(d.call);
        assert_eq!(d.web_search, 2);
        assert_eq!(d.tokens, Some(7));
        assert_eq!(d.prompt_tokens, Some(11));
        assert_eq!((d.cached, d.reasoning, d.delay_ms, d.first_delay_ms), (4, 2, 1, 3));
        assert_eq!((d.status, d.retry_after, d.cut), (Some(429), Some(1), Some(2)));
        assert!(d.no_usage && d.hang);
        assert_eq!(d.finish.as_deref(), Some("length"));
        assert_eq!(d.fixture.as_deref(), Some("openai_chat_stream_text"));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse("tokens=x").is_err());
        assert!(parse("tokens").is_err());
        assert!(parse("tokenz=1").is_err());
        assert!(parse("fixture=../etc/passwd").is_err());
    }
}
