//! `[[sinks]]`: where change events go after Kafka (HubSpot, Zoho CRM, webhooks).
//!
//! Parse → validate (pure, every problem with its field path, e.g. `sinks[1].fields.email`).
//! Invariants: secrets are only named (`token_env`, `secret_env`, `[sinks.oauth]` `*_env`), never
//! stored, read only at start (by the sink service); a CRM sink authenticates with exactly one of
//! a static token (`token_env`) or an OAuth refresh grant (`[sinks.oauth]`); a sink reads a table
//! capture publishes; batch sizes never exceed the destination API's cap (100 records for HubSpot
//! and Zoho batch writes).
//!
//! The two-way settings of a sink (`direction = "both"`) are validated by [`super::two_way`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::fields::{FieldRule, Transform};
use super::schedule::Schedule;
use super::two_way::{self, InboundConfig, TwoWay};
use super::{
    Choice, Extra, FieldPath, Problems, SecretSource, TableName, parse_table, url_problem,
};

/// Default records per destination request: the batch cap of HubSpot and Zoho.
pub(crate) const DEFAULT_BATCH_MAX_EVENTS: usize = 100;
/// Default time a batch waits for more records: short enough for "real time", long enough to
/// fill batches under load.
pub(crate) const DEFAULT_BATCH_MAX_WAIT_MS: u64 = 1_000;
/// HubSpot's API base URL.
pub(crate) const HUBSPOT_BASE_URL: &str = "https://api.hubapi.com";
/// Zoho CRM's API base URL (US data centre). With OAuth, requests follow the token's
/// `api_domain` unless `base_url` is set to something else (the emulator, a proxy).
pub(crate) const ZOHO_BASE_URL: &str = "https://www.zohoapis.com";
/// HubSpot's OAuth token endpoint (v3 refresh grant, form-encoded; v1 is deprecated from
/// 2027-02-16).
pub(crate) const HUBSPOT_TOKEN_URL: &str = "https://api.hubapi.com/oauth/v3/token";
/// Zoho's OAuth token endpoint, US data centre (others: `accounts.zoho.eu`, `.in`, `.com.au`,
/// ...; set `token_url`).
pub(crate) const ZOHO_TOKEN_URL: &str = "https://accounts.zoho.com/oauth/v2/token";
/// Default whole-request timeout of a webhook delivery: receivers are expected to answer fast
/// (Standard Webhooks senders commonly give 15-30 s), and a hung receiver must not stall the
/// worker for long; a timeout is transient and retried.
pub(crate) const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 30_000;
/// Longest configurable webhook timeout.
pub(crate) const MAX_WEBHOOK_TIMEOUT_MS: u64 = 300_000;

