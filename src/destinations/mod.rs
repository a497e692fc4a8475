//! Destinations: one folder per SaaS API, each with the same file set.
//!
//! | folder       | owns                                                                   |
//! |--------------|------------------------------------------------------------------------|
//! | `hubspot/`   | HubSpot CRM v3: the sink, its client, the two-way adapter and receiver |
//! | `zoho/`      | Zoho CRM v8: the sink, its client, the two-way adapter and receiver    |
//! | `webhook/`   | signed Standard Webhooks POSTs and the SSRF guard                      |
//! | `oauth.rs`   | OAuth refresh-token credentials shared by the CRMs                     |
//!
//! Invariants: a destination imports the engines ([`crate::sink`], [`crate::sync`]) and never
//! the other way round; its transport stays inside its folder. A new destination is one folder
//! here plus one variant where destinations are built ([`crate::app::destination`]).

pub mod hubspot;
pub(crate) mod oauth;
pub mod webhook;
pub mod zoho;

use crate::config::fields::FieldRule;
use crate::config::sinks::{OnDelete, ValidSink};
use crate::sink::mapping::value_string;
use crate::sink::verify::Record;
use crate::sink::{SinkError, http};
use oauth::Credentials;

/// The refusal of a destination built from a sink of another kind.
pub(crate) fn wrong_kind(sink: &ValidSink, what: &str, kind: &str) -> SinkError {
    SinkError::fatal(
        format!("sink {} is not a {what} sink", sink.name),
        format!("set kind = \"{kind}\""),
    )
}

/// What both CRM sinks keep of their sink's config, with their HTTP client. Clones share
/// the client's connections and the credentials' token cache.
#[derive(Clone, Debug)]
pub(crate) struct CrmSettings {
    /// The client ([`http::crm_client`]).
    pub(crate) client: reqwest::Client,
    /// The sink's `base_url`, without a trailing `/`.
    pub(crate) base_url: String,
    /// The unique property records are matched on.
    pub(crate) id_property: String,
    /// Where access tokens come from.
    pub(crate) credentials: Credentials,
    /// The column → property rules.
    pub(crate) fields: Vec<FieldRule>,
    /// What deletes do.
    pub(crate) on_delete: OnDelete,
    /// Records per request: the sink's `batch_max_events`.
    pub(crate) per_request: usize,
}

impl CrmSettings {
    /// The settings of a CRM `sink`; refused (fatal) without an `id_property`, whose hint
    /// names `id_example`. No I/O.
    pub(crate) fn new(
        sink: &ValidSink,
        credentials: Credentials,
        id_example: &str,
    ) -> Result<Self, SinkError> {
        let id_property = sink.id_property.clone().ok_or_else(|| {
            SinkError::fatal(
                format!("sink {} has no id_property", sink.name),
                format!("set id_property to {id_example}"),
            )
        })?;
        Ok(CrmSettings {
            client: http::crm_client()?,
            base_url: sink.base_url.trim_end_matches('/').to_string(),
            id_property,
            credentials,
            fields: sink.fields.clone(),
            on_delete: sink.on_delete,
            per_request: sink.batch_max_events.max(1),
        })
    }
}

impl CrmSettings {
    /// The mapped property names, `id_property` included, each once.
    pub(crate) fn property_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.fields.iter().map(|f| f.property.clone()).collect();
        names.push(self.id_property.clone());
        names.sort();
        names.dedup();
        names
    }

    /// A listed record: its mapped properties (present in `properties`) as text.
    pub(crate) fn record(&self, id: &str, properties: &serde_json::Value) -> Record {
        let text = |name: &str| match &properties[name] {
            serde_json::Value::Null => None,
            v => Some(value_string(v)),
        };
        Record {
            id: id.to_string(),
            identity: text(&self.id_property),
            properties: self
                .property_names()
                .iter()
                .filter_map(|name| Some((name.clone(), text(name)?)))
                .collect(),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Shared helpers of the destinations' unit tests (the generic ones are in
    //! [`crate::sink::test_support`]).

    use super::oauth::Credentials;

    /// OAuth credentials the Zoho emulator at `base` accepts (with `refresh = "test-refresh-token"`).
    pub(crate) fn zoho_oauth(base: &str, refresh: &str) -> Credentials {
        Credentials::oauth(
            "test-client-id".into(),
            "test-client-secret".into(),
            refresh.into(),
            format!("{base}/oauth/v2/token"),
            "ZOHO_REFRESH_TOKEN",
        )
    }
}
