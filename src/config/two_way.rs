//! Two-way sync settings of a sink (`direction = "both"`, `[sinks.inbound]`,
//! `[sinks.ownership]`): how they are written, and their validation into [`TwoWay`].
//!
//! Pure, like the rest of the config: every problem goes to the caller's list with its field
//! path (`sinks[1].inbound.listen`). Invariants: only HubSpot and Zoho sinks sync both ways; the
//! inbound table is one of `source.tables`; a HubSpot sink names the environment variable of its
//! app's client secret (webhook signatures), a Zoho sink names none (its notifications carry a
//! token driftless generates) but has a public notification URL; ownership only names columns
//! of the sink's fields, and `"*"` sets the owner of every other column.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::fields::FieldRule;
use super::sinks::{SinkConfig, SinkKind};
use super::{
    Choice, Extra, FieldPath, Problems, SecretSource, TableName, is_env_name, parse_table,
    url_problem,
};

/// `[sinks.inbound]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct InboundConfig {
    /// `ip:port` of the webhook receiver (default `127.0.0.1:8090`).
    pub(crate) listen: Option<String>,
    /// Path the CRM posts webhooks to.
    pub(crate) webhook_path: Option<String>,
    /// Reconciliation interval, e.g. `10m` (`off` disables it).
    pub(crate) reconcile_every: Option<String>,
    /// How far behind now reconciliation reads (default `5m`): changes younger than this are
    /// left for the next pass, so a lagging search index never hides one.
    pub(crate) reconcile_lag: Option<String>,
    /// Environment variable holding the app's client secret (webhook signatures).
    pub(crate) client_secret_env: Option<String>,
    /// Accept the older v1/v2 signatures too (default false: v3 only).
    pub(crate) accept_legacy_signatures: Option<bool>,
    /// The URL the CRM posts to, as reached through a proxy: Zoho's notification URL (default
    /// `http://{listen}{webhook_path}`); HubSpot's target URL, which its signatures cover.
    pub(crate) public_url: Option<String>,
    /// Records created in the CRM: `insert` a row (default) or `ignore` them.
    pub(crate) on_crm_create: Option<String>,
    /// Records deleted in the CRM: `ignore` them (default) or `delete` their linked rows.
    pub(crate) on_crm_delete: Option<String>,
    /// At the sink's first start, reconcile every record the CRM holds (default false: only
    /// records modified from then on).
    pub(crate) initial_import: Option<bool>,
    /// Unknown keys.
    #[serde(flatten)]
    pub(crate) extra: Extra,
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
pub(crate) enum OnCrmCreate {
    /// Insert a row (the table's key comes from its defaults) and link the record to it.
    Insert,
    /// Leave them out of Postgres.
    Ignore,
}

impl Choice for OnCrmCreate {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("insert", Self::Insert), ("ignore", Self::Ignore)];
}

/// What happens to the rows linked to records deleted in the CRM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum OnCrmDelete {
    /// Keep the row (it is no longer updated from the CRM).
    #[default]
    Ignore,
    /// Delete the linked row (origin-tagged, so the deletion is not sent back) and forget its
    /// link.
    Delete,
}

impl Choice for OnCrmDelete {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("ignore", Self::Ignore), ("delete", Self::Delete)];
}

