//! Field rules of a sink's mapping as the config states them: which column goes to which
//! property, with an optional transform and value map. Pure data, no encoding.
//!
//! Owns the vocabulary the config parses into and the sink and two-way engines apply.
//! Invariants: a rule names exactly one column and one property; a value map lists every
//! accepted value (values not listed are mapping errors downstream, never dropped silently).

use std::collections::BTreeMap;

/// A transform applied to a column's value before it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transform {
    /// Lower-case (e.g. e-mail addresses, which HubSpot matches case-insensitively).
    Lowercase,
    /// Upper-case.
    Uppercase,
    /// Strip surrounding whitespace.
    Trim,
    /// Trim, then lower-case: the form HubSpot stores a contact's `email` in. Not a config
    /// name: validation gives it to the `email` rule of every HubSpot contacts sink.
    EmailAddress,
}

impl Transform {
    /// Parses a config name.
    pub(crate) fn parse(name: &str) -> Option<Transform> {
        match name {
            "lowercase" => Some(Transform::Lowercase),
            "uppercase" => Some(Transform::Uppercase),
            "trim" => Some(Transform::Trim),
            _ => None,
        }
    }

    /// Applies the transform.
    pub(crate) fn apply(self, s: &str) -> String {
        match self {
            Transform::Lowercase => s.to_lowercase(),
            Transform::Uppercase => s.to_uppercase(),
            Transform::Trim => s.trim().to_string(),
            Transform::EmailAddress => s.trim().to_lowercase(),
        }
    }
}

/// One column → property rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRule {
    /// Source column.
    pub(crate) column: String,
    /// Destination property.
    pub(crate) property: String,
    /// Optional transform.
    pub(crate) transform: Option<Transform>,
    /// Optional value map (column value → property value); values not listed are errors.
    pub(crate) map: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
impl FieldRule {
    /// A plain `column = "property"` rule (no transform, no value map).
    pub(crate) fn new(column: &str, property: &str) -> Self {
        FieldRule {
            column: column.into(),
            property: property.into(),
            transform: None,
            map: None,
        }
    }
}
