//! Unit tests of the parent module: sections, defaults and problem paths.

use super::*;

const GOOD: &str = r#"
    [source]
    url_env = "DRIFTLESS_SOURCE_URL"
    slot = "driftless"
    publication = "driftless"
    tables = ["public.contacts", "public.companies"]
    snapshot = "initial"

    [kafka]
    brokers = "127.0.0.1:9092"
    topic_prefix = "driftless"
"#;

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(GOOD).unwrap().validate().unwrap();
    assert_eq!(c.tables.len(), 2);
    assert_eq!(c.tables[1].to_string(), "public.companies");
    assert_eq!(c.partitions, DEFAULT_PARTITIONS);
    assert_eq!(c.envelope, Envelope::Driftless);
    assert_eq!(
        c.topic_for("public", "contacts"),
        "driftless.public.contacts"
    );
    assert_eq!(
        c.source_url,
        SecretSource::Env("DRIFTLESS_SOURCE_URL".into())
    );
}

#[test]
fn every_problem_is_listed_with_its_path() {
    let text = r#"
        colour = "blue"
        [source]
        slot = "Bad-Slot"
        tables = ["contacts", "public.x", "public.x"]
        snapshot = "sometimes"
        status_interval_ms = 5
        typo = 1
        [kafka]
        envelope = "avro"
        partitions = 0
        librdkafka = { "enable.idempotence" = "false" }
        [capture]
        metrics_listen = "nowhere"
    "#;
    let problems = parse(text).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "colour",
        "source.typo",
        "source.url_env",
        "source.slot",
        "source.publication",
        "source.tables[0]",
        "source.tables[2]",
        "source.snapshot",
        "source.status_interval_ms",
        "kafka.brokers",
        "kafka.envelope",
        "kafka.partitions",
        "kafka.librdkafka.\"enable.idempotence\"",
        "capture.metrics_listen",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
    assert_eq!(problems.len(), 14, "{problems:#?}");
}

#[test]
fn an_existing_publication_is_altered_only_when_the_config_says_so() {
    let c = parse(GOOD).unwrap().validate().unwrap();
    assert!(!c.manage_publication, "off by default");
    let text = GOOD.replace("snapshot = ", "manage_publication = true\n    snapshot = ");
    assert!(parse(&text).unwrap().validate().unwrap().manage_publication);
    let text = GOOD.replace(
        "snapshot = ",
        "manage_publication = \"yes\"\n    snapshot = ",
    );
    let e = parse(&text).unwrap_err();
    assert!(e.contains("manage_publication"), "{e}");
}

#[test]
fn missing_sections_are_reported() {
    let problems = parse("").unwrap().validate().unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["source", "kafka"]);
}

#[test]
fn safety_critical_producer_options_cannot_be_overridden() {
    let text = format!(
        "{GOOD}\n[kafka.librdkafka]\npartitioner = \"random\"\n\"acks_env\" = \"X\"\n\
         \"security.protocol\" = \"ssl\"\n"
    );
    let problems = parse(&text).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "kafka.librdkafka.\"acks_env\"",
            "kafka.librdkafka.\"partitioner\""
        ]
    );
}

#[test]
fn url_from_env_and_file_are_exclusive() {
    let text = GOOD.replace("url_env", "url_file = \"/x\"\nurl_env");
    let problems = parse(&text).unwrap().validate().unwrap_err();
    assert_eq!(problems[0].path, "source.url_env");
}

#[test]
fn the_sink_ledgers_live_in_the_source_database_unless_state_names_another() {
    let c = parse(GOOD).unwrap().validate().unwrap();
    assert_eq!(c.state_url, c.source_url);
    let text = format!("{GOOD}\n[state]\nurl_env = \"DRIFTLESS_STATE_URL\"\n");
    let c = parse(&text).unwrap().validate().unwrap();
    assert_eq!(c.state_url, SecretSource::Env("DRIFTLESS_STATE_URL".into()));
    let text = format!("{GOOD}\n[state]\nurl_env = \"not a name\"\nurl_fil = \"/x\"\n");
    let problems = parse(&text).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["state.url_fil", "state.url_env"], "{problems:?}");
}

#[test]
fn secret_librdkafka_options_are_only_accepted_from_the_environment() {
    let text = format!(
        "{GOOD}\n[kafka.librdkafka]\n\"sasl.password\" = \"hunter2\"\n\
         \"ssl.key.password\" = \"k\"\n\"ssl.keystore.password\" = \"k\"\n\
         \"sasl.oauthbearer.client.secret\" = \"s\"\n\"ssl.key.pem\" = \"-----BEGIN\"\n\
         \"ssl_key\" = \"k\"\n\"sasl.username\" = \"driftless\"\n"
    );
    let problems = parse(&text).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "kafka.librdkafka.\"sasl.oauthbearer.client.secret\"",
            "kafka.librdkafka.\"sasl.password\"",
            "kafka.librdkafka.\"ssl.key.password\"",
            "kafka.librdkafka.\"ssl.key.pem\"",
            "kafka.librdkafka.\"ssl.keystore.password\"",
            "kafka.librdkafka.\"ssl_key\"",
        ]
    );
    assert!(
        problems[1]
            .message
            .contains("\"sasl.password_env\" = \"VAR\""),
        "{}",
        problems[1].message
    );
    assert!(
        problems.iter().all(|p| !p.message.contains("hunter2")),
        "a problem never repeats the secret"
    );

    let text = format!(
        "{GOOD}\n[kafka.librdkafka]\n\"sasl.password_env\" = \"KAFKA_PASSWORD\"\n\
         \"ssl.key.password_env\" = \"not a name\"\n"
    );
    let problems = parse(&text).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["kafka.librdkafka.\"ssl.key.password_env\""]);
    let text = format!("{GOOD}\n[kafka.librdkafka]\n\"sasl.password_env\" = \"KAFKA_PASSWORD\"\n");
    let c = parse(&text).unwrap().validate().unwrap();
    assert_eq!(c.librdkafka["sasl.password_env"], "KAFKA_PASSWORD");
}

