//! The two-way sync harness shared by the HubSpot and Zoho tests ([`TwoWay`]): Postgres ⇄
//! driftless (capture and a `direction = "both"` sink worker) ⇄ the CRM's emulator, whose
//! webhooks (HubSpot) or watch-channel notifications (Zoho) reach the worker's receiver over
//! TCP. What differs between the CRMs is in [`Crm`].
//!
//! A row is compared as the values of its mapped columns after the id ([`Row`]), in table
//! order; column 1 is the name (HubSpot `first_name`, Zoho `last_name`), which the sentinels
//! change. The harness proves "nothing more happened" with sentinels
//! ([`TwoWay::outbound_sentinel`], [`TwoWay::inbound_sentinel`], [`TwoWay::insert_sentinel`]),
//! never by sleeping. The scenarios both CRMs run are in [`scenarios`].

mod crm;
mod scenarios;

pub(crate) use crm::{Crm, Row};
pub(crate) use scenarios::{
    deletion_in_crm, edits_cross_once_and_never_echo_back, existing_crm_records,
};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::db::{Setup, TestDb};
use super::emulator::Emulator;
use super::kafka::{captured_origins, change_origins, read_until_quiet};
use super::process::DriftlessProcess;
use super::wait::{WAIT, eventually, sentinel};
use super::{free_port, http, unique, wait_for_port};

pub(crate) use crm::{HUBSPOT_SECRET, ZOHO_TOKEN};
/// `[sinks.inbound]` TOML without reconciliation.
pub(crate) const RECONCILE_OFF: &str = r#"reconcile_every = "off""#;

/// How a [`TwoWay`] is configured.
pub(crate) struct Options<'a> {
    /// `[sinks.ownership]` TOML.
    pub(crate) ownership: &'a str,
    /// Extra `[sinks.inbound]` TOML (`reconcile_every`, `on_crm_delete`, `public_url`).
    pub(crate) inbound: &'a str,
    /// HubSpot only: options of the emulator's webhook subscription (`drop_every`, `events`,
    /// ...).
    pub(crate) hooks: Value,
    /// Extra column definitions of the table (`, revenue integer`), not among the compared
    /// ones.
    pub(crate) columns: &'a str,
    /// Extra `[sinks.fields]` TOML (mapping the extra columns).
    pub(crate) fields: &'a str,
    /// Records the CRM holds before the sink first starts (created by a user, unlinked; emails
    /// `existing{n}@example.com`, n from 1).
    pub(crate) crm_records: usize,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            ownership: r#""*" = "latest""#,
            inbound: RECONCILE_OFF,
            hooks: json!({}),
            columns: "",
            fields: "",
            crm_records: 0,
        }
    }
}

