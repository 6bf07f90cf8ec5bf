//! What a ClickHouse failure means for the caller: try again later, or never.

/// A failed request to the server.
#[derive(Debug, thiserror::Error)]
pub enum ChError {
    /// The server rejected the request itself (bad value, unknown column or table, syntax): sending the
    /// same bytes again gives the same answer.
    #[error("clickhouse rejected the request (code {code}): {message}")]
    Rejected { code: u32, message: String },
    /// Network trouble, timeouts, overload, or a server error that may pass: worth retrying.
    #[error("clickhouse unavailable: {0}")]
    Unavailable(String),
}

impl ChError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ChError::Unavailable(_))
    }

    pub fn code(&self) -> Option<u32> {
        match self {
            ChError::Rejected { code, .. } => Some(*code),
            ChError::Unavailable(_) => None,
        }
    }
}

/// Server exception codes that are about the moment, not the request.
const TRANSIENT_CODES: &[u32] = &[
    3,   // UNEXPECTED_END_OF_FILE (connection cut while reading the body)
    159, // TIMEOUT_EXCEEDED
    164, // READONLY (a replica or a server in read-only mode)
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    216, // QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING (an earlier attempt of the same batch still runs)
    236, // ABORTED
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY
    252, // TOO_MANY_PARTS
    285, // TOO_FEW_LIVE_REPLICAS
    319, // UNKNOWN_STATUS_OF_INSERT
    394, // QUERY_WAS_CANCELLED
    425, // SYSTEM_ERROR
];

/// The `Code: N` of a server exception text, if it has one.
pub fn exception_code(text: &str) -> Option<u32> {
    let at = text.find("Code: ")? + "Code: ".len();
    let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The server's own words: the `DB::Exception: …` part when there is one, trimmed.
pub fn exception_message(text: &str) -> String {
    let t = text.trim();
    let t = t.split_once("e.displayText() = ").map(|x| x.1).unwrap_or(t);
    let t = t.split_once(", e.what() =").map(|x| x.0).unwrap_or(t);
    t.trim().to_string()
}

impl From<clickhouse::error::Error> for ChError {
    fn from(e: clickhouse::error::Error) -> Self {
        use clickhouse::error::Error as E;
        match &e {
            E::BadResponse(text) => match exception_code(text) {
                Some(code) if !TRANSIENT_CODES.contains(&code) => {
                    ChError::Rejected { code, message: exception_message(text) }
                }
                _ => ChError::Unavailable(exception_message(text)),
            },
            _ => ChError::Unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_come_out_of_18_16_texts() {
        let t =
            "Code: 16, e.displayText() = DB::Exception: No such column foo in table calls, e.what() = DB::Exception\n";
        assert_eq!(exception_code(t), Some(16));
        assert_eq!(exception_message(t), "DB::Exception: No such column foo in table calls");
        let t = "Code: 60. DB::Exception: Table x.calls does not exist. (UNKNOWN_TABLE) (version 26.9)";
        assert_eq!(exception_code(t), Some(60));
        assert_eq!(ChError::from(clickhouse::error::Error::BadResponse(t.into())).code(), Some(60));
        let busy = clickhouse::error::Error::BadResponse("Code: 252, e.displayText() = too many parts".into());
        assert!(ChError::from(busy).is_retryable());
        assert!(ChError::from(clickhouse::error::Error::TimedOut).is_retryable());
    }
}
