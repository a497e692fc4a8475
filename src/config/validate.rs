//! The validators the config sections share: field paths, the problem list, and the checks of
//! names, URLs and choices. Pure. Every check adds at most one problem, at the field's path, and
//! returns what the field means (a default where it is bad), so validation goes on and reports
//! every problem at once.

use std::path::PathBuf;

use std::fmt;

use super::{Extra, Problem, SecretSource, TableName};

/// Postgres identifiers driftless accepts for slots and publications (they are spliced into
/// replication commands, which take no bind parameters).
pub(super) fn is_simple_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

pub(super) fn parse_table(s: &str) -> Option<TableName> {
    let (schema, name) = s.split_once('.')?;
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && !p.contains('.')
            && p.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == '-')
    };
    (ok(schema) && ok(name)).then(|| TableName {
        schema: schema.into(),
        name: name.into(),
    })
}

/// The longest Kafka topic name.
const MAX_TOPIC_CHARS: usize = 249;

/// Why `topic` is not a legal Kafka topic name (1-249 characters of `[A-Za-z0-9._-]`, not `.`
/// or `..`), or None.
fn topic_name_problem(topic: &str) -> Option<String> {
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        return Some(format!(
            "a Kafka topic name may only use [A-Za-z0-9._-], not {c:?}"
        ));
    }
    if topic.len() > MAX_TOPIC_CHARS {
        return Some(format!(
            "its topic name would be {} characters, over Kafka's {MAX_TOPIC_CHARS}",
            topic.len()
        ));
    }
    None
}

/// `source.tables[i]`: each table's topic, `{prefix}.{schema}.{table}`, must be a legal Kafka
/// topic name (topic creation would fail at run time). Entries that are not `schema.table` are
/// reported by the table check, not here.
pub(super) fn table_topics<'a>(
    tables: impl Iterator<Item = &'a str>,
    prefix: &str,
    p: &mut Problems,
) {
    for (i, t) in tables.enumerate() {
        let Some(name) = parse_table(t) else {
            continue;
        };
        let topic = format!("{prefix}.{}.{}", name.schema, name.name);
        if let Some(why) = topic_name_problem(&topic) {
            p.add(
                format!("source.tables[{i}]"),
                format!("{t:?} cannot be streamed to Kafka: {why}"),
            );
        }
    }
}

pub(super) fn is_env_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub(super) fn is_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// Whether `url` may carry credentials or data: `https`, or plain `http` to a loopback host
/// (127.0.0.0/8, `::1`, `localhost`: the emulators). The one rule for every CRM, token and
/// webhook URL, at validation and for the `api_domain` a token endpoint answers.
pub(crate) fn is_secure_url(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// The longest CRM, token or webhook URL accepted (what common proxies and servers take).
const MAX_URL_CHARS: usize = 2048;

/// What is wrong with `s` as a CRM, token or webhook URL, if anything: longer than
/// [`MAX_URL_CHARS`], not an http(s) URL with a host, a user name or password in it (they would
/// reach logs and proxies; secrets go in `*_env`), or plain `http` to a host other than
/// loopback.
pub(super) fn url_problem(s: &str) -> Option<&'static str> {
    if s.len() > MAX_URL_CHARS {
        return Some("is longer than 2048 characters");
    }
    if !is_http_url(s) {
        return Some("must be an http(s) URL with a host");
    }
    if url::Url::parse(s).is_ok_and(|u| !u.username().is_empty() || u.password().is_some()) {
        return Some(
            "must not carry a user name or password (it would reach logs and proxies; \
             credentials go in the *_env settings)",
        );
    }
    let secure = url::Url::parse(s).is_ok_and(|u| is_secure_url(&u));
    (!secure).then_some(
        "must be https (plain http is only accepted for loopback hosts: 127.0.0.1, ::1, \
         localhost); tokens and rows must not travel in clear",
    )
}

/// The problem of a `*_env` field whose value is not a variable name.
pub(super) const NOT_AN_ENV_NAME: &str = "must be an environment variable name ([A-Za-z0-9_]+)";

/// A setting written as one of a few names.
pub(super) trait Choice: Copy + 'static {
    /// Every name with what it means; the first is the default.
    const CHOICES: &'static [(&'static str, Self)];
}

/// The field paths of one section: `FieldPath::new("sinks[1]").at("name")` is `sinks[1].name`.
pub(super) struct FieldPath(pub(super) String);

impl FieldPath {
    pub(super) fn new(prefix: impl Into<String>) -> Self {
        FieldPath(prefix.into())
    }