/// One `[[sinks]]` table as written.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct SinkConfig {
    /// Unique sink name (consumer group, dead-letter topic).
    pub(crate) name: Option<String>,
    /// `hubspot`, `zoho` or `webhook`.
    pub(crate) kind: Option<String>,
    /// Source table, `schema.table` (one of `source.tables`).
    pub(crate) table: Option<String>,
    /// HubSpot object: `contacts`, `companies`, `deals`.
    pub(crate) object: Option<String>,
    /// Zoho module, e.g. `Leads`.
    pub(crate) module: Option<String>,
    /// Unique property used to upsert.
    pub(crate) id_property: Option<String>,
    /// Environment variable holding the API token.
    pub(crate) token_env: Option<String>,
    /// OAuth refresh-token grant (instead of `token_env`).
    pub(crate) oauth: Option<OAuthConfig>,
    /// API base URL (tests and the demo point it at the emulator).
    pub(crate) base_url: Option<String>,
    /// Webhook target URL.
    pub(crate) url: Option<String>,
    /// Environment variable holding the webhook signing secret (`whsec_...`).
    pub(crate) secret_env: Option<String>,
    /// `archive` or `ignore`.
    pub(crate) on_delete: Option<String>,
    /// Keys (coalesced entries) per request.
    pub(crate) batch_max_events: Option<usize>,
    /// Maximum wait before a partial batch is sent.
    pub(crate) batch_max_wait_ms: Option<u64>,
    /// `every 15m` or a cron expression: apply accumulated changes in windows (default: real
    /// time).
    pub(crate) schedule: Option<String>,
    /// `driftless verify` in the worker, on this schedule (one-way HubSpot and Zoho sinks).
    pub(crate) verify_every: Option<String>,
    /// `out` (default) or `both` (two-way sync).
    pub(crate) direction: Option<String>,
    /// Table inbound changes are written to (default: `table`).
    pub(crate) inbound_table: Option<String>,
    /// Inbound settings of a two-way sink.
    pub(crate) inbound: Option<InboundConfig>,
    /// Per column: which side wins a conflict (`postgres`, `hubspot`, `latest`); `"*"` is the
    /// default.
    pub(crate) ownership: Option<BTreeMap<String, String>>,
    /// Webhook: `batch` (default, many events per request) or `single` (one event per request).
    pub(crate) mode: Option<String>,
    /// Webhook: allow URLs that resolve to loopback/private/link-local addresses (default false).
    pub(crate) allow_private_destinations: Option<bool>,
    /// Webhook: whole-request timeout in milliseconds.
    pub(crate) timeout_ms: Option<u64>,
    /// Column → property rules.
    #[serde(default)]
    pub(crate) fields: BTreeMap<String, FieldSpec>,
    /// Unknown keys.
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// `[sinks.oauth]` as written: names of the environment variables holding the OAuth client and
/// refresh token, and the token endpoint.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct OAuthConfig {
    /// Environment variable holding the OAuth client id.
    pub(crate) client_id_env: Option<String>,
    /// Environment variable holding the OAuth client secret.
    pub(crate) client_secret_env: Option<String>,
    /// Environment variable holding the refresh token.
    pub(crate) refresh_token_env: Option<String>,
    /// Token endpoint; defaults per kind ([`HUBSPOT_TOKEN_URL`], [`ZOHO_TOKEN_URL`]).
    pub(crate) token_url: Option<String>,
    /// Unknown keys.
    #[serde(flatten)]
    pub(crate) extra: Extra,
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

/// A field rule as written: `col = "property"` or `col = { property, transform, map }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum FieldSpec {
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
pub(crate) enum SinkKind {
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

impl Choice for WebhookMode {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("batch", Self::Batch), ("single", Self::Single)];
}

/// What a delete does at the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDelete {
    /// Archive (soft delete) the record.
    Archive,
    /// Leave the record.
    Ignore,
}

impl Choice for OnDelete {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("archive", Self::Archive), ("ignore", Self::Ignore)];
}

/// A validated sink.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSink {
    /// Name.
    pub(crate) name: String,
    /// Destination.
    pub(crate) kind: SinkKind,
    /// Source table.
    pub(crate) table: TableName,
    /// Unique property for upserts (CRM sinks).
    pub(crate) id_property: Option<String>,
    /// Authentication (CRM sinks; `None` for webhooks).
    pub(crate) auth: Option<Auth>,
    /// API base URL.
    pub(crate) base_url: String,
    /// Delete behaviour.
    pub(crate) on_delete: OnDelete,
    /// Field rules, in column order.
    pub(crate) fields: Vec<FieldRule>,
    /// Keys (coalesced entries) per request.
    pub(crate) batch_max_events: usize,
    /// Maximum wait of a partial batch.
    pub(crate) batch_max_wait_ms: u64,
    /// Scheduled windows (None: real time).
    pub(crate) schedule: Option<Schedule>,
    /// When the worker compares table, ledger and destination (`driftless verify`, no repair).
    pub(crate) verify_every: Option<Schedule>,
    /// Two-way sync (None: `direction = "out"`).
    pub(crate) two_way: Option<TwoWay>,
}

fn is_sink_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
}

impl ValidSink {
    /// True for the sinks that keep a sink ledger: one-way HubSpot and Zoho sinks (webhooks keep
    /// none; two-way sinks link records in their own).
    pub(crate) fn keeps_ledger(&self) -> bool {
        self.two_way.is_none() && !matches!(self.kind, SinkKind::Webhook { .. })
    }
}

