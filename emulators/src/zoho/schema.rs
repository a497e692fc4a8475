//! The seeded field schemas of the Zoho emulator's modules, and the settings routes.
//!
//! Owns which modules exist (Leads, Contacts, Accounts, Deals), their fields (type, length,
//! uniqueness, external id, read-only, mandatory, picklist values), each module's system
//! duplicate-check field, and `GET /crm/v8/settings/fields?module=X` and `.../settings/modules`.

use axum::http::Uri;
use serde_json::{Value, json};

use super::response::{Resp, err};
use crate::http::query;

/// One field of a module.
#[derive(Clone, Debug)]
pub(super) struct FieldDef {
    pub(super) api: &'static str,
    pub(super) ty: &'static str,
    pub(super) len: usize,
    pub(super) unique: bool,
    pub(super) external: bool,
    pub(super) read_only: bool,
    pub(super) mandatory: bool,
    pub(super) picks: &'static [&'static str],
}

fn field(api: &'static str, ty: &'static str) -> FieldDef {
    let len = match ty {
        "text" | "email" => 255,
        "phone" => 30,
        "textarea" => 32000,
        _ => 0,
    };
    FieldDef {
        api,
        ty,
        len,
        unique: false,
        external: false,
        read_only: false,
        mandatory: false,
        picks: &[],
    }
}

impl FieldDef {
    fn uniq(mut self) -> Self {
        self.unique = true;
        self
    }
    fn ro(mut self) -> Self {
        self.read_only = true;
        self
    }
    fn mand(mut self) -> Self {
        self.mandatory = true;
        self
    }
    fn ext(mut self) -> Self {
        self.external = true;
        self.unique = true;
        self
    }
    fn picks(mut self, p: &'static [&'static str]) -> Self {
        self.picks = p;
        self
    }
}

/// The seeded modules.
const MODULES: [&str; 4] = ["Leads", "Contacts", "Accounts", "Deals"];

pub(super) fn schema(module: &str) -> Option<Vec<FieldDef>> {
    let mut v = vec![
        field("id", "bigint").ro(),
        field("Created_Time", "datetime").ro(),
        field("Modified_Time", "datetime").ro(),
        field("Created_By", "ownerlookup").ro(),
        field("Modified_By", "ownerlookup").ro(),
        field("Owner", "ownerlookup"),
        field("External_Id", "text").ext(),
    ];
    const SOURCES: &[&str] = &[
        "-None-",
        "Advertisement",
        "Cold Call",
        "Web Download",
        "Partner",
    ];
    match module {
        "Leads" => v.extend([
            field("Last_Name", "text").mand(),
            field("First_Name", "text"),
            field("Email", "email").uniq(),
            field("Phone", "phone"),
            field("Company", "text"),
            field("Lead_Status", "picklist").picks(&[
                "-None-",
                "Not Contacted",
                "Attempted to Contact",
                "Contacted",
                "Qualified",
                "Lost Lead",
            ]),
            field("Lead_Source", "picklist").picks(SOURCES),
            field("Annual_Revenue", "double"),
            field("No_of_Employees", "integer"),
            field("Email_Opt_Out", "boolean"),
            field("Description", "textarea"),
            // A custom field whose API name is an SQL reserved word: COQL takes it only quoted.
            field("External", "text"),
        ]),
        "Contacts" => v.extend([
            field("Last_Name", "text").mand(),
            field("First_Name", "text"),
            field("Email", "email").uniq(),
            field("Phone", "phone"),
            field("Date_of_Birth", "date"),
            field("Account_Name", "lookup"),
            field("Lead_Source", "picklist").picks(SOURCES),
            field("Email_Opt_Out", "boolean"),
            field("Description", "textarea"),
        ]),
        "Accounts" => v.extend([
            field("Account_Name", "text").mand(),
            field("Phone", "phone"),
            field("Website", "text"),
            field("Industry", "picklist").picks(&[
                "-None-",
                "Technology",
                "Finance",
                "Manufacturing",
                "Retail",
                "Other",
            ]),
            field("Employees", "integer"),
            field("Annual_Revenue", "double"),
            field("Description", "textarea"),
        ]),
        "Deals" => v.extend([
            field("Deal_Name", "text").mand(),
            field("Stage", "picklist").mand().picks(&[
                "Qualification",
                "Needs Analysis",
                "Proposal/Price Quote",
                "Negotiation/Review",
                "Closed Won",
                "Closed Lost",
            ]),
            field("Amount", "double"),
            field("Closing_Date", "date"),
            field("Account_Name", "lookup"),
            field("Probability", "integer"),
            field("Last_Activity_Time", "datetime"),
            field("Description", "textarea"),
        ]),
        _ => return None,
    }
    Some(v)
}

pub(super) fn system_dup_field(module: &str) -> &'static str {
    match module {
        "Accounts" => "Account_Name",
        "Deals" => "Deal_Name",
        _ => "Email",
    }
}

pub(super) fn field_json(f: &FieldDef) -> Value {
    let picks: Vec<Value> = f
        .picks
        .iter()
        .map(|p| json!({"display_value": p, "actual_value": p}))
        .collect();
    json!({
        "api_name": f.api, "data_type": f.ty, "length": f.len,
        "unique": {"casesensitive": if f.unique {"false"} else {"-1"}},
        "external": if f.external { json!({"show": true, "type": "user"}) } else { Value::Null },
        "read_only": f.read_only, "system_mandatory": f.mandatory,
        "pick_list_values": picks,
    })
}

/// Zoho's 400 for an unknown module.
pub(super) fn invalid_module(details: Value) -> Resp {
    err(
        400,
        "INVALID_MODULE",
        "the module name given seems to be invalid",
        details,
    )
}

/// The module named by a path segment, or Zoho's 400 for an unknown one.
pub(super) fn known_module(segment: &str) -> Result<(), Resp> {
    match schema(segment) {
        Some(_) => Ok(()),
        None => Err(invalid_module(json!({"resource_path_index": 0}))),
    }
}

/// `GET /crm/v8/settings/fields?module=X`.
pub(super) async fn fields(uri: Uri) -> Resp {
    let query = query(&uri);
    let module = query.get("module").map(String::as_str).unwrap_or("");
    match schema(module) {
        Some(fs) => Resp::ok(
            200,
            json!({"fields": fs.iter().map(field_json).collect::<Vec<_>>()}),
        ),
        None if module.is_empty() => err(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "module"}),
        ),
        None => invalid_module(json!({})),
    }
}

/// `GET /crm/v8/settings/modules`.
pub(super) async fn modules() -> Resp {
    Resp::ok(
        200,
        json!({"modules": MODULES.iter().map(|m| json!({"api_name": m, "module_name": m, "api_supported": true})).collect::<Vec<_>>()}),
    )
}
