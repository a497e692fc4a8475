//! `[[sinks]]`: where change events go after Kafka (HubSpot, Zoho CRM, webhooks).
//!
//! Parse → validate (pure, every problem with its field path, e.g. `sinks[1].fields.email`).
//! Invariants: secrets are only named (`token_env`, `secret_env`, `[sinks.oauth]` `*_env`), never
//! stored, read only at start (by the sink service); a CRM sink authenticates with exactly one of
//! a static token (`token_env`) or an OAuth refresh grant (`[sinks.oauth]`); a sink reads a table
//! capture publishes; batch sizes never exceed the destination API's cap (100 records for HubSpot
//! and Zoho batch writes).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::fields::{FieldRule, Transform};
use super::schedule::Schedule;
use super::{Extra, Problems, SecretSource, TableName, is_env_name, parse_table};

/// Default records per destination request: the batch cap of HubSpot and Zoho.
pub const DEFAULT_BATCH_MAX_EVENTS: usize = 100;
/// Default time a batch waits for more records: short enough for "real time", long enough to
/// fill batches under load.
pub const DEFAULT_BATCH_MAX_WAIT_MS: u64 = 1_000;
/// HubSpot's API base URL.
pub const HUBSPOT_BASE_URL: &str = "https://api.hubapi.com";
/// Zoho CRM's API base URL (US data centre). With OAuth, requests follow the token's
/// `api_domain` unless `base_url` is set to something else (the emulator, a proxy).
pub const ZOHO_BASE_URL: &str = "https://www.zohoapis.com";
/// HubSpot's OAuth token endpoint (v1 refresh grant, form-encoded).
pub const HUBSPOT_TOKEN_URL: &str = "https://api.hubapi.com/oauth/v1/token";
/// Zoho's OAuth token endpoint, US data centre (others: `accounts.zoho.eu`, `.in`, `.com.au`,
/// ...; set `token_url`).
pub const ZOHO_TOKEN_URL: &str = "https://accounts.zoho.com/oauth/v2/token";
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
    /// OAuth refresh-token grant (instead of `token_env`).
    pub oauth: Option<OAuthConfig>,
    /// API base URL (tests and the demo point it at the emulator).
    pub base_url: Option<String>,
    /// Webhook target URL.
    pub url: Option<String>,
    /// Environment variable holding the webhook signing secret (`whsec_...`).
    pub secret_env: Option<String>,
    /// `archive` or `ignore`.
    pub on_delete: Option<String>,
    /// Keys (coalesced entries) per request.
    pub batch_max_events: Option<usize>,
    /// Maximum wait before a partial batch is sent.
    pub batch_max_wait_ms: Option<u64>,
    /// `every 15m` or a cron expression: apply accumulated changes in windows (default: real
    /// time).
    pub schedule: Option<String>,
    /// `out` (default) or `both` (two-way sync).
    pub direction: Option<String>,
    /// Table inbound changes are written to (default: `table`).
    pub inbound_table: Option<String>,
    /// Inbound settings of a two-way sink.
    pub inbound: Option<InboundConfig>,
    /// Per column: which side wins a conflict (`postgres`, `hubspot`, `latest`); `"*"` is the
    /// default.
    pub ownership: Option<BTreeMap<String, String>>,
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

/// `[sinks.oauth]` as written: names of the environment variables holding the OAuth client and
/// refresh token, and the token endpoint.
#[derive(Clone, Debug, Deserialize)]
pub struct OAuthConfig {
    /// Environment variable holding the OAuth client id.
    pub client_id_env: Option<String>,
    /// Environment variable holding the OAuth client secret.
    pub client_secret_env: Option<String>,
    /// Environment variable holding the refresh token.
    pub refresh_token_env: Option<String>,
    /// Token endpoint; defaults per kind ([`HUBSPOT_TOKEN_URL`], [`ZOHO_TOKEN_URL`]).
    pub token_url: Option<String>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Extra,
}

/// How a CRM sink authenticates. Holds only where the secrets are, never their values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// A static token (HubSpot private app; a Zoho access token for short tests).
    Token(SecretSource),
    /// An OAuth 2.0 refresh-token grant: access tokens are minted and refreshed at run time.
    OAuth {
        /// OAuth client id.
        client_id: SecretSource,
        /// OAuth client secret.
        client_secret: SecretSource,
        /// Long-lived refresh token.
        refresh_token: SecretSource,
        /// Token endpoint URL.
        token_url: String,
    },
}

