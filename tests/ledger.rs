//! The sink ledger's Postgres store: what one batch reads, and that a write never moves a key
//! back in time (two workers racing after a rebalance).

use std::collections::BTreeMap;

use driftless::lsn::Lsn;
use driftless::postgres::connect::ConnectParams;
use driftless::sink::ledger::store::Ledger;
use driftless::sink::ledger::{Link, SourcePosition, identity_digest, key_digest};

use crate::support::db::TestDb;

fn link(record: &str, email: &str, lsn: u64, tombstone: bool) -> Link {
    Link {
        record_id: Some(record.into()),
        identity: Some(identity_digest(email)),
        fields: BTreeMap::from([("email".to_string(), "h1".to_string())]),
        position: SourcePosition {
            commit_lsn: Lsn(lsn),
            ordinal: 3,
        },
        tombstone,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_reads_a_batchs_keys_and_the_live_keys_sharing_an_identity_or_record() {
    let db = TestDb::new("ledger_read").await;
    let params = ConnectParams::from_url(&db.url).unwrap();
    let mut ledger = Ledger::new(params.clone(), "crm");
    let (k1, k2, k3, k4) = (
        key_digest(b"{\"id\":1}"),
        key_digest(b"{\"id\":2}"),
        key_digest(b"{\"id\":3}"),
        key_digest(b"{\"id\":4}"),
    );
    ledger
        .write(&[
            (k1, link("R1", "a@x", 10, false)),
            // Shares R1 with key 1 (a legacy double link).
            (k2, link("R1", "b@x", 10, false)),
            // Holds the identity the batch asks for.
            (k3, link("R3", "c@x", 10, false)),
            // A tombstone holding that identity too: not a live holder.
            (k4, link("R4", "c@x", 10, true)),
        ])
        .await
        .unwrap();
    // Another sink's rows are invisible.
    Ledger::new(params, "other")
        .write(&[(k1, link("X1", "a@x", 99, false))])
        .await
        .unwrap();

    let view = ledger.read(&[k1], &[identity_digest("C@x")]).await.unwrap();
    let mut keys: Vec<_> = view.links.keys().copied().collect();
    keys.sort();
    let mut expected = vec![k1, k2, k3];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(view.links[&k1], link("R1", "a@x", 10, false));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ledger_write_never_moves_a_key_back_in_time() {
    let db = TestDb::new("ledger_order").await;
    let params = ConnectParams::from_url(&db.url).unwrap();
    let mut newer = Ledger::new(params.clone(), "crm");
    let mut older = Ledger::new(params, "crm");
    let key = key_digest(b"{\"id\":1}");
    newer
        .write(&[(key, link("R2", "new@x", 20, false))])
        .await
        .unwrap();
    // A worker that applied an older batch writes after the newer one: left out.
    older
        .write(&[(key, link("R1", "old@x", 10, false))])
        .await
        .unwrap();
    // A newer tombstone replaces the row.
    older
        .write(&[(key, link("R2", "new@x", 30, true))])
        .await
        .unwrap();
    let view = newer.read(&[key], &[]).await.unwrap();
    assert_eq!(view.links[&key], link("R2", "new@x", 30, true));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_of_one_sink_starting_together_all_create_the_ledger() {
    // 32 workers of a sink start together on a database without the ledger; each creates it on
    // first use. `CREATE ... IF NOT EXISTS` alone lets the losers of that race fail (23505 on a
    // catalog index, or 42P07), which stopped a worker with a fatal error.
    let db = TestDb::new("ledger_race").await;
    let params = ConnectParams::from_url(&db.url).unwrap();
    let workers = (0..32u64).map(|i| {
        let params = params.clone();
        tokio::spawn(async move {
            let mut ledger = Ledger::new(params, "crm");
            let key = key_digest(format!("{{\"id\":{i}}}").as_bytes());
            ledger
                .write(&[(key, link("R", "a@x", 10 + i, false))])
                .await
                .map(|_| key)
        })
    });
    let mut keys = Vec::new();
    for worker in workers.collect::<Vec<_>>() {
        keys.push(worker.await.unwrap().expect("every worker writes"));
    }
    let view = Ledger::new(params, "crm").read(&keys, &[]).await.unwrap();
    assert_eq!(view.links.len(), 32);
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------------
// End to end: Postgres (REPLICA IDENTITY DEFAULT: a delete carries only the key) → capture →
// Kafka → the CRM sinks of `driftless.example.toml` as they stand there (HubSpot by
// `id_property = "email"`, Zoho Leads by `Email`, `on_delete = "archive"`) → the emulators.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::db::Setup;
use crate::support::emulator::Emulator;
use crate::support::kafka::read_topic;
use crate::support::process::DriftlessProcess;
use crate::support::wait::{WAIT, eventually};
use crate::support::{audit_hash, replayed, repo_path, topic_len, unique};

/// The `[[sinks]]` entry `name` of `driftless.example.toml`, as users copy it, renamed `as_name`
/// and pointed at the emulator on `port` (its API and its token endpoint).
fn example_sink(name: &str, as_name: &str, port: u16, extra: &[(&str, &str)]) -> String {
    let text = std::fs::read_to_string(repo_path("driftless.example.toml")).unwrap();
    let example: toml::Table = text.parse().unwrap();
    let mut sink = example["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("the example configures sink {name}"))
        .as_table()
        .unwrap()
        .clone();
    let base = format!("http://127.0.0.1:{port}");
    sink.insert("name".into(), as_name.into());
    sink.insert("base_url".into(), base.clone().into());
    for (key, value) in extra {
        sink.insert(key.to_string(), (*value).into());
    }
    if let Some(oauth) = sink.get_mut("oauth").and_then(|o| o.as_table_mut()) {
        oauth.insert("token_url".into(), format!("{base}/oauth/v2/token").into());
    }
    let mut doc = toml::Table::new();
    doc.insert("sinks".into(), toml::Value::Array(vec![sink.into()]));
    format!("\n{}", toml::to_string(&doc).unwrap())
}

const ENV: [(&str, &str); 4] = [
    ("HUBSPOT_TOKEN", "test-token"),
    ("ZOHO_CLIENT_ID", "test-client-id"),
    ("ZOHO_CLIENT_SECRET", "test-client-secret"),
    ("ZOHO_REFRESH_TOKEN", "test-refresh-token"),
];

/// How a test's pipeline differs from the example configuration.
#[derive(Default)]
struct Tweaks<'a> {
    /// Lines added to `[kafka.librdkafka]`.
    librdkafka: &'a str,
    /// Keys added to the sink's table.
    sink: &'a [(&'a str, &'a str)],
    /// `[capture] metrics_listen` on this loopback port (off by default).
    metrics: Option<u16>,
}

/// A CRM record as the tests compare them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Crm {
    id: String,
    email: String,
    name: String,
    live: bool,
}

/// `driftless run` (capture and the sink in one process) on a `contacts` table with the
/// default replica identity, against an emulator.
struct Pipeline {
    emulator: Emulator,
    db: TestDb,
    setup: Setup,
    name: String,
    zoho: bool,
    run: DriftlessProcess,
}

impl Pipeline {
    async fn start(tag: &str, zoho: bool) -> Pipeline {
        Pipeline::start_with(tag, zoho, Tweaks::default(), |db| async move { db }).await
    }

    /// [`Pipeline::start`] with `tweaks`, and `before(db)` run before capture starts, which
    /// then takes no snapshot (rows written before are never sent).
    async fn start_with<F, Fut>(tag: &str, zoho: bool, tweaks: Tweaks<'_>, before: F) -> Pipeline
    where
        F: FnOnce(TestDb) -> Fut,
        Fut: std::future::Future<Output = TestDb>,
    {
        let emulator = Emulator::start(if zoho { "zoho" } else { "hubspot" });
        let db = TestDb::new(tag).await;
        db.exec(
            "CREATE TABLE contacts (id bigint PRIMARY KEY, email text NOT NULL, \
             first_name text NOT NULL, lifecycle text NOT NULL DEFAULT 'lead')",
        )
        .await;
        let db = before(db).await;
        let name = unique(tag).replace('_', "-");
        let setup = Setup::new(&db, &["public.contacts"], "snapshot = \"never\"", "");
        let example = if zoho {
            "zoho-leads"
        } else {
            "hubspot-contacts"
        };
        setup.append_config(&example_sink(example, &name, emulator.port, tweaks.sink));
        if let Some(port) = tweaks.metrics {
            setup.edit_config(
                "metrics_listen = \"off\"",
                &format!("metrics_listen = \"127.0.0.1:{port}\""),
            );
        }
        let librdkafka = tweaks.librdkafka;
        if !librdkafka.is_empty() {
            let table = "[kafka.librdkafka]\n";
            let text = std::fs::read_to_string(&setup.config).unwrap();
            if text.contains(table) {
                setup.edit_config(table, &format!("{table}{librdkafka}\n"));
            } else {
                setup.append_config(&format!("\n{table}{librdkafka}\n"));
            }
        }
        let run = setup.start_with("run", &[], &ENV);
        run.wait_streaming().await;
        Pipeline {
            emulator,
            db,
            setup,
            name,
            zoho,
            run,
        }
    }

    /// Every record of the emulator.
    async fn records(&self) -> Vec<Crm> {
        let state = self.emulator.state().await;
        let (list, email, name, deleted) = if self.zoho {
            (
                &state["records"]["Leads"],
                "/Email",
                "/Last_Name",
                "/$deleted",
            )
        } else {
            (
                &state["objects"]["contacts"],
                "/properties/email",
                "/properties/firstname",
                "/archived",
            )
        };
        let s = |o: &Value, p: &str| match o.pointer(p) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        list.as_array()
            .into_iter()
            .flatten()
            .map(|o| Crm {
                id: s(o, "/id"),
                email: s(o, email),
                name: s(o, name),
                live: o.pointer(deleted) != Some(&Value::Bool(true)),
            })
            .collect()
    }

    /// The live records with this email.
    async fn live(&self, email: &str) -> Vec<Crm> {
        self.records()
            .await
            .into_iter()
            .filter(|r| r.live && r.email == email)
            .collect()
    }

    /// Waits until exactly one live record has `email` and `name`; returns it.
    async fn one_live(&self, email: &str, name: &str) -> Crm {
        let what = format!("one live record {email} named {name}");
        let mut found = None;
        let waited = tokio::time::timeout(WAIT, async {
            loop {
                let live = self.live(email).await;
                if live.len() == 1 && live[0].name == name {
                    found = Some(live[0].clone());
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        if waited.is_err() {
            panic!(
                "timed out waiting for {what}: {:?}\n{}",
                self.records().await,
                self.run.log_text()
            );
        }
        found.expect("found")
    }

    /// Waits until no live record has `email`.
    async fn none_live(&self, email: &str) {
        eventually(&format!("no live record {email}"), WAIT, || async {
            self.live(email).await.is_empty()
        })
        .await;
    }

    async fn stop(mut self) {
        self.run.stop();
        self.db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_carrying_only_the_key_archives_the_linked_contact() {
    let p = Pipeline::start("ledger_delete", false).await;
    p.db.exec(
        "INSERT INTO contacts VALUES (1, 'Ada@x.io', 'Ada', 'lead'), (2, 'bob@x.io', 'Bob', 'lead')",
    )
    .await;
    let ada = p.one_live("ada@x.io", "Ada").await;
    p.one_live("bob@x.io", "Bob").await;
    p.db.exec("DELETE FROM contacts WHERE id = 1").await;
    p.none_live("ada@x.io").await;
    let records = p.records().await;
    assert!(
        records.iter().any(|r| r.id == ada.id && !r.live),
        "the linked contact is archived: {records:?}"
    );
    assert_eq!(p.live("bob@x.io").await.len(), 1, "the other contact stays");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_and_a_reinsert_of_one_email_keep_one_live_contact() {
    let p = Pipeline::start("ledger_reinsert", false).await;
    p.db.exec("INSERT INTO contacts VALUES (1, 'ada@x.io', 'Ada', 'lead')")
        .await;
    let first = p.one_live("ada@x.io", "Ada").await;
    // In one transaction (one batch): the contact stays, now linked to key 2.
    p.db.exec(
        "BEGIN; DELETE FROM contacts WHERE id = 1; \
         INSERT INTO contacts VALUES (2, 'ada@x.io', 'Ada Two', 'lead'); COMMIT",
    )
    .await;
    let second = p.one_live("ada@x.io", "Ada Two").await;
    assert_eq!(second.id, first.id, "the record stays");
    // Across batches: the delete archives, the re-insert makes a live contact again.
    p.db.exec("DELETE FROM contacts WHERE id = 2").await;
    p.none_live("ada@x.io").await;
    p.db.exec("INSERT INTO contacts VALUES (3, 'ada@x.io', 'Ada Three', 'lead')")
        .await;
    p.one_live("ada@x.io", "Ada Three").await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_key_change_keeps_one_live_contact() {
    let p = Pipeline::start("ledger_pk_change", false).await;
    p.db.exec("INSERT INTO contacts VALUES (1, 'ada@x.io', 'Ada', 'lead')")
        .await;
    p.one_live("ada@x.io", "Ada").await;
    p.db.exec("UPDATE contacts SET id = 100, first_name = 'Ada 100' WHERE id = 1")
        .await;
    p.one_live("ada@x.io", "Ada 100").await;
    // A later change of the new key lands on the same single contact.
    p.db.exec("UPDATE contacts SET first_name = 'Ada again' WHERE id = 100")
        .await;
    p.one_live("ada@x.io", "Ada again").await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_email_moved_from_one_row_to_another_keeps_its_contact() {
    let p = Pipeline::start("ledger_email_moved", false).await;
    p.db.exec(
        "INSERT INTO contacts VALUES (1, 'ada@x.io', 'Ada', 'lead'), (2, 'bob@x.io', 'Bob', 'lead')",
    )
    .await;
    let ada = p.one_live("ada@x.io", "Ada").await;
    p.one_live("bob@x.io", "Bob").await;
    p.db.exec(
        "BEGIN; DELETE FROM contacts WHERE id = 1; \
         UPDATE contacts SET email = 'ada@x.io', first_name = 'Bob as Ada' WHERE id = 2; COMMIT",
    )
    .await;
    let moved = p.one_live("ada@x.io", "Bob as Ada").await;
    assert_eq!(
        moved.id, ada.id,
        "the contact stays; only the old link goes"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_rows_with_one_email_dead_letter_the_second_without_merging() {
    let p = Pipeline::start("ledger_one_to_one", false).await;
    p.db.exec("INSERT INTO contacts VALUES (1, 'ada@x.io', 'Ada', 'lead')")
        .await;
    p.one_live("ada@x.io", "Ada").await;
    p.db.exec("INSERT INTO contacts VALUES (2, 'ADA@x.io', 'Impostor', 'lead')")
        .await;
    let dlq = format!("{}.dlq.{}", p.setup.prefix, p.name);
    let records = tokio::task::block_in_place(|| read_topic(&dlq, WAIT, |rs| !rs.is_empty()));
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.json()["after"]["id"], 2);
    assert_eq!(r.headers["driftless-error-category"], "IDENTITY_CONFLICT");
    let message = &r.headers["driftless-error-message"];
    let hash = |key: &str| format!("sha256:{}", hex::encode(key_digest(key.as_bytes())));
    assert!(message.contains(&hash("{\"id\":2}")), "{message}");
    assert!(message.contains(&hash("{\"id\":1}")), "{message}");
    // A sentinel change of key 1 arrives after the dead letter: the contact was never merged.
    p.db.exec("UPDATE contacts SET first_name = 'Ada sentinel' WHERE id = 1")
        .await;
    p.one_live("ada@x.io", "Ada sentinel").await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_from_earliest_while_the_table_changes_ends_equal_to_select() {
    let p = Pipeline::start("ledger_replay", false).await;
    p.db.exec(
        "INSERT INTO contacts SELECT g, 'u' || g || '@x.io', 'first' || g, 'lead' \
         FROM generate_series(1, 200) g",
    )
    .await;
    p.db.exec("UPDATE contacts SET first_name = 'second' || id")
        .await;
    p.one_live("u200@x.io", "second200").await;
    // A replay of the whole topic runs while the live worker applies newer changes.
    let replay = {
        let mut cmd = p.setup.command("replay");
        cmd.args(["--name", &p.name, "--from", "earliest"])
            .envs(ENV);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    for round in 0..20 {
        p.db.exec(&format!(
            "UPDATE contacts SET first_name = 'third{round}-' || id WHERE id % 20 = {round}"
        ))
        .await;
    }
    p.db.exec("DELETE FROM contacts WHERE id % 50 = 0").await;
    let out = replay.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Sentinel: the last change arrives, then the CRM must equal SELECT.
    p.db.exec("INSERT INTO contacts VALUES (999, 'sentinel@x.io', 'sentinel', 'lead')")
        .await;
    p.one_live("sentinel@x.io", "sentinel").await;
    // The replay read the topic up to where it ended when the replay started: every one of
    // the 400 changes made before it (200 inserts, 200 updates), at most every change made
    // until the sentinel (which came after it), and dead-lettered none.
    let counts = replayed(&stdout);
    let topic = topic_len(&p.setup.topic("public.contacts"));
    assert!(
        (400..topic).contains(&counts["records"]) && counts["dead_letters"] == 0,
        "replayed {counts:?} of {topic} changes"
    );
    let rows =
        p.db.client
            .query("SELECT email, first_name FROM contacts", &[])
            .await
            .unwrap();
    let expected: BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    eventually("the CRM equals SELECT", WAIT, || async {
        let live: BTreeMap<String, String> = p
            .records()
            .await
            .into_iter()
            .filter(|r| r.live)
            .map(|r| (r.email, r.name))
            .collect();
        live == expected
    })
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zoho_delete_leaves_a_lead_the_sink_never_linked_alone() {
    // The row exists before capture starts (no snapshot), so the sink never writes it; its
    // delete carries the email (REPLICA IDENTITY FULL), as does a lead someone else made.
    let p = Pipeline::start_with(
        "ledger_zoho_unlinked",
        true,
        Tweaks::default(),
        |db| async move {
            db.exec(
                "ALTER TABLE contacts REPLICA IDENTITY FULL; \
             INSERT INTO contacts VALUES (1, 'ada@x.io', 'Ada', 'lead')",
            )
            .await;
            db
        },
    )
    .await;
    let r = crate::support::http()
        .post(p.emulator.url("/crm/v8/Leads"))
        .header("Authorization", "Zoho-oauthtoken test-access-token")
        .json(&json!({"data": [{"Email": "ada@x.io", "Last_Name": "Someone else"}]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let theirs = p.one_live("ada@x.io", "Someone else").await;
    p.db.exec("DELETE FROM contacts WHERE id = 1").await;
    // The delete's audit record says it was applied; only then is the lead's presence proof.
    let audit = format!("{}.audit", p.setup.prefix);
    let key = audit_hash("1");
    tokio::task::block_in_place(|| {
        read_topic(&audit, WAIT, |rs| {
            rs.iter()
                .any(|r| r.json()["key_hash"] == key.as_str() && r.json()["operation"] == "d")
        })
    });
    let still = p.one_live("ada@x.io", "Someone else").await;
    assert_eq!(
        still.id, theirs.id,
        "the lead the sink never linked is left alone"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_a_user_that_cannot_keep_the_sink_ledger() {
    let emulator = Emulator::start("hubspot");
    let db = TestDb::new("ledger_check").await;
    db.exec(
        "CREATE TABLE contacts (id bigint PRIMARY KEY, email text NOT NULL, \
         first_name text NOT NULL, lifecycle text NOT NULL DEFAULT 'lead')",
    )
    .await;
    let role = db.role("REPLICATION").await;
    db.exec(&format!("GRANT SELECT ON contacts TO {}", role.name))
        .await;
    let setup = Setup::new(&db, &["public.contacts"], "", "");
    setup.append_config(&example_sink(
        "hubspot-contacts",
        "ledger-check",
        emulator.port,
        &[],
    ));
    let check = || {
        let out = setup
            .command("check")
            .env("DRIFTLESS_SOURCE_URL", &role.url)
            .envs(ENV)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = check();
    assert!(
        err.contains("sink ledger (driftless.sink_ledger) can be neither created nor written")
            && err.contains("as the owner: GRANT CREATE ON DATABASE"),
        "{err}"
    );
    db.exec(&format!(
        "GRANT CREATE ON DATABASE {} TO {}",
        db.name, role.name
    ))
    .await;
    let err = check();
    assert!(!err.contains("sink ledger"), "{err}");
    db.drop_db().await;
    role.drop_role().await;
}

impl Pipeline {
    /// `driftless verify --name ... [args]`: exit code and stdout.
    fn verify(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = self
            .setup
            .command("verify")
            .args(["--name", &self.name])
            .args(args)
            .envs(ENV)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        (out.status.code(), format!("{stdout}{stderr}"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_edits_and_deletes_behind_the_sinks_back_and_repair_fixes_them() {
    let p = Pipeline::start("ledger_verify", false).await;
    p.db.exec(
        "INSERT INTO contacts VALUES (1, 'ada@x.io', 'Ada', 'lead'), (2, 'bob@x.io', 'Bob', 'lead'), \
         (3, 'cy@x.io', 'Cy', 'customer')",
    )
    .await;
    let ada = p.one_live("ada@x.io", "Ada").await;
    let bob = p.one_live("bob@x.io", "Bob").await;
    p.one_live("cy@x.io", "Cy").await;
    let (code, out) = p.verify(&[]);
    assert_eq!(code, Some(0), "a clean sink: {out}");
    assert!(
        out.contains("rows=3 missing=0 extra=0 differing=0"),
        "{out}"
    );

    // Someone edits Ada and deletes Bob in HubSpot.
    let (status, _) = p
        .emulator
        .post(
            &format!("/_emulator/objects/contacts/{}/edit", ada.id),
            &json!({"properties": {"firstname": "Eve"}}),
        )
        .await;
    assert!((200..300).contains(&status));
    let (status, _) = p
        .emulator
        .post(
            &format!("/_emulator/objects/contacts/{}/archive", bob.id),
            &json!({}),
        )
        .await;
    assert!((200..300).contains(&status));
    let (code, out) = p.verify(&[]);
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains("rows=3 missing=1 extra=0 differing=1"),
        "{out}"
    );
    let ada_key = format!("sha256:{}", hex::encode(key_digest(b"{\"id\":1}")));
    assert!(
        out.contains(&format!(
            "differing  row {ada_key} record {}: firstname",
            ada.id
        )),
        "{out}"
    );
    assert!(
        !out.contains("Eve") && !out.contains("Ada"),
        "no values: {out}"
    );

    let (code, out) = p.verify(&["--repair"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("repaired: 2 of 2"), "{out}");
    // Both repairs are in the audit trail, by key hash.
    let audit = format!("{}.audit", p.setup.prefix);
    let repaired = tokio::task::block_in_place(|| {
        read_topic(&audit, WAIT, |rs| {
            rs.iter()
                .filter(|r| r.json()["outcome"] == "repaired")
                .count()
                >= 2
        })
    });
    let (ada_key, bob_key) = (audit_hash("1"), audit_hash("2"));
    let hashes: Vec<Value> = repaired
        .iter()
        .map(|r| r.json())
        .filter(|j| j["outcome"] == "repaired")
        .map(|j| j["key_hash"].clone())
        .collect();
    assert!(
        hashes.contains(&json!(ada_key)) && hashes.contains(&json!(bob_key)),
        "{hashes:?}"
    );
    assert_eq!(p.one_live("ada@x.io", "Ada").await.id, ada.id);
    p.one_live("bob@x.io", "Bob").await;
    let (code, out) = p.verify(&[]);
    assert_eq!(code, Some(0), "repaired: {out}");
    // The sink goes on from the repaired links: Bob's next change lands on his new record.
    p.db.exec("UPDATE contacts SET first_name = 'Bobby' WHERE id = 2")
        .await;
    p.one_live("bob@x.io", "Bobby").await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_of_a_clean_zoho_sink_reports_no_drift() {
    let p = Pipeline::start("ledger_verify_zoho", true).await;
    p.db.exec("INSERT INTO contacts VALUES (1, 'ada@x.io', 'Ada', 'lead'), (2, 'bob@x.io', 'Bob', 'lead')")
        .await;
    p.one_live("ada@x.io", "Ada").await;
    p.one_live("bob@x.io", "Bob").await;
    let (code, out) = p.verify(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("rows=2 missing=0 extra=0 differing=0"),
        "{out}"
    );
    p.db.exec("DELETE FROM contacts WHERE id = 2").await;
    p.none_live("bob@x.io").await;
    let (code, out) = p.verify(&[]);
    assert_eq!(
        code,
        Some(0),
        "a delete the sink applied is no drift: {out}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_retry_after_keeps_both_workers_in_their_group() {
    // A poll interval shorter than the 10 s HubSpot asks to wait after a 429.
    let tweaks = Tweaks {
        librdkafka: "\"max.poll.interval.ms\" = \"7000\"\n\"session.timeout.ms\" = \"6000\"",
        ..Tweaks::default()
    };
    let p = Pipeline::start_with("ledger_long_wait", false, tweaks, |db| async move { db }).await;
    // A second worker of the sink beside the one `driftless run` holds.
    let second = p
        .setup
        .start_with("sink", &["--name", p.name.as_str()], &ENV);
    eventually("the second worker started", WAIT, || async {
        second.log_text().contains("sink worker started")
    })
    .await;
    // Let the group settle (both members assigned): tansu can neither describe the group nor
    // does a worker log its partitions, so there is no arrival to wait for.
    tokio::time::sleep(Duration::from_secs(8)).await;
    p.db.exec(
        "INSERT INTO contacts SELECT g, 'u' || g || '@x.io', 'first', 'lead' \
         FROM generate_series(1, 20) g",
    )
    .await;
    p.one_live("u20@x.io", "first").await;
    // Let the clients' rolling 10 s windows empty, so the 429 below is waited out in full
    // (a window with requests of its own would shorten the wait to when its oldest one ages).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (status, _) = p
        .emulator
        .post(
            "/_emulator/faults",
            &json!({"path": "batch/upsert", "status": 429}),
        )
        .await;
    assert!((200..300).contains(&status));
    p.db.exec("UPDATE contacts SET first_name = 'after the wait'")
        .await;
    for g in 1..=20 {
        p.one_live(&format!("u{g}@x.io"), "after the wait").await;
    }
    let logs = format!("{}\n----\n{}", p.run.log_text(), second.log_text());
    assert!(
        logs.contains("batch failed transiently"),
        "the 429 was waited out: {logs}"
    );
    assert!(
        !logs.contains("maximum poll interval") && !logs.contains("MAXPOLL"),
        "both workers stayed in their group: {logs}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_every_reports_drift_in_the_workers_metrics() {
    let port = crate::support::free_port();
    let tweaks = Tweaks {
        sink: &[("verify_every", "every 10s")],
        metrics: Some(port),
        ..Tweaks::default()
    };
    let p =
        Pipeline::start_with("ledger_verify_every", false, tweaks, |db| async move { db }).await;
    p.db.exec("INSERT INTO contacts VALUES (1, 'ada@x.io', 'Ada', 'lead')")
        .await;
    let ada = p.one_live("ada@x.io", "Ada").await;
    let drift = || async {
        let Ok(r) = crate::support::http()
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        else {
            return None;
        };
        let body = r.text().await.unwrap_or_default();
        let metric = format!("driftless_sink_drift_records{{sink=\"{}\"}} ", p.name);
        body.lines()
            .find_map(|l| l.strip_prefix(&metric)?.trim().parse::<f64>().ok())
    };
    eventually("a clean verify", WAIT, || async {
        drift().await == Some(0.0)
    })
    .await;
    let (status, _) = p
        .emulator
        .post(
            &format!("/_emulator/objects/contacts/{}/edit", ada.id),
            &json!({"properties": {"firstname": "Eve"}}),
        )
        .await;
    assert!((200..300).contains(&status));
    eventually(
        "the edit behind the sink's back is counted",
        WAIT,
        || async { drift().await == Some(1.0) },
    )
    .await;
    p.stop().await;
}
