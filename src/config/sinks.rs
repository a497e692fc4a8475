//! `[[sinks]]`: where change events go after Kafka (HubSpot, Zoho CRM, webhooks).
//!
//! Parse → validate (pure, every problem with its field path, e.g. `sinks[1].fields.email`).
//! Invariants: secrets are only named (`token_env`, `secret_env`), never stored; a sink reads a
//! table capture publishes; batch sizes never exceed the destination API's cap (100 records for
//! HubSpot and Zoho batch writes).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Extra, Problems, SecretSource, TableName, is_env_name, parse_table};
use crate::sink::mapping::{FieldRule, Transform};

/// Default records per destination request: the batch cap of HubSpot and Zoho.
pub const DEFAULT_BATCH_MAX_EVENTS: usize = 100;
/// Default time a batch waits for more records: short enough for "real time", long enough to
/// fill batches under load.
pub const DEFAULT_BATCH_MAX_WAIT_MS: u64 = 1_000;
/// HubSpot's API base URL.
pub const HUBSPOT_BASE_URL: &str = "https://api.hubapi.com";
/// Zoho CRM's API base URL (US data centre; set `base_url` for others).
pub const ZOHO_BASE_URL: &str = "https://www.zohoapis.com";
/// Default whole-request timeout of a webhook delivery: receivers are expected to answer fast
/// (Standard Webhooks senders commonly give 15-30 s), and a hung receiver must not stall the
/// worker for long; a timeout is transient and retried.
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 30_000;
/// Longest configurable webhook timeout.
pub const MAX_WEBHOOK_TIMEOUT_MS: u64 = 300_000;

/// One `[[sinks]]` table as written.
#[derive(Clone, Debug, Deserialize)]
pub struct SinkConfig {
    /// Unique sink name (consumer group, dead-letter topic).
    pub name: Option<String>,
    /// `hubspot`, `zoho` or `webhook`.
    pub kind: Option<String>,
    /// Source table, `schema.table` (one of `source.tables`).
    pub table: Option<String>,
    /// HubSpot object: `contacts`, `companies`, `deals`.
    pub object: Option<String>,
    /// Zoho module, e.g. `Leads`.
    pub module: Option<String>,
    /// Unique property used to upsert.
    pub id_property: Option<String>,
    /// Environment variable holding the API token.
    pub token_env: Option<String>,
    /// API base URL (tests and the demo point it at the emulator).
    pub base_url: Option<String>,
    /// Webhook target URL.
    pub url: Option<String>,
    /// Environment variable holding the webhook signing secret (`whsec_...`).
    pub secret_env: Option<String>,
    /// `archive` or `ignore`.
    pub on_delete: Option<String>,
    /// Records per request.
    pub batch_max_events: Option<usize>,
    /// Maximum wait before a partial batch is sent.
    pub batch_max_wait_ms: Option<u64>,
    /// Webhook: `batch` (default, many events per request) or `single` (one event per request).
    pub mode: Option<String>,
    /// Webhook: allow URLs that resolve to loopback/private/link-local addresses (default false).
    pub allow_private_destinations: Option<bool>,
    /// Webhook: whole-request timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Column → property rules.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldSpec>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A field rule as written: `col = "property"` or `col = { property, transform, map }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum FieldSpec {
    /// Property name only.
    Property(String),
    /// Property with options.
    Full {
        /// Destination property.
        property: String,
        /// `lowercase`, `uppercase` or `trim`.
        transform: Option<String>,
        /// Value map.
        map: Option<BTreeMap<String, String>>,
    },
}

/// Destination kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkKind {
    /// HubSpot CRM v3 object (`contacts`, `companies`, `deals`).
    Hubspot {
        /// Object type.
        object: String,
    },
    /// Zoho CRM v8 module.
    Zoho {
        /// Module API name.
        module: String,
    },
    /// Signed HTTP POST (Standard Webhooks).
    Webhook {
        /// Target URL.
        url: String,
        /// Signing secret.
        secret: SecretSource,
        /// Events per request.
        mode: WebhookMode,
        /// Whether the URL may resolve to a forbidden (loopback, private, ...) address.
        allow_private_destinations: bool,
        /// Whole-request timeout.
        timeout_ms: u64,
    },
}

/// How the webhook sink packs events into requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WebhookMode {
    /// One request per batch: `{"type": "driftless.changes", "events": [...]}`.
    #[default]
    Batch,
    /// One request per event; the body is the event.
    Single,
}

