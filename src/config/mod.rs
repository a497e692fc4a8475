//! Configuration: parse (TOML) → validate (pure, every problem with its field path) → build.
//!
//! Owns the config file's shape, its defaults (`DEFAULT_*` constants, each with its reason) and
//! validation. Invariants: secrets never live in the file (only the *name* of an environment
//! variable or the path of a file holding them); [`Config::validate`] performs no I/O and reports
//! every problem it finds, not just the first; unknown keys are reported as problems with their
//! path (they are collected, not rejected by serde, so that all of them are listed at once).
//!
//! Every section is checked by small validators over the shared problem list (`Problems`): a
//! name out of a fixed vocabulary (`Choice`), a number in a range, the name of a secret's
//! environment variable. Each adds one problem with its field path and returns what the field
//! means, so a section's validator reads as the list of its fields.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub(crate) mod debezium;
pub(crate) mod fields;
pub mod schedule;
pub(crate) mod sinks;
mod tables;
pub(crate) mod two_way;
mod validate;

use sinks::{SinkConfig, ValidSink};
pub use tables::TableName;
pub(crate) use tables::{TableEntry, TableFilter};
pub(crate) use validate::is_secure_url;
use validate::{
    Choice, FieldPath, NOT_AN_ENV_NAME, Problems, is_env_name, is_simple_identifier, parse_table,
    url_problem, url_source,
};

/// Default number of rows fetched per round trip while snapshotting. 10k rows of typical CRM
/// width is a few MB: large enough to amortise the round trip, small enough to bound memory.
pub(crate) const DEFAULT_SNAPSHOT_CHUNK_ROWS: u32 = 10_000;
/// Default interval between standby status updates. Far below the server's default
/// `wal_sender_timeout` (60 s) / 2, and short so the slot follows Kafka acks closely.
pub(crate) const DEFAULT_STATUS_INTERVAL_MS: u64 = 1_000;
/// Default cap on events sent to Kafka but not yet acknowledged: bounds memory (each in-flight
/// event is held by librdkafka) while keeping the producer's pipeline full.
pub(crate) const DEFAULT_MAX_IN_FLIGHT_EVENTS: usize = 50_000;
/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// Default partitions for topics driftless creates. Per-key order only needs one partition per
/// key; 3 lets a consumer group of up to 3 sink workers share a table.
pub(crate) const DEFAULT_PARTITIONS: i32 = 3;
/// Default replication factor for created topics (1 suits a single local broker; production
/// clusters should set 3).
pub(crate) const DEFAULT_REPLICATION_FACTOR: i32 = 1;
/// Default directory of driftless's own checkpoint (relative to the working directory).
pub(crate) const DEFAULT_STATE_DIR: &str = ".driftless";
/// Default address of the `/metrics` and `/healthz` endpoint (loopback only by default).
pub(crate) const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9187";

/// A configuration problem, with the dotted path of the field it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted field path, e.g. `source.tables[1]`.
    pub(crate) path: String,
    /// What is wrong and what is expected.
    pub(crate) message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a value has the wrong type.
    #[error("config file {path} is not valid: {message}")]
    Syntax {
        /// The path given.
        path: PathBuf,
        /// Parser message (with line and column).
        message: String,
    },
    /// The file parsed, but its content is invalid.
    #[error("config has {} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

