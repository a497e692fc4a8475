//! Column lists and row filters (`source.tables = [{ name, columns, where }]`): only the listed
//! columns and the matching rows leave the database, in the snapshot and in the stream alike;
//! `check` refuses what PostgreSQL would make the table's own UPDATEs and DELETEs fail on; an
//! existing publication with another row filter is a difference (the same condition written
//! otherwise is not).

use serde_json::{Value, json};

use crate::support::*;

const PLAIN: &str = r#"tables = ["public.people"]"#;

fn narrowed(columns: &str, condition: &str) -> String {
    format!(
        r#"tables = [{{ name = "public.people", columns = [{columns}], where = "{condition}" }}]"#
    )
}

async fn people() -> (TestDb, Setup) {
    let db = TestDb::new("filters").await;
    db.exec(
        "CREATE TABLE people (id bigint PRIMARY KEY, email text, ssn text); \
         INSERT INTO people SELECT g, 'p' || g || '@x.io', 'secret-' || g \
         FROM generate_series(1, 6) g",
    )
    .await;
    let setup = Setup::new(&db, &["public.people"], "", "");
    (db, setup)
}

#[tokio::test(flavor = "multi_thread")]
async fn only_listed_columns_and_matching_rows_leave_the_database() {
    let (db, setup) = people().await;
    setup.edit_config(PLAIN, &narrowed(r#""id", "email""#, "id % 2 = 0"));
    let mut cap = setup.start();
    cap.wait_streaming().await;
    db.exec(
        "INSERT INTO people SELECT g, 'p' || g || '@x.io', 'secret-' || g \
         FROM generate_series(7, 10) g; \
         UPDATE people SET ssn = 'changed' WHERE id = 2; \
         UPDATE people SET email = 'new@x.io' WHERE id = 3; \
         DELETE FROM people WHERE id IN (4, 5)",
    )
    .await;
    // The sentinel: the last change of a row that passes the filter.
    db.exec("UPDATE people SET email = 'last@x.io' WHERE id = 10")
        .await;
    let topic = setup.topic("public.people");
    let records = read_topic(&topic, WAIT, |r| {
        r.iter()
            .any(|x| x.payload.is_some() && x.json()["after"]["email"] == "last@x.io")
    });
    let events: Vec<Value> = records
        .iter()
        .filter(|r| r.payload.is_some())
        .map(|r| r.json())
        .collect();
    let mut seen: Vec<(String, i64)> = events
        .iter()
        .map(|e| {
            let id = e["key"]["id"].as_i64().unwrap();
            (e["op"].as_str().unwrap().to_string(), id)
        })
        .collect();
    seen.sort();
    let mut expected: Vec<(String, i64)> = [
        ("r", 2),
        ("r", 4),
        ("r", 6),
        ("c", 8),
        ("c", 10),
        ("u", 2),
        ("d", 4),
        ("u", 10),
    ]
    .iter()
    .map(|(op, id)| (op.to_string(), *id))
    .collect();
    expected.sort();
    assert_eq!(seen, expected, "only even ids, snapshot and stream alike");
    for e in &events {
        for image in [&e["before"], &e["after"]] {
            if let Some(row) = image.as_object() {
                assert!(!row.contains_key("ssn"), "ssn never leaves: {e}");
            }
        }
        if e["op"] == "r" || e["op"] == "c" {
            let id = e["key"]["id"].as_i64().unwrap();
            assert_eq!(
                e["after"],
                json!({"id": id, "email": format!("p{id}@x.io")})
            );
        }
    }
    let row = db
        .client
        .query_one(
            "SELECT attnames::text[], rowfilter FROM pg_publication_tables WHERE pubname = $1",
            &[&setup.slot],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<String>>(0), ["id", "email"]);
    assert!(
        row.get::<_, Option<String>>(1).is_some(),
        "the publication filters rows"
    );
    assert_eq!(cap.stop(), Some(0));

    // The same publication with another column list in the config: reported, not altered.
    setup.edit_config(
        r#"columns = ["id", "email"]"#,
        r#"columns = ["id", "email", "ssn"]"#,
    );
    let out = setup.command("check").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("other columns or row filter than source.tables: public.people"),
        "{stderr}"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_refuses_lists_and_filters_that_would_break_the_tables_writes() {
    let (db, setup) = people().await;
    let cases = [
        (
            narrowed(r#""email""#, "id > 0"),
            "leaves out replica identity column(s) id",
        ),
        (narrowed(r#""id", "nope""#, "id > 0"), "has no column nope"),
        (
            narrowed(r#""id", "email""#, "email like 'a%'"),
            "reads email, outside its replica identity",
        ),
        (
            narrowed(r#""id", "email""#, "nope > 1"),
            "is not a valid condition: column \"nope\" does not exist",
        ),
    ];
    let mut current = PLAIN.to_string();
    for (tables, expected) in cases {
        setup.edit_config(&current, &tables);
        current = tables;
        let out = setup.command("check").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{current}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{current}: {expected:?} in {stderr}"
        );
    }
    // Nothing was created by check.
    let publications: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM pg_publication WHERE pubname = $1",
            &[&setup.slot],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(publications, 0);
    db.drop_db().await;
}

/// `source.tables` with a row filter on `public.leads` and on the partitioned `public.events`.
fn leads_and_events(leads: &str, events: &str) -> String {
    let leads = format!(r#"{{ name = "public.leads", where = "{leads}" }}"#);
    let events = format!(r#"{{ name = "public.events", where = "{events}" }}"#);
    format!("tables = [{leads}, {events}]")
}

/// A database with `leads` (row filters on `status` need REPLICA IDENTITY FULL) and `events`,
/// partitioned by `at` with one partition of 2024 (so that conditions before 2000 and before
/// 1990 both leave out every partition), and capture's publication created with `leads` and
/// `events` as row filters.
async fn filtered_publication(leads: &str, events: &str) -> (TestDb, Setup) {
    let db = TestDb::new("filter_change").await;
    db.exec(
        "CREATE TABLE leads (id bigint PRIMARY KEY, status text); \
         ALTER TABLE leads REPLICA IDENTITY FULL; \
         INSERT INTO leads VALUES (1, 'lead'), (2, 'customer'); \
         CREATE TABLE events (id bigint, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at); \
         CREATE TABLE events_2024 PARTITION OF events \
           FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
    )
    .await;
    let setup = Setup::new(&db, &["public.leads", "public.events"], "", "");
    setup.edit_config(
        r#"tables = ["public.leads", "public.events"]"#,
        &leads_and_events(leads, events),
    );
    let mut cap = setup.start();
    cap.wait_streaming().await;
    assert_eq!(cap.stop(), Some(0));
    (db, setup)
}

/// The publication's row filters as the server prints them, by table.
async fn row_filters(db: &TestDb, publication: &str) -> Vec<(String, String)> {
    db.client
        .query(
            "SELECT c.relname::text, pg_get_expr(pr.prqual, pr.prrelid) \
             FROM pg_publication p JOIN pg_publication_rel pr ON pr.prpubid = p.oid \
             JOIN pg_class c ON c.oid = pr.prrelid WHERE p.pubname = $1 ORDER BY 1",
            &[&publication],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn check(setup: &Setup) -> (Option<i32>, String) {
    let out = setup.command("check").output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_row_filter_is_reported_and_left_alone_unless_managed() {
    let (db, setup) = filtered_publication("status = 'lead'", "at < '2000-01-01'").await;
    let created = row_filters(&db, &setup.slot).await;
    assert_eq!(
        created,
        [
            (
                "events".to_string(),
                "(at < '2000-01-01'::date)".to_string()
            ),
            ("leads".to_string(), "(status = 'lead'::text)".to_string()),
        ]
    );
    setup.edit_config(
        &leads_and_events("status = 'lead'", "at < '2000-01-01'"),
        &leads_and_events("status = 'customer'", "at < '1990-01-01'"),
    );
    let differs = format!(
        "publication {} exists with other tables than source.tables (other columns or row \
         filter than source.tables: public.leads, public.events); driftless does not alter it",
        setup.slot
    );
    let (code, err) = check(&setup);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("1 problem(s):") && err.contains(&differs),
        "{err}"
    );
    let mut cap = setup.start();
    assert_eq!(cap.wait_exit(WAIT), Some(3), "{}", cap.log_text());
    assert!(cap.log_text().contains(&differs), "{}", cap.log_text());
    assert_eq!(row_filters(&db, &setup.slot).await, created, "left alone");

    setup.edit_config(
        "status_interval_ms = 200",
        "status_interval_ms = 200\nmanage_publication = true",
    );
    let (code, err) = check(&setup);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        row_filters(&db, &setup.slot).await,
        created,
        "check alters nothing"
    );
    let mut cap = setup.start();
    cap.wait_streaming().await;
    assert!(
        cap.log_text().contains("publication altered"),
        "{}",
        cap.log_text()
    );
    assert_eq!(
        row_filters(&db, &setup.slot).await,
        [
            (
                "events".to_string(),
                "(at < '1990-01-01'::date)".to_string()
            ),
            (
                "leads".to_string(),
                "(status = 'customer'::text)".to_string()
            ),
        ]
    );
    // A row only the old filter passes, then sentinels only the new one passes.
    db.exec("INSERT INTO leads VALUES (100, 'lead')").await;
    db.exec("INSERT INTO leads SELECT g, 'customer' FROM generate_series(1001, 1010) g")
        .await;
    let is_sentinel = |r: &Record| r.json()["key"]["id"].as_i64() > Some(1000);
    let records = read_through_sentinels(&setup.topic("public.leads"), 10, is_sentinel);
    let streamed: Vec<Value> = records
        .iter()
        .filter(|r| r.payload.is_some() && r.json()["op"] != "r")
        .map(|r| r.json()["key"].clone())
        .filter(|k| k["id"].as_i64() <= Some(1000))
        .collect();
    assert!(
        streamed.is_empty(),
        "the old filter no longer streams: {streamed:?}"
    );
    stop_cleanly(&mut cap, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_row_filter_written_otherwise_is_no_difference() {
    let (db, setup) = filtered_publication("status = 'lead'", "at < '2000-01-01'").await;
    let created = row_filters(&db, &setup.slot).await;
    // EXPLAIN VERBOSE then prints a hash of the query as written, which differs.
    db.exec(&format!(
        "ALTER DATABASE {} SET compute_query_id = on",
        db.name
    ))
    .await;
    let mut current = leads_and_events("status = 'lead'", "at < '2000-01-01'");
    for (leads, events) in [
        ("STATUS='lead'", "AT<'2000-01-01'"),
        ("  ( (status)   =  ('lead') )  ", "((at) < ('2000-01-01'))"),
        ("status = 'lead'::text", "at < '2000-01-01'::date"),
        (
            r#"\"status\" = 'le' || 'ad'"#,
            "at < DATE '2000-01-01' AND true",
        ),
    ] {
        let tables = leads_and_events(leads, events);
        setup.edit_config(&current, &tables);
        current = tables;
        let (code, err) = check(&setup);
        assert_eq!(code, Some(0), "{current}: {err}");
    }
    // Capture keeps the publication as it is (without manage_publication it would refuse
    // any difference).
    let mut cap = setup.start();
    cap.wait_streaming().await;
    assert_eq!(row_filters(&db, &setup.slot).await, created);
    db.exec("INSERT INTO leads VALUES (1001, 'lead')").await;
    let arrived = |r: &[Record]| {
        r.iter()
            .any(|x| x.payload.is_some() && x.json()["key"]["id"] == 1001)
    };
    assert!(arrived(&read_topic(
        &setup.topic("public.leads"),
        WAIT,
        arrived
    )));
    stop_cleanly(&mut cap, db).await;
}
