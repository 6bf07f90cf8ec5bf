//! What the ClickHouse sink retries and what it dead-letters. Only a batch the server cannot take
//! because of its *data* (a value it cannot parse or store, a column the table lacks) goes to the
//! dead-letter directory: sending those bytes again would fail the same way. Everything else —
//! authentication, a missing database or table, permissions, overload, network — is about the server
//! or its set-up, not the batch: it is retried with backoff until an operator fixes it, while events
//! wait in the write-ahead log. Dead-lettering those would silently drop money from the store.

/// Server exception codes that mean "this batch's data cannot be stored".
const DATA_ERROR_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    16,  // NO_SUCH_COLUMN_IN_TABLE (the event has a column the table lacks)
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,  // ATTEMPT_TO_READ_AFTER_EOF (a RowBinary row shorter than the table's)
    33,  // CANNOT_READ_ALL_DATA
    36,  // BAD_ARGUMENTS (e.g. an unknown Enum8 value)
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    43,  // ILLEGAL_TYPE_OF_ARGUMENT
    44,  // ILLEGAL_COLUMN
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    130, // CANNOT_READ_ARRAY_FROM_TEXT
    131, // TOO_LARGE_STRING_SIZE
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
];

/// Whether a rejection with this code is about the batch's data (dead-letter it) rather than the server.
pub fn is_data_error(code: u32) -> bool {
    DATA_ERROR_CODES.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_up_errors_are_retried_and_data_errors_are_not() {
        // 516 AUTHENTICATION_FAILED, 192 UNKNOWN_USER, 193 WRONG_PASSWORD, 497 ACCESS_DENIED,
        // 81 UNKNOWN_DATABASE, 60 UNKNOWN_TABLE: fixable by an operator, so retried.
        for code in [516, 192, 193, 194, 497, 81, 60, 62] {
            assert!(!is_data_error(code), "{code}");
        }
        for code in [6, 16, 27, 33, 53, 117] {
            assert!(is_data_error(code), "{code}");
        }
    }
}
