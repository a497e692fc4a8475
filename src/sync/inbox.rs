//! The durable inbox of a two-way sink: CRM record ids waiting for the inbound worker, kept in
//! Postgres so that nothing acknowledged to the CRM, and nothing reconciliation moved its
//! cursor past, is lost when the worker is killed.
//!
//! Owns `driftless.sync_inbox (sink, kind, crm_id, version)`, the reconciliation cursors
//! `driftless.sync_cursor (sink, modified_after_ms)` (modifications under the sink's name,
//! deletions under `{sink}/deleted`) and the wake-up of the inbound worker. Invariants:
//! - the cursors are created at the sink's first start, at that time
//!   ([`Inbox::ensure_cursors`]), unless `initial_import` is set: enabling two-way sync imports
//!   no existing CRM record unless asked;
//! - the receivers answer 2xx only after [`Inbox::add`] committed the delivery's ids, and
//!   reconciliation saves its cursor only after the ids it found are committed here;
//! - an id leaves the inbox only through [`Inbox::done`] after its change was applied, and only
//!   if no newer notification for it arrived meanwhile (every `add` of a queued id bumps its
//!   `version`, and `done` deletes the version it was given);
//! - one row per (sink, kind, CRM id): the inbox is bounded by the number of CRM records;
//! - the connection is its own (never the store's, whose lock an outbound batch or an inbound
//!   application holds for the length of its CRM calls: a receiver or a reconciliation pass
//!   never waits for a CRM call), and it is opened again when Postgres closed it.

use tokio::sync::{Mutex, Notify};
use tokio_postgres::Client;

use crate::config::two_way::{OnCrmDelete, TwoWay};
use crate::postgres::connect::{ConnectParams, connect_sql};
use crate::postgres::ddl;
use crate::sync::engine::Inbound;
use crate::sync::store::StoreError;

/// `sync_inbox.kind` of changed and deleted records.
const CHANGED: &str = "changed";
const DELETED: &str = "deleted";

/// Which reconciliation cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CursorKind {
    /// Records modified since.
    Modified,
    /// Records deleted since (`on_crm_delete = "delete"`).
    Deleted,
}

impl CursorKind {
    /// The cursors a sink's reconciliation keeps: modifications, and deletions with
    /// `on_crm_delete = "delete"`.
    pub(crate) fn in_use(two_way: &TwoWay) -> &'static [CursorKind] {
        match two_way.on_crm_delete {
            OnCrmDelete::Delete => &[CursorKind::Modified, CursorKind::Deleted],
            OnCrmDelete::Ignore => &[CursorKind::Modified],
        }
    }
}

/// Ids taken from the inbox for one application, with the versions [`Inbox::done`] removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Taken {
    /// Deleted (true) or changed records.
    pub(crate) deleted: bool,
    /// CRM ids.
    pub(crate) ids: Vec<String>,
    versions: Vec<i64>,
}

/// The durable inbox of one two-way sink.
pub(crate) struct Inbox {
    params: ConnectParams,
    sink: String,
    client: Mutex<Option<Client>>,
    wake: Notify,
}

impl Inbox {
    /// Connects and creates the inbox table if missing.
    pub(crate) async fn open(params: &ConnectParams, sink: &str) -> Result<Self, StoreError> {
        let client = connect_sql(params).await?;
        ddl::create_if_missing(
            &client,
            "CREATE SCHEMA IF NOT EXISTS driftless;
                 CREATE TABLE IF NOT EXISTS driftless.sync_inbox (
                     sink text NOT NULL, kind text NOT NULL, crm_id text NOT NULL,
                     version bigint NOT NULL DEFAULT 0,
                     queued_at timestamptz NOT NULL DEFAULT now(),
                     PRIMARY KEY (sink, kind, crm_id));
                 CREATE TABLE IF NOT EXISTS driftless.sync_cursor (
                     sink text PRIMARY KEY, modified_after_ms bigint NOT NULL,
                     last_id text NOT NULL DEFAULT '')",
        )
        .await?;
        Ok(Inbox {
            params: params.clone(),
            sink: sink.to_string(),
            client: Mutex::new(Some(client)),
            wake: Notify::new(),
        })
    }

