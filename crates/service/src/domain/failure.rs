//! Why a message ended in a dead letter, as a stable code: the `<code>` of the
//! dead letter's `error` text `<code>: <detail>`, which tools and the automatic replay
//! match on, so the codes never change.

use std::fmt;

/// Why a message could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureCode {
    /// The database was unreachable, restarting, read-only or overloaded for longer than
    /// the outage allowance. Worth replaying once it is back.
    DatabaseUnavailable,
    /// The database refused the row for its content; replaying it would fail again.
    RowRefused,
    /// The Kafka record was not a message this version can read.
    Undecodable,
    /// Processing the message panicked.
    Panicked,
}

impl FailureCode {
    /// Every code, for exhaustive tests.
    pub const ALL: [FailureCode; 4] = [
        FailureCode::DatabaseUnavailable,
        FailureCode::RowRefused,
        FailureCode::Undecodable,
        FailureCode::Panicked,
    ];

    /// The stable code written at the start of a dead letter's `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::DatabaseUnavailable => "database_unavailable",
            FailureCode::RowRefused => "row_refused",
            FailureCode::Undecodable => "undecodable",
            FailureCode::Panicked => "panicked",
        }
    }

    /// `<code>: <detail>`, the text a dead letter stores.
    pub fn describe(self, detail: impl fmt::Display) -> String {
        format!("{self}: {detail}")
    }

    /// The code an error text written by [`FailureCode::describe`] starts with; `None` for
    /// text without a known code (older dead letters of a panic or a decode failure).
    pub fn of(error: &str) -> Option<FailureCode> {
        let code = error.split_once(": ").map_or(error, |(code, _)| code);
        FailureCode::ALL
            .into_iter()
            .find(|known| known.as_str() == code)
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_dead_letter_contract() {
        let codes: Vec<_> = FailureCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            codes,
            [
                "database_unavailable",
                "row_refused",
                "undecodable",
                "panicked"
            ]
        );
        for code in FailureCode::ALL {
            assert_eq!(FailureCode::of(&code.describe("x: y")), Some(code));
            assert_eq!(FailureCode::of(code.as_str()), Some(code));
        }
    }

    #[test]
    fn text_written_before_the_codes_has_none_or_its_storage_code() {
        // Storage dead letters have started with their code since it was introduced.
        assert_eq!(
            FailureCode::of("database_unavailable: no database connection: timed out"),
            Some(FailureCode::DatabaseUnavailable)
        );
        assert_eq!(FailureCode::of("processing panicked: boom"), None);
        assert_eq!(
            FailureCode::of("record value is not a valid envelope: EOF"),
            None
        );
        assert_eq!(FailureCode::of("database_unavailable_soon: x"), None);
    }
}