type Extra = BTreeMap<String, toml::Value>;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    /// The Postgres source.
    pub(crate) source: Option<SourceConfig>,
    /// The Kafka destination of change events.
    pub(crate) kafka: Option<KafkaConfig>,
    /// Capture process settings.
    #[serde(default)]
    pub(crate) capture: CaptureConfig,
    /// Destinations of the change events.
    #[serde(default)]
    pub(crate) sinks: Vec<SinkConfig>,
    /// Where sinks record what they applied and rejected.
    #[serde(default)]
    pub(crate) audit: AuditConfig,
    /// Where sinks keep their ledger (default: the source database).
    #[serde(default)]
    pub(crate) state: StateConfig,
    /// Unknown keys, reported by `validate`.
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// `[source]`: which database, slot, publication and tables.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct SourceConfig {
    /// Name of the environment variable holding the connection URL (with password).
    pub(crate) url_env: Option<String>,
    /// Path of a file holding the connection URL (alternative to `url_env`).
    pub(crate) url_file: Option<PathBuf>,
    /// Logical replication slot name.
    pub(crate) slot: Option<String>,
    /// Publication name (driftless creates it for exactly `tables`).
    pub(crate) publication: Option<String>,
    /// Let driftless alter an existing publication of that name that lists other tables
    /// (default false: such a publication is reported and left alone).
    pub(crate) manage_publication: Option<bool>,
    /// Tables to capture: `"schema.table"`, or `{ name, columns, where }`.
    #[serde(default)]
    pub(crate) tables: Vec<TableEntry>,
    /// `initial` (snapshot on first run) or `never`.
    pub(crate) snapshot: Option<String>,
    /// Rows per snapshot round trip.
    pub(crate) snapshot_chunk_rows: Option<u32>,
    /// Interval between standby status updates.
    pub(crate) status_interval_ms: Option<u64>,
    /// If set, emit a `pg_logical_emit_message` heartbeat at this interval, so the slot advances
    /// even when the captured tables are idle but the database is busy elsewhere.
    pub(crate) heartbeat_interval_ms: Option<u64>,
    /// Create the slot as a failover slot (PostgreSQL 17+): standbys synchronize it, so capture
    /// resumes on a promoted standby.
    pub(crate) failover: Option<bool>,
    /// Unknown keys.
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// `[kafka]`: brokers, topic naming, producer settings.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub(crate) brokers: Option<String>,
    /// Topic prefix: topic = `{prefix}.{schema}.{table}`.
    pub(crate) topic_prefix: Option<String>,
    /// Partitions of topics driftless creates.
    pub(crate) partitions: Option<i32>,
    /// Replication factor of topics driftless creates.
    pub(crate) replication_factor: Option<i32>,
    /// Event envelope: `driftless` (default) or `debezium`.
    pub(crate) envelope: Option<String>,
    /// `[kafka.debezium]`: settings of the `debezium` envelope.
    #[serde(default)]
    pub(crate) debezium: debezium::DebeziumConfig,
    /// Cap on events produced but not yet acknowledged.
    pub(crate) max_in_flight_events: Option<usize>,
    /// Largest event (key and value) capture sends (default: `message.max.bytes`).
    pub(crate) max_event_bytes: Option<usize>,
    /// An event over `max_event_bytes`: `fail` (default) or `dead_letter`.
    pub(crate) oversize: Option<String>,
    /// Raw librdkafka options (e.g. `security.protocol`). Idempotence and `acks=all` are set
    /// after these and cannot be turned off. Values of keys ending in `_env` name environment
    /// variables: `"sasl.password_env" = "KAFKA_PASSWORD"`; secret-bearing options
    /// (`SECRET_LIBRDKAFKA_KEYS`) are only accepted in that form.
    #[serde(default)]
    pub(crate) librdkafka: BTreeMap<String, String>,
    /// Unknown keys.
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// `[capture]`: process settings.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct CaptureConfig {
    /// Directory of driftless's own checkpoint.
    pub(crate) state_dir: Option<PathBuf>,
    /// `host:port` for `/metrics` and `/healthz`; `"off"` disables it.
    pub(crate) metrics_listen: Option<String>,
    /// Unknown keys.
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// `[state]`: the database of the sinks' ledgers (the `driftless` schema).
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct StateConfig {
    /// Environment variable holding its connection URL.
    pub(crate) url_env: Option<String>,
    /// File holding its connection URL.
    pub(crate) url_file: Option<PathBuf>,
    /// Unknown keys.
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// `[audit]`: the sinks' audit trail.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct AuditConfig {
    /// `topic` (default: `{prefix}.audit`), `file` or `off`.
    pub(crate) to: Option<String>,
    /// Topic name when `to = "topic"` (default `{prefix}.audit`).
    pub(crate) topic: Option<String>,
    /// JSON-lines file when `to = "file"`.
    pub(crate) path: Option<PathBuf>,
    /// Environment variable holding the secret the key hashes are keyed with (HMAC-SHA-256);
    /// required when sinks write an audit trail.
    pub(crate) key_env: Option<String>,
    /// Unknown keys.
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// Where the audit trail goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditTo {
    /// One JSON record per applied or rejected change, keyed by the key hash.
    Topic(String),
    /// JSON lines appended to a file (fsynced before offsets are stored).
    File(PathBuf),
    /// No audit trail.
    Off,
}