    /// Runs `f` on the connection, opening it again first if Postgres closed it.
    async fn with_client<T>(
        &self,
        f: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = None;
            *slot = Some(connect_sql(&self.params).await?);
        }
        let client = slot.as_ref().expect("connected above");
        Ok(f(client).await?)
    }

    /// Commits the ids of `items` (all or none) and wakes the inbound worker.
    pub(crate) async fn add(&self, items: &[Inbound]) -> Result<(), StoreError> {
        let mut kinds = Vec::new();
        let mut ids = Vec::new();
        for item in items {
            let (kind, list) = match item {
                Inbound::Changed(list) => (CHANGED, list),
                Inbound::Deleted(list) => (DELETED, list),
            };
            for id in list {
                kinds.push(kind);
                ids.push(id.as_str());
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        let sink = self.sink.as_str();
        self.with_client(async |c| {
            c.execute(
                "INSERT INTO driftless.sync_inbox (sink, kind, crm_id)
                 SELECT $1, k, i FROM unnest($2::text[], $3::text[]) AS d(k, i)
                 ON CONFLICT (sink, kind, crm_id)
                 DO UPDATE SET version = sync_inbox.version + 1",
                &[&sink, &kinds, &ids],
            )
            .await
        })
        .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Up to `limit` ids to apply next, deletions first, oldest first; None when empty.
    pub(crate) async fn next(&self, limit: i64) -> Result<Option<Taken>, StoreError> {
        let sink = self.sink.as_str();
        let rows = self
            .with_client(async |c| {
                c.query(
                    "SELECT kind = 'deleted', crm_id, version FROM driftless.sync_inbox
                     WHERE sink = $1 AND kind = (
                         -- 'deleted' sorts after 'changed': deletions first
                         SELECT max(kind) FROM driftless.sync_inbox WHERE sink = $1)
                     ORDER BY queued_at, crm_id LIMIT $2",
                    &[&sink, &limit],
                )
                .await
            })
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(Taken {
            deleted: first.get(0),
            ids: rows.iter().map(|r| r.get(1)).collect(),
            versions: rows.iter().map(|r| r.get(2)).collect(),
        }))
    }

    /// Removes taken ids that were applied, unless a newer notification came for them.
    pub(crate) async fn done(&self, taken: &Taken) -> Result<(), StoreError> {
        let kind = if taken.deleted { DELETED } else { CHANGED };
        let sink = self.sink.as_str();
        self.with_client(async |c| {
            c.execute(
                "DELETE FROM driftless.sync_inbox i
                 USING unnest($3::text[], $4::bigint[]) AS d(id, v)
                 WHERE i.sink = $1 AND i.kind = $2 AND i.crm_id = d.id AND i.version = d.v",
                &[&sink, &kind, &taken.ids, &taken.versions],
            )
            .await
        })
        .await?;
        Ok(())
    }

    /// The row of `sync_cursor` holding a cursor: the sink's name for modifications,
    /// `{sink}/deleted` for deletions (`/` never occurs in sink names).
    fn cursor_row(&self, kind: CursorKind) -> String {
        match kind {
            CursorKind::Modified => self.sink.clone(),
            CursorKind::Deleted => format!("{}/deleted", self.sink),
        }
    }

    /// A reconciliation cursor: where the next window starts (epoch ms), if saved.
    pub(crate) async fn cursor(&self, kind: CursorKind) -> Result<Option<i64>, StoreError> {
        let row = self.cursor_row(kind);
        let found = self
            .with_client(async |c| {
                c.query_opt(
                    "SELECT modified_after_ms FROM driftless.sync_cursor WHERE sink = $1",
                    &[&row],
                )
                .await
            })
            .await?;
        Ok(found.map(|r| r.get(0)))
    }

    /// At a sink's first start, creates the missing cursors of `kinds` at `now_ms`, so
    /// reconciliation begins with the records changed from then on; with `initial_import`
    /// leaves them missing, so the first pass reads every record. Existing cursors are kept.
    pub(crate) async fn ensure_cursors(
        &self,
        kinds: &[CursorKind],
        initial_import: bool,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if initial_import {
            return Ok(());
        }
        let rows: Vec<String> = kinds.iter().map(|k| self.cursor_row(*k)).collect();
        self.with_client(async |c| {
            c.execute(
                "INSERT INTO driftless.sync_cursor (sink, modified_after_ms)
                 SELECT unnest($1::text[]), $2 ON CONFLICT (sink) DO NOTHING",
                &[&rows, &now_ms],
            )
            .await
        })
        .await?;
        Ok(())
    }

    /// Moves a reconciliation cursor (after the window's ids were committed by [`Inbox::add`]).
    pub(crate) async fn save_cursor(&self, kind: CursorKind, at_ms: i64) -> Result<(), StoreError> {
        let row = self.cursor_row(kind);
        self.with_client(async |c| {
            c.execute(
                "INSERT INTO driftless.sync_cursor (sink, modified_after_ms) VALUES ($1, $2)
                 ON CONFLICT (sink) DO UPDATE SET modified_after_ms = excluded.modified_after_ms",
                &[&row, &at_ms],
            )
            .await
        })
        .await?;
        Ok(())
    }

    /// Waits until [`Inbox::add`] committed something since the last wake-up (a wake-up that
    /// came while nobody waited is kept).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }
}
