//! The bad-input suite: hostile inputs at every entry point, each with the clear outcome it
//! must get and proof that nothing else was lost. One test per entry point, each a table of
//! rows run in a loop (the row's `input` names it in failures).
//!
//! | Input | Enters at | Outcome | Test |
//! |---|---|---|---|
//! | zero, negative, absurd durations and sizes; unknown keys; wrong types | config file | exit 2, every problem with its field path (types: the parser's line and key) | [`hostile_config_values_are_refused_with_their_field_paths`] |
//! | table names with quotes, spaces, unicode, `$`, 64+ bytes, topics over 249 | `source.tables[i]` | refused with the reason | same |
//! | URLs with userinfo, `http` to a remote host, `javascript:`, spaces, 2 kB+ | CRM `base_url`, `oauth.token_url`, webhook `url` | refused with the field path | same |
//! | column names with quotes, spaces, unicode, `$`, 63 bytes | a captured table | the exact names in the Kafka JSON, then a sentinel | [`hostile_column_names_arrive_exactly`] |
//! | a 20 MB row | capture | `oversize = "fail"`: exit 1 with the `kafka.oversize` hint; `dead_letter`: position and size on `{prefix}.dlq.capture`, the next change arrives | [`a_20_mb_row_fails_capture_or_is_dead_lettered`] |
//! | numeric `NaN`, `Infinity`, `-Infinity` | a HubSpot number property | dead-lettered (reason without the value), later rows written | [`hostile_values_between_postgres_and_hubspot`] |
//! | bytea of invalid UTF-8 | a HubSpot text property | its base64 text, as capture renders bytea | same |
//! | a CRM value with `\u0000` | two-way inbound to a text column | dead-lettered with SQLSTATE 22021/22P05, sync goes on | same |
//! | numeric `NaN`, `Infinity` | a Zoho `double` field | dead-lettered, later rows written | [`hostile_numbers_into_zoho_are_dead_lettered`] |
//! | a 3 MB body; signatures missing, short, not base64, stale, over another body | the HubSpot receiver | 413 / 401, counted, nothing queued, a later signed delivery applied | [`hostile_deliveries_to_the_hubspot_receiver_are_refused`] |
//! | a 3 MB body; a missing or wrong channel token | the Zoho receiver | 413 / 401, counted, a later notification applied | [`hostile_deliveries_to_the_zoho_receiver_are_refused`] |
//! | a token endpoint answering HTML (200, 502) | a Zoho sink's OAuth refresh | 200: exit 1, 502: retried; the error names endpoint, status and content type, never the page; the row arrives (nothing acknowledged before) | [`a_token_endpoint_answering_html_is_named_and_nothing_is_lost`]; 404 and 503 in the unit test `a_token_endpoint_answering_html_is_named_and_classified` (`src/destinations/oauth.rs`) |
//!
//! NUL bytes reach driftless only from a CRM: Postgres `text` cannot hold one, so capture
//! never sees it; `jsonb` refuses `\u0000` at insert.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::kafka::read_n;
use crate::support::two_way::{Crm, HUBSPOT_SECRET, Options, TwoWay};
use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Config: `driftless check` refuses the file (exit 2) before touching anything.

/// One hostile config: the base config with `tables`, extra `[source]` / `[kafka]` lines and
/// sinks; the problem must be reported at `path` with `expect` in its message.
struct ConfigRow {
    input: &'static str,
    tables: &'static str,
    source: &'static str,
    kafka: &'static str,
    sinks: &'static str,
    path: &'static str,
    expect: &'static str,
}

const ROW: ConfigRow = ConfigRow {
    input: "",
    tables: r#""public.contacts""#,
    source: "",
    kafka: "",
    sinks: "",
    path: "",
    expect: "",
};

/// A HubSpot sink whose `base_url` is the `{url}` placeholder.
const HUBSPOT_SINK: &str = r#"
[[sinks]]
name = "crm"
kind = "hubspot"
table = "public.contacts"
object = "contacts"
id_property = "email"
token_env = "HUBSPOT_TOKEN"
base_url = "{url}"
[sinks.fields]
email = "email"
"#;