/// Snapshot behaviour on first start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SnapshotMode {
    /// Read every table inside the slot's exported snapshot, then stream.
    Initial,
    /// Stream only changes after the slot's creation.
    Never,
}

impl Choice for SnapshotMode {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("initial", Self::Initial), ("never", Self::Never)];
}

/// Shape of the events written to Kafka.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Envelope {
    /// `schemas/change-event.v1.json`.
    Driftless,
    /// Debezium's PostgreSQL connector envelope (JSON converter with `schemas.enable=false`).
    Debezium,
}

/// What capture does with an event larger than `kafka.max_event_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Oversize {
    /// Stop capture with a hint (nothing is skipped).
    Fail,
    /// Send its position and size (no values) to `{prefix}.dlq.capture` and go on.
    DeadLetter,
}

impl Choice for Oversize {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("fail", Self::Fail), ("dead_letter", Self::DeadLetter)];
}

impl Choice for Envelope {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("driftless", Self::Driftless), ("debezium", Self::Debezium)];
}

/// Where the source URL comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file.
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret (trailing newline trimmed). The error names the variable or file, never
    /// the value; a file readable by group or others is warned about (its path and mode).
    pub(crate) fn read(&self) -> Result<String, String> {
        match self {
            SecretSource::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
            }
            SecretSource::File(path) => {
                if let Some(mode) = crate::files::loose_permissions(path) {
                    tracing::warn!(
                        file = %path.display(),
                        mode = format!("{mode:o}"),
                        "secret file is readable by group or others; chmod 600 it"
                    );
                }
                std::fs::read_to_string(path)
                    .map(|s| s.trim_end().to_string())
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
            }
        }
    }
}

/// A validated configuration: every field present and within range.
#[derive(Clone, Debug)]
pub struct ValidConfig {
    /// Source connection URL origin.
    pub(crate) source_url: SecretSource,
    /// Slot name.
    pub(crate) slot: String,
    /// Publication name.
    pub(crate) publication: String,
    /// Alter an existing publication that differs from `tables` (else refuse).
    pub(crate) manage_publication: bool,
    /// Tables, in configuration order.
    pub(crate) tables: Vec<TableName>,
    /// The column lists and row filters of the tables that have one.
    pub(crate) table_filters: BTreeMap<TableName, TableFilter>,
    /// Snapshot mode.
    pub(crate) snapshot: SnapshotMode,
    /// Rows per snapshot round trip.
    pub(crate) snapshot_chunk_rows: u32,
    /// Status update interval.
    pub(crate) status_interval_ms: u64,
    /// Heartbeat interval, if any.
    pub(crate) heartbeat_interval_ms: Option<u64>,
    /// Failover slot (PostgreSQL 17+; the preflight refuses older servers).
    pub(crate) failover: bool,
    /// Bootstrap servers.
    pub(crate) brokers: String,
    /// Topic prefix.
    pub(crate) topic_prefix: String,
    /// Partitions for created topics.
    pub(crate) partitions: i32,
    /// Replication factor for created topics.
    pub(crate) replication_factor: i32,
    /// Event envelope.
    pub(crate) envelope: Envelope,
    /// Settings of the `debezium` envelope.
    pub(crate) debezium: debezium::DebeziumOptions,
    /// In-flight cap.
    pub(crate) max_in_flight_events: usize,
    /// Largest event capture sends (key and value bytes).
    pub(crate) max_event_bytes: usize,
    /// What happens to a larger one.
    pub(crate) oversize: Oversize,
    /// Raw librdkafka options (`*_env` keys not yet resolved).
    pub(crate) librdkafka: BTreeMap<String, String>,
    /// Checkpoint directory.
    pub(crate) state_dir: PathBuf,
    /// Metrics endpoint, if enabled.
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
    /// Sinks, in configuration order.
    pub(crate) sinks: Vec<ValidSink>,
    /// The sinks' audit trail.
    pub(crate) audit: AuditTo,
    /// Environment variable holding the audit key hashes' secret (set when the trail is on).
    pub(crate) audit_key_env: Option<String>,
    /// The database of the sinks' ledgers (`[state]`, else the source's).
    pub(crate) state_url: SecretSource,
}

