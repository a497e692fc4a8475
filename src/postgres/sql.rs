//! SQL text that cannot take bind parameters: identifiers, replication-command literals and
//! pgoutput's `publication_names` option.
//!
//! Owns the one copy of each quoting rule of the crate; every statement that splices a name
//! (catalog, snapshot, replication commands, the two-way store, `driftless check`) goes through
//! these functions.
//!
//! Invariants:
//! - An identifier is always quoted (`"..."`, inner `"` doubled), so it keeps its case and can
//!   never end the quoted name early.
//! - A literal is `'...'` with inner `'` doubled and no backslash escapes (what the replication
//!   grammar and `standard_conforming_strings = on` expect).
//! - Pure: no I/O, nothing logged.

use crate::config::TableName;

/// Quotes an identifier: `"..."` with inner `"` doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for a (replication) command: `'...'` with inner `'` doubled.
/// (The replication grammar has no backslash escapes.)
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `"schema"."table"`, each part quoted by [`quote_ident`].
pub(crate) fn quote_table(table: &TableName) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.name)
    )
}

/// The value of pgoutput's `publication_names` option: each name quoted as an identifier,
/// comma-separated. `ReplicationConnection::start_logical` then quotes it as a literal.
pub fn publication_names(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| quote_ident(n))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_escaped() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        let t = TableName {
            schema: "public".into(),
            name: "Contacts".into(),
        };
        assert_eq!(quote_table(&t), "\"public\".\"Contacts\"");
    }

    #[test]
    fn literals_and_publication_names_are_quoted() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(
            publication_names(&["p1", "we\"ird,'name"]),
            "\"p1\",\"we\"\"ird,'name\""
        );
    }
}
