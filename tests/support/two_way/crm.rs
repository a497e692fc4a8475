//! What differs between the CRMs of the two-way tests ([`Crm`]): the table and its mapping,
//! the sink's TOML, and how the emulator's state shows records, writes and deletes.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::Options;

/// The client secret of the HubSpot app whose webhooks the sink receives.
pub(crate) const HUBSPOT_SECRET: &str = "hubspot-app-client-secret";
/// An access token the Zoho emulator accepts.
pub(crate) const ZOHO_TOKEN: &str = "test-access-token";

/// Values of a row's mapped columns after the id, in table order.
pub(crate) type Row = Vec<String>;

/// The CRM at the other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Crm {
    /// HubSpot contacts (`public.contacts`: email, first_name, lifecycle), signed webhooks.
    Hubspot,
    /// Zoho CRM Leads (`public.leads`: email, last_name), watch-channel notifications.
    Zoho,
}

impl Crm {
    /// The emulator's and the sink's kind.
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Crm::Hubspot => "hubspot",
            Crm::Zoho => "zoho",
        }
    }

    pub(super) fn table(self) -> &'static str {
        match self {
            Crm::Hubspot => "contacts",
            Crm::Zoho => "leads",
        }
    }

    /// The mapped columns after the id.
    pub(super) fn columns(self) -> &'static [&'static str] {
        match self {
            Crm::Hubspot => &["email", "first_name", "lifecycle"],
            Crm::Zoho => &["email", "last_name"],
        }
    }

    /// The CRM properties of [`Crm::columns`], in the same order.
    pub(super) fn properties(self) -> &'static [&'static str] {
        match self {
            Crm::Hubspot => &["email", "firstname", "lifecyclestage"],
            Crm::Zoho => &["Email", "Last_Name"],
        }
    }

    pub(super) fn id_property(self) -> &'static str {
        match self {
            Crm::Hubspot => "pg_external_id",
            Crm::Zoho => "External_Id",
        }
    }

    /// The row of sample key `key` (as SQL values).
    pub(super) fn sample(self, key: i64, name: &str) -> String {
        match self {
            Crm::Hubspot => format!("'k{key}@example.com', '{name}', 'lead'"),
            Crm::Zoho => format!("'k{key}@example.com', '{name}'"),
        }
    }

    /// CRM properties a record needs besides email and name (HubSpot: the lifecycle stage).
    pub(super) fn other_properties(self) -> Value {
        match self {
            Crm::Hubspot => json!({"lifecyclestage": "customer"}),
            Crm::Zoho => json!({}),
        }
    }

    /// The fields of a record created in the CRM (by a user, not linked to a row): `email`,
    /// `name` and [`Crm::other_properties`], as CRM properties.
    pub(crate) fn created(self, email: &str, name: &str) -> Value {
        let mut fields = self.other_properties();
        fields[self.properties()[0]] = json!(email);
        fields[self.properties()[1]] = json!(name);
        fields
    }

    /// The API calls a CRM user makes to create records of `fields` (path, body): HubSpot one
    /// UI create each, Zoho inserts of up to 100.
    pub(super) fn create_calls(self, fields: &[Value]) -> Vec<(&'static str, Value)> {
        match self {
            Crm::Hubspot => fields
                .iter()
                .map(|f| ("/_emulator/objects/contacts", json!({"properties": f})))
                .collect(),
            Crm::Zoho => fields
                .chunks(100)
                .map(|c| ("/crm/v8/Leads", json!({"data": c})))
                .collect(),
        }
    }

    /// The environment of a sink worker.
    pub(crate) fn worker_env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Crm::Hubspot => vec![
                ("HUBSPOT_TOKEN", "test-token"),
                ("HUBSPOT_CLIENT_SECRET", HUBSPOT_SECRET),
            ],
            Crm::Zoho => vec![("ZOHO_TOKEN", ZOHO_TOKEN)],
        }
    }

    /// The `[[sinks]]` table; `inbound` and `ownership` are appended to `[sinks.inbound]` and
    /// `[sinks.ownership]`.
    pub(crate) fn sink_toml(self, name: &str, port: u16, hook_port: u16, opts: &Options) -> String {
        let (target, inbound, fields) = match self {
            Crm::Hubspot => (
                "object = \"contacts\"\ntoken_env = \"HUBSPOT_TOKEN\"",
                "client_secret_env = \"HUBSPOT_CLIENT_SECRET\"",
                "email = \"email\"\nfirst_name = \"firstname\"\nlifecycle = { property = \
                 \"lifecyclestage\", map = { lead = \"lead\", customer = \"customer\", \
                 other = \"other\" } }",
            ),
            Crm::Zoho => (
                "module = \"Leads\"\ntoken_env = \"ZOHO_TOKEN\"",
                "",
                "email = \"Email\"\nlast_name = \"Last_Name\"",
            ),
        };
        format!(
            r#"
[[sinks]]
name = "{name}"
kind = "{kind}"
table = "public.{table}"
{target}
id_property = "{id}"
base_url = "http://127.0.0.1:{port}"
batch_max_wait_ms = 100
direction = "both"
[sinks.inbound]
listen = "127.0.0.1:{hook_port}"
webhook_path = "/hooks/{kind}"
{inbound}
{extra_inbound}
[sinks.ownership]
{ownership}
[sinks.fields]
id = "{id}"
{fields}
{extra_fields}
"#,
            kind = self.kind(),
            table = self.table(),
            id = self.id_property(),
            extra_inbound = opts.inbound,
            extra_fields = opts.fields,
            ownership = opts.ownership,
        )
    }

    /// Every record of the emulator's state, deleted (archived) ones included.
    pub(super) fn all_records(self, state: &Value) -> &[Value] {
        let records = match self {
            Crm::Hubspot => &state["objects"]["contacts"],
            Crm::Zoho => &state["records"]["Leads"],
        };
        records.as_array().map_or(&[], Vec::as_slice)
    }

    /// Live records of the emulator's state by id property: (CRM id, row).
    pub(crate) fn records(self, state: &Value) -> BTreeMap<i64, (String, Row)> {
        let (fields, deleted) = match self {
            Crm::Hubspot => ("/properties", "archived"),
            Crm::Zoho => ("", "$deleted"),
        };
        let mut out = BTreeMap::new();
        for r in self.all_records(state) {
            if r[deleted] == true {
                continue;
            }
            let f = r.pointer(fields).expect("record fields");
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            let Ok(key) = s(self.id_property()).parse::<i64>() else {
                continue;
            };
            let id = r["id"].as_str().expect("string ids").to_string();
            out.insert(key, (id, self.properties().iter().map(|p| s(p)).collect()));
        }
        out
    }

    /// Requests the emulator counted whose path (HubSpot) or `METHOD path` (Zoho) matches.
    fn requests(self, state: &Value, matches: impl Fn(&str) -> bool) -> u64 {
        let counts = match self {
            Crm::Hubspot => &state["requests"]["byPath"],
            Crm::Zoho => &state["request_counts"],
        };
        counts
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| matches(k))
            .map(|(_, n)| n.as_u64().unwrap_or(0))
            .sum()
    }

    /// Writes the CRM's API received (HubSpot batch upserts and updates, Zoho write calls),
    /// the test's own included.
    pub(super) fn writes(self, state: &Value) -> u64 {
        match self {
            Crm::Hubspot => self.requests(state, |p| {
                p.contains("batch/upsert") || p.contains("batch/update")
            }),
            Crm::Zoho => state["write_calls"].as_array().map_or(0, Vec::len) as u64,
        }
    }

    /// Deletes the CRM's API received (HubSpot archives, Zoho DELETEs), the test's own included.
    pub(super) fn deletes(self, state: &Value) -> u64 {
        match self {
            Crm::Hubspot => self.requests(state, |p| p.contains("archive")),
            Crm::Zoho => self.requests(state, |k| k.starts_with("DELETE /crm/v8/Leads")),
        }
    }
}
