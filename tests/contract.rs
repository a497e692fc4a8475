//! Contract tests: the JSON Schemas and their examples.

use crate::support::repo_path;

fn load(rel: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn schema_examples_validate_and_round_trip() {
    let schema = load("schemas/change-event.v1.json");
    let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
    let dir = repo_path("schemas/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("change-event") {
            continue;
        }
        let example = load(&format!("schemas/examples/{name}"));
        let errors: Vec<String> = validator
            .iter_errors(&example)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        let event: driftless::event::ChangeEvent =
            serde_json::from_value(example.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            example,
            "{name} round trip"
        );
        n += 1;
    }
    assert!(n >= 4, "expected at least 4 examples, found {n}");
}

#[test]
fn schema_rejects_malformed_events() {
    let schema = load("schemas/change-event.v1.json");
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let mut bad = load("schemas/examples/change-event.insert.json");
    bad["op"] = "x".into();
    assert!(!validator.is_valid(&bad));
    let mut bad = load("schemas/examples/change-event.insert.json");
    bad["source"]["lsn"] = "not-an-lsn".into();
    assert!(!validator.is_valid(&bad));
}

#[test]
fn config_schema_accepts_the_readme_example_and_the_docker_config() {
    for file in ["driftless.example.toml", "docker/driftless.toml"] {
        config_file_is_valid(file);
    }
}

fn config_file_is_valid(file: &str) {
    let schema = load("schemas/config.schema.json");
    let validator = jsonschema::draft202012::new(&schema).expect("config schema compiles");
    let text = std::fs::read_to_string(repo_path(file)).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    let json = serde_json::to_value(value).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{file}: {errors:?}");
    if let Err(problems) = driftless::config::parse(&text).unwrap().validate() {
        panic!("{file}: {problems:?}");
    }
}
