//! Behaviour knobs of the Zoho emulator: readings of Zoho's contract that are unverified or that
//! tests need to change, settable at start ([`Options::knobs`](super::Options::knobs)) and at run
//! time (`POST /_emulator/settings`, a JSON object of camelCase knob names; kept across
//! `/_emulator/reset`).
//!
//! Owns the knobs, their defaults (the stricter reading where Zoho's documents leave it open)
//! and OAuth scope matching. Invariants: a knob changed at run time applies to the next request;
//! an unknown knob is refused and changes nothing.

use serde::{Deserialize, Serialize};

/// The knobs (JSON names in camelCase).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Knobs {
    /// API credits per rolling 24 h window (`creditsPerDay`, default 5,000: the free edition).
    pub credits_per_day: u64,
    /// The answer once the credits are spent (`creditExhaustedBody`); Zoho's body is not
    /// documented.
    pub credit_exhausted_body: CreditExhaustedBody,
    /// COQL criteria of more than two conditions must be grouped in pairs with parentheses,
    /// `((a and b) and c)`; `a and b and c` is a 400 `SYNTAX_ERROR` (`coqlPairGrouping`, default
    /// true, as Zoho's COQL documents say).
    pub coql_pair_grouping: bool,
    /// A field name that is an SQL reserved word must be quoted (`'External'` or `"External"`)
    /// in COQL; unquoted it is a 400 `SYNTAX_ERROR` (`coqlReservedWords`, default true).
    pub coql_reserved_words: bool,
    /// Most values of a COQL `in` / `not in` (`coqlMaxInValues`, default 50); more is a 400
    /// `LIMIT_EXCEEDED`.
    pub coql_max_in_values: usize,
    /// The scopes every refresh token (and the configured access tokens) grant
    /// (`grantedScopes`); a request outside them is a 401 `OAUTH_SCOPE_MISMATCH`. Tokens minted
    /// keep the scopes granted when they were minted; the configured access tokens follow the
    /// knob.
    pub granted_scopes: Vec<String>,
    /// What `POST /actions/watch` does with a channel id that is already subscribed
    /// (`duplicateChannelId`, default `refuse`: a `DUPLICATE_DATA` item; update it with
    /// PUT/PATCH instead).
    pub duplicate_channel_id: DuplicateChannelId,
}

/// The two readings of Zoho's answer when the credits are spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CreditExhaustedBody {
    /// HTTP 429 `{"code": "TOO_MANY_REQUESTS", ...}`, the very answer of the concurrency gate,
    /// so a client cannot tell them apart (the default: the stricter reading).
    TooManyRequests,
    /// HTTP 429 `{"code": "LIMIT_REACHED", ...}` (the record API's documented error code for a
    /// reached limit).
    LimitReached,
}

/// What re-subscribing a channel id does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DuplicateChannelId {
    /// Refused per channel with `DUPLICATE_DATA` (HTTP 400 when nothing succeeded).
    Refuse,
    /// The old channel is replaced.
    Replace,
}

/// Every scope driftless's Zoho sink can use.
pub const ALL_SCOPES: [&str; 5] = [
    "ZohoCRM.modules.ALL",
    "ZohoCRM.settings.fields.READ",
    "ZohoCRM.settings.modules.READ",
    "ZohoCRM.notifications.ALL",
    "ZohoCRM.coql.READ",
];

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            credits_per_day: 5000,
            credit_exhausted_body: CreditExhaustedBody::TooManyRequests,
            coql_pair_grouping: true,
            coql_reserved_words: true,
            coql_max_in_values: 50,
            granted_scopes: ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
            duplicate_channel_id: DuplicateChannelId::Refuse,
        }
    }
}

/// What a request needs: one scope of a family (`ZohoCRM.modules`, `ZohoCRM.settings`,
/// `ZohoCRM.notifications`, `ZohoCRM.coql`), optionally for a resource (a module, `fields`),
/// with one of the operation types `ops` (`ALL` always does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Need {
    pub(super) family: &'static str,
    pub(super) resource: Option<String>,
    pub(super) ops: &'static [&'static str],
}

impl Need {
    /// Whether one of `granted` covers this need: `{family}.{op}`, `{family}.ALL`,
    /// `{family}.{resource}.{op}` or `{family}.{resource}.ALL` (case-insensitive).
    pub(super) fn met_by(&self, granted: &[String]) -> bool {
        granted.iter().any(|g| {
            let g = g.to_ascii_lowercase();
            let Some(rest) = g
                .strip_prefix(&self.family.to_ascii_lowercase())
                .and_then(|r| r.strip_prefix('.'))
            else {
                return false;
            };
            let op = match (rest.rsplit_once('.'), &self.resource) {
                (None, _) => rest,
                (Some((res, op)), Some(want)) if res.eq_ignore_ascii_case(want) => op,
                _ => return false,
            };
            op == "all" || self.ops.iter().any(|o| o.eq_ignore_ascii_case(op))
        })
    }
}

/// The scopes a request needs (by method and path under `/crm/v8/`; `coql_module` is the module
/// a COQL query reads). Empty: none checked.
pub(super) fn needs(method: &str, path: &str, coql_module: Option<&str>) -> Vec<Need> {
    let rest = path.strip_prefix("/crm/v8/").unwrap_or("");
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let module = |m: &str, ops| Need {
        family: "ZohoCRM.modules",
        resource: Some(m.to_string()),
        ops,
    };
    match segments.as_slice() {
        ["coql"] => {
            let mut v = vec![Need {
                family: "ZohoCRM.coql",
                resource: None,
                ops: &["READ"],
            }];
            if let Some(m) = coql_module {
                v.push(module(m, &["READ"]));
            }
            v
        }
        ["settings", what] => vec![Need {
            family: "ZohoCRM.settings",
            resource: Some(what.to_string()),
            ops: &["READ"],
        }],
        ["actions", "watch"] => vec![Need {
            family: "ZohoCRM.notifications",
            resource: None,
            ops: match method {
                "GET" => &["READ"],
                "POST" => &["CREATE", "WRITE"],
                "DELETE" => &["DELETE", "WRITE"],
                _ => &["UPDATE", "WRITE"],
            },
        }],
        [m, rest @ ..] => {
            let ops: &'static [&'static str] = match (method, rest) {
                ("GET", _) => &["READ"],
                ("POST", ["upsert"]) => &["WRITE"],
                ("POST", _) => &["CREATE", "WRITE"],
                ("DELETE", _) => &["DELETE", "WRITE"],
                _ => &["UPDATE", "WRITE"],
            };
            vec![module(m, ops)]
        }
        [] => vec![],
    }
}
