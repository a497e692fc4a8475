//! The HubSpot sink against the emulator's strict readings of the contract: invalid values
//! refused for the whole batch (or per input, the other plausible answer), and contact emails
//! stored lowercased. Postgres → capture → Kafka → `driftless run`'s sink → the emulator.

use serde_json::{Value, json};

use crate::support::db::{Setup, TestDb};
use crate::support::emulator::Emulator;
use crate::support::kafka::read_topic;
use crate::support::process::DriftlessProcess;
use crate::support::unique;
use crate::support::wait::{WAIT, eventually, sentinel};

const STARTUP: std::time::Duration = std::time::Duration::from_secs(30);

/// `driftless run` with one HubSpot contacts sink (`fields` as `[sinks.fields]` lines) on a
/// `contacts` table, against an emulator set up with `settings`.
struct Pipeline {
    emulator: Emulator,
    db: TestDb,
    setup: Setup,
    name: String,
    run: DriftlessProcess,
}

impl Pipeline {
    async fn start(tag: &str, settings: Value, fields: &str) -> Pipeline {
        let emulator = Emulator::start("hubspot");
        let (status, answer) = emulator.post("/_emulator/settings", &settings).await;
        assert_eq!(status, 204, "settings accepted: {answer}");
        let db = TestDb::new(tag).await;
        db.exec(
            "CREATE TABLE contacts (id bigint PRIMARY KEY, email text NOT NULL, \
             first_name text NOT NULL, revenue text, born date)",
        )
        .await;
        let name = unique(tag).replace('_', "-");
        let setup = Setup::new(&db, &["public.contacts"], "snapshot = \"never\"", "");
        setup.append_config(&format!(
            r#"
[[sinks]]
name = "{name}"
kind = "hubspot"
table = "public.contacts"
object = "contacts"
id_property = "email"
token_env = "HUBSPOT_TOKEN"
base_url = "http://127.0.0.1:{port}"
batch_max_wait_ms = 300
[sinks.fields]
{fields}
"#,
            port = emulator.port
        ));
        let run = setup.start_with("run", &[], &[("HUBSPOT_TOKEN", "test-token")]);
        let streaming = tokio::time::timeout(STARTUP, run.wait_streaming()).await;
        assert!(streaming.is_ok(), "not streaming:\n{}", run.log_text());
        Pipeline {
            emulator,
            db,
            setup,
            name,
            run,
        }
    }

    /// Live contacts as (email, firstname, id).
    async fn contacts(&self) -> Vec<(String, String, String)> {
        let state = self.emulator.state().await;
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        state["objects"]["contacts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["archived"] != true)
            .map(|c| {
                let p = &c["properties"];
                (s(&p["email"]), s(&p["firstname"]), s(&c["id"]))
            })
            .collect()
    }

    /// Waits until the contact `email` is named `name`; returns its id.
    async fn named(&self, email: &str, name: &str) -> String {
        let what = format!("contact {email} named {name}");
        eventually(&what, WAIT, || async {
            self.contacts()
                .await
                .iter()
                .any(|(e, n, _)| e == email && n == name)
        })
        .await;
        let contacts = self.contacts().await;
        let found = contacts.iter().find(|(e, _, _)| e == email);
        found.expect("found").2.clone()
    }

    /// Properties the emulator received in batch inputs so far.
    async fn input_properties(&self) -> u64 {
        let state = self.emulator.state().await;
        state["requests"]["inputProperties"].as_u64().unwrap()
    }

    async fn stop(mut self) {
        self.run.stop();
        self.db.drop_db().await;
    }
}

/// A text column into a number property: a value that is not a number passes every check of
/// ours (the start-up schema check compares names and options, not values) and reaches HubSpot.
const FIELDS: &str = "email = \"email\"\nfirst_name = \"firstname\"\nrevenue = \"annualrevenue\"";

/// One bad value among good ones in a batch: HubSpot's documented whole-batch 400, or a 207
/// naming it. Either way the sink dead-letters exactly that row and writes the others. (The
/// value is an option the enumeration does not have, which only HubSpot knows: a number
/// property's non-numbers are refused before sending, by the mapping.)
#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_value_is_dead_lettered_and_the_rest_written_in_both_batch_modes() {
    const STAGE: &str =
        "email = \"email\"\nfirst_name = \"firstname\"\nrevenue = \"lifecyclestage\"";
    for mode in ["whole_batch_400", "multi_status_207"] {
        let settings = json!({"batchInvalidInput": mode});
        let p = Pipeline::start("hubspot_invalid_value", settings, STAGE).await;
        // One transaction: one batch.
        p.db.exec(
            "INSERT INTO contacts VALUES (1, 'a@x.io', 'Ada', 'lead'), \
             (2, 'b@x.io', 'Bob', 'lots'), (3, 'c@x.io', 'Cy', 'customer')",
        )
        .await;
        let dlq = format!("{}.dlq.{}", p.setup.prefix, p.name);
        let records = tokio::task::block_in_place(|| read_topic(&dlq, WAIT, |rs| !rs.is_empty()));
        assert_eq!(records.len(), 1, "{mode}");
        assert_eq!(records[0].json()["after"]["id"], 2, "{mode}");
        let category = &records[0].headers["driftless-error-category"];
        assert_eq!(category, "VALIDATION_ERROR", "{mode}");
        p.named("a@x.io", "Ada").await;
        p.named("c@x.io", "Cy").await;
        // The sink keeps going: a later change of the refused row's neighbour arrives, and the
        // refused row was never written.
        p.db.exec("UPDATE contacts SET first_name = 'Ada 2' WHERE id = 1")
            .await;
        p.named("a@x.io", "Ada 2").await;
        let emails: Vec<String> = p.contacts().await.into_iter().map(|c| c.0).collect();
        assert!(
            !emails.contains(&"b@x.io".to_string()),
            "{mode}: {emails:?}"
        );
        p.stop().await;
    }
}

