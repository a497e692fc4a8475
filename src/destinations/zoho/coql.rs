//! How driftless writes Zoho COQL: field names, literals and criteria.
//!
//! Owns the text of every COQL query the Zoho destination sends. Invariants (Zoho's COQL
//! rules):
//! - a field name that is an SQL reserved word (e.g. `External`) is quoted, `'External'`;
//!   other names go as they are;
//! - string literals are single-quoted with `'` doubled; numbers go bare only for number fields
//!   and only when they are plain numbers, so no value can change a query's shape;
//! - more than two criteria are grouped in pairs, `((a and b) and c)`, never `a and b and c`;
//! - an `in` list holds at most [`IN_VALUES`] values: longer lists are split into several
//!   queries ([`in_chunks`]).

use crate::sink::mapping::PropertyType;

/// Values per COQL `in` (Zoho's cap).
pub(crate) const IN_VALUES: usize = 50;

/// SQL's reserved words and COQL's own keywords: as field names they must be quoted.
const RESERVED: &[&str] = &[
    "absolute",
    "action",
    "add",
    "all",
    "allocate",
    "alter",
    "and",
    "any",
    "are",
    "as",
    "asc",
    "assertion",
    "at",
    "authorization",
    "avg",
    "begin",
    "between",
    "bit",
    "both",
    "by",
    "cascade",
    "cascaded",
    "case",
    "cast",
    "catalog",
    "char",
    "character",
    "check",
    "close",
    "coalesce",
    "collate",
    "column",
    "commit",
    "connect",
    "connection",
    "constraint",
    "constraints",
    "continue",
    "convert",
    "corresponding",
    "count",
    "create",
    "cross",
    "current",
    "cursor",
    "date",
    "day",
    "deallocate",
    "dec",
    "decimal",
    "declare",
    "default",
    "deferrable",
    "deferred",
    "delete",
    "desc",
    "describe",
    "descriptor",
    "diagnostics",
    "disconnect",
    "distinct",
    "domain",
    "double",
    "drop",
    "else",
    "end",
    "escape",
    "except",
    "exception",
    "exec",
    "execute",
    "exists",
    "external",
    "extract",
    "false",
    "fetch",
    "first",
    "float",
    "for",
    "foreign",
    "found",
    "from",
    "full",
    "get",
    "global",
    "go",
    "goto",
    "grant",
    "group",
    "having",
    "hour",
    "identity",
    "immediate",
    "in",
    "indicator",
    "initially",
    "inner",
    "input",
    "insensitive",
    "insert",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isolation",
    "join",
    "key",
    "language",
    "last",
    "leading",
    "left",
    "level",
    "like",
    "limit",
    "local",
    "lower",
    "match",
    "max",
    "min",
    "minute",
    "module",
    "month",
    "names",
    "national",
    "natural",
    "next",
    "no",
    "not",
    "null",
    "nullif",
    "numeric",
    "of",
    "offset",
    "on",
    "only",
    "open",
    "option",
    "or",
    "order",
    "outer",
    "output",
    "overlaps",
    "partial",
    "position",
    "precision",
    "prepare",
    "preserve",
    "primary",
    "prior",
    "privileges",
    "procedure",
    "public",
    "read",
    "real",
    "references",
    "relative",
    "restrict",
    "revoke",
    "right",
    "rollback",
    "rows",
    "schema",
    "scroll",
    "second",
    "section",
    "select",
    "session",
    "set",
    "size",
    "smallint",
    "some",
    "space",
    "sql",
    "sum",
    "table",
    "temporary",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "transaction",
    "translate",
    "trim",
    "true",
    "union",
    "unique",
    "unknown",
    "update",
    "upper",
    "usage",
    "user",
    "using",
    "value",
    "values",
    "varchar",
    "varying",
    "view",
    "when",
    "whenever",
    "where",
    "with",
    "work",
    "write",
    "year",
    "zone",
];