/// Two-way sync settings of a sink (`direction = "both"`).
#[derive(Clone, Debug, PartialEq)]
pub struct TwoWay {
    /// Where inbound changes are written.
    pub(crate) inbound_table: TableName,
    /// Webhook receiver address.
    pub(crate) listen: std::net::SocketAddr,
    /// Webhook path.
    pub(crate) webhook_path: String,
    /// Reconciliation interval (None: off).
    pub(crate) reconcile_every: Option<std::time::Duration>,
    /// How far behind now a reconciliation window ends.
    pub(crate) reconcile_lag: std::time::Duration,
    /// The app's client secret (HubSpot signature verification; None for Zoho, whose
    /// notifications carry a token driftless generates).
    pub(crate) client_secret: Option<SecretSource>,
    /// Zoho: the notification URL given to Zoho's watch channel. HubSpot (whose webhook URL is
    /// set in the app): the URL its signatures cover when a proxy stands in front of the
    /// receiver (None: the request's `Host`, over http or https).
    pub(crate) public_url: Option<String>,
    /// Accept v1/v2 signatures.
    pub(crate) accept_legacy_signatures: bool,
    /// Records created in the CRM.
    pub(crate) on_crm_create: OnCrmCreate,
    /// Records deleted in the CRM.
    pub(crate) on_crm_delete: OnCrmDelete,
    /// The first reconciliation reads every CRM record (otherwise: from the first start on).
    pub(crate) initial_import: bool,
    /// Per column owner.
    pub(crate) ownership: BTreeMap<String, Owner>,
    /// Owner of columns not listed.
    pub(crate) default_owner: Owner,
}