impl ValidConfig {
    /// The configured table named `schema.table`, if it is one of `source.tables`.
    pub(crate) fn table(&self, name: &str) -> Option<&TableName> {
        self.tables.iter().find(|t| t.to_string() == name)
    }

    /// The row filter of a captured table, if it has one.
    pub(crate) fn row_filter(&self, table: &TableName) -> Option<&str> {
        self.table_filters
            .get(table)
            .and_then(|f| f.row_filter.as_deref())
    }

    /// Kafka topic for a table.
    pub(crate) fn topic_for(&self, schema: &str, table: &str) -> String {
        format!("{}.{}.{}", self.topic_prefix, schema, table)
    }

    /// Kafka topic for logical decoding messages (`pg_logical_emit_message`).
    pub(crate) fn messages_topic(&self) -> String {
        format!("{}.messages", self.topic_prefix)
    }

    /// The topic of events over `max_event_bytes` with `oversize = "dead_letter"`.
    pub(crate) fn capture_dead_letter_topic(&self) -> String {
        format!("{}.dlq.capture", self.topic_prefix)
    }
}

/// Reads and parses a config file, then validates it.
pub(crate) fn load(path: &Path) -> Result<ValidConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text)
        .map_err(|message| ConfigError::Syntax {
            path: path.to_path_buf(),
            message,
        })?
        .validate()
        .map_err(ConfigError::Invalid)
}

