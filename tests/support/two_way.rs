//! The two-way sync harness shared by the HubSpot and Zoho tests ([`TwoWay`]): Postgres ⇄
//! driftless (capture and a `direction = "both"` sink worker) ⇄ the CRM's emulator, whose
//! webhooks (HubSpot) or watch-channel notifications (Zoho) reach the worker's receiver over
//! TCP. What differs between the CRMs is in [`Crm`].
//!
//! A row is compared as the values of its mapped columns after the id ([`Row`]), in table
//! order; column 1 is the name (HubSpot `first_name`, Zoho `last_name`), which the sentinels
//! change. The harness proves "nothing more happened" with sentinels ([`TwoWay::outbound_sentinel`],
//! [`TwoWay::inbound_sentinel`], [`TwoWay::insert_sentinel`]), never by sleeping.

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

/// The client secret of the HubSpot app whose webhooks the sink receives.
pub const HUBSPOT_SECRET: &str = "hubspot-app-client-secret";
/// An access token the Zoho emulator accepts.
pub const ZOHO_TOKEN: &str = "test-access-token";
/// `[sinks.inbound]` TOML without reconciliation.
pub const RECONCILE_OFF: &str = r#"reconcile_every = "off""#;

/// Values of a row's mapped columns after the id, in table order.
pub type Row = Vec<String>;

/// The CRM at the other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crm {
    /// HubSpot contacts (`public.contacts`: email, first_name, lifecycle), signed webhooks.
    Hubspot,
    /// Zoho CRM Leads (`public.leads`: email, last_name), watch-channel notifications.
    Zoho,
}

impl Crm {
    /// The emulator's and the sink's kind.
    pub fn kind(self) -> &'static str {
        match self {
            Crm::Hubspot => "hubspot",
            Crm::Zoho => "zoho",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Crm::Hubspot => "contacts",
            Crm::Zoho => "leads",
        }
    }

    /// The mapped columns after the id.
    fn columns(self) -> &'static [&'static str] {
        match self {
            Crm::Hubspot => &["email", "first_name", "lifecycle"],
            Crm::Zoho => &["email", "last_name"],
        }
    }

    /// The CRM properties of [`Crm::columns`], in the same order.
    fn properties(self) -> &'static [&'static str] {
        match self {
            Crm::Hubspot => &["email", "firstname", "lifecyclestage"],
            Crm::Zoho => &["Email", "Last_Name"],
        }
    }

    fn id_property(self) -> &'static str {
        match self {
            Crm::Hubspot => "pg_external_id",
            Crm::Zoho => "External_Id",
        }
    }

    /// The row of sample key `key` (as SQL values).
    fn sample(self, key: i64, name: &str) -> String {
        match self {
            Crm::Hubspot => format!("'k{key}@example.com', '{name}', 'lead'"),
            Crm::Zoho => format!("'k{key}@example.com', '{name}'"),
        }
    }

    /// CRM properties a record needs besides email and name (HubSpot: the lifecycle stage).
    fn other_properties(self) -> Value {
        match self {
            Crm::Hubspot => json!({"lifecyclestage": "customer"}),
            Crm::Zoho => json!({}),
        }
    }

    /// The environment of a sink worker.
    pub fn worker_env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Crm::Hubspot => vec![
                ("HUBSPOT_TOKEN", "test-token"),
                ("HUBSPOT_CLIENT_SECRET", HUBSPOT_SECRET),
            ],
            Crm::Zoho => vec![("ZOHO_TOKEN", ZOHO_TOKEN)],
        }
    }

    /// The `[[sinks]]` table; `inbound` and `ownership` are appended to `[sinks.inbound]` and
    /// `[sinks.ownership]`.
    fn sink_toml(self, name: &str, port: u16, hook_port: u16, opts: &Options) -> String {
        let (target, inbound, fields) = match self {
            Crm::Hubspot => (
                "object = \"contacts\"\ntoken_env = \"HUBSPOT_TOKEN\"",
                "client_secret_env = \"HUBSPOT_CLIENT_SECRET\"",
                "email = \"email\"\nfirst_name = \"firstname\"\nlifecycle = { property = \
                 \"lifecyclestage\", map = { lead = \"lead\", customer = \"customer\", \
                 other = \"other\" } }",
            ),
            Crm::Zoho => (
                "module = \"Leads\"\ntoken_env = \"ZOHO_TOKEN\"",
                "",
                "email = \"Email\"\nlast_name = \"Last_Name\"",
            ),
        };
        format!(
            r#"
[[sinks]]
name = "{name}"
kind = "{kind}"
table = "public.{table}"
{target}
id_property = "{id}"
base_url = "http://127.0.0.1:{port}"
batch_max_wait_ms = 100
direction = "both"
[sinks.inbound]
listen = "127.0.0.1:{hook_port}"
webhook_path = "/hooks/{kind}"
{inbound}
{extra_inbound}
[sinks.ownership]
{ownership}
[sinks.fields]
id = "{id}"
{fields}
"#,
            kind = self.kind(),
            table = self.table(),
            id = self.id_property(),
            extra_inbound = opts.inbound,
            ownership = opts.ownership,
        )
    }

    /// Every record of the emulator's state, deleted (archived) ones included.
    fn all_records(self, state: &Value) -> &[Value] {
        let records = match self {
            Crm::Hubspot => &state["objects"]["contacts"],
            Crm::Zoho => &state["records"]["Leads"],
        };
        records.as_array().map_or(&[], Vec::as_slice)
    }

    /// Live records of the emulator's state by id property: (CRM id, row).
    fn records(self, state: &Value) -> BTreeMap<i64, (String, Row)> {
        let (fields, deleted) = match self {
            Crm::Hubspot => ("/properties", "archived"),
            Crm::Zoho => ("", "$deleted"),
        };
        let mut out = BTreeMap::new();
        for r in self.all_records(state) {
            if r[deleted] == true {
                continue;
            }
            let f = r.pointer(fields).expect("record fields");
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            let Ok(key) = s(self.id_property()).parse::<i64>() else {
                continue;
            };
            let id = r["id"].as_str().expect("string ids").to_string();
            out.insert(key, (id, self.properties().iter().map(|p| s(p)).collect()));
        }
        out
    }

    /// Requests the emulator counted whose path (HubSpot) or `METHOD path` (Zoho) matches.
    fn requests(self, state: &Value, matches: impl Fn(&str) -> bool) -> u64 {
        let counts = match self {
            Crm::Hubspot => &state["requests"]["byPath"],
            Crm::Zoho => &state["request_counts"],
        };
        counts
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| matches(k))
            .map(|(_, n)| n.as_u64().unwrap_or(0))
            .sum()
    }

    /// Writes the CRM's API received (HubSpot batch upserts and updates, Zoho write calls),
    /// the test's own included.
    fn writes(self, state: &Value) -> u64 {
        match self {
            Crm::Hubspot => self.requests(state, |p| {
                p.contains("batch/upsert") || p.contains("batch/update")
            }),
            Crm::Zoho => state["write_calls"].as_array().map_or(0, Vec::len) as u64,
        }
    }

    /// Deletes the CRM's API received (HubSpot archives, Zoho DELETEs), the test's own included.
    fn deletes(self, state: &Value) -> u64 {
        match self {
            Crm::Hubspot => self.requests(state, |p| p.contains("archive")),
            Crm::Zoho => self.requests(state, |k| k.starts_with("DELETE /crm/v8/Leads")),
        }
    }
}