fn config_text(r: &ConfigRow, long: &str) -> String {
    let sinks = r.sinks.replace("{long}", long);
    format!(
        "[source]\nurl_env = \"DRIFTLESS_SOURCE_URL\"\nslot = \"s\"\npublication = \"p\"\n\
         tables = [{tables}]\n{source}\n[kafka]\nbrokers = \"127.0.0.1:9092\"\n{kafka}\n\
         [audit]\nkey_env = \"AUDIT_KEY\"\n{sinks}",
        tables = r.tables.replace("{long}", long),
        source = r.source.replace("{long}", long),
        kafka = r.kafka.replace("{long}", long),
    )
}

/// Runs `driftless check` on `text`: (exit code, stderr).
fn check(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("driftless.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_rows() -> Vec<ConfigRow> {
    let url = |input, url: &'static str, expect| ConfigRow {
        input,
        sinks: Box::leak(HUBSPOT_SINK.replace("{url}", url).into_boxed_str()),
        path: "sinks[0].base_url",
        expect,
        ..ROW
    };
    vec![
        ConfigRow {
            input: "status interval of 0 ms",
            source: "status_interval_ms = 0",
            path: "source.status_interval_ms",
            expect: "between 10 and 30000",
            ..ROW
        },
        ConfigRow {
            input: "absurd status interval",
            source: "status_interval_ms = 9223372036854775807",
            path: "source.status_interval_ms",
            expect: "between 10 and 30000",
            ..ROW
        },
        ConfigRow {
            input: "heartbeat of 1 ms",
            source: "heartbeat_interval_ms = 1",
            path: "source.heartbeat_interval_ms",
            expect: "at least 100",
            ..ROW
        },
        ConfigRow {
            input: "snapshot chunks of 0 rows",
            source: "snapshot_chunk_rows = 0",
            path: "source.snapshot_chunk_rows",
            expect: "at least 1",
            ..ROW
        },
        ConfigRow {
            input: "max_event_bytes of 0",
            kafka: "max_event_bytes = 0",
            path: "kafka.max_event_bytes",
            expect: "must be 1 to",
            ..ROW
        },
        ConfigRow {
            input: "absurd max_event_bytes",
            kafka: "max_event_bytes = 9223372036854775807",
            path: "kafka.max_event_bytes",
            expect: "message.max.bytes",
            ..ROW
        },
        ConfigRow {
            input: "negative partitions",
            kafka: "partitions = -1",
            path: "kafka.partitions",
            expect: "between 1 and 10000",
            ..ROW
        },
        ConfigRow {
            input: "message.max.bytes not a number",
            kafka: "librdkafka = { \"message.max.bytes\" = \"lots\" }",
            path: "kafka.librdkafka.\"message.max.bytes\"",
            expect: "whole number",
            ..ROW
        },
        ConfigRow {
            input: "unknown key",
            kafka: "max_event_byte = 10",
            path: "kafka.max_event_byte",
            expect: "unknown key",
            ..ROW
        },
        ConfigRow {
            input: "absurd batch wait",
            sinks: r#"
[[sinks]]
name = "crm"
kind = "hubspot"
table = "public.contacts"
object = "contacts"
id_property = "email"
token_env = "HUBSPOT_TOKEN"
batch_max_wait_ms = 9223372036854775807
[sinks.fields]
email = "email"
"#,
            path: "sinks[0].batch_max_wait_ms",
            expect: "at most 60000",
            ..ROW
        },
        ConfigRow {
            input: "webhook timeout of 0 ms",
            sinks: r#"
[[sinks]]
name = "hook"
kind = "webhook"
table = "public.contacts"
url = "https://example.com/hook"
secret_env = "HOOK_SECRET"
timeout_ms = 0
"#,
            path: "sinks[0].timeout_ms",
            expect: "between 1 and",
            ..ROW
        },
        // Wrong types and negative unsigned values are refused by the TOML parser, which names
        // the line and shows the key.
        ConfigRow {
            input: "negative duration (wrong type)",
            source: "status_interval_ms = -5",
            path: "status_interval_ms = -5",
            expect: "expected u64",
            ..ROW
        },
        ConfigRow {
            input: "a string for a number",
            kafka: "partitions = \"three\"",
            path: "partitions = \"three\"",
            expect: "invalid type",
            ..ROW
        },
        ConfigRow {
            input: "table name with a quote",
            tables: r#""public.o'brien""#,
            path: "source.tables[0]",
            expect: "is not \"schema.table\"",
            ..ROW
        },
        ConfigRow {
            input: "table name with a double quote",
            tables: r#""public.\"odd\"""#,
            path: "source.tables[0]",
            expect: "is not \"schema.table\"",
            ..ROW
        },
        ConfigRow {
            input: "table name with a space",
            tables: r#""public.two words""#,
            path: "source.tables[0]",
            expect: "is not \"schema.table\"",
            ..ROW
        },
        ConfigRow {
            input: "table name in unicode",
            tables: r#""public.kontakté""#,
            path: "source.tables[0]",
            expect: "may only use [A-Za-z0-9._-]",
            ..ROW
        },
        ConfigRow {
            input: "table name with $",
            tables: r#""public.contacts$2""#,
            path: "source.tables[0]",
            expect: "may only use [A-Za-z0-9._-], not '$'",
            ..ROW
        },
        ConfigRow {
            input: "table name of 64 bytes",
            tables: r#""public.{long}x""#,
            path: "source.tables[0]",
            expect: "is not \"schema.table\"",
            ..ROW
        },
        ConfigRow {
            input: "topic name over 249 characters",
            tables: r#""{long}.{long}""#,
            kafka: "topic_prefix = \"{long}{long}\"",
            path: "source.tables[0]",
            expect: "over Kafka's 249",
            ..ROW
        },
        url(
            "URL with a user and password",
            "https://admin:hunter2@crm.example.com",
            "must not carry a user name or password",
        ),
        url(
            "plain http to a remote host",
            "http://crm.example.com",
            "must be https",
        ),
        url(
            "javascript: URL",
            "javascript:alert(1)",
            "must be an http(s) URL with a host",
        ),
        url(
            "URL with a space in the host",
            "https://crm example.com",
            "must be an http(s) URL with a host",
        ),
        url(
            "URL over 2048 characters",
            "https://crm.example.com/{long}{long}{long}{long}{long}{long}{long}{long}{long}\
             {long}{long}{long}{long}{long}{long}{long}{long}{long}{long}{long}{long}{long}\
             {long}{long}{long}{long}{long}{long}{long}{long}{long}{long}{long}",
            "longer than 2048 characters",
        ),
        ConfigRow {
            input: "token endpoint over plain http",
            sinks: r#"
[[sinks]]
name = "crm"
kind = "zoho"
table = "public.contacts"
module = "Leads"
id_property = "Email"
[sinks.fields]
email = "Email"
[sinks.oauth]
client_id_env = "ZOHO_CLIENT_ID"
client_secret_env = "ZOHO_CLIENT_SECRET"
refresh_token_env = "ZOHO_REFRESH_TOKEN"
token_url = "http://accounts.zoho.eu/oauth/v2/token"
"#,
            path: "sinks[0].oauth.token_url",
            expect: "must be https",
            ..ROW
        },
        ConfigRow {
            input: "webhook URL with userinfo",
            sinks: r#"
[[sinks]]
name = "hook"
kind = "webhook"
table = "public.contacts"
url = "https://user:pw@example.com/hook"
secret_env = "HOOK_SECRET"
"#,
            path: "sinks[0].url",
            expect: "must not carry a user name or password",
            ..ROW
        },
    ]
}