/// A BC date and a year past 9999 in a `date` column mapped to HubSpot's `date_of_birth`: each
/// row is dead-lettered as a mapping error whose reason carries no value (before, the BC date
/// was cut to its first 10 characters and written as year 44 AD); the other rows are written.
#[tokio::test(flavor = "multi_thread")]
async fn bc_and_past_9999_dates_are_dead_lettered_never_shifted() {
    let fields = "email = \"email\"\nfirst_name = \"firstname\"\nborn = \"date_of_birth\"";
    let p = Pipeline::start("hubspot_bc_date", json!({}), fields).await;
    p.db.exec(
        "INSERT INTO contacts (id, email, first_name, born) VALUES \
         (1, 'a@x.io', 'Ada', '1815-12-10'), (2, 'b@x.io', 'Bob', '0044-03-15 BC'), \
         (3, 'c@x.io', 'Cy', '10000-01-01')",
    )
    .await;
    let dlq = format!("{}.dlq.{}", p.setup.prefix, p.name);
    let records = tokio::task::block_in_place(|| read_topic(&dlq, WAIT, |rs| rs.len() >= 2));
    let mut ids: Vec<i64> = records
        .iter()
        .map(|r| r.json()["after"]["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, [2, 3]);
    for r in &records {
        assert_eq!(r.headers["driftless-error-category"], "MAPPING");
        let message = &r.headers["driftless-error-message"];
        assert!(message.contains("date_of_birth"), "{message}");
        assert!(
            !message.contains("0044") && !message.contains("10000"),
            "no value in the reason: {message}"
        );
    }
    p.named("a@x.io", "Ada").await;
    // A later change of Ada arrives after both dead letters: the refused rows were never sent.
    p.db.exec("UPDATE contacts SET first_name = 'Ada 2' WHERE id = 1")
        .await;
    p.named("a@x.io", "Ada 2").await;
    let emails: Vec<String> = p.contacts().await.into_iter().map(|c| c.0).collect();
    assert_eq!(emails, ["a@x.io"], "{emails:?}");
    p.stop().await;
}

/// A row whose email has capitals (the mapping has no transform): the contact is created with
/// HubSpot's lowercase form, and a later change of another column sends that column alone to
/// the same contact (before, the mixed-case id found no contact and the update conflicted).
#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_case_email_syncs_once_and_later_changes_send_only_the_changed_column() {
    let p = Pipeline::start("hubspot_email_case", json!({}), FIELDS).await;
    p.db.exec("INSERT INTO contacts VALUES (1, 'Ana@Example.COM', 'Ana', '10')")
        .await;
    let id = p.named("ana@example.com", "Ana").await;
    let sent = p.input_properties().await;
    assert_eq!(sent, 3, "email, firstname and annualrevenue");
    p.db.exec("UPDATE contacts SET first_name = 'Anabel' WHERE id = 1")
        .await;
    assert_eq!(
        p.named("ana@example.com", "Anabel").await,
        id,
        "the same contact"
    );
    assert_eq!(p.input_properties().await, sent + 1, "only firstname");
    // A change that leaves every mapped value as HubSpot holds it sends nothing: the sentinel
    // after it is the only property sent.
    p.db.exec("UPDATE contacts SET email = 'ANA@example.com' WHERE id = 1")
        .await;
    sentinel(
        "the sentinel reached HubSpot",
        p.db.exec("UPDATE contacts SET first_name = 'Sentinel' WHERE id = 1"),
        || async { p.contacts().await.iter().any(|(_, n, _)| n == "Sentinel") },
    )
    .await;
    assert_eq!(
        p.input_properties().await,
        sent + 2,
        "only the sentinel's firstname"
    );
    assert_eq!(p.contacts().await.len(), 1);
    p.stop().await;
}