/// How a [`TwoWay`] is configured.
pub struct Options<'a> {
    /// `[sinks.ownership]` TOML.
    pub ownership: &'a str,
    /// Extra `[sinks.inbound]` TOML (`reconcile_every`, `on_crm_delete`, `public_url`).
    pub inbound: &'a str,
    /// HubSpot only: options of the emulator's webhook subscription (`drop_every`, `events`,
    /// ...).
    pub hooks: Value,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            ownership: r#""*" = "latest""#,
            inbound: RECONCILE_OFF,
            hooks: json!({}),
        }
    }
}

/// Everything of one two-way sync test; [`TwoWay::finish`] stops it cleanly.
pub struct TwoWay {
    pub crm: Crm,
    pub emulator: Emulator,
    pub db: TestDb,
    pub setup: Setup,
    capture: DriftlessProcess,
    /// The running sink worker.
    pub worker: Option<DriftlessProcess>,
    /// The sink's name.
    pub name: String,
    /// The port of the worker's receiver.
    pub hook_port: u16,
    /// The audit trail file.
    pub audit: PathBuf,
    /// Writes and deletes the test itself made through the CRM's API (Zoho counts them with
    /// the sink's).
    own_writes: AtomicU64,
    own_deletes: AtomicU64,
}

impl TwoWay {
    /// Starts everything with the default [`Options`] but `inbound`.
    pub async fn start(crm: Crm, inbound: &str) -> TwoWay {
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
    pub async fn start_with(crm: Crm, opts: Options<'_>) -> TwoWay {
        let emulator = Emulator::start(crm.kind());
        let db = TestDb::new(&format!("two_way_{}", crm.kind())).await;
        let columns: Vec<String> = crm.columns().iter().map(|c| format!("{c} text")).collect();
        db.exec(&format!(
            "CREATE TABLE {} (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, {})",
            crm.table(),
            columns.join(", ")
        ))
        .await;
        let name = unique(&format!("{}-two-way", crm.kind())).replace('_', "-");
        let hook_port = free_port();
        let setup = Setup::new(&db, &[&format!("public.{}", crm.table())], "", "");
        let audit = setup.dir.path().join("audit.jsonl");
        setup.append_config(&format!(
            "\n[audit]\nto = \"file\"\npath = \"{}\"\n",
            audit.display()
        ));
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
            own_writes: AtomicU64::new(0),
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
    pub async fn start_worker(&mut self) {
        let w = self.start_second_worker();
        wait_for_port(self.hook_port, "the receiver");
        self.worker = Some(w);
    }

    /// Starts another `driftless sink` process for the sink (not waited for).
    pub fn start_second_worker(&self) -> DriftlessProcess {
        self.setup
            .start_with("sink", &["--name", &self.name], &self.crm.worker_env())
    }

    /// Stops the worker cleanly (exit 0).
    pub fn stop_worker(&mut self) {
        let mut w = self.worker.take().expect("a worker runs");
        assert_eq!(w.stop(), Some(0), "{}", w.log_text());
    }

    /// The worker's log.
    pub fn log(&self) -> String {
        self.worker
            .as_ref()
            .map(DriftlessProcess::log_text)
            .unwrap_or_default()
    }

    /// Rows of Postgres by id.
    pub async fn postgres(&self) -> BTreeMap<i64, Row> {
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
    pub async fn crm_records(&self) -> BTreeMap<i64, (String, Row)> {
        self.crm.records(&self.emulator.state().await)
    }

    pub async fn in_sync(&self) -> bool {
        let crm: BTreeMap<i64, Row> = self
            .crm_records()
            .await
            .into_iter()
            .map(|(k, (_, r))| (k, r))
            .collect();
        self.postgres().await == crm
    }

    pub async fn wait_in_sync(&self, what: &str) {
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
    pub async fn sink_writes(&self) -> u64 {
        let state = self.emulator.state().await;
        let own = match self.crm {
            Crm::Hubspot => 0,
            Crm::Zoho => self.own_writes.load(Ordering::SeqCst),
        };
        self.crm.writes(&state) - own
    }

    /// Deletes (archives) the sink made through the CRM's API.
    pub async fn sink_deletes(&self) -> u64 {
        let state = self.emulator.state().await;
        let own = match self.crm {
            Crm::Hubspot => 0,
            Crm::Zoho => self.own_deletes.load(Ordering::SeqCst),
        };
        self.crm.deletes(&state) - own
    }

    fn topic(&self) -> String {
        self.setup.topic(&format!("public.{}", self.crm.table()))
    }

    /// The origins of every change captured so far (None: a write of ours, not driftless's),
    /// once `expected` changes are there and no more arrive for 2 s (order: by partition).
    pub fn origins(&self, expected: usize) -> Vec<Option<String>> {
        captured_origins(&self.topic(), expected)
    }

    /// The origins of every change captured so far, however many (order: by partition).
    pub fn origins_any(&self) -> Vec<Option<String>> {
        change_origins(&read_until_quiet(&self.topic(), 0, WAIT))
    }

    /// The replication origin of the sink's inbound writes.
    pub fn origin(&self) -> Option<String> {
        Some(driftless::sync::store::origin_name(&self.name))
    }

    /// How many of `origins` are the sink's inbound writes.
    pub fn tagged(&self, origins: &[Option<String>]) -> usize {
        let origin = self.origin();
        origins.iter().filter(|o| **o == origin).count()
    }

    /// Inserts `n` sample rows (keys 1..=n, as the identity column counts).
    pub async fn insert_samples(&self, n: i64) {
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
        let mut req = http().request(method, self.emulator.url(path)).json(&body);
        if self.crm == Crm::Zoho {
            req = req.header("Authorization", format!("Zoho-oauthtoken {ZOHO_TOKEN}"));
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    fn crm_path(&self, id: &str, action: &str) -> (reqwest::Method, String) {
        match (self.crm, action) {
            (Crm::Hubspot, _) => (
                reqwest::Method::POST,
                format!("/_emulator/objects/contacts/{id}/{action}"),
            ),
            (Crm::Zoho, "edit") => (reqwest::Method::PUT, format!("/crm/v8/Leads/{id}")),
            (Crm::Zoho, _) => (reqwest::Method::DELETE, format!("/crm/v8/Leads?ids={id}")),
        }
    }

    /// Edits the record of `key` as a CRM user would; `fields` are CRM properties.
    pub async fn edit_in_crm(&self, key: i64, fields: Value) {
        let (id, _) = self
            .crm_records()
            .await
            .remove(&key)
            .expect("the record exists");
        let (method, path) = self.crm_path(&id, "edit");
        let body = match self.crm {
            Crm::Hubspot => json!({"properties": fields}),
            Crm::Zoho => json!({"data": [fields]}),
        };
        let (status, answer) = self.user_call(method, &path, body).await;
        assert_eq!(status, 200, "edit accepted: {answer}");
        self.own_writes.fetch_add(1, Ordering::SeqCst);
    }

    /// Deletes (HubSpot: archives) the record of `key` as a CRM user would; the CRM notifies
    /// the deletion.
    pub async fn delete_in_crm(&self, key: i64) {
        let (id, _) = self
            .crm_records()
            .await
            .remove(&key)
            .expect("the record exists");
        let (method, path) = self.crm_path(&id, "archive");
        let body = match self.crm {
            Crm::Hubspot => json!({}),
            Crm::Zoho => Value::Null,
        };
        let (status, answer) = self.user_call(method, &path, body).await;
        assert!(status < 300, "delete accepted: {status} {answer}");
        self.own_deletes.fetch_add(1, Ordering::SeqCst);
    }

    /// Creates a record as a CRM user would; `fields` are CRM properties.
    pub async fn create_in_crm(&self, fields: Value) {
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
    pub async fn channel(&self) -> Option<Value> {
        let state = self.emulator.state().await;
        state["channels"].as_array()?.first().cloned()
    }

    /// Record keys the sink's ledger links to CRM records.
    pub async fn ledger_keys(&self) -> Vec<String> {
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
    pub async fn outbound_sentinel(&self, key: i64) {
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
    pub async fn insert_sentinel(&self, key: i64) {
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
    pub async fn inbound_sentinel(&self, key: i64) {
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
    pub async fn wait_reconciliation_passes(&self, n: usize) {
        let passes = |log: String| log.matches("reconciliation pass done").count();
        let target = passes(self.log()) + n;
        eventually("reconciliation passes", WAIT, || async {
            passes(self.log()) >= target
        })
        .await;
    }

    /// Stops the worker and capture cleanly and drops the database.
    pub async fn finish(mut self) {
        if self.worker.is_some() {
            self.stop_worker();
        }
        assert_eq!(self.capture.stop(), Some(0));
        self.db.drop_db().await;
    }
}

/// A record deleted in the CRM (HubSpot: archived). With `on_crm_delete = "delete"` (through
/// the deletion webhooks or notifications, or with `lost` ones through reconciliation's
/// deleted-records listing) its row is deleted with one origin-tagged delete event, its link
/// is forgotten and no delete goes back to the CRM; otherwise the row stays and nothing is
/// written into Postgres.
pub async fn deletion_in_crm(crm: Crm, on_crm_delete: &str, lost: bool) {
    let deletes = on_crm_delete == "delete";
    let dead_port = free_port();
    let (reconcile, hooks) = match (crm, lost) {
        (_, false) => (RECONCILE_OFF.to_string(), json!({})),
        // HubSpot sends no deletion webhooks; changes still arrive.
        (Crm::Hubspot, true) => (
            r#"reconcile_every = "1s""#.to_string(),
            json!({"events": ["contact.creation", "contact.propertyChange"]}),
        ),
        // Zoho notifies a port nobody listens on.
        (Crm::Zoho, true) => (
            format!(
                "reconcile_every = \"1s\"\npublic_url = \"http://127.0.0.1:{dead_port}/hooks/zoho\""
            ),
            json!({}),
        ),
    };
    let inbound = format!("on_crm_delete = \"{on_crm_delete}\"\n{reconcile}");
    let t = TwoWay::start_with(
        crm,
        Options {
            inbound: &inbound,
            hooks,
            ..Options::default()
        },
    )
    .await;
    t.insert_samples(2).await;
    t.wait_in_sync("initial rows").await;
    assert_eq!(t.origins(2), [None, None]);
    eventually("both rows are linked", WAIT, || async {
        t.ledger_keys().await == ["1", "2"]
    })
    .await;
    t.delete_in_crm(1).await;
    if deletes {
        eventually("the deletion in the CRM deletes the row", WAIT, || async {
            !t.postgres().await.contains_key(&1)
        })
        .await;
        t.wait_in_sync("after the deletion in the CRM").await;
        let origins = t.origins(3);
        assert_eq!(
            t.tagged(&origins),
            1,
            "one delete event, tagged with the sink's origin: {origins:?}"
        );
        assert_eq!(t.ledger_keys().await, ["2"], "the link is forgotten");
    }
    if lost {
        t.wait_reconciliation_passes(2).await;
    }
    // Every deletion notified or reconciled before an edit of the other record was handled
    // once that edit reached Postgres.
    t.inbound_sentinel(2).await;
    if !deletes {
        assert!(t.postgres().await.contains_key(&1), "the row stays");
    }
    assert_eq!(t.postgres().await.len(), if deletes { 1 } else { 2 });
    let origins = t.origins(if deletes { 4 } else { 3 });
    assert_eq!(
        t.tagged(&origins),
        if deletes { 2 } else { 1 },
        "nothing more deleted or written into Postgres but the sentinel: {origins:?}"
    );
    if deletes {
        t.insert_sentinel(1).await;
    }
    assert_eq!(t.sink_deletes().await, 0, "no delete went back to the CRM");
    if lost && deletes {
        assert!(
            t.log()
                .contains("deleted rows whose CRM records were deleted")
        );
    }
    t.finish().await;
}

/// Edits on either side cross once and never echo back: a CRM edit becomes one origin-tagged
/// row write and no CRM write, a Postgres edit one CRM write and no row write, and a record
/// created in the CRM gets a row and is linked to it, with no duplicate on either side.
pub async fn edits_cross_once_and_never_echo_back(t: &TwoWay) {
    let crm = t.crm;
    let [email, name] = [crm.properties()[0], crm.properties()[1]];
    t.insert_samples(3).await;
    t.wait_in_sync("initial rows").await;
    assert_eq!(t.origins(3), [None, None, None]);

    // Edit in the CRM → Postgres changes; nothing is written back to the CRM.
    let crm_before = t.sink_writes().await;
    let mut edit = crm.other_properties();
    edit[name] = json!("Edited in the CRM");
    t.edit_in_crm(2, edit).await;
    eventually("the CRM edit reaches Postgres", WAIT, || async {
        t.postgres().await[&2][1] == "Edited in the CRM"
    })
    .await;
    t.wait_in_sync("after the CRM edit").await;
    if crm == Crm::Hubspot {
        assert_eq!(
            t.postgres().await[&2][2],
            "customer",
            "mapped back through the value map"
        );
    }
    // One row write in Postgres for one CRM edit, tagged with the sink's origin.
    assert_eq!(t.tagged(&t.origins(4)), 1);
    // The sentinel follows the inbound write in the key's partition.
    t.outbound_sentinel(2).await;
    assert_eq!(
        t.sink_writes().await,
        crm_before + 1,
        "only the sentinel: no write went back to the CRM"
    );

    // Edit in Postgres → the CRM changes; nothing comes back into Postgres.
    let crm_before = t.sink_writes().await;
    t.db.exec(&format!(
        "UPDATE {} SET {} = 'Edited in Postgres' WHERE id = 3",
        crm.table(),
        crm.columns()[1]
    ))
    .await;
    eventually("the Postgres edit reaches the CRM", WAIT, || async {
        t.crm_records().await[&3].1[1] == "Edited in Postgres"
    })
    .await;
    t.wait_in_sync("after the Postgres edit").await;
    assert_eq!(
        t.sink_writes().await - crm_before,
        1,
        "one upsert for one edit"
    );
    // The sentinel's webhook or notification follows the echo of that upsert.
    t.inbound_sentinel(3).await;
    let origins = t.origins(7);
    assert_eq!(
        t.tagged(&origins),
        2,
        "only the sentinel: the echo wrote nothing into Postgres"
    );
    assert_eq!(origins.iter().filter(|o| o.is_none()).count(), 5);

    // A record created in the CRM gets a row, and the record is linked to it (no duplicate).
    let mut created = crm.other_properties();
    created[email] = json!("created@example.com");
    created[name] = json!("Created");
    t.create_in_crm(created).await;
    eventually("the CRM record gets a row", WAIT, || async {
        t.postgres()
            .await
            .values()
            .any(|r| r[0] == "created@example.com")
    })
    .await;
    t.wait_in_sync("after the CRM create").await;
    assert_eq!(t.postgres().await.len(), 4);
    // One insert (tagged); linking the record to its row wrote nothing more to Postgres.
    assert_eq!(t.tagged(&t.origins(8)), 3, "one tagged insert");
    assert_eq!(
        crm.all_records(&t.emulator.state().await).len(),
        4,
        "no duplicate record in the CRM"
    );
    assert!(!t.log().contains("Edited in"), "no row values in logs");
}
