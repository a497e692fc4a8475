//! The layering of `src/`, as a test: every `crate::` path points down.
//!
//! Order, top to bottom: app → destinations → sync → sink → capture → {kafka, postgres,
//! pgoutput} → {event, checkpoint} → {config, pgtype, error, lsn, cli} → files. A module may use its
//! own submodules and any module of a lower layer, never one of its own layer or above. On top
//! of that: rdkafka is named only under `src/kafka`, and the engines (`sink`, `sync`) name no
//! destination. Doc comments are left out: a link upward explains, it does not depend.

use std::path::{Path, PathBuf};

/// The layer of each top-level module (higher uses lower).
const LAYERS: &[(&str, u8)] = &[
    ("app", 9),
    ("destinations", 8),
    ("sync", 7),
    ("sink", 6),
    ("capture", 5),
    ("kafka", 4),
    ("postgres", 4),
    ("pgoutput", 4),
    ("event", 3),
    ("checkpoint", 3),
    ("config", 1),
    ("pgtype", 1),
    ("error", 1),
    ("lsn", 1),
    ("cli", 1),
    ("files", 0),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (line comments and doc comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `(file, offending name)` in `src/` under the rules above.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut out = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let top = rel.split(['/', '.']).next().unwrap().to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let own = layer(&top).unwrap_or_else(|| panic!("{rel}: module {top} has no layer"));
        let code = code(&std::fs::read_to_string(&file).unwrap());
        for (at, _) in code.match_indices("crate::") {
            let used: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if used != top && layer(&used).is_some_and(|l| l >= own) {
                out.push(format!("{rel}: {top} uses crate::{used}"));
            }
        }
        if top != "kafka" && code.contains("rdkafka::") {
            out.push(format!("{rel}: rdkafka outside src/kafka"));
        }
        if matches!(top.as_str(), "sink" | "sync") {
            for vendor in ["hubspot", "zoho", "webhook"] {
                if code.contains(&format!("destinations::{vendor}")) {
                    out.push(format!("{rel}: engine {top} names destination {vendor}"));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_import_in_src_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "upward imports:\n{}", found.join("\n"));
}

#[test]
fn an_upward_import_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(
        config.join("mod.rs"),
        "/// See [`crate::sink`].\nuse crate::sink::mapping::Property;\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sink.rs"),
        "use crate::config::fields::FieldRule;\nuse rdkafka::Message;\n",
    )
    .unwrap();
    assert_eq!(
        violations(dir.path()),
        vec![
            "config/mod.rs: config uses crate::sink".to_string(),
            "sink.rs: rdkafka outside src/kafka".to_string(),
        ]
    );
}