/// `[sinks.inbound]` as written.
#[derive(Clone, Debug, Deserialize)]
pub struct InboundConfig {
    /// `ip:port` of the webhook receiver (default `127.0.0.1:8090`).
    pub listen: Option<String>,
    /// Path the CRM posts webhooks to.
    pub webhook_path: Option<String>,
    /// Reconciliation interval, e.g. `10m` (`off` disables it).
    pub reconcile_every: Option<String>,
    /// Environment variable holding the app's client secret (webhook signatures).
    pub client_secret_env: Option<String>,
    /// Accept the older v1/v2 signatures too (default false: v3 only).
    pub accept_legacy_signatures: Option<bool>,
    /// Zoho: the URL Zoho posts notifications to (default `http://{listen}{webhook_path}`).
    pub public_url: Option<String>,
    /// Records created in the CRM: `insert` a row (default) or `ignore` them.
    pub on_crm_create: Option<String>,
    /// Records deleted in the CRM: `ignore` them (default) or `delete` their linked rows.
    pub on_crm_delete: Option<String>,
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

/// Which side's value wins when both changed a field since the last sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Postgres wins.
    Postgres,
    /// The CRM wins.
    Crm,
    /// The later change wins (Postgres commit time vs the CRM property's timestamp); ties go to
    /// Postgres.
    Latest,
}

/// What happens to records created in the CRM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCrmCreate {
    /// Insert a row (the table's key comes from its defaults) and link the record to it.
    Insert,
    /// Leave them out of Postgres.
    Ignore,
}

/// What happens to the rows linked to records deleted in the CRM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnCrmDelete {
    /// Keep the row (it is no longer updated from the CRM).
    #[default]
    Ignore,
    /// Delete the linked row (origin-tagged, so the deletion is not sent back) and forget its
    /// link.
    Delete,
}

/// Two-way sync settings of a sink (`direction = "both"`).
#[derive(Clone, Debug, PartialEq)]
pub struct TwoWay {
    /// Where inbound changes are written.
    pub inbound_table: TableName,
    /// Webhook receiver address.
    pub listen: std::net::SocketAddr,
    /// Webhook path.
    pub webhook_path: String,
    /// Reconciliation interval (None: off).
    pub reconcile_every: Option<std::time::Duration>,
    /// The app's client secret (HubSpot signature verification; None for Zoho, whose
    /// notifications carry a token driftless generates).
    pub client_secret: Option<SecretSource>,
    /// Zoho: the notification URL given to Zoho's watch channel (None for HubSpot, whose
    /// webhook URL is set in the app).
    pub public_url: Option<String>,
    /// Accept v1/v2 signatures.
    pub accept_legacy_signatures: bool,
    /// Records created in the CRM.
    pub on_crm_create: OnCrmCreate,
    /// Records deleted in the CRM.
    pub on_crm_delete: OnCrmDelete,
    /// Per column owner.
    pub ownership: BTreeMap<String, Owner>,
    /// Owner of columns not listed.
    pub default_owner: Owner,
}

impl TwoWay {
    /// The owner of a column.
    pub fn owner(&self, column: &str) -> Owner {
        self.ownership
            .get(column)
            .copied()
            .unwrap_or(self.default_owner)
    }
}

/// Parses `10m`, `30s`, `1h` (for intervals that are not schedules).
fn parse_interval(text: &str) -> Option<std::time::Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = text[..split].parse().ok()?;
    let unit = match &text[split..] {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        _ => return None,
    };
    (n > 0).then(|| std::time::Duration::from_secs(n * unit))
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
    /// Authentication (CRM sinks; `None` for webhooks).
    pub auth: Option<Auth>,
    /// API base URL.
    pub base_url: String,
    /// Delete behaviour.
    pub on_delete: OnDelete,
    /// Field rules, in column order.
    pub fields: Vec<FieldRule>,
    /// Keys (coalesced entries) per request.
    pub batch_max_events: usize,
    /// Maximum wait of a partial batch.
    pub batch_max_wait_ms: u64,
    /// Scheduled windows (None: real time).
    pub schedule: Option<Schedule>,
    /// Two-way sync (None: `direction = "out"`).
    pub two_way: Option<TwoWay>,
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