/// The keys of a `[[sinks]]` table.
const SINK_KEYS: &str = "name, kind, table, object, module, id_property, token_env, oauth, \
                         base_url, url, secret_env, on_delete, batch_max_events, \
                         batch_max_wait_ms, schedule, verify_every, direction, inbound_table, inbound, \
                         ownership, mode, allow_private_destinations, timeout_ms, fields";

/// Validates every sink; problems go to `p` with their paths.
pub(super) fn validate(
    sinks: &[SinkConfig],
    tables: &[TableName],
    p: &mut Problems,
) -> Vec<ValidSink> {
    let mut out = Vec::new();
    let mut names = Vec::new();
    for (i, s) in sinks.iter().enumerate() {
        let before = p.0.len();
        let sink = s.validate(&FieldPath::new(format!("sinks[{i}]")), &names, tables, p);
        names.push(s.name.as_deref().unwrap_or_default());
        if p.0.len() == before
            && let Some(sink) = sink
        {
            out.push(sink);
        }
    }
    two_way::shared_origins(sinks, p);
    out
}

impl SinkConfig {
    /// Validates this sink, at `at`; `names` are the names of the sinks before it. `None` when
    /// its kind or table is unusable (the problems say why).
    fn validate(
        &self,
        at: &FieldPath,
        names: &[&str],
        tables: &[TableName],
        p: &mut Problems,
    ) -> Option<ValidSink> {
        p.unknown(at.prefix(), &self.extra, SINK_KEYS);
        let name = self.name(at, names, p);
        let table = self.table(at, tables, p);
        let crm = matches!(self.kind.as_deref(), Some("hubspot" | "zoho"));
        self.check_webhook_only(at, p);
        let (kind, default_base) = self.kind(at, p);
        let id_property = if crm {
            if self.id_property.as_deref().is_none_or(str::is_empty) {
                p.add(
                    at.at("id_property"),
                    "missing: the unique property to upsert by",
                );
            }
            self.id_property.clone()
        } else {
            None
        };
        let auth = self.auth(at, crm, p);
        let base_url = self
            .base_url
            .clone()
            .unwrap_or_else(|| default_base.to_string());
        if let Some(problem) = url_problem(&base_url).filter(|_| crm) {
            p.add(at.at("base_url"), problem);
        }
        let on_delete = p.choice(at.at("on_delete"), self.on_delete.as_deref());
        let cap = if crm {
            DEFAULT_BATCH_MAX_EVENTS
        } else {
            10_000
        };
        let batch_max_events = self
            .batch_max_events
            .unwrap_or(DEFAULT_BATCH_MAX_EVENTS.min(cap));
        p.between(at.at("batch_max_events"), batch_max_events, 1, cap);
        let batch_max_wait_ms = self.batch_max_wait_ms.unwrap_or(DEFAULT_BATCH_MAX_WAIT_MS);
        if batch_max_wait_ms > 60_000 {
            p.add(at.at("batch_max_wait_ms"), "must be at most 60000");
        }
        let schedule = self.schedule.as_deref().and_then(|text| {
            Schedule::parse(text)
                .map_err(|e| p.add(at.at("schedule"), e))
                .ok()
        });
        let fields = self.field_rules(at, crm, p);
        let two_way =
            two_way::validate(at, self, kind.as_ref(), table.as_ref(), &fields, tables, p);
        let verify_every = self.verify_every.as_deref().and_then(|text| {
            if !crm || two_way.is_some() {
                p.add(
                    at.at("verify_every"),
                    "verify compares one-way HubSpot and Zoho sinks (webhooks keep no ledger; \
                     two-way sinks reconcile)",
                );
                return None;
            }
            Schedule::parse(text)
                .map_err(|e| p.add(at.at("verify_every"), e))
                .ok()
        });
        Some(ValidSink {
            name,
            kind: kind?,
            table: table?,
            id_property,
            auth,
            base_url,
            on_delete,
            fields,
            batch_max_events,
            batch_max_wait_ms,
            schedule,
            verify_every,
            two_way,
        })
    }