/// An API call as a user of the CRM would make it; returns the status and the JSON answer.
async fn crm_call(
    crm: Crm,
    emulator: &Emulator,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let mut req = http().request(method, emulator.url(path)).json(&body);
    if crm == Crm::Zoho {
        req = req.header("Authorization", format!("Zoho-oauthtoken {ZOHO_TOKEN}"));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Creates `n` records in the CRM as a user would (before any webhook subscription or watch
/// channel exists, so nothing is notified); returns the number of API calls made.
async fn seed_crm(crm: Crm, emulator: &Emulator, n: usize) -> u64 {
    let fields: Vec<Value> = (1..=n)
        .map(|k| crm.created(&format!("existing{k}@example.com"), &format!("Existing{k}")))
        .collect();
    let calls = crm.create_calls(&fields);
    for (path, body) in &calls {
        let (status, answer) =
            crm_call(crm, emulator, reqwest::Method::POST, path, body.clone()).await;
        assert!(status < 300, "create accepted: {status} {answer}");
    }
    if crm == Crm::Zoho && n > 0 {
        // Zoho's change times have second precision: let the records be older than the
        // second the sink starts in.
        let now = chrono::Utc::now();
        let next = 1_000 - now.timestamp_subsec_millis() as u64;
        tokio::time::sleep(std::time::Duration::from_millis(next + 50)).await;
    }
    calls.len() as u64
}

/// Everything of one two-way sync test; [`TwoWay::finish`] stops it cleanly.
pub(crate) struct TwoWay {
    // The processes first: they print their logs when dropped during a panic, before the
    // setup's directory (holding the logs) goes.
    capture: DriftlessProcess,
    /// The running sink worker.
    pub(crate) worker: Option<DriftlessProcess>,
    pub(crate) crm: Crm,
    pub(crate) emulator: Emulator,
    pub(crate) db: TestDb,
    pub(crate) setup: Setup,
    /// The sink's name.
    pub(crate) name: String,
    /// The port of the worker's receiver.
    pub(crate) hook_port: u16,
    /// The audit trail file.
    pub(crate) audit: PathBuf,
    /// Writes and deletes the test itself made through the CRM's API (Zoho counts them with
    /// the sink's).
    own_writes: AtomicU64,
    own_deletes: AtomicU64,
}

impl TwoWay {
    /// Starts everything with the default [`Options`] but `inbound`.
    pub(crate) async fn start(crm: Crm, inbound: &str) -> TwoWay {
        Self::start_with(
            crm,
            Options {
                inbound,
                ..Options::default()
            },
        )
        .await
    }

    /// Starts the emulator, a database with the CRM's table, capture and a sink worker; returns
    /// once the worker's receiver listens (Zoho: once its watch channel is open).
    pub(crate) async fn start_with(crm: Crm, opts: Options<'_>) -> TwoWay {
        let emulator = Emulator::start(crm.kind());
        let seed_calls = seed_crm(crm, &emulator, opts.crm_records).await;
        let db = TestDb::new(&format!("two_way_{}", crm.kind())).await;
        let columns: Vec<String> = crm.columns().iter().map(|c| format!("{c} text")).collect();
        db.exec(&format!(
            "CREATE TABLE {} (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, {}{})",
            crm.table(),
            columns.join(", "),
            opts.columns
        ))
        .await;
        let name = unique(&format!("{}-two-way", crm.kind())).replace('_', "-");
        let hook_port = free_port();
        let setup = Setup::new(&db, &[&format!("public.{}", crm.table())], "", "");
        let audit = setup.dir.path().join("audit.jsonl");
        setup.edit_config(
            "[audit]\n",
            &format!("[audit]\nto = \"file\"\npath = \"{}\"\n", audit.display()),
        );
        setup.append_config(&crm.sink_toml(&name, emulator.port, hook_port, &opts));
        if crm == Crm::Hubspot {
            let mut hooks = opts.hooks;
            hooks["target_url"] = json!(format!("http://127.0.0.1:{hook_port}/hooks/hubspot"));
            hooks["client_secret"] = json!(HUBSPOT_SECRET);
            hooks["retry_base_ms"] = json!(200);
            let (status, _) = emulator.post("/_emulator/webhooks", &hooks).await;
            assert!(status < 300, "webhook subscription accepted: {status}");
        }
        let capture = setup.start();
        capture.wait_streaming().await;
        let mut t = TwoWay {
            crm,
            emulator,
            db,
            setup,
            capture,
            worker: None,
            name,
            hook_port,
            audit,
            own_writes: AtomicU64::new(seed_calls),
            own_deletes: AtomicU64::new(0),
        };
        t.start_worker().await;
        if crm == Crm::Zoho {
            eventually("the watch channel is open", WAIT, || async {
                t.channel().await.is_some()
            })
            .await;
        }
        t
    }

    /// Starts `driftless sink` for the sink and waits until its receiver listens.
    pub(crate) async fn start_worker(&mut self) {
        let w = self.start_second_worker();
        wait_for_port(self.hook_port, "the receiver");
        self.worker = Some(w);
    }

    /// Starts another `driftless sink` process for the sink (not waited for).
    pub(crate) fn start_second_worker(&self) -> DriftlessProcess {
        self.setup
            .start_with("sink", &["--name", &self.name], &self.crm.worker_env())
    }

    /// Stops the worker cleanly (exit 0).
    pub(crate) fn stop_worker(&mut self) {
        let mut w = self.worker.take().expect("a worker runs");
        assert_eq!(w.stop(), Some(0), "{}", w.log_text());
    }

    /// The worker's log.
    pub(crate) fn log(&self) -> String {
        self.worker
            .as_ref()
            .map(DriftlessProcess::log_text)
            .unwrap_or_default()
    }

    /// Rows of Postgres by id.
    pub(crate) async fn postgres(&self) -> BTreeMap<i64, Row> {
        let n = self.crm.columns().len();
        self.db
            .client
            .query(
                &format!(
                    "SELECT id, {} FROM {}",
                    self.crm.columns().join(", "),
                    self.crm.table()
                ),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), (1..=n).map(|i| r.get(i)).collect()))
            .collect()
    }

    /// Live records of the CRM by id property: (CRM id, row).
    pub(crate) async fn crm_records(&self) -> BTreeMap<i64, (String, Row)> {
        self.crm.records(&self.emulator.state().await)
    }

    pub(crate) async fn in_sync(&self) -> bool {
        let crm: BTreeMap<i64, Row> = self
            .crm_records()
            .await
            .into_iter()
            .map(|(k, (_, r))| (k, r))
            .collect();
        self.postgres().await == crm
    }

    pub(crate) async fn wait_in_sync(&self, what: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        while !self.in_sync().await {
            if std::time::Instant::now() > deadline {
                panic!(
                    "{what}: not in sync\npostgres: {:?}\n{}: {:?}\n{}",
                    self.postgres().await,
                    self.crm.kind(),
                    self.crm_records().await,
                    self.log()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }

    /// Writes the sink made to the CRM's API (upserts, updates, inserts).
    pub(crate) async fn sink_writes(&self) -> u64 {
        self.sink_calls(Crm::writes, &self.own_writes).await
    }

    /// Deletes (archives) the sink made through the CRM's API.
    pub(crate) async fn sink_deletes(&self) -> u64 {
        self.sink_calls(Crm::deletes, &self.own_deletes).await
    }

    /// The calls `count` finds in the emulator's state less the test's own (`own`; Zoho counts
    /// them with the sink's, HubSpot not).
    async fn sink_calls(&self, count: fn(Crm, &Value) -> u64, own: &AtomicU64) -> u64 {
        let state = self.emulator.state().await;
        let own = match self.crm {
            Crm::Hubspot => 0,
            Crm::Zoho => own.load(Ordering::SeqCst),
        };
        count(self.crm, &state) - own
    }

    fn topic(&self) -> String {
        self.setup.topic(&format!("public.{}", self.crm.table()))
    }

    /// The origins of every change captured so far (None: a write of ours, not driftless's),
    /// once `expected` changes are there and no more arrive for 2 s (order: by partition).
    pub(crate) fn origins(&self, expected: usize) -> Vec<Option<String>> {
        captured_origins(&self.topic(), expected)
    }

    /// The origins of every change captured so far, however many (order: by partition).
    pub(crate) fn origins_any(&self) -> Vec<Option<String>> {
        change_origins(&read_until_quiet(&self.topic(), 0, WAIT))
    }

    /// The replication origin of the sink's inbound writes.
    pub(crate) fn origin(&self) -> Option<String> {
        Some(driftless::sync::store::origin_name(&self.name))
    }

    /// How many of `origins` are the sink's inbound writes.
    pub(crate) fn tagged(&self, origins: &[Option<String>]) -> usize {
        let origin = self.origin();
        origins.iter().filter(|o| **o == origin).count()
    }

    /// The sink's dead-letter topic (also the inbound half's).
    pub(crate) fn dead_letter_topic(&self) -> String {
        format!("{}.dlq.{}", self.setup.prefix, self.name)
    }

    /// Inserts `n` sample rows (keys 1..=n, as the identity column counts).
    pub(crate) async fn insert_samples(&self, n: i64) {
        let rows: Vec<String> = (1..=n)
            .map(|k| format!("({})", self.crm.sample(k, &format!("K{k}"))))
            .collect();
        self.db
            .exec(&format!(
                "INSERT INTO {} ({}) VALUES {}",
                self.crm.table(),
                self.crm.columns().join(", "),
                rows.join(", ")
            ))
            .await;
    }

    /// An API call as a user of the CRM would make it (the emulator notifies the receiver).
    async fn user_call(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        crm_call(self.crm, &self.emulator, method, path, body).await
    }

    /// A CRM user's `action` (`edit`, `archive`) on the record of `key` with `body`; returns
    /// the status and the JSON answer.
    async fn user_call_on(&self, key: i64, action: &str, body: Value) -> (u16, Value) {
        let (id, _) = self
            .crm_records()
            .await
            .remove(&key)
            .expect("the record exists");
        let (method, path) = match (self.crm, action) {
            (Crm::Hubspot, _) => (
                reqwest::Method::POST,
                format!("/_emulator/objects/contacts/{id}/{action}"),
            ),
            (Crm::Zoho, "edit") => (reqwest::Method::PUT, format!("/crm/v8/Leads/{id}")),
            (Crm::Zoho, _) => (reqwest::Method::DELETE, format!("/crm/v8/Leads?ids={id}")),
        };
        self.user_call(method, &path, body).await
    }

    /// Edits the record of `key` as a CRM user would; `fields` are CRM properties.
    pub(crate) async fn edit_in_crm(&self, key: i64, fields: Value) {
        let body = match self.crm {
            Crm::Hubspot => json!({"properties": fields}),
            Crm::Zoho => json!({"data": [fields]}),
        };
        let (status, answer) = self.user_call_on(key, "edit", body).await;
        assert_eq!(status, 200, "edit accepted: {answer}");
        self.own_writes.fetch_add(1, Ordering::SeqCst);
    }

    /// Deletes (HubSpot: archives) the record of `key` as a CRM user would; the CRM notifies
    /// the deletion.
    pub(crate) async fn delete_in_crm(&self, key: i64) {
        let body = match self.crm {
            Crm::Hubspot => json!({}),
            Crm::Zoho => Value::Null,
        };
        let (status, answer) = self.user_call_on(key, "archive", body).await;
        assert!(status < 300, "delete accepted: {status} {answer}");
        self.own_deletes.fetch_add(1, Ordering::SeqCst);
    }

    /// Creates a record as a CRM user would; `fields` are CRM properties.
    pub(crate) async fn create_in_crm(&self, fields: Value) {
        let (path, body) = match self.crm {
            Crm::Hubspot => ("/_emulator/objects/contacts", json!({"properties": fields})),
            Crm::Zoho => ("/crm/v8/Leads", json!({"data": [fields]})),
        };
        let (status, answer) = self.user_call(reqwest::Method::POST, path, body).await;
        match self.crm {
            Crm::Hubspot => assert!(status < 300, "create accepted: {status} {answer}"),
            Crm::Zoho => assert_eq!(status, 201, "create accepted: {answer}"),
        }
        self.own_writes.fetch_add(1, Ordering::SeqCst);
    }

    /// Zoho: the emulator's watch channel (there is one at most).
    pub(crate) async fn channel(&self) -> Option<Value> {
        let state = self.emulator.state().await;
        state["channels"].as_array()?.first().cloned()
    }

    /// Record keys the sink's ledger links to CRM records.
    pub(crate) async fn ledger_keys(&self) -> Vec<String> {
        self.db
            .client
            .query(
                "SELECT record_key FROM driftless.sync_ledger WHERE sink = $1 ORDER BY 1",
                &[&self.name],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Sentinel of the outbound half: a Postgres update of `key`'s name, which is after every
    /// earlier event of the key in its Kafka partition. Once it reached the CRM, the sink has
    /// handled those events (an origin-tagged one was skipped, or it was written).
    pub(crate) async fn outbound_sentinel(&self, key: i64) {
        self.postgres_sentinel(key, |value| {
            format!(
                "UPDATE {} SET {} = '{value}' WHERE id = {key}",
                self.crm.table(),
                self.crm.columns()[1]
            )
        })
        .await;
    }

    /// Sentinel of the outbound half for a deleted row: a new row with the deleted `key`, whose
    /// event follows the delete event in the key's partition. Once it reached the CRM (as a
    /// new record), the sink has handled the delete event.
    pub(crate) async fn insert_sentinel(&self, key: i64) {
        self.postgres_sentinel(key, |value| {
            format!(
                "INSERT INTO {} (id, {}) VALUES ({key}, {})",
                self.crm.table(),
                self.crm.columns().join(", "),
                self.crm.sample(key, value)
            )
        })
        .await;
    }

    /// Runs `sql(value)`, a Postgres write giving `key` the name `value`, and waits until the
    /// CRM record of `key` has it.
    async fn postgres_sentinel(&self, key: i64, sql: impl FnOnce(&str) -> String) {
        let value = unique("sentinel");
        let sql = sql(&value);
        sentinel(
            "the Postgres sentinel reached the CRM",
            self.db.exec(&sql),
            || async {
                self.crm_records()
                    .await
                    .get(&key)
                    .is_some_and(|(_, r)| r[1] == value)
            },
        )
        .await;
    }

    /// Sentinel of the inbound half: a CRM edit of `key`'s name, notified after everything
    /// the CRM notified before (and, with reconciliation only, found by a later pass). Once it
    /// reached Postgres, the inbound worker has handled every earlier notification.
    pub(crate) async fn inbound_sentinel(&self, key: i64) {
        let value = unique("sentinel");
        let property = self.crm.properties()[1];
        sentinel(
            "the CRM sentinel reached Postgres",
            self.edit_in_crm(key, json!({ property: value })),
            || async {
                self.postgres()
                    .await
                    .get(&key)
                    .is_some_and(|r| r[1] == value)
            },
        )
        .await;
    }

    /// Waits until the worker logged `n` more reconciliation passes than it has now.
    pub(crate) async fn wait_reconciliation_passes(&self, n: usize) {
        let passes = |log: String| log.matches("reconciliation pass done").count();
        let target = passes(self.log()) + n;
        eventually("reconciliation passes", WAIT, || async {
            passes(self.log()) >= target
        })
        .await;
    }

    /// Stops the worker and capture cleanly and drops the database.
    pub(crate) async fn finish(mut self) {
        if self.worker.is_some() {
            self.stop_worker();
        }
        assert_eq!(self.capture.stop(), Some(0));
        self.db.drop_db().await;
    }
}