/// What a delete does at the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDelete {
    /// Archive (soft delete) the record.
    Archive,
    /// Leave the record.
    Ignore,
}

/// A validated sink.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSink {
    /// Name.
    pub name: String,
    /// Destination.
    pub kind: SinkKind,
    /// Source table.
    pub table: TableName,
    /// Unique property for upserts (CRM sinks).
    pub id_property: Option<String>,
    /// API token (CRM sinks).
    pub token: Option<SecretSource>,
    /// API base URL.
    pub base_url: String,
    /// Delete behaviour.
    pub on_delete: OnDelete,
    /// Field rules, in column order.
    pub fields: Vec<FieldRule>,
    /// Records per request.
    pub batch_max_events: usize,
    /// Maximum wait of a partial batch.
    pub batch_max_wait_ms: u64,
}

fn is_sink_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
}

fn is_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// Validates every sink; problems go to `p` with their paths.
pub(super) fn validate(
    sinks: &[SinkConfig],
    tables: &[TableName],
    p: &mut Problems,
) -> Vec<ValidSink> {
    let mut out = Vec::new();
    let mut names = Vec::new();
    for (i, s) in sinks.iter().enumerate() {
        let at = |field: &str| format!("sinks[{i}].{field}");
        let before = p.0.len();
        p.unknown(
            &format!("sinks[{i}]"),
            &s.extra,
            "name, kind, table, object, module, id_property, token_env, base_url, url, \
             secret_env, on_delete, batch_max_events, batch_max_wait_ms, mode, \
             allow_private_destinations, timeout_ms, fields",
        );
        let name = match s.name.as_deref() {
            Some(n) if names.contains(&n) => {
                p.add(at("name"), format!("{n:?} is used by another sink"));
                n.to_string()
            }
            Some(n) if is_sink_name(n) => n.to_string(),
            Some(_) => {
                p.add(at("name"), "must be 1-100 characters of a-z, 0-9, - and _");
                String::new()
            }
            None => {
                p.add(at("name"), "missing");
                String::new()
            }
        };
        names.push(s.name.as_deref().unwrap_or_default());
        let table = match s.table.as_deref().map(|t| (t, parse_table(t))) {
            Some((_, Some(t))) if tables.contains(&t) => Some(t),
            Some((t, Some(_))) => {
                p.add(at("table"), format!("{t:?} is not one of source.tables"));
                None
            }
            Some((t, None)) => {
                p.add(at("table"), format!("{t:?} is not \"schema.table\""));
                None
            }
            None => {
                p.add(at("table"), "missing");
                None
            }
        };
        let env = |field: &str, v: &Option<String>, p: &mut Problems| match v {
            Some(e) if is_env_name(e) => Some(SecretSource::Env(e.clone())),
            Some(_) => {
                p.add(
                    at(field),
                    "must be an environment variable name ([A-Za-z0-9_]+)",
                );
                None
            }
            None => {
                p.add(
                    at(field),
                    "missing: name the environment variable holding the secret",
                );
                None
            }
        };
        let crm = matches!(s.kind.as_deref(), Some("hubspot" | "zoho"));
        if s.kind.as_deref() != Some("webhook") {
            let webhook_only = [
                ("mode", s.mode.is_some()),
                (
                    "allow_private_destinations",
                    s.allow_private_destinations.is_some(),
                ),
                ("timeout_ms", s.timeout_ms.is_some()),
            ];
            for (field, set) in webhook_only {
                if set {
                    p.add(at(field), "only applies to kind = \"webhook\"");
                }
            }
        }
        let (kind, default_base) = match s.kind.as_deref() {
            Some("hubspot") => {
                let object = s.object.clone().unwrap_or_default();
                if !matches!(object.as_str(), "contacts" | "companies" | "deals") {
                    p.add(at("object"), "must be one of: contacts, companies, deals");
                }
                (Some(SinkKind::Hubspot { object }), HUBSPOT_BASE_URL)
            }
            Some("zoho") => {
                let module = s.module.clone().unwrap_or_default();
                if module.is_empty()
                    || !module
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    p.add(
                        at("module"),
                        "missing or invalid: a Zoho module API name, e.g. Leads",
                    );
                }
                (Some(SinkKind::Zoho { module }), ZOHO_BASE_URL)
            }
            Some("webhook") => {
                let url = s.url.clone().unwrap_or_default();
                if !is_http_url(&url) {
                    p.add(at("url"), "missing or not an http(s) URL");
                }
                let secret = env("secret_env", &s.secret_env, p);
                let mode = match s.mode.as_deref() {
                    None | Some("batch") => WebhookMode::Batch,
                    Some("single") => WebhookMode::Single,
                    Some(m) => {
                        p.add(at("mode"), format!("{m:?} is not one of: batch, single"));
                        WebhookMode::Batch
                    }
                };
                let timeout_ms = s.timeout_ms.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT_MS);
                if !(1..=MAX_WEBHOOK_TIMEOUT_MS).contains(&timeout_ms) {
                    p.add(
                        at("timeout_ms"),
                        format!("must be between 1 and {MAX_WEBHOOK_TIMEOUT_MS}"),
                    );
                }
                let webhook = secret.map(|secret| SinkKind::Webhook {
                    url,
                    secret,
                    mode,
                    allow_private_destinations: s.allow_private_destinations.unwrap_or(false),
                    timeout_ms,
                });
                (webhook, "")
            }
            other => {
                p.add(
                    at("kind"),
                    format!(
                        "{:?} is not one of: hubspot, zoho, webhook",
                        other.unwrap_or("")
                    ),
                );
                (None, "")
            }
        };
        let id_property = if crm {
            if s.id_property.as_deref().is_none_or(str::is_empty) {
                p.add(
                    at("id_property"),
                    "missing: the unique property to upsert by",
                );
            }
            s.id_property.clone()
        } else {
            None
        };
        let token = if crm {
            env("token_env", &s.token_env, p)
        } else {
            None
        };
        let base_url = s
            .base_url
            .clone()
            .unwrap_or_else(|| default_base.to_string());
        if crm && !is_http_url(&base_url) {
            p.add(at("base_url"), "must be an http(s) URL");
        }
        let on_delete = match s.on_delete.as_deref() {
            None | Some("archive") => OnDelete::Archive,
            Some("ignore") => OnDelete::Ignore,
            Some(o) => {
                p.add(
                    at("on_delete"),
                    format!("{o:?} is not one of: archive, ignore"),
                );
                OnDelete::Archive
            }
        };
        let cap = if crm {
            DEFAULT_BATCH_MAX_EVENTS
        } else {
            10_000
        };
        let batch_max_events = s
            .batch_max_events
            .unwrap_or(DEFAULT_BATCH_MAX_EVENTS.min(cap));
        if !(1..=cap).contains(&batch_max_events) {
            p.add(
                at("batch_max_events"),
                format!("must be between 1 and {cap}"),
            );
        }
        let batch_max_wait_ms = s.batch_max_wait_ms.unwrap_or(DEFAULT_BATCH_MAX_WAIT_MS);
        if batch_max_wait_ms > 60_000 {
            p.add(at("batch_max_wait_ms"), "must be at most 60000");
        }
        if crm && s.fields.is_empty() {
            p.add(at("fields"), "map at least one column to a property");
        }
        let mut fields = Vec::new();
        for (column, spec) in &s.fields {
            let (property, transform, map) = match spec {
                FieldSpec::Property(property) => (property.clone(), None, None),
                FieldSpec::Full {
                    property,
                    transform,
                    map,
                } => (property.clone(), transform.clone(), map.clone()),
            };
            let transform = match transform.as_deref() {
                None => None,
                Some(t) => Transform::parse(t).or_else(|| {
                    p.add(
                        format!("sinks[{i}].fields.{column}.transform"),
                        format!("{t:?} is not one of: lowercase, uppercase, trim"),
                    );
                    None
                }),
            };
            if property.is_empty() {
                p.add(
                    format!("sinks[{i}].fields.{column}"),
                    "property name is empty",
                );
            }
            fields.push(FieldRule {
                column: column.clone(),
                property,
                transform,
                map,
            });
        }
        if p.0.len() == before
            && let (Some(kind), Some(table)) = (kind, table)
        {
            out.push(ValidSink {
                name,
                kind,
                table,
                id_property,
                token,
                base_url,
                on_delete,
                fields,
                batch_max_events,
                batch_max_wait_ms,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    const BASE: &str = r#"
        [source]
        url_env = "U"
        slot = "s"
        publication = "p"
        tables = ["public.contacts"]
        [kafka]
        brokers = "127.0.0.1:9092"
    "#;

    #[test]
    fn the_issue_example_is_valid() {
        let text = format!(
            r#"{BASE}
            [[sinks]]
            name = "hubspot-contacts"
            kind = "hubspot"
            table = "public.contacts"
            object = "contacts"
            id_property = "email"
            token_env = "HUBSPOT_TOKEN"
            base_url = "http://127.0.0.1:8081"
            on_delete = "archive"
            [sinks.fields]
            email = {{ property = "email", transform = "lowercase" }}
            first_name = "firstname"
            lifecycle = {{ property = "lifecyclestage", map = {{ lead = "lead", customer = "customer" }} }}
            "#
        );
        let c = parse(&text).unwrap().validate().unwrap();
        assert_eq!(c.sinks.len(), 1);
        let s = &c.sinks[0];
        assert_eq!(s.batch_max_events, 100);
        assert_eq!(s.fields.len(), 3);
        assert_eq!(s.fields[0].column, "email");
    }

    #[test]
    fn every_sink_problem_has_its_path() {
        let text = format!(
            r#"{BASE}
            [[sinks]]
            name = "a"
            kind = "hubspot"
            table = "public.other"
            object = "tickets"
            batch_max_events = 500
            colour = 1
            [sinks.fields]
            email = {{ property = "email", transform = "shout" }}
            [[sinks]]
            name = "a"
            kind = "webhook"
            table = "public.contacts"
            url = "ftp://x"
            "#
        );
        let problems = parse(&text).unwrap().validate().unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "sinks[0].colour",
                "sinks[0].table",
                "sinks[0].object",
                "sinks[0].id_property",
                "sinks[0].token_env",
                "sinks[0].batch_max_events",
                "sinks[0].fields.email.transform",
                "sinks[1].name",
                "sinks[1].url",
                "sinks[1].secret_env",
            ],
            "{problems:#?}"
        );
    }

    #[test]
    fn webhook_defaults_and_options() {
        use super::{DEFAULT_WEBHOOK_TIMEOUT_MS, SinkKind, WebhookMode};
        let text = format!(
            r#"{BASE}
            [[sinks]]
            name = "hook"
            kind = "webhook"
            table = "public.contacts"
            url = "https://hooks.example.com/in"
            secret_env = "HOOK_SECRET"
            [[sinks]]
            name = "hook-single"
            kind = "webhook"
            table = "public.contacts"
            url = "http://127.0.0.1:9000/in"
            secret_env = "HOOK_SECRET"
            mode = "single"
            allow_private_destinations = true
            timeout_ms = 2500
            batch_max_events = 500
            "#
        );
        let c = parse(&text).unwrap().validate().unwrap();
        let SinkKind::Webhook {
            url,
            mode,
            allow_private_destinations,
            timeout_ms,
            ..
        } = &c.sinks[0].kind
        else {
            panic!("{:?}", c.sinks[0].kind);
        };
        assert_eq!(url, "https://hooks.example.com/in");
        assert_eq!(*mode, WebhookMode::Batch);
        assert!(
            !allow_private_destinations,
            "private destinations are refused by default"
        );
        assert_eq!(*timeout_ms, DEFAULT_WEBHOOK_TIMEOUT_MS);
        assert_eq!(c.sinks[0].batch_max_events, 100);
        let SinkKind::Webhook {
            mode,
            allow_private_destinations,
            timeout_ms,
            ..
        } = &c.sinks[1].kind
        else {
            panic!("{:?}", c.sinks[1].kind);
        };
        assert_eq!(*mode, WebhookMode::Single);
        assert!(allow_private_destinations);
        assert_eq!(*timeout_ms, 2500);
        assert_eq!(c.sinks[1].batch_max_events, 500);
    }

    #[test]
    fn webhook_option_problems_have_their_paths() {
        let text = format!(
            r#"{BASE}
            [[sinks]]
            name = "hook"
            kind = "webhook"
            table = "public.contacts"
            url = "https://hooks.example.com/in"
            secret_env = "HOOK_SECRET"
            mode = "stream"
            timeout_ms = 0
            [[sinks]]
            name = "crm"
            kind = "hubspot"
            table = "public.contacts"
            object = "contacts"
            id_property = "email"
            token_env = "T"
            mode = "single"
            allow_private_destinations = true
            timeout_ms = 10
            [sinks.fields]
            email = "email"
            "#
        );
        let problems = parse(&text).unwrap().validate().unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "sinks[0].mode",
                "sinks[0].timeout_ms",
                "sinks[1].mode",
                "sinks[1].allow_private_destinations",
                "sinks[1].timeout_ms",
            ],
            "{problems:#?}"
        );
        assert!(problems[2].message.contains("webhook"), "{problems:#?}");
    }
}