    /// `name`: a legal name no sink before it uses.
    fn name(&self, at: &FieldPath, names: &[&str], p: &mut Problems) -> String {
        match self.name.as_deref() {
            Some(n) if names.contains(&n) => {
                p.add(at.at("name"), format!("{n:?} is used by another sink"));
                n.to_string()
            }
            Some(n) if is_sink_name(n) => n.to_string(),
            Some(_) => {
                p.add(
                    at.at("name"),
                    "must be 1-100 characters of a-z, 0-9, - and _",
                );
                String::new()
            }
            None => {
                p.add(at.at("name"), "missing");
                String::new()
            }
        }
    }

    /// `table`: one of `source.tables`.
    fn table(&self, at: &FieldPath, tables: &[TableName], p: &mut Problems) -> Option<TableName> {
        match self.table.as_deref().map(|t| (t, parse_table(t))) {
            Some((_, Some(t))) if tables.contains(&t) => Some(t),
            Some((t, Some(_))) => {
                p.add(at.at("table"), format!("{t:?} is not one of source.tables"));
                None
            }
            Some((t, None)) => {
                p.add(at.at("table"), format!("{t:?} is not \"schema.table\""));
                None
            }
            None => {
                p.add(at.at("table"), "missing");
                None
            }
        }
    }

    /// The webhook options are refused on other kinds.
    fn check_webhook_only(&self, at: &FieldPath, p: &mut Problems) {
        if self.kind.as_deref() == Some("webhook") {
            return;
        }
        let webhook_only = [
            ("mode", self.mode.is_some()),
            (
                "allow_private_destinations",
                self.allow_private_destinations.is_some(),
            ),
            ("timeout_ms", self.timeout_ms.is_some()),
        ];
        for (field, set) in webhook_only {
            if set {
                p.add(at.at(field), "only applies to kind = \"webhook\"");
            }
        }
    }