impl TwoWay {
    /// The owner of a column.
    pub(crate) fn owner(&self, column: &str) -> Owner {
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

/// The keys of `[sinks.inbound]`.
const INBOUND_KEYS: &str = "listen, webhook_path, reconcile_every, reconcile_lag, client_secret_env, \
                            accept_legacy_signatures, public_url, on_crm_create, on_crm_delete, \
                            initial_import";

/// The replication origin of a two-way sink's inbound writes (`-` read as `_`: origin names
/// are identifiers).
pub fn origin_name(sink: &str) -> String {
    format!("driftless_{}", sink.replace('-', "_"))
}

/// Two-way sinks whose names give the same replication origin would skip each other's inbound
/// writes: each such pair is a problem at the later sink's name, naming the earlier one.
pub(super) fn shared_origins(sinks: &[SinkConfig], p: &mut Problems) {
    let mut seen: BTreeMap<String, (usize, &str)> = BTreeMap::new();
    for (i, s) in sinks.iter().enumerate() {
        let Some(name) = s
            .name
            .as_deref()
            .filter(|_| s.direction.as_deref() == Some("both"))
        else {
            continue;
        };
        let origin = origin_name(name);
        match seen.get(&origin) {
            Some((j, other)) if *other != name => p.add(
                format!("sinks[{i}].name"),
                format!(
                    "{name:?} and sinks[{j}].name {other:?} give the same replication origin \
                     {origin} (\"-\" reads as \"_\"), so each two-way sink would skip the \
                     other's inbound writes; rename one of them"
                ),
            ),
            Some(_) => {}
            None => {
                seen.insert(origin, (i, name));
            }
        }
    }
}

/// Validates the two-way settings of the sink at `at` (None for `direction = "out"`).
/// `kind`, `table` and `fields` are the sink's, as validated so far.
pub(super) fn validate(
    at: &FieldPath,
    s: &SinkConfig,
    kind: Option<&SinkKind>,
    table: Option<&TableName>,
    fields: &[FieldRule],
    tables: &[TableName],
    p: &mut Problems,
) -> Option<TwoWay> {
    let crm_name = crm_name(at, s, kind, p)?;
    let zoho = crm_name == "zoho";
    let inbound_table = match s.inbound_table.as_deref() {
        None => table.cloned(),
        Some(t) => match parse_table(t) {
            Some(t) if tables.contains(&t) => Some(t),
            _ => {
                p.add(
                    at.at("inbound_table"),
                    format!("{t:?} is not one of source.tables"),
                );
                None
            }
        },
    };
    let inbound = s.inbound.clone().unwrap_or_default();
    p.unknown(&at.at("inbound"), &inbound.extra, INBOUND_KEYS);
    let listen = inbound
        .listen
        .as_deref()
        .unwrap_or("127.0.0.1:8090")
        .parse()
        .map_err(|_| p.add(at.at("inbound.listen"), "must be \"ip:port\""))
        .ok();
    let webhook_path = inbound
        .webhook_path
        .clone()
        .unwrap_or_else(|| format!("/hooks/{}", s.name.as_deref().unwrap_or("sink")));
    if !webhook_path.starts_with('/') || webhook_path.contains(char::is_whitespace) {
        p.add(
            at.at("inbound.webhook_path"),
            "must be a path starting with /",
        );
    }
    let reconcile_every = inbound.reconcile_every(at, p);
    let reconcile_lag = inbound.reconcile_lag(at, p);
    let client_secret = inbound.client_secret(at, zoho, p);
    if zoho && inbound.accept_legacy_signatures.is_some() {
        p.add(
            at.at("inbound.accept_legacy_signatures"),
            "only for HubSpot sinks",
        );
    }
    let public_url = inbound.public_url(at, zoho, listen, &webhook_path, p);
    let on_crm_create = p.choice(
        at.at("inbound.on_crm_create"),
        inbound.on_crm_create.as_deref(),
    );
    let on_crm_delete = p.choice(
        at.at("inbound.on_crm_delete"),
        inbound.on_crm_delete.as_deref(),
    );
    let initial_import = inbound.initial_import.unwrap_or(false);
    if initial_import && inbound.reconcile_every.as_deref() == Some("off") {
        p.add(
            at.at("inbound.initial_import"),
            "the initial import is done by reconciliation, which reconcile_every = \"off\" \
             disables",
        );
    }
    id_from_fields(at, s, fields, p);
    let (ownership, default_owner) = ownership(at, s, crm_name, fields, p);
    Some(TwoWay {
        inbound_table: inbound_table?,
        listen: listen?,
        webhook_path,
        reconcile_every,
        reconcile_lag: reconcile_lag?,
        client_secret: client_secret?,
        public_url: public_url?,
        accept_legacy_signatures: inbound.accept_legacy_signatures.unwrap_or(false),
        on_crm_create,
        on_crm_delete,
        initial_import,
        ownership,
        default_owner,
    })
}

/// Two-way sync links a row and a record by `id_property`, whose value is the row's key: some
/// column must map to it (that it is the primary key is checked against Postgres at start).
fn id_from_fields(at: &FieldPath, s: &SinkConfig, fields: &[FieldRule], p: &mut Problems) {
    let Some(id) = s.id_property.as_deref().filter(|id| !id.is_empty()) else {
        return;
    };
    if !fields.iter().any(|f| f.property == id) {
        p.add(
            at.at("fields"),
            format!(
                "two-way sync links rows and records by id_property {id:?}: map the table's \
                 primary key column to it (e.g. id = {id:?})"
            ),
        );
    }
}

/// `direction`: the CRM's name in `ownership` for `both`; `None` for `out` (where the two-way
/// settings are refused), a bad direction or a sink that cannot sync both ways.
fn crm_name(
    at: &FieldPath,
    s: &SinkConfig,
    kind: Option<&SinkKind>,
    p: &mut Problems,
) -> Option<&'static str> {
    let both = p.one_of(
        at.at("direction"),
        s.direction.as_deref(),
        &[("out", false), ("both", true)],
    )?;
    if !both {
        for (set, key) in [
            (s.inbound.is_some(), "inbound"),
            (s.ownership.is_some(), "ownership"),
            (s.inbound_table.is_some(), "inbound_table"),
        ] {
            if set {
                p.add(at.at(key), "only for direction = \"both\"");
            }
        }
        return None;
    }
    match kind {
        Some(SinkKind::Hubspot { .. }) => Some("hubspot"),
        Some(SinkKind::Zoho { .. }) => Some("zoho"),
        _ => {
            p.add(
                at.at("direction"),
                "two-way sync is available for HubSpot and Zoho sinks (webhooks: out only)",
            );
            None
        }
    }
}

impl InboundConfig {
    /// `reconcile_every`: an interval (default 10 minutes), or `None` for `"off"`.
    fn reconcile_every(&self, at: &FieldPath, p: &mut Problems) -> Option<std::time::Duration> {
        let text = match self.reconcile_every.as_deref() {
            Some("off") => return None,
            other => other.unwrap_or("10m"),
        };
        let d = parse_interval(text);
        if d.is_none() {
            p.add(
                at.at("inbound.reconcile_every"),
                format!("{text:?} is not an interval like 30s, 10m, 1h (or \"off\")"),
            );
        }
        d
    }