#[test]
fn hostile_config_values_are_refused_with_their_field_paths() {
    // 63 bytes: the longest Postgres identifier.
    let long = "a".repeat(63);
    let rows = config_rows();
    for r in &rows {
        let (code, err) = check(&config_text(r, &long));
        assert_eq!(code, Some(2), "{}: exit code\n{err}", r.input);
        let at = err
            .find(r.path)
            .unwrap_or_else(|| panic!("{}: {} missing in:\n{err}", r.input, r.path));
        assert!(
            err[at..].contains(r.expect),
            "{}: {:?} missing after {} in:\n{err}",
            r.input,
            r.expect,
            r.path
        );
        assert!(!err.contains("hunter2"), "{}: the password echoed", r.input);
    }
    // All the validation rows at once: one error listing every problem.
    let mut sinks = rows
        .iter()
        .filter(|r| r.path.starts_with("sinks[0].base_url"));
    let mut text = config_text(
        &ConfigRow {
            tables: r#""public.o'brien", "public.contacts$2", "public.contacts""#,
            source: "status_interval_ms = 0\nsnapshot_chunk_rows = 0",
            kafka: "max_event_bytes = 0\npartitions = -1\nmax_event_byte = 10",
            ..ROW
        },
        &long,
    );
    text.push_str(
        &sinks
            .next_back()
            .map_or("", |r| r.sinks)
            .replace("{long}", &long),
    );
    let (code, err) = check(&text);
    assert_eq!(code, Some(2), "{err}");
    for path in [
        "source.tables[0]",
        "source.tables[1]",
        "source.status_interval_ms",
        "source.snapshot_chunk_rows",
        "kafka.max_event_bytes",
        "kafka.partitions",
        "kafka.max_event_byte",
        "sinks[0].base_url",
    ] {
        assert!(err.contains(path), "{path} missing in:\n{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Names: a captured table whose columns have hostile (but legal) names.

#[tokio::test(flavor = "multi_thread")]
async fn hostile_column_names_arrive_exactly() {
    let long = format!("c{}", "é".repeat(31));
    assert_eq!(long.len(), 63, "the longest Postgres identifier");
    let names = [
        "o'brien",
        "say \"hi\"",
        "two words",
        "ünïcødé ✓",
        "$dollar",
        "MixedCase",
        long.as_str(),
    ];
    let columns: Vec<String> = names
        .iter()
        .map(|n| format!("\"{}\" text", n.replace('"', "\"\"")))
        .collect();
    let (db, setup, mut cap) = capture_streaming(
        "bad_names",
        &format!(
            "CREATE TABLE names (id int PRIMARY KEY, {})",
            columns.join(", ")
        ),
        &["public.names"],
    )
    .await;
    let quoted: Vec<String> = names
        .iter()
        .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
        .collect();
    let values: Vec<String> = (0..names.len()).map(|i| format!("'v{i}'")).collect();
    db.exec(&format!(
        "INSERT INTO names (id, {}) VALUES (1, {}); INSERT INTO names (id) VALUES (2)",
        quoted.join(", "),
        values.join(", ")
    ))
    .await;
    let records = read_n(&setup.topic("public.names"), 2, WAIT);
    let mut rows: Vec<Value> = records.iter().map(|r| r.json()["after"].clone()).collect();
    rows.sort_by_key(|r| r["id"].as_i64());
    assert_eq!(rows.len(), 2, "the row and the sentinel");
    let after = &rows[0];
    for (i, n) in names.iter().enumerate() {
        assert_eq!(after[*n], json!(format!("v{i}")), "column {n:?} in {after}");
    }
    assert_eq!(after.as_object().unwrap().len(), names.len() + 1, "{after}");
    assert_eq!(rows[1]["id"], 2, "the sentinel");
    stop_cleanly(&mut cap, db).await;
}

// ---------------------------------------------------------------------------------------------
// A 20 MB row, with the default max_event_bytes (the producer's message.max.bytes, 1,000,000).

#[tokio::test(flavor = "multi_thread")]
async fn a_20_mb_row_fails_capture_or_is_dead_lettered() {
    const ROW_20_MB: &str = "INSERT INTO docs VALUES (1, repeat('x', 20 * 1024 * 1024))";
    for oversize in ["fail", "dead_letter"] {
        let (db, setup, mut cap) = capture_streaming_with(
            &format!("big_{oversize}"),
            "CREATE TABLE docs (id bigint PRIMARY KEY, body text)",
            &["public.docs"],
            "",
            &format!("oversize = \"{oversize}\""),
        )
        .await;
        db.exec(ROW_20_MB).await;
        db.exec("INSERT INTO docs VALUES (2, 'small')").await;
        if oversize == "fail" {
            let code = cap.wait_exit(WAIT);
            let log = cap.log_text();
            assert_eq!(code, Some(1), "a fatal error (README exit codes)\n{log}");
            assert!(
                log.contains("over kafka.max_event_bytes (1000000)")
                    && log.contains("kafka.oversize"),
                "the specific hint\n{log}"
            );
            assert!(!log.contains("xxxxxxxx"), "no row value in the log");
            assert_eq!(
                topic_len(&setup.topic("public.docs")),
                0,
                "nothing skipped past the big row"
            );
            db.drop_db().await;
            continue;
        }
        let records = read_n(&setup.topic("public.docs"), 1, WAIT);
        assert_eq!(records[0].json()["after"]["id"], 2, "the sentinel");
        let dead = read_n(&format!("{}.dlq.capture", setup.prefix), 1, WAIT);
        let d = dead[0].json();
        assert_eq!(d["reason"], "oversize", "{d}");
        assert_eq!(d["max_event_bytes"], 1_000_000);
        assert!(d["size_bytes"].as_u64().unwrap() > 20 * 1024 * 1024, "{d}");
        assert!(d["lsn"].as_str().is_some_and(|l| l.contains('/')), "{d}");
        assert!(dead[0].payload.as_ref().unwrap().len() < 1024, "no values");
        stop_cleanly(&mut cap, db).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Values between Postgres and HubSpot (two-way sink: outbound and inbound in one run).

/// The dead letters of the sink once `n` arrived.
fn dead_letters(t: &TwoWay, n: usize) -> Vec<Record> {
    let letters = read_n(&t.dead_letter_topic(), n, WAIT);
    assert_eq!(letters.len(), n, "{letters:?}");
    letters
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_values_between_postgres_and_hubspot() {
    let t = TwoWay::start_with(
        Crm::Hubspot,
        Options {
            columns: ", revenue numeric, blob bytea",
            fields: "revenue = \"annualrevenue\"\nblob = \"lastname\"",
            ..Options::default()
        },
    )
    .await;
    t.insert_samples(1).await;
    t.wait_in_sync("the first row").await;
    // Outbound: each hostile value in a row of its own, then a good row (the sentinel).
    let rows = [
        ("NaN", "'NaN'::numeric", None),
        ("Infinity", "'Infinity'::numeric", None),
        ("-Infinity", "'-Infinity'::numeric", None),
        // bytea is base64 in events (capture), so invalid UTF-8 arrives as well-defined text.
        (
            "bytea of invalid UTF-8",
            "NULL",
            Some(("'\\xfffe00c3'::bytea", "//4Aww==")),
        ),
    ];
    for (k, (input, revenue, blob)) in rows.iter().enumerate() {
        let key = k as i64 + 10;
        let blob_sql = blob.map_or("NULL", |b| b.0);
        t.db.exec(&format!(
            "INSERT INTO contacts (id, email, first_name, lifecycle, revenue, blob) \
             VALUES ({key}, 'h{key}@example.com', '{input}', 'lead', {revenue}, {blob_sql})"
        ))
        .await;
    }
    t.db.exec(
        "INSERT INTO contacts (id, email, first_name, lifecycle, revenue) \
         VALUES (20, 'good@example.com', 'Good', 'lead', 12.5)",
    )
    .await;
    eventually("the good row reached HubSpot", WAIT, || async {
        t.crm_records().await.contains_key(&20)
    })
    .await;
    let letters = dead_letters(&t, 3);
    let records = t.crm_records().await;
    for (k, (input, _, blob)) in rows.iter().enumerate() {
        let key = k as i64 + 10;
        match blob {
            None => assert!(!records.contains_key(&key), "{input}: not written"),
            Some((_, text)) => {
                let id = key.to_string();
                let state = t.emulator.state().await;
                let rec = state["objects"]["contacts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["properties"]["pg_external_id"] == id.as_str())
                    .unwrap_or_else(|| panic!("{input}: written"));
                assert_eq!(rec["properties"]["lastname"], *text, "{input}: {rec}");
            }
        }
    }
    for l in &letters {
        let text = format!("{:?}", l.headers);
        assert!(
            text.contains("annualrevenue") && text.contains("finite number"),
            "the reason names the property: {text}"
        );
        assert!(
            !text.contains("NaN") && !text.contains("Infinity"),
            "{text}"
        );
    }
    // Inbound: a CRM value with a NUL byte cannot be Postgres text.
    t.edit_in_crm(1, json!({"firstname": "nul\u{0}byte"})).await;
    t.inbound_sentinel(20).await;
    t.outbound_sentinel(20).await;
    let letters = dead_letters(&t, 4);
    let inbound = letters
        .iter()
        .find(|l| l.headers.contains_key("driftless-sqlstate"))
        .expect("the inbound dead letter");
    let h = &inbound.headers;
    assert!(
        ["22021", "22P05"].contains(&h["driftless-sqlstate"].as_str()),
        "{h:?}"
    );
    assert_eq!(h["driftless-error-category"], "POSTGRES_DATA_EXCEPTION");
    assert!(inbound.payload.is_none(), "no values");
    assert_eq!(
        t.postgres().await[&1][1],
        "K1",
        "the NUL value was not written"
    );
    assert!(!t.log().contains("nul\u{0}byte") && !t.log().contains("nul\\u0000byte"));
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_numbers_into_zoho_are_dead_lettered() {
    let t = TwoWay::start_with(
        Crm::Zoho,
        Options {
            columns: ", revenue numeric",
            fields: "revenue = \"Annual_Revenue\"",
            ..Options::default()
        },
    )
    .await;
    for (key, value) in [(10, "NaN"), (11, "Infinity"), (12, "-Infinity")] {
        t.db.exec(&format!(
            "INSERT INTO leads (id, email, last_name, revenue) \
             VALUES ({key}, 'z{key}@example.com', 'Z', '{value}'::numeric)"
        ))
        .await;
    }
    t.db.exec(
        "INSERT INTO leads (id, email, last_name, revenue) \
         VALUES (20, 'good@example.com', 'Good', 12.5)",
    )
    .await;
    eventually("the good row reached Zoho", WAIT, || async {
        t.crm_records().await.contains_key(&20)
    })
    .await;
    let letters = dead_letters(&t, 3);
    let records = t.crm_records().await;
    for key in [10, 11, 12] {
        assert!(!records.contains_key(&key), "{key}: not written");
    }
    for l in &letters {
        let text = format!("{:?}", l.headers);
        assert!(text.contains("Annual_Revenue"), "{text}");
        assert!(
            !text.contains("NaN") && !text.contains("Infinity"),
            "{text}"
        );
    }
    t.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Deliveries to the receivers.

/// The number of refused deliveries the worker logged.
fn refusals(t: &TwoWay) -> usize {
    t.log().matches(" refused: ").count()
}

/// Posts `body` with `headers` to the worker's receiver; returns the status.
async fn deliver(t: &TwoWay, headers: &[(&str, String)], body: Vec<u8>) -> u16 {
    let mut req = http()
        .post(format!(
            "http://127.0.0.1:{}/hooks/{}",
            t.hook_port,
            t.crm.kind()
        ))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.unwrap().status().as_u16()
}

/// A hostile delivery: what it is, its headers, its body and the status it must get.
type Delivery = (&'static str, Vec<(&'static str, String)>, Vec<u8>, u16);

/// A HubSpot delivery body: a property change of `object_id`.
fn hubspot_event(object_id: &str, event_id: i64) -> Vec<u8> {
    json!([{
        "eventId": event_id, "subscriptionId": 1, "portalId": 1, "appId": 1,
        "occurredAt": chrono::Utc::now().timestamp_millis(),
        "subscriptionType": "contact.propertyChange", "attemptNumber": 0,
        "objectId": object_id.parse::<i64>().unwrap(),
        "propertyName": "firstname", "propertyValue": "x", "changeSource": "CRM_UI"
    }])
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_deliveries_to_the_hubspot_receiver_are_refused() {
    use driftless_emulators::hubspot::signature::sign_v3;
    let t = TwoWay::start(Crm::Hubspot, crate::support::two_way::RECONCILE_OFF).await;
    t.insert_samples(1).await;
    t.wait_in_sync("the first row").await;
    let crm_id = t.crm_records().await[&1].0.clone();
    let uri = format!("http://127.0.0.1:{}/hooks/hubspot", t.hook_port);
    let now = chrono::Utc::now().timestamp_millis();
    let body = hubspot_event(&crm_id, 9_000_001);
    let good = sign_v3(HUBSPOT_SECRET, "POST", &uri, &body, now);
    let sig = |s: String, ts: i64| {
        vec![
            ("x-hubspot-signature-v3", s),
            ("x-hubspot-request-timestamp", ts.to_string()),
        ]
    };
    let mut big = b"[".to_vec();
    big.resize(3 * 1024 * 1024, b' ');
    let big_sig = sign_v3(HUBSPOT_SECRET, "POST", &uri, &big, now);
    let other = hubspot_event(&crm_id, 9_000_002);
    let rows: Vec<Delivery> = vec![
        ("a 3 MB body (signed)", sig(big_sig, now), big, 413),
        ("no signature", vec![], body.clone(), 401),
        (
            "timestamp without signature",
            vec![("x-hubspot-request-timestamp", now.to_string())],
            body.clone(),
            401,
        ),
        (
            "a short signature",
            sig(good[..10].to_string(), now),
            body.clone(),
            401,
        ),
        (
            "not base64",
            sig("%%%not-base64%%%".into(), now),
            body.clone(),
            401,
        ),
        (
            "a hex signature",
            sig(hex_of(&good), now),
            body.clone(),
            401,
        ),
        (
            "a stale timestamp",
            sig(
                sign_v3(HUBSPOT_SECRET, "POST", &uri, &body, now - 10 * 60_000),
                now - 10 * 60_000,
            ),
            body.clone(),
            401,
        ),
        (
            "signed over another body",
            sig(good.clone(), now),
            other,
            401,
        ),
        (
            "a timestamp that is not a number",
            vec![
                ("x-hubspot-signature-v3", good.clone()),
                ("x-hubspot-request-timestamp", "soon".into()),
            ],
            body.clone(),
            401,
        ),
    ];
    let before = refusals(&t);
    for (input, headers, body, status) in &rows {
        assert_eq!(deliver(&t, headers, body.clone()).await, *status, "{input}");
    }
    // A valid delivery after them is accepted, and a CRM edit (signed by the emulator) applied.
    assert_eq!(
        deliver(&t, &sig(good, now), body).await,
        204,
        "the valid one"
    );
    t.inbound_sentinel(1).await;
    assert_eq!(
        refusals(&t) - before,
        rows.len(),
        "each refusal logged\n{}",
        t.log()
    );
    assert_eq!(t.postgres().await.len(), 1, "nothing else stored");
    t.finish().await;
}

/// Hex of a base64 signature's bytes: right length for another scheme, wrong encoding here.
fn hex_of(b64: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_deliveries_to_the_zoho_receiver_are_refused() {
    let t = TwoWay::start(Crm::Zoho, crate::support::two_way::RECONCILE_OFF).await;
    t.insert_samples(1).await;
    t.wait_in_sync("the first row").await;
    let crm_id = t.crm_records().await[&1].0.clone();
    let notification = |token: Option<&str>| {
        let mut n = json!({
            "server_time": chrono::Utc::now().timestamp_millis(), "query_params": {},
            "module": "Leads", "resource_uri": "https://www.zohoapis.com/crm/v8/Leads",
            "ids": [crm_id], "operation": "update", "channel_id": 1
        });
        if let Some(token) = token {
            n["token"] = json!(token);
        }
        n.to_string().into_bytes()
    };
    let mut big = notification(Some("x"));
    big.resize(3 * 1024 * 1024, b' ');
    let rows: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a 3 MB body", big, 413),
        ("no token", notification(None), 401),
        ("a wrong token", notification(Some("not-the-token")), 401),
        ("an empty token", notification(Some("")), 401),
        ("not JSON", b"\xff\xfe{".to_vec(), 401),
    ];
    let before = refusals(&t);
    for (input, body, status) in &rows {
        assert_eq!(deliver(&t, &[], body.clone()).await, *status, "{input}");
    }
    t.inbound_sentinel(1).await;
    assert_eq!(
        refusals(&t) - before,
        rows.len(),
        "each refusal logged\n{}",
        t.log()
    );
    assert_eq!(t.postgres().await.len(), 1, "nothing else stored");
    t.finish().await;
}

// ---------------------------------------------------------------------------------------------
// A token endpoint answering HTML: the sink's OAuth refresh against the Zoho emulator.

/// A Zoho Leads sink `name` with OAuth against the emulator on `port`.
fn zoho_oauth_sink(name: &str, port: u16) -> String {
    format!(
        r#"
[[sinks]]
name = "{name}"
kind = "zoho"
table = "public.leads"
module = "Leads"
id_property = "External_Id"
base_url = "http://127.0.0.1:{port}"
batch_max_wait_ms = 100
[sinks.oauth]
client_id_env = "ZOHO_CLIENT_ID"
client_secret_env = "ZOHO_CLIENT_SECRET"
refresh_token_env = "ZOHO_REFRESH_TOKEN"
token_url = "http://127.0.0.1:{port}/oauth/v2/token"
[sinks.fields]
id = "External_Id"
email = "Email"
last_name = "Last_Name"
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_endpoint_answering_html_is_named_and_nothing_is_lost() {
    const ENV: [(&str, &str); 3] = [
        ("ZOHO_CLIENT_ID", "test-client-id"),
        ("ZOHO_CLIENT_SECRET", "test-client-secret"),
        ("ZOHO_REFRESH_TOKEN", "test-refresh-token"),
    ];
    let emulator = Emulator::start("zoho");
    let (db, setup, mut cap) = capture_streaming(
        "token_html",
        "CREATE TABLE leads (id bigint PRIMARY KEY, email text, last_name text)",
        &["public.leads"],
    )
    .await;
    let name = unique("zoho-token").replace('_', "-");
    setup.append_config(&zoho_oauth_sink(&name, emulator.port));
    let endpoint = format!("http://127.0.0.1:{}/oauth/v2/token", emulator.port);
    let written = |state: Value, key: i64| Crm::Zoho.records(&state).contains_key(&key);
    let emulator = &emulator;
    let fault = |f: Value| async move {
        let (code, _) = emulator.post("/_emulator/faults", &f).await;
        assert!(code < 300);
    };
    let insert =
        |key: i64| format!("INSERT INTO leads VALUES ({key}, 'l{key}@example.com', 'L{key}')");
    // A login page (HTTP 200) at start: fatal, nothing acknowledged.
    fault(json!({"path": "/oauth", "html": true})).await;
    db.exec(&insert(1)).await;
    let mut sink = setup.start_with("sink", &["--name", &name], &ENV);
    let code = sink.wait_exit(WAIT);
    assert_eq!(
        code,
        Some(1),
        "fatal (README exit codes)\n{}",
        sink.log_text()
    );
    // A new worker delivers the row the first one never acknowledged.
    let mut sink = setup.start_with("sink", &["--name", &name], &ENV);
    eventually("row 1 reaches Zoho", WAIT, || async {
        written(emulator.state().await, 1)
    })
    .await;
    // A proxy's 502 page while refreshing a token that expired mid-run: retried.
    fault(json!([
        {"path": "/crm/v8/", "expire_tokens": true},
        {"path": "/oauth", "status": 502, "html": true, "count": 2}
    ]))
    .await;
    db.exec(&insert(2)).await;
    eventually("row 2 reaches Zoho", WAIT, || async {
        written(emulator.state().await, 2)
    })
    .await;
    assert_eq!(sink.stop(), Some(0));
    let state = emulator.state().await;
    assert_eq!(state["pending_faults"], 0, "every fault was met");
    let all = setup_logs(&setup);
    for status in [200, 502] {
        assert!(
            all.contains(&format!(
                "OAuth token endpoint {endpoint} answered HTTP {status} with text/html, not JSON"
            )),
            "{status}: the error names endpoint, status and content type\n{all}"
        );
    }
    assert!(
        !all.contains("<html") && !all.contains("<!DOCTYPE"),
        "{all}"
    );
    stop_cleanly(&mut cap, db).await;
}

/// Every driftless log of `setup` (the first, failed worker's included).
fn setup_logs(setup: &Setup) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(setup.dir.path()).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "log") {
            out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    out
}