/// Validates `[sinks.oauth]`; `at` makes a field path of the sink.
fn oauth(
    o: &OAuthConfig,
    default_token_url: &str,
    at: &dyn Fn(&str) -> String,
    p: &mut Problems,
) -> Option<Auth> {
    p.unknown(
        &at("oauth"),
        &o.extra,
        "client_id_env, client_secret_env, refresh_token_env, token_url",
    );
    let mut env = |field: &str, v: &Option<String>| match v {
        Some(e) if is_env_name(e) => Some(SecretSource::Env(e.clone())),
        Some(_) => {
            p.add(
                at(&format!("oauth.{field}")),
                "must be an environment variable name ([A-Za-z0-9_]+)",
            );
            None
        }
        None => {
            p.add(
                at(&format!("oauth.{field}")),
                "missing: name the environment variable holding the secret",
            );
            None
        }
    };
    let client_id = env("client_id_env", &o.client_id_env);
    let client_secret = env("client_secret_env", &o.client_secret_env);
    let refresh_token = env("refresh_token_env", &o.refresh_token_env);
    let token_url = o
        .token_url
        .clone()
        .unwrap_or_else(|| default_token_url.to_string());
    if !is_http_url(&token_url) {
        p.add(at("oauth.token_url"), "must be an http(s) URL");
    }
    Some(Auth::OAuth {
        client_id: client_id?,
        client_secret: client_secret?,
        refresh_token: refresh_token?,
        token_url,
    })
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
            "name, kind, table, object, module, id_property, token_env, oauth, base_url, url, \
             secret_env, on_delete, batch_max_events, batch_max_wait_ms, schedule, direction, \
             inbound_table, inbound, ownership, mode, allow_private_destinations, timeout_ms, \
             fields",
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
        let default_token_url = match s.kind.as_deref() {
            Some("hubspot") => HUBSPOT_TOKEN_URL,
            _ => ZOHO_TOKEN_URL,
        };
        let auth = if crm {
            match (&s.token_env, &s.oauth) {
                (Some(_), Some(_)) => {
                    p.add(at("oauth"), "set only one of token_env and [sinks.oauth]");
                    None
                }
                (Some(_), None) => env("token_env", &s.token_env, p).map(Auth::Token),
                (None, None) => {
                    p.add(
                        at("token_env"),
                        "missing: name the environment variable holding the API token, or \
                         configure an OAuth refresh grant in [sinks.oauth]",
                    );
                    None
                }
                (None, Some(o)) => oauth(o, default_token_url, &at, p),
            }
        } else {
            if s.oauth.is_some() {
                p.add(at("oauth"), "only hubspot and zoho sinks use OAuth");
            }
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
        let schedule = s.schedule.as_deref().and_then(|text| {
            Schedule::parse(text)
                .map_err(|e| p.add(at("schedule"), e))
                .ok()
        });
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
        let two_way = two_way(i, s, kind.as_ref(), table.as_ref(), &fields, tables, p);
        if p.0.len() == before
            && let (Some(kind), Some(table)) = (kind, table)
        {
            out.push(ValidSink {
                name,
                kind,
                table,
                id_property,
                auth,
                base_url,
                on_delete,
                fields,
                batch_max_events,
                batch_max_wait_ms,
                schedule,
                two_way,
            });
        }
    }
    out
}