#[test]
fn a_secret_file_is_read_whatever_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("url");
    std::fs::write(&path, "postgres://u:p@h/db\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Group- and world-readable: read (with a warning naming the file, see `files`).
    let source = SecretSource::File(path.clone());
    assert_eq!(source.read().unwrap(), "postgres://u:p@h/db");
    assert_eq!(crate::files::loose_permissions(&path), Some(0o644));
}

#[test]
fn an_audit_trail_needs_a_key_env() {
    const SINK: &str = "\n[[sinks]]\nname = \"hook\"\nkind = \"webhook\"\n\
        table = \"public.contacts\"\nurl = \"https://x.io/h\"\nsecret_env = \"HOOK_SECRET\"\n";
    let problems = parse(&format!("{GOOD}{SINK}"))
        .unwrap()
        .validate()
        .unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["audit.key_env"], "{problems:?}");
    assert!(problems[0].message.contains("HMAC"), "{problems:?}");
    let with = format!("{GOOD}\n[audit]\nkey_env = \"AUDIT_KEY\"\n{SINK}");
    let c = parse(&with).unwrap().validate().unwrap();
    assert_eq!(c.audit_key_env.as_deref(), Some("AUDIT_KEY"));
    let off = format!("{GOOD}\n[audit]\nto = \"off\"\n{SINK}");
    assert!(
        parse(&off)
            .unwrap()
            .validate()
            .unwrap()
            .audit_key_env
            .is_none()
    );
    let bad = format!("{GOOD}\n[audit]\nkey_env = \"not a name\"\n{SINK}");
    let problems = parse(&bad).unwrap().validate().unwrap_err();
    assert_eq!(problems[0].path, "audit.key_env", "{problems:?}");
    // Without sinks there is no audit trail to key.
    assert!(parse(GOOD).unwrap().validate().is_ok());
}

#[test]
fn tables_that_cannot_name_a_kafka_topic_are_refused() {
    let long = "a".repeat(63);
    let table = |t: &str, prefix: &str| {
        GOOD.replace(
            "tables = [\"public.contacts\", \"public.companies\"]",
            &format!("tables = [\"public.contacts\", \"public.companies\", {t:?}]"),
        )
        .replace(
            "topic_prefix = \"driftless\"",
            &format!("topic_prefix = {prefix:?}"),
        )
    };
    let refused = |text: String| {
        let problems = parse(&text).unwrap().validate().unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "source.tables[2]", "{problems:?}");
        problems[0].message.clone()
    };
    for name in ["public.kontakté", "public.price$list", "public.客户"] {
        let m = refused(table(name, "driftless"));
        assert!(m.contains("[A-Za-z0-9._-]"), "{name}: {m}");
    }
    // Spaces and over-long names are not even identifiers driftless accepts.
    refused(table("public.my contacts", "driftless"));
    refused(table(&format!("public.{}", "b".repeat(250)), "driftless"));
    // 63 + 63 characters of names fit, but not after a 130-character prefix (250 in all).
    let fits = table(&format!("{long}.{long}"), "driftless");
    assert!(parse(&fits).unwrap().validate().is_ok());
    let m = refused(table(&format!("{long}.{long}"), &"p".repeat(122)));
    assert!(m.contains("250 characters, over Kafka's 249"), "{m}");
    let at_limit = table(&format!("{long}.{long}"), &"p".repeat(121));
    assert!(parse(&at_limit).unwrap().validate().is_ok());
}

#[test]
fn the_debezium_envelope_is_refused_with_sinks_that_read_driftless_events() {
    const SINK: &str = "\n[audit]\nto = \"off\"\n[[sinks]]\nname = \"hook\"\nkind = \"webhook\"\n\
        table = \"public.contacts\"\nurl = \"https://x.io/h\"\nsecret_env = \"HOOK_SECRET\"\n";
    let debezium = GOOD.replace(
        "topic_prefix = ",
        "envelope = \"debezium\"\n    topic_prefix = ",
    );
    assert!(
        parse(&debezium).unwrap().validate().is_ok(),
        "capture alone"
    );
    let problems = parse(&format!("{debezium}{SINK}"))
        .unwrap()
        .validate()
        .unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["kafka.envelope"], "{problems:?}");
    assert!(parse(&format!("{GOOD}{SINK}")).unwrap().validate().is_ok());
}
