//! The two-way scenarios both CRMs run, each a test of `two_way_hubspot` and `two_way_zoho`.

use serde_json::json;

use super::{Crm, Options, RECONCILE_OFF, TwoWay};
use crate::support::free_port;
use crate::support::wait::{WAIT, eventually, sentinel};

/// A record deleted in the CRM (HubSpot: archived). With `on_crm_delete = "delete"` (through
/// the deletion webhooks or notifications, or with `lost` ones through reconciliation's
/// deleted-records listing) its row is deleted with one origin-tagged delete event, its link
/// is forgotten and no delete goes back to the CRM; otherwise the row stays and nothing is
/// written into Postgres.
pub(crate) async fn deletion_in_crm(crm: Crm, on_crm_delete: &str, lost: bool) {
    let deletes = on_crm_delete == "delete";
    let dead_port = free_port();
    let (reconcile, hooks) = match (crm, lost) {
        (_, false) => (RECONCILE_OFF.to_string(), json!({})),
        // HubSpot sends no deletion webhooks; changes still arrive.
        (Crm::Hubspot, true) => (
            r#"reconcile_every = "1s"
reconcile_lag = "3s""#
                .to_string(),
            json!({"events": ["contact.creation", "contact.propertyChange"]}),
        ),
        // Zoho notifies a port nobody listens on.
        (Crm::Zoho, true) => (
            format!(
                "reconcile_every = \"1s\"\nreconcile_lag = \"3s\"\npublic_url = \"http://127.0.0.1:{dead_port}/hooks/zoho\""
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
        "one delete event if deletes, tagged with the sink's origin, and the sentinel; nothing \
         more deleted or written into Postgres: {origins:?}"
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
pub(crate) async fn edits_cross_once_and_never_echo_back(t: &TwoWay) {
    let crm = t.crm;
    let [email, name] = [crm.properties()[0], crm.properties()[1]];
    t.insert_samples(3).await;
    t.wait_in_sync("initial rows").await;

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
    // The sentinel follows the inbound write in the key's partition.
    t.outbound_sentinel(2).await;
    assert_eq!(
        t.sink_writes().await,
        crm_before + 1,
        "only the sentinel: no write went back to the CRM"
    );
    // The three inserts, one row write for the CRM edit (tagged with the sink's origin), the
    // sentinel.
    let origins = t.origins(5);
    assert_eq!(t.tagged(&origins), 1, "{origins:?}");

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
    // The sentinel's webhook or notification follows those of the link (the id property set
    // on the new record): once it is in, they were handled.
    t.inbound_sentinel(4).await;
    // One insert (tagged); linking the record to its row wrote nothing more to Postgres.
    assert_eq!(
        t.tagged(&t.origins(9)),
        4,
        "one tagged insert, and the sentinel"
    );
    assert_eq!(
        crm.all_records(&t.emulator.state().await).len(),
        4,
        "no duplicate record in the CRM"
    );
    assert!(!t.log().contains("Edited in"), "no row values in logs");
}

/// Enabling two-way sync on a CRM that already holds 500 records: with the defaults none of
/// them comes into Postgres, with `initial_import = true` all of them do. Notifications are
/// lost (HubSpot drops every webhook, Zoho notifies a port nobody listens on), so records only
/// come in through reconciliation, which lists them by modification time: a record created
/// after the worker started (the sentinel) comes after every one of the 500 in any listing
/// that holds them, so once it is in Postgres, any of them the sink would import is in too.
pub(crate) async fn existing_crm_records(crm: Crm, initial_import: bool) {
    const EXISTING: usize = 500;
    let lost = match crm {
        Crm::Hubspot => String::new(),
        Crm::Zoho => format!(
            "public_url = \"http://127.0.0.1:{}/hooks/zoho\"",
            free_port()
        ),
    };
    let inbound = format!(
        "reconcile_every = \"1s\"\nreconcile_lag = \"3s\"\ninitial_import = {initial_import}\n{lost}"
    );
    let t = TwoWay::start_with(
        crm,
        Options {
            inbound: &inbound,
            hooks: json!({"drop_every": 1}),
            crm_records: EXISTING,
            ..Options::default()
        },
    )
    .await;
    let emails = || async {
        let mut emails: Vec<String> = t
            .postgres()
            .await
            .into_values()
            .map(|r| r[0].clone())
            .collect();
        emails.sort();
        emails
    };
    sentinel(
        "the record created after the start reaches Postgres",
        t.create_in_crm(crm.created("sentinel@example.com", "Sentinel")),
        || async { emails().await.contains(&"sentinel@example.com".to_string()) },
    )
    .await;
    let mut expected = vec!["sentinel@example.com".to_string()];
    if initial_import {
        expected.extend((1..=EXISTING).map(|k| format!("existing{k}@example.com")));
        expected.sort();
        let deadline = std::time::Instant::now() + WAIT;
        while emails().await != expected {
            assert!(
                std::time::Instant::now() < deadline,
                "every existing record is imported: {} rows\n{}",
                emails().await.len(),
                t.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
    assert_eq!(
        emails().await,
        expected,
        "initial_import = {initial_import}: the rows of the CRM's records"
    );
    assert_eq!(
        crm.all_records(&t.emulator.state().await).len(),
        EXISTING + 1,
        "no record created in the CRM"
    );
    t.finish().await;
}
