//! `[kafka.debezium]`: the settings of the `debezium` envelope, named after the Debezium
//! PostgreSQL connector properties they mirror.
//!
//! Owns their shape, defaults and validation. Invariant: the defaults are Debezium's own
//! (`decimal.handling.mode=precise`, `skipped.operations=t`), except `ts_ms = "commit"`, which
//! keeps re-sent events byte-identical (Debezium writes its processing time there).

use serde::Deserialize;

use super::Extra;
use super::validate::{Choice, Problems};

/// `[kafka.debezium]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct DebeziumConfig {
    /// `precise` (default), `string` or `double` (Debezium's `decimal.handling.mode`).
    pub(crate) decimal_handling_mode: Option<String>,
    /// Operations not written, of `c`, `u`, `d`, `t` (Debezium's `skipped.operations`;
    /// default `["t"]`, an empty list writes every operation).
    pub(crate) skipped_operations: Option<Vec<String>>,
    /// The envelope's `ts_ms`/`ts_us`/`ts_ns`: `commit` (default) or `processing`.
    pub(crate) ts_ms: Option<String>,
    /// Unknown keys.
    #[serde(flatten)]
    pub(crate) extra: Extra,
}

/// Debezium's `decimal.handling.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecimalMode {
    /// Base64 of the unscaled integer (Debezium's default).
    #[default]
    Precise,
    /// The decimal as a plain string.
    String,
    /// The decimal as a JSON number (may lose precision).
    Double,
}

/// What the envelope's top-level `ts_ms`, `ts_us` and `ts_ns` hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TsMode {
    /// The commit time (as `source.ts_ms`): re-sent events stay byte-identical.
    Commit,
    /// The time capture wrote the event (Debezium's behaviour).
    Processing,
}

impl Choice for TsMode {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("commit", Self::Commit), ("processing", Self::Processing)];
}

impl Choice for DecimalMode {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("precise", Self::Precise),
        ("string", Self::String),
        ("double", Self::Double),
    ];
}

/// The validated settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DebeziumOptions {
    /// Encoding of `numeric` and `money` values.
    pub(crate) decimal_mode: DecimalMode,
    /// Operations not written, by their envelope code (`c`, `u`, `d`, `t`).
    pub(crate) skipped: Vec<&'static str>,
    /// Top-level timestamps.
    pub(crate) ts: TsMode,
}

impl Default for DebeziumOptions {
    fn default() -> Self {
        DebeziumOptions {
            decimal_mode: DecimalMode::Precise,
            skipped: vec!["t"],
            ts: TsMode::Commit,
        }
    }
}

impl DebeziumOptions {
    /// True if events of the operation with this envelope code (`Op::code`) are not written.
    pub(crate) fn skips(&self, op_code: &str) -> bool {
        self.skipped.contains(&op_code)
    }
}

impl DebeziumConfig {
    /// Validates `[kafka.debezium]`.
    pub(super) fn validate(&self, p: &mut Problems) -> DebeziumOptions {
        p.unknown(
            "kafka.debezium",
            &self.extra,
            "decimal_handling_mode, skipped_operations, ts_ms",
        );
        let decimal_mode = p.choice(
            "kafka.debezium.decimal_handling_mode",
            self.decimal_handling_mode.as_deref(),
        );
        let ts = p.choice("kafka.debezium.ts_ms", self.ts_ms.as_deref());
        let skipped = match &self.skipped_operations {
            None => DebeziumOptions::default().skipped,
            Some(ops) => {
                let mut skipped = Vec::with_capacity(ops.len());
                for (i, op) in ops.iter().enumerate() {
                    let path = format!("kafka.debezium.skipped_operations[{i}]");
                    let ops = [("c", "c"), ("u", "u"), ("d", "d"), ("t", "t")];
                    if let Some(op) = p.one_of(path, Some(op.as_str()), &ops) {
                        skipped.push(op);
                    }
                }
                skipped
            }
        };
        DebeziumOptions {
            decimal_mode,
            skipped,
            ts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_debeziums_but_commit_time() {
        let mut p = Problems(Vec::new());
        let o = DebeziumConfig::default().validate(&mut p);
        assert!(p.0.is_empty());
        assert_eq!(o, DebeziumOptions::default());
        assert!(o.skips("t") && !o.skips("d"));
    }

    #[test]
    fn bad_values_are_reported_with_their_path() {
        let cfg: DebeziumConfig = toml::from_str(
            "decimal_handling_mode = \"exact\"\nskipped_operations = [\"t\", \"x\"]\nts = 1",
        )
        .unwrap();
        let mut p = Problems(Vec::new());
        let o = cfg.validate(&mut p);
        let paths: Vec<&str> = p.0.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "kafka.debezium.ts",
                "kafka.debezium.decimal_handling_mode",
                "kafka.debezium.skipped_operations[1]"
            ]
        );
        assert_eq!(o.skipped, ["t"]);
    }
}