/// A field name as COQL takes it: quoted when it is a reserved word.
pub(crate) fn name(field: &str) -> String {
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(field)) {
        format!("'{field}'")
    } else {
        field.to_string()
    }
}

/// A COQL string literal (`'` doubled).
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The COQL literal of a value of a field of `kind`: plain numbers bare, anything else quoted.
pub(crate) fn literal(kind: Option<PropertyType>, v: &str) -> String {
    let plain_number = !v.is_empty()
        && v.trim_start_matches('-')
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
        && v.parse::<f64>().is_ok();
    if kind == Some(PropertyType::Number) && plain_number {
        v.to_string()
    } else {
        quote(v)
    }
}

/// All of `criteria`, grouped in pairs: `a`, `(a and b)`, `((a and b) and c)`, ... None when
/// there are none.
pub(crate) fn all_of(criteria: &[String]) -> Option<String> {
    let (first, rest) = criteria.split_first()?;
    Some(
        rest.iter()
            .fold(first.clone(), |acc, c| format!("({acc} and {c})")),
    )
}

/// `field in (...)` criteria over `literals`, at most [`IN_VALUES`] per criterion: one query
/// each.
pub(crate) fn in_chunks(field: &str, literals: &[String]) -> Vec<String> {
    literals
        .chunks(IN_VALUES)
        .map(|chunk| format!("{} in ({})", name(field), chunk.join(", ")))
        .collect()
}

/// `select <fields> from <module>[ where <criteria>]<tail>`, field names quoted as needed
/// (`tail`: order by, limit and offset as written).
pub(crate) fn select(fields: &[&str], module: &str, criteria: Option<&str>, tail: &str) -> String {
    let names: Vec<String> = fields.iter().map(|f| name(f)).collect();
    let mut q = format!("select {} from {module}", names.join(", "));
    if let Some(c) = criteria {
        q.push_str(" where ");
        q.push_str(c);
    }
    q.push_str(tail);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_words_are_quoted_and_other_names_are_not() {
        assert_eq!(name("External"), "'External'");
        assert_eq!(name("select"), "'select'");
        assert_eq!(name("External_Id"), "External_Id");
        assert_eq!(name("Modified_Time"), "Modified_Time");
        assert_eq!(
            select(&["id", "External", "Email"], "Leads", None, " limit 10"),
            "select id, 'External', Email from Leads limit 10"
        );
    }

    #[test]
    fn criteria_are_grouped_in_pairs() {
        let c: Vec<String> = ["a = 1", "b = 2", "c = 3", "d = 4"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(all_of(&c[..0]), None);
        assert_eq!(all_of(&c[..1]).unwrap(), "a = 1");
        assert_eq!(all_of(&c[..2]).unwrap(), "(a = 1 and b = 2)");
        assert_eq!(
            all_of(&c).unwrap(),
            "(((a = 1 and b = 2) and c = 3) and d = 4)"
        );
    }

    #[test]
    fn in_lists_hold_at_most_fifty_values() {
        let lits: Vec<String> = (0..101).map(|i| quote(&i.to_string())).collect();
        let chunks = in_chunks("External", &lits);
        assert_eq!(chunks.len(), 3);
        assert!(chunks[0].starts_with("'External' in ('0', '1', "));
        assert_eq!(chunks[0].matches(", ").count(), IN_VALUES - 1);
        assert_eq!(chunks[2], "'External' in ('100')");
        assert!(in_chunks("Email", &[]).is_empty());
    }

    #[test]
    fn literals_cannot_change_the_query() {
        assert_eq!(literal(Some(PropertyType::Number), "42"), "42");
        assert_eq!(literal(Some(PropertyType::Number), "-1.5"), "-1.5");
        assert_eq!(
            literal(Some(PropertyType::Number), "1 or 1=1"),
            "'1 or 1=1'"
        );
        assert_eq!(literal(None, "x') or ('1'='1"), "'x'') or (''1''=''1'");
        assert_eq!(literal(Some(PropertyType::String), "o'brien"), "'o''brien'");
    }
}