/// Parses TOML text (no validation).
pub fn parse(text: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// The keys of `[source]`.
const SOURCE_KEYS: &str = "url_env, url_file, slot, publication, manage_publication, tables, \
                           snapshot, snapshot_chunk_rows, status_interval_ms, \
                           heartbeat_interval_ms, failover";
/// The librdkafka options whose value is a secret: those librdkafka itself marks sensitive
/// (it redacts them from its own logs), except the ones that hold no secret: file paths
/// (`ssl.key.location`, `sasl.oauthbearer.assertion.private.key.file`: the file's permissions
/// guard the key), the public CA certificate (`ssl.ca.pem`) and the SASL user name.
const SECRET_LIBRDKAFKA_KEYS: &[&str] = &[
    "sasl.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.keystore.password",
];
/// The keys of `[kafka]`.
const KAFKA_KEYS: &str = "brokers, topic_prefix, partitions, replication_factor, envelope, \
                          debezium, max_in_flight_events, max_event_bytes, oversize, librdkafka";

impl SourceConfig {
    /// `url_env` or `url_file`: exactly one of them (none is only reported when `[source]` is
    /// present: its absence is reported once).
    fn url(&self, present: bool, p: &mut Problems) -> Option<SecretSource> {
        let url = url_source("source", &self.url_env, &self.url_file, p);
        if present && self.url_env.is_none() && self.url_file.is_none() {
            p.add(
                "source.url_env",
                "missing: name the environment variable holding the Postgres URL \
                 (e.g. url_env = \"DRIFTLESS_SOURCE_URL\"); secrets never go in the file",
            );
        }
        url
    }
}

/// `source.{field}`: a slot or publication name.
fn identifier(
    field: &str,
    value: &Option<String>,
    present: bool,
    p: &mut Problems,
) -> Option<String> {
    match value {
        Some(s) if is_simple_identifier(s) => Some(s.clone()),
        Some(_) => {
            p.add(
                format!("source.{field}"),
                "must be 1-63 characters of a-z, 0-9 and _, not starting with a digit",
            );
            None
        }
        None => {
            if present {
                p.add(format!("source.{field}"), "missing");
            }
            None
        }
    }
}

impl KafkaConfig {
    /// `brokers`: required (reported only when `[kafka]` is present).
    fn brokers(&self, present: bool, p: &mut Problems) -> String {
        match &self.brokers {
            Some(b) if !b.trim().is_empty() => b.clone(),
            _ => {
                if present {
                    p.add(
                        "kafka.brokers",
                        "missing: bootstrap servers, e.g. \"127.0.0.1:9092\"",
                    );
                }
                String::new()
            }
        }
    }

    /// `topic_prefix`: a legal topic name part (default `driftless`).
    fn topic_prefix(&self, p: &mut Problems) -> String {
        match &self.topic_prefix {
            Some(t)
                if !t.is_empty()
                    && t.len() <= 200
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
            {
                t.clone()
            }
            Some(_) => {
                p.add(
                    "kafka.topic_prefix",
                    "must be 1-200 characters of [A-Za-z0-9._-]",
                );
                String::new()
            }
            None => "driftless".to_string(),
        }
    }

    /// `librdkafka`: the options driftless sets itself cannot be overridden; a secret-bearing
    /// option is only accepted as `"<key>_env" = "VAR"`; every `*_env` value is a variable name.
    fn check_overrides(&self, p: &mut Problems) {
        for (key, value) in &self.librdkafka {
            let env = key.strip_suffix("_env");
            if env.is_some() && !is_env_name(value) {
                p.add(format!("kafka.librdkafka.\"{key}\""), NOT_AN_ENV_NAME);
            }
            if env.is_none() && SECRET_LIBRDKAFKA_KEYS.contains(&key.as_str()) {
                p.add(
                    format!("kafka.librdkafka.\"{key}\""),
                    format!(
                        "holds a secret, which never goes in the file: name the environment \
                         variable holding it instead, \"{key}_env\" = \"VAR\""
                    ),
                );
            }
            let base = env.unwrap_or(key);
            let reason = match base {
                "enable.idempotence" | "acks" | "request.required.acks" => {
                    "idempotence and acks=all are what make delivery safe"
                }
                "bootstrap.servers" => "use kafka.brokers",
                "partitioner" => "murmur2 keeps partitions equal to the Java client's",
                "queue.buffering.max.messages" => "it follows kafka.max_in_flight_events",
                _ => continue,
            };
            p.add(
                format!("kafka.librdkafka.\"{key}\""),
                format!("is set by driftless and cannot be overridden ({reason})"),
            );
        }
    }
}

impl KafkaConfig {
    /// `max_event_bytes` (default: the producer's `message.max.bytes`, librdkafka's default
    /// 1,000,000; never above it) and `oversize`.
    fn event_size(&self, p: &mut Problems) -> (usize, Oversize) {
        let producer_max = match self.librdkafka.get("message.max.bytes") {
            Some(v) => v.parse::<usize>().ok().unwrap_or_else(|| {
                p.add(
                    "kafka.librdkafka.\"message.max.bytes\"",
                    "must be a whole number of bytes",
                );
                DEFAULT_MESSAGE_MAX_BYTES
            }),
            None => DEFAULT_MESSAGE_MAX_BYTES,
        };
        let max = self.max_event_bytes.unwrap_or(producer_max);
        if max == 0 || max > producer_max {
            p.add(
                "kafka.max_event_bytes",
                format!(
                    "must be 1 to {producer_max} (the producer's message.max.bytes; raise \
                     kafka.librdkafka.\"message.max.bytes\" and the topics' max.message.bytes \
                     to send larger events)"
                ),
            );
        }
        (max, p.choice("kafka.oversize", self.oversize.as_deref()))
    }
}

impl Config {
    /// `capture.metrics_listen`: an address, or `None` for `"off"`.
    fn metrics_listen(&self, p: &mut Problems) -> Option<std::net::SocketAddr> {
        match self.capture.metrics_listen.as_deref() {
            Some("off") => None,
            other => match other.unwrap_or(DEFAULT_METRICS_LISTEN).parse() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    p.add(
                        "capture.metrics_listen",
                        "must be \"host:port\" (an IP) or \"off\"",
                    );
                    None
                }
            },
        }
    }

    /// `[audit]`: where the audit trail goes (a topic named after `topic_prefix` by default).
    fn audit_to(&self, topic_prefix: &str, p: &mut Problems) -> AuditTo {
        match (self.audit.to.as_deref(), &self.audit.path) {
            (None | Some("topic"), _) => AuditTo::Topic(
                self.audit
                    .topic
                    .clone()
                    .unwrap_or_else(|| format!("{topic_prefix}.audit")),
            ),
            (Some("file"), Some(path)) => AuditTo::File(path.clone()),
            (Some("file"), None) => {
                p.add(
                    "audit.path",
                    "missing: the JSON-lines file of the audit trail",
                );
                AuditTo::Off
            }
            (Some("off"), _) => AuditTo::Off,
            (Some(other), _) => {
                p.add(
                    "audit.to",
                    format!("{other:?} is not one of: topic, file, off"),
                );
                AuditTo::Off
            }
        }
    }

    /// `[audit] key_env`: required when sinks write an audit trail (the key hashes are keyed
    /// with its secret); a variable name, not the secret.
    fn audit_key_env(&self, audit: &AuditTo, p: &mut Problems) -> Option<String> {
        let on = *audit != AuditTo::Off && !self.sinks.is_empty();
        match &self.audit.key_env {
            Some(name) if !is_env_name(name) => {
                p.add("audit.key_env", validate::NOT_AN_ENV_NAME);
                None
            }
            Some(name) => Some(name.clone()),
            None if on => {
                p.add(
                    "audit.key_env",
                    "missing: the environment variable holding the secret audit key hashes are \
                     keyed with (HMAC-SHA-256), required while the audit trail is on \
                     (or set audit.to = \"off\")",
                );
                None
            }
            None => None,
        }
    }

    /// Checks every field; pure. Returns all problems, each with its field path.
    pub fn validate(&self) -> Result<ValidConfig, Vec<Problem>> {
        let mut p = Problems(Vec::new());
        p.unknown(
            "",
            &self.extra,
            "source, kafka, capture, sinks, audit, state",
        );
        if self.source.is_none() {
            p.add("source", "missing section [source]");
        }
        if self.kafka.is_none() {
            p.add("kafka", "missing section [kafka]");
        }
        let source = self.source.clone().unwrap_or_default();
        let kafka = self.kafka.clone().unwrap_or_default();
        let (source_present, kafka_present) = (self.source.is_some(), self.kafka.is_some());

        p.unknown("source", &source.extra, SOURCE_KEYS);
        let source_url = source.url(source_present, &mut p);
        let slot = identifier("slot", &source.slot, source_present, &mut p);
        let publication = identifier("publication", &source.publication, source_present, &mut p);
        let (tables, table_filters) = tables::validate(&source.tables, source_present, &mut p);
        let snapshot = p.choice("source.snapshot", source.snapshot.as_deref());
        let snapshot_chunk_rows = source
            .snapshot_chunk_rows
            .unwrap_or(DEFAULT_SNAPSHOT_CHUNK_ROWS);
        if snapshot_chunk_rows == 0 {
            p.add("source.snapshot_chunk_rows", "must be at least 1");
        }
        let status_interval_ms = source
            .status_interval_ms
            .unwrap_or(DEFAULT_STATUS_INTERVAL_MS);
        if !(10..=30_000).contains(&status_interval_ms) {
            p.add(
                "source.status_interval_ms",
                "must be between 10 and 30000 (below wal_sender_timeout / 2)",
            );
        }
        let heartbeat_interval_ms = source.heartbeat_interval_ms.filter(|&ms| ms > 0);
        if heartbeat_interval_ms.is_some_and(|ms| ms < 100) {
            p.add(
                "source.heartbeat_interval_ms",
                "must be 0 (off) or at least 100",
            );
        }

        p.unknown("kafka", &kafka.extra, KAFKA_KEYS);
        let brokers = kafka.brokers(kafka_present, &mut p);
        let topic_prefix = kafka.topic_prefix(&mut p);
        validate::table_topics(
            source.tables.iter().map(TableEntry::name),
            &topic_prefix,
            &mut p,
        );
        let partitions = kafka.partitions.unwrap_or(DEFAULT_PARTITIONS);
        p.between("kafka.partitions", partitions, 1, 10_000);
        let replication_factor = kafka
            .replication_factor
            .unwrap_or(DEFAULT_REPLICATION_FACTOR);
        p.between("kafka.replication_factor", replication_factor, 1, 32);
        let envelope = p.choice("kafka.envelope", kafka.envelope.as_deref());
        let debezium = kafka.debezium.validate(&mut p);
        let max_in_flight_events = kafka
            .max_in_flight_events
            .unwrap_or(DEFAULT_MAX_IN_FLIGHT_EVENTS);
        p.between(
            "kafka.max_in_flight_events",
            max_in_flight_events,
            1,
            1_000_000,
        );
        kafka.check_overrides(&mut p);
        let (max_event_bytes, oversize) = kafka.event_size(&mut p);

        p.unknown("capture", &self.capture.extra, "state_dir, metrics_listen");
        let state_dir = self
            .capture
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let metrics_listen = self.metrics_listen(&mut p);

        let sinks = sinks::validate(&self.sinks, &tables, &mut p);
        if envelope == Envelope::Debezium && !sinks.is_empty() {
            p.add(
                "kafka.envelope",
                "driftless's sinks read driftless's own envelope: with envelope = \"debezium\" \
                 every change would be dead-lettered; run the sinks from a config with \
                 envelope = \"driftless\" (its own topic_prefix) or leave [[sinks]] out",
            );
        }
        p.unknown("audit", &self.audit.extra, "to, topic, path, key_env");
        let audit = self.audit_to(&topic_prefix, &mut p);
        let audit_key_env = self.audit_key_env(&audit, &mut p);
        p.unknown("state", &self.state.extra, "url_env, url_file");
        // None: the ledgers live in the source database.
        let state_url = url_source("state", &self.state.url_env, &self.state.url_file, &mut p);
        if !p.0.is_empty() {
            return Err(p.0);
        }
        Ok(ValidConfig {
            source_url: source_url.clone().expect("checked above"),
            slot: slot.expect("checked above"),
            publication: publication.expect("checked above"),
            manage_publication: source.manage_publication.unwrap_or(false),
            tables,
            table_filters,
            snapshot,
            snapshot_chunk_rows,
            status_interval_ms,
            heartbeat_interval_ms,
            failover: source.failover.unwrap_or(false),
            brokers,
            topic_prefix,
            partitions,
            replication_factor,
            envelope,
            debezium,
            max_in_flight_events,
            max_event_bytes,
            oversize,
            librdkafka: kafka.librdkafka,
            state_dir,
            metrics_listen,
            state_url: state_url.unwrap_or_else(|| source_url.expect("checked above")),
            sinks,
            audit,
            audit_key_env,
        })
    }
}

#[cfg(test)]
mod tests;
