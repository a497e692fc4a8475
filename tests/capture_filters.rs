//! Column lists and row filters (`source.tables = [{ name, columns, where }]`): only the listed
//! columns and the matching rows leave the database, in the snapshot and in the stream alike;
//! `check` refuses what PostgreSQL would make the table's own UPDATEs and DELETEs fail on.

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