    /// `reconcile_lag`: an interval (default 5 minutes).
    fn reconcile_lag(&self, at: &FieldPath, p: &mut Problems) -> Option<std::time::Duration> {
        let text = self.reconcile_lag.as_deref().unwrap_or("5m");
        let d = parse_interval(text);
        if d.is_none() {
            p.add(
                at.at("inbound.reconcile_lag"),
                format!("{text:?} is not an interval like 30s, 5m, 1h"),
            );
        }
        d
    }

    /// `client_secret_env`: required for HubSpot, refused for Zoho (`Some(None)`); `None` when
    /// invalid.
    fn client_secret(
        &self,
        at: &FieldPath,
        zoho: bool,
        p: &mut Problems,
    ) -> Option<Option<SecretSource>> {
        match self.client_secret_env.as_deref() {
            // Zoho notifications carry the channel's token instead of a signature.
            None if zoho => Some(None),
            Some(_) if zoho => {
                p.add(
                    at.at("inbound.client_secret_env"),
                    "only for HubSpot sinks (Zoho notifications are checked with a token \
                     driftless generates for its watch channel)",
                );
                None
            }
            Some(e) if is_env_name(e) => Some(Some(SecretSource::Env(e.to_string()))),
            _ => {
                p.add(
                    at.at("inbound.client_secret_env"),
                    "missing or invalid: the environment variable holding the app's client \
                     secret (webhook signatures)",
                );
                None
            }
        }
    }

    /// `public_url`: Zoho's notification URL (default `http://{listen}{webhook_path}`);
    /// HubSpot's signed target URL (no default); `None` when invalid.
    fn public_url(
        &self,
        at: &FieldPath,
        zoho: bool,
        listen: Option<std::net::SocketAddr>,
        webhook_path: &str,
        p: &mut Problems,
    ) -> Option<Option<String>> {
        let url = match (&self.public_url, listen) {
            (Some(u), _) => u.clone(),
            (None, Some(listen)) if zoho => format!("http://{listen}{webhook_path}"),
            (None, _) if zoho => return None,
            (None, _) => return Some(None),
        };
        match url_problem(&url) {
            None => Some(Some(url)),
            Some(problem) => {
                // The URL itself only when it is the default: a written one may carry a
                // password.
                let message = if self.public_url.is_none() {
                    format!(
                        "{url:?} (the default, from listen: set public_url to the https address \
                         of the TLS proxy in front of the receiver) {problem}"
                    )
                } else {
                    problem.to_string()
                };
                p.add(at.at("inbound.public_url"), message);
                None
            }
        }
    }
}

/// `[sinks.ownership]`: the owner of each listed column and of the others (`"*"`, default
/// [`Owner::Latest`]).
fn ownership(
    at: &FieldPath,
    s: &SinkConfig,
    crm_name: &str,
    fields: &[FieldRule],
    p: &mut Problems,
) -> (BTreeMap<String, Owner>, Owner) {
    let mut ownership = BTreeMap::new();
    let mut default_owner = Owner::Latest;
    let owners = [
        ("postgres", Owner::Postgres),
        (crm_name, Owner::Crm),
        ("latest", Owner::Latest),
    ];
    for (column, owner) in s.ownership.iter().flatten() {
        let path = at.at(&format!("ownership.{column}"));
        let Some(owner) = p.one_of(path.clone(), Some(owner), &owners) else {
            continue;
        };
        if column == "*" {
            default_owner = owner;
        } else if fields.iter().any(|f| &f.column == column) {
            ownership.insert(column.clone(), owner);
        } else {
            p.add(path, "not a column of sinks.fields");
        }
    }
    (ownership, default_owner)
}