    /// `kind` and its own settings, with the kind's default API base URL.
    fn kind(&self, at: &FieldPath, p: &mut Problems) -> (Option<SinkKind>, &'static str) {
        match self.kind.as_deref() {
            Some("hubspot") => {
                let object = self.object.clone().unwrap_or_default();
                if !matches!(object.as_str(), "contacts" | "companies" | "deals") {
                    p.add(
                        at.at("object"),
                        "must be one of: contacts, companies, deals",
                    );
                }
                (Some(SinkKind::Hubspot { object }), HUBSPOT_BASE_URL)
            }
            Some("zoho") => {
                let module = self.module.clone().unwrap_or_default();
                if module.is_empty()
                    || !module
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    p.add(
                        at.at("module"),
                        "missing or invalid: a Zoho module API name, e.g. Leads",
                    );
                }
                (Some(SinkKind::Zoho { module }), ZOHO_BASE_URL)
            }
            Some("webhook") => (self.webhook(at, p), ""),
            other => {
                p.add(
                    at.at("kind"),
                    format!(
                        "{:?} is not one of: hubspot, zoho, webhook",
                        other.unwrap_or("")
                    ),
                );
                (None, "")
            }
        }
    }

    /// The settings of `kind = "webhook"`.
    fn webhook(&self, at: &FieldPath, p: &mut Problems) -> Option<SinkKind> {
        let url = self.url.clone().unwrap_or_default();
        if self.url.is_none() {
            p.add(at.at("url"), "missing: the https URL events are sent to");
        } else if let Some(problem) = url_problem(&url) {
            p.add(at.at("url"), problem);
        }
        let secret = p.secret_env(at.at("secret_env"), self.secret_env.as_deref());
        let mode = p.choice(at.at("mode"), self.mode.as_deref());
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT_MS);
        p.between(at.at("timeout_ms"), timeout_ms, 1, MAX_WEBHOOK_TIMEOUT_MS);
        secret.map(|secret| SinkKind::Webhook {
            url,
            secret,
            mode,
            allow_private_destinations: self.allow_private_destinations.unwrap_or(false),
            timeout_ms,
        })
    }

    /// A CRM sink's authentication: exactly one of `token_env` and `[sinks.oauth]`.
    fn auth(&self, at: &FieldPath, crm: bool, p: &mut Problems) -> Option<Auth> {
        if !crm {
            if self.oauth.is_some() {
                p.add(at.at("oauth"), "only hubspot and zoho sinks use OAuth");
            }
            return None;
        }
        let default_token_url = match self.kind.as_deref() {
            Some("hubspot") => HUBSPOT_TOKEN_URL,
            _ => ZOHO_TOKEN_URL,
        };
        match (&self.token_env, &self.oauth) {
            (Some(_), Some(_)) => {
                p.add(
                    at.at("oauth"),
                    "set only one of token_env and [sinks.oauth]",
                );
                None
            }
            (Some(token), None) => p
                .secret_env(at.at("token_env"), Some(token))
                .map(Auth::Token),
            (None, None) => {
                p.add(
                    at.at("token_env"),
                    "missing: name the environment variable holding the API token, or \
                     configure an OAuth refresh grant in [sinks.oauth]",
                );
                None
            }
            (None, Some(o)) => o.validate(default_token_url, at, p),
        }
    }

    /// The transform of a rule writing `property`: HubSpot stores a contact's `email` trimmed
    /// and lowercased, so that rule sends it in that form ([`Transform::EmailAddress`], which
    /// replaces `lowercase` / `trim`; `uppercase` is refused). Lookups by it, the ledger's
    /// hashes and two-way comparisons then see the value HubSpot keeps.
    fn stored_form(
        &self,
        property: &str,
        transform: Option<Transform>,
        at: String,
        p: &mut Problems,
    ) -> Option<Transform> {
        let contacts =
            self.kind.as_deref() == Some("hubspot") && self.object.as_deref() == Some("contacts");
        if !contacts || property != "email" {
            return transform;
        }
        if transform == Some(Transform::Uppercase) {
            p.add(
                at,
                "HubSpot stores a contact's email lowercased: uppercase would never match it",
            );
        }
        Some(Transform::EmailAddress)
    }

    /// `[sinks.fields]`: the column → property rules (a CRM sink needs at least one).
    fn field_rules(&self, at: &FieldPath, crm: bool, p: &mut Problems) -> Vec<FieldRule> {
        if crm && self.fields.is_empty() {
            p.add(at.at("fields"), "map at least one column to a property");
        }
        let mut fields = Vec::new();
        for (column, spec) in &self.fields {
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
                        at.at(&format!("fields.{column}.transform")),
                        format!("{t:?} is not one of: lowercase, uppercase, trim"),
                    );
                    None
                }),
            };
            if property.is_empty() {
                p.add(at.at(&format!("fields.{column}")), "property name is empty");
            }
            let transform_at = at.at(&format!("fields.{column}.transform"));
            let transform = self.stored_form(&property, transform, transform_at, p);
            fields.push(FieldRule {
                column: column.clone(),
                property,
                transform,
                map,
            });
        }
        fields
    }
}

impl OAuthConfig {
    /// Validates `[sinks.oauth]` of the sink at `at`.
    fn validate(&self, default_token_url: &str, at: &FieldPath, p: &mut Problems) -> Option<Auth> {
        p.unknown(
            &at.at("oauth"),
            &self.extra,
            "client_id_env, client_secret_env, refresh_token_env, token_url",
        );
        let mut env = |field: &str, v: &Option<String>| {
            p.secret_env(at.at(&format!("oauth.{field}")), v.as_deref())
        };
        let client_id = env("client_id_env", &self.client_id_env);
        let client_secret = env("client_secret_env", &self.client_secret_env);
        let refresh_token = env("refresh_token_env", &self.refresh_token_env);
        let token_url = self
            .token_url
            .clone()
            .unwrap_or_else(|| default_token_url.to_string());
        if let Some(problem) = url_problem(&token_url) {
            p.add(at.at("oauth.token_url"), problem);
        }
        Some(Auth::OAuth {
            client_id: client_id?,
            client_secret: client_secret?,
            refresh_token: refresh_token?,
            token_url,
        })
    }
}

#[cfg(test)]
mod tests;