    /// The path of `field` inside the section.
    pub(super) fn at(&self, field: &str) -> String {
        format!("{}.{field}", self.0)
    }

    /// The section's own path.
    pub(super) fn prefix(&self) -> &str {
        &self.0
    }
}

/// The problems found so far, in the order they were found. The typed validators below add
/// one problem per bad field and return what the field means (a default where it is bad).
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn unknown(&mut self, prefix: &str, extra: &Extra, known: &str) {
        for key in extra.keys() {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            self.add(path, format!("unknown key (known keys: {known})"));
        }
    }

    /// `value` as one of `choices` (unset: the first); any other value is a problem at `path`
    /// and gives `None`.
    pub(super) fn one_of<T: Copy>(
        &mut self,
        path: impl Into<String>,
        value: Option<&str>,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let Some(value) = value else {
            return Some(choices[0].1);
        };
        let found = choices.iter().find(|(name, _)| *name == value);
        if found.is_none() {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            self.add(
                path,
                format!("{value:?} is not one of: {}", names.join(", ")),
            );
        }
        found.map(|(_, t)| *t)
    }

    /// `value` as a [`Choice`] (unset: the default); any other name is a problem at `path`,
    /// and gives the default.
    pub(super) fn choice<T: Choice>(&mut self, path: impl Into<String>, value: Option<&str>) -> T {
        self.one_of(path, value, T::CHOICES)
            .unwrap_or(T::CHOICES[0].1)
    }

    /// A problem at `path` unless `lo <= value <= hi`.
    pub(super) fn between<T: PartialOrd + fmt::Display>(
        &mut self,
        path: impl Into<String>,
        value: T,
        lo: T,
        hi: T,
    ) {
        if value < lo || value > hi {
            self.add(path, format!("must be between {lo} and {hi}"));
        }
    }

    /// A `*_env` field naming the environment variable of a secret; unset is a problem too.
    pub(super) fn secret_env(
        &mut self,
        path: impl Into<String>,
        value: Option<&str>,
    ) -> Option<SecretSource> {
        match value {
            Some(e) if is_env_name(e) => Some(SecretSource::Env(e.to_string())),
            Some(_) => {
                self.add(path, NOT_AN_ENV_NAME);
                None
            }
            None => {
                self.add(
                    path,
                    "missing: name the environment variable holding the secret",
                );
                None
            }
        }
    }
}

/// `{section}.url_env` or `{section}.url_file`: at most one of them, a valid variable name.
pub(super) fn url_source(
    section: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
    p: &mut Problems,
) -> Option<SecretSource> {
    match (env, file) {
        (Some(env), None) if is_env_name(env) => Some(SecretSource::Env(env.clone())),
        (Some(_), None) => {
            p.add(format!("{section}.url_env"), NOT_AN_ENV_NAME);
            None
        }
        (None, Some(file)) => Some(SecretSource::File(file.clone())),
        (Some(_), Some(_)) => {
            p.add(
                format!("{section}.url_env"),
                "set only one of url_env and url_file",
            );
            None
        }
        (None, None) => None,
    }
}

/// `source.tables[i].columns` and `.where`: a column list names each column once and at least
/// one; a row filter is one SQL condition (no `;`: it is placed inside `WHERE (...)` of the
/// publication and of the snapshot's query, never run on its own).
pub(super) fn table_filter(
    at: &str,
    columns: &Option<Vec<String>>,
    row_filter: &Option<String>,
    p: &mut Problems,
) -> super::TableFilter {
    if let Some(columns) = columns {
        if columns.is_empty() {
            p.add(
                format!("{at}.columns"),
                "list at least one column (or leave columns out for every column)",
            );
        }
        for (j, c) in columns.iter().enumerate() {
            if c.is_empty() || c.contains('\0') {
                p.add(format!("{at}.columns[{j}]"), "not a column name");
            } else if columns[..j].contains(c) {
                p.add(
                    format!("{at}.columns[{j}]"),
                    format!("{c:?} is listed twice"),
                );
            }
        }
    }
    if let Some(filter) = row_filter {
        if filter.trim().is_empty() {
            p.add(
                format!("{at}.where"),
                "empty condition (leave where out for every row)",
            );
        } else if filter.contains(';') || filter.contains('\0') {
            p.add(
                format!("{at}.where"),
                "one SQL condition without `;` (it becomes the publication's row filter)",
            );
        }
    }
    super::TableFilter {
        columns: columns.clone(),
        row_filter: row_filter.clone(),
    }
}