/// Validates the two-way settings of sink `i` (None for `direction = "out"`).
fn two_way(
    i: usize,
    s: &SinkConfig,
    kind: Option<&SinkKind>,
    table: Option<&TableName>,
    fields: &[FieldRule],
    tables: &[TableName],
    p: &mut Problems,
) -> Option<TwoWay> {
    let at = |field: &str| format!("sinks[{i}].{field}");
    match s.direction.as_deref() {
        None | Some("out") => {
            for (set, key) in [
                (s.inbound.is_some(), "inbound"),
                (s.ownership.is_some(), "ownership"),
                (s.inbound_table.is_some(), "inbound_table"),
            ] {
                if set {
                    p.add(at(key), "only for direction = \"both\"");
                }
            }
            return None;
        }
        Some("both") => {}
        Some(other) => {
            p.add(
                at("direction"),
                format!("{other:?} is not one of: out, both"),
            );
            return None;
        }
    }
    let crm_name = match kind {
        Some(SinkKind::Hubspot { .. }) => "hubspot",
        Some(SinkKind::Zoho { .. }) => "zoho",
        _ => {
            p.add(
                at("direction"),
                "two-way sync is available for HubSpot and Zoho sinks (webhooks: out only)",
            );
            return None;
        }
    };
    let zoho = crm_name == "zoho";
    let inbound_table = match s.inbound_table.as_deref() {
        None => table.cloned(),
        Some(t) => match parse_table(t) {
            Some(t) if tables.contains(&t) => Some(t),
            _ => {
                p.add(
                    at("inbound_table"),
                    format!("{t:?} is not one of source.tables"),
                );
                None
            }
        },
    };
    let empty = InboundConfig {
        listen: None,
        webhook_path: None,
        reconcile_every: None,
        client_secret_env: None,
        accept_legacy_signatures: None,
        public_url: None,
        on_crm_create: None,
        on_crm_delete: None,
        extra: Extra::new(),
    };
    let inbound = s.inbound.as_ref().unwrap_or(&empty);
    p.unknown(
        &at("inbound"),
        &inbound.extra,
        "listen, webhook_path, reconcile_every, client_secret_env, accept_legacy_signatures, \
         public_url, on_crm_create, on_crm_delete",
    );
    let listen = inbound
        .listen
        .as_deref()
        .unwrap_or("127.0.0.1:8090")
        .parse()
        .map_err(|_| p.add(at("inbound.listen"), "must be \"ip:port\""))
        .ok();
    let webhook_path = inbound
        .webhook_path
        .clone()
        .unwrap_or_else(|| format!("/hooks/{}", s.name.as_deref().unwrap_or("sink")));
    if !webhook_path.starts_with('/') || webhook_path.contains(char::is_whitespace) {
        p.add(at("inbound.webhook_path"), "must be a path starting with /");
    }
    let reconcile_every = match inbound.reconcile_every.as_deref() {
        Some("off") => None,
        other => {
            let text = other.unwrap_or("10m");
            let d = parse_interval(text);
            if d.is_none() {
                p.add(
                    at("inbound.reconcile_every"),
                    format!("{text:?} is not an interval like 30s, 10m, 1h (or \"off\")"),
                );
            }
            d
        }
    };
    let client_secret = match inbound.client_secret_env.as_deref() {
        // Zoho notifications carry the channel's token instead of a signature.
        None if zoho => Some(None),
        Some(_) if zoho => {
            p.add(
                at("inbound.client_secret_env"),
                "only for HubSpot sinks (Zoho notifications are checked with a token driftless \
                 generates for its watch channel)",
            );
            None
        }
        Some(e) if is_env_name(e) => Some(Some(SecretSource::Env(e.to_string()))),
        _ => {
            p.add(
                at("inbound.client_secret_env"),
                "missing or invalid: the environment variable holding the app's client secret \
                 (webhook signatures)",
            );
            None
        }
    };
    if zoho && inbound.accept_legacy_signatures.is_some() {
        p.add(
            at("inbound.accept_legacy_signatures"),
            "only for HubSpot sinks",
        );
    }
    let public_url = match (&inbound.public_url, listen) {
        (Some(_), _) if !zoho => {
            p.add(
                at("inbound.public_url"),
                "only for Zoho sinks (HubSpot's webhook URL is set in the app's settings)",
            );
            None
        }
        (Some(u), _) if is_http_url(u) => Some(Some(u.clone())),
        (Some(u), _) => {
            p.add(
                at("inbound.public_url"),
                format!("{u:?} is not an http(s) URL with a host"),
            );
            None
        }
        (None, Some(listen)) if zoho => Some(Some(format!("http://{listen}{webhook_path}"))),
        (None, _) if zoho => None,
        (None, _) => Some(None),
    };
    let on_crm_create = match inbound.on_crm_create.as_deref() {
        None | Some("insert") => OnCrmCreate::Insert,
        Some("ignore") => OnCrmCreate::Ignore,
        Some(o) => {
            p.add(
                at("inbound.on_crm_create"),
                format!("{o:?} is not one of: insert, ignore"),
            );
            OnCrmCreate::Insert
        }
    };
    let on_crm_delete = match inbound.on_crm_delete.as_deref() {
        None | Some("ignore") => OnCrmDelete::Ignore,
        Some("delete") => OnCrmDelete::Delete,
        Some(o) => {
            p.add(
                at("inbound.on_crm_delete"),
                format!("{o:?} is not one of: ignore, delete"),
            );
            OnCrmDelete::Ignore
        }
    };
    let mut ownership = BTreeMap::new();
    let mut default_owner = Owner::Latest;
    for (column, owner) in s.ownership.iter().flatten() {
        let owner = match owner.as_str() {
            "postgres" => Owner::Postgres,
            "latest" => Owner::Latest,
            o if o == crm_name => Owner::Crm,
            o => {
                p.add(
                    format!("sinks[{i}].ownership.{column}"),
                    format!("{o:?} is not one of: postgres, {crm_name}, latest"),
                );
                continue;
            }
        };
        if column == "*" {
            default_owner = owner;
        } else if fields.iter().any(|f| &f.column == column) {
            ownership.insert(column.clone(), owner);
        } else {
            p.add(
                format!("sinks[{i}].ownership.{column}"),
                "not a column of sinks.fields",
            );
        }
    }
    Some(TwoWay {
        inbound_table: inbound_table?,
        listen: listen?,
        webhook_path,
        reconcile_every,
        client_secret: client_secret?,
        public_url: public_url?,
        accept_legacy_signatures: inbound.accept_legacy_signatures.unwrap_or(false),
        on_crm_create,
        on_crm_delete,
        ownership,
        default_owner,
    })
}

#[cfg(test)]
mod tests;
