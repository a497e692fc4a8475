//! A database of each test's own on the shared test cluster ([`TestDb`]), and a capture
//! configuration for it ([`Setup`]): a unique slot, publication and topic prefix, so tests run
//! in parallel on one Postgres and one broker. Dropping the database drops its slots too.
//! [`TestRole`]: a login role of a test's own, to run `driftless` with fewer privileges.
//! [`load_rows`]: a write load that goes on through server outages.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use driftless::postgres::connect::{ConnectParams, connect_sql};
use tokio_postgres::Client;

use super::kafka::{PARTITIONS, broker_workarounds, brokers};
use super::{required_env, unique};

/// The superuser URL of the test cluster (database `postgres`).
pub(crate) fn pg_admin_url() -> String {
    required_env("DRIFTLESS_PG_URL", "the test Postgres")
}

/// Replaces the database of a Postgres URL.
fn url_with_db(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map(|(b, q)| (b, Some(q)))
        .unwrap_or((url, None));
    let idx = base.rfind('/').expect("url has a path");
    let mut out = format!("{}/{db}", &base[..idx]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A client of the test cluster.
pub(crate) async fn connect(url: &str) -> Client {
    let params = ConnectParams::from_url(url).expect("valid url");
    connect_sql(&params)
        .await
        .expect("connect to test postgres")
}

/// Writes `txns` transactions of `per_txn` rows into `t (id bigint PRIMARY KEY, payload
/// text)` (ids from 1), reconnecting and retrying a transaction whose outcome an outage made
/// unknown (idempotent: `ON CONFLICT DO NOTHING`). `done` counts the committed transactions.
pub(crate) async fn load_rows(url: String, txns: usize, per_txn: usize, done: Arc<AtomicUsize>) {
    let params = ConnectParams::from_url(&url).unwrap();
    let mut client = None;
    for t in 0..txns {
        let lo = t * per_txn + 1;
        let insert = format!(
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series({lo}, {}) g \
             ON CONFLICT DO NOTHING",
            lo + per_txn - 1
        );
        loop {
            if client.is_none() {
                client = connect_sql(&params).await.ok();
            }
            match &client {
                Some(c) if c.batch_execute(&insert).await.is_ok() => break,
                _ => {
                    client = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        done.store(t + 1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A database of its own, dropped (with its slots) by [`TestDb::drop_db`].
pub(crate) struct TestDb {
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) client: Client,
    admin_url: String,
}

impl TestDb {
    /// A database of its own on the shared test cluster.
    pub(crate) async fn new(tag: &str) -> TestDb {
        TestDb::on(&pg_admin_url(), tag).await
    }

    /// A database of its own on the cluster of `admin_url` (e.g. an
    /// [`OwnPostgres`](super::server::OwnPostgres)).
    pub(crate) async fn on(admin_url: &str, tag: &str) -> TestDb {
        let name = unique(&format!("t_{tag}"));
        let admin = connect(admin_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let url = url_with_db(admin_url, &name);
        let client = connect(&url).await;
        TestDb {
            name,
            url,
            client,
            admin_url: admin_url.to_string(),
        }
    }

    pub(crate) async fn exec(&self, sql: &str) {
        self.client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    pub(crate) async fn slot_confirmed_flush(&self, slot: &str) -> Option<String> {
        self.client
            .query_opt(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .and_then(|r| r.get(0))
    }

    pub(crate) async fn drop_db(self) {
        let admin = connect(&self.admin_url).await;
        let _ = admin
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE database = '{0}' AND active_pid IS NOT NULL; \
                 SELECT pg_sleep(0.2); \
                 SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE database = '{0}'",
                self.name
            ))
            .await;
        // A statement of its own: DROP DATABASE cannot run inside the implicit transaction of a
        // multi-statement query.
        let _ = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// The password of every [`TestRole`] (the test cluster admits password logins of any role
/// over 127.0.0.1).
const ROLE_PASSWORD: &str = "pw";

/// A login role of its own on the test cluster, to run `driftless` with fewer privileges than
/// the superuser; dropped by [`TestRole::drop_role`] once the test database is gone.
pub(crate) struct TestRole {
    pub(crate) name: String,
    /// The test database's URL with this role's name and password.
    pub(crate) url: String,
}

impl TestDb {
    /// Creates a role with `attributes` (e.g. `REPLICATION`, or nothing).
    pub(crate) async fn role(&self, attributes: &str) -> TestRole {
        let name = unique("dl_role");
        self.exec(&format!(
            "CREATE ROLE {name} LOGIN PASSWORD '{ROLE_PASSWORD}' {attributes}"
        ))
        .await;
        let mut url = url::Url::parse(&self.url).expect("test database url");
        url.set_username(&name).expect("user name");
        url.set_password(Some(ROLE_PASSWORD)).expect("password");
        TestRole {
            name,
            url: url.into(),
        }
    }
}

impl TestRole {
    /// Drops the role; call after [`TestDb::drop_db`] (dropping the database drops what the
    /// role owned there and its grants on it). Best effort, like [`TestDb::drop_db`].
    pub(crate) async fn drop_role(self) {
        let _ = connect(&pg_admin_url())
            .await
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", self.name))
            .await;
    }
}

/// One capture configuration in a temporary directory (processes of it:
/// [`super::process`]).
pub(crate) struct Setup {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    pub(crate) prefix: String,
    pub(crate) slot: String,
    pub(crate) db_url: String,
}

impl Setup {
    /// `tables` as `schema.table`; `extra_source` / `extra_kafka` are appended TOML lines.
    pub(crate) fn new(
        db: &TestDb,
        tables: &[&str],
        extra_source: &str,
        extra_kafka: &str,
    ) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let prefix = unique("dl");
        let slot = unique("slot");
        let tables = tables
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            r#"
[source]
url_env = "DRIFTLESS_SOURCE_URL"
slot = "{slot}"
publication = "{slot}"
tables = [{tables}]
status_interval_ms = 200
{extra_source}

[kafka]
brokers = "{brokers}"
topic_prefix = "{prefix}"
partitions = {partitions}
{extra_kafka}
{librdkafka}

[capture]
state_dir = "{state}"
metrics_listen = "off"

[audit]
key_env = "DRIFTLESS_AUDIT_KEY"
"#,
            brokers = brokers(),
            partitions = PARTITIONS,
            librdkafka = broker_workarounds(),
            state = dir.path().join("state").display(),
        );
        let config = dir.path().join("driftless.toml");
        std::fs::write(&config, text).unwrap();
        Setup {
            dir,
            config,
            prefix,
            slot,
            db_url: db.url.clone(),
        }
    }

    pub(crate) fn topic(&self, table: &str) -> String {
        format!("{}.{}", self.prefix, table)
    }

    /// Appends TOML (e.g. `[[sinks]]` tables) to the configuration.
    pub(crate) fn append_config(&self, toml: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap() + toml;
        std::fs::write(&self.config, text).unwrap();
    }

    /// Replaces text of the configuration (e.g. a listen address).
    pub(crate) fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "{from} is in the configuration");
        std::fs::write(&self.config, text.replace(from, to)).unwrap();
    }
}
