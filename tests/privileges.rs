//! Least privilege: `driftless check` run as a role lacking one privilege capture needs names
//! that privilege (and the statement that grants it), capture refuses to start with the same
//! words, and an existing publication listing other tables is reported and left alone unless
//! `source.manage_publication = true`.

use std::collections::BTreeSet;

use crate::support::*;

const TABLES: &[&str] = &["public.a", "public.b"];

/// A database with tables `a` and `b` (owned by the admin) and a capture [`Setup`] for both.
async fn two_tables(tag: &str) -> (TestDb, Setup) {
    let db = TestDb::new(tag).await;
    db.exec("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)")
        .await;
    let setup = Setup::new(&db, TABLES, "", "");
    (db, setup)
}

/// `text` with `{role}`, `{db}` and `{pub}` (the publication) replaced.
fn fill(text: &str, role: &TestRole, db: &TestDb, setup: &Setup) -> String {
    text.replace("{role}", &role.name)
        .replace("{db}", &db.name)
        .replace("{pub}", &setup.slot)
}

/// `driftless check` as `role`: exit code and stderr.
fn check_as(setup: &Setup, role: &TestRole) -> (Option<i32>, String) {
    let out = setup
        .command("check")
        .env("DRIFTLESS_SOURCE_URL", &role.url)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `driftless capture` as `role`.
fn capture_as(setup: &Setup, role: &TestRole) -> DriftlessProcess {
    setup.start_with("capture", &[], &[("DRIFTLESS_SOURCE_URL", &role.url)])
}

/// The tables `publication` publishes, as `schema.table`.
async fn published(db: &TestDb, publication: &str) -> BTreeSet<String> {
    db.client
        .query(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A role with `attributes` and the admin's `grants` (`{role}`, `{db}`, `{pub}` replaced) on
/// tables `a` and `b`: see [`names_the_missing_privilege`].
async fn one_privilege_missing(tag: &str, attributes: &str, grants: &str, expected: &[&str]) {
    let (db, setup) = two_tables(tag).await;
    let role = db.role(attributes).await;
    db.exec(&fill(grants, &role, &db, &setup)).await;
    names_the_missing_privilege(&db, &setup, &role, expected).await;
    db.drop_db().await;
    role.drop_role().await;
}

/// `check` as `role` reports exactly one problem, holding each of `expected` (`{role}`, `{db}`,
/// `{pub}` replaced); capture refuses to start (exit code 3) with the same words and creates no
/// publication; then the admin runs `expected[1]`, the statement the hint gives, and `check`
/// passes.
async fn names_the_missing_privilege(
    db: &TestDb,
    setup: &Setup,
    role: &TestRole,
    expected: &[&str],
) {
    let publication_exists = || async {
        db.client
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1)",
                &[&setup.slot],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
    };
    let existed = publication_exists().await;
    let (code, err) = check_as(setup, role);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("1 problem(s):"), "only the missing one: {err}");
    for e in expected {
        let e = fill(e, role, db, setup);
        assert!(err.contains(&e), "{e} missing in:\n{err}");
    }
    let mut cap = capture_as(setup, role);
    assert_eq!(cap.wait_exit(WAIT), Some(3), "{}", cap.log_text());
    let first = fill(expected[0], role, db, setup);
    assert!(cap.log_text().contains(&first), "{}", cap.log_text());
    assert_eq!(
        publication_exists().await,
        existed,
        "the refused capture created no publication"
    );
    db.exec(&fill(expected[1], role, db, setup)).await;
    let (code, err) = check_as(setup, role);
    assert_eq!(code, Some(0), "the hint's statement is the fix: {err}");
}

const OWNS_BOTH: &str = "ALTER TABLE a OWNER TO {role}; ALTER TABLE b OWNER TO {role};";

scenario_tests! {
    check_names_a_missing_replication_attribute => one_privilege_missing(
        "no_replication",
        "",
        &format!("GRANT CREATE ON DATABASE {{db}} TO {{role}}; {OWNS_BOTH}"),
        &["lacks REPLICATION", "ALTER ROLE \"{role}\" WITH REPLICATION"],
    );
    check_names_a_table_the_role_may_not_select => one_privilege_missing(
        "no_select",
        "REPLICATION",
        "CREATE PUBLICATION {pub} FOR TABLE a, b WITH (publish_via_partition_root = true); \
         GRANT SELECT ON a TO {role};",
        &[
            "lacks SELECT on public.b, which the initial snapshot reads",
            "GRANT SELECT ON \"public\".\"b\" TO \"{role}\"",
        ],
    );
    check_names_create_on_the_database_when_the_publication_is_missing => one_privilege_missing(
        "no_create",
        "REPLICATION",
        OWNS_BOTH,
        &[
            "may not create publication {pub}: it lacks CREATE on database {db}",
            "GRANT CREATE ON DATABASE \"{db}\" TO \"{role}\"",
        ],
    );
    check_names_the_tables_the_role_must_own_to_create_the_publication => one_privilege_missing(
        "not_owner",
        "REPLICATION",
        "GRANT CREATE ON DATABASE {db} TO {role}; ALTER TABLE a OWNER TO {role}; \
         GRANT SELECT ON b TO {role};",
        &[
            "creating publication {pub} needs ownership of every table it lists; the role \
             {role} does not own public.b",
            "ALTER TABLE \"public\".\"b\" OWNER TO \"{role}\"",
            "or have the tables' owner run: CREATE PUBLICATION \"{pub}\" FOR TABLE \
             \"public\".\"a\", \"public\".\"b\" WITH (publish_via_partition_root = true)",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_lists_every_missing_privilege_at_once() {
    let (db, setup) = two_tables("none_at_all").await;
    let role = db.role("").await;
    let (code, err) = check_as(&setup, &role);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("4 problem(s):"), "{err}");
    for e in [
        "lacks REPLICATION",
        "lacks SELECT on public.a, public.b,",
        "lacks CREATE on database",
        "does not own public.a, public.b",
    ] {
        assert!(err.contains(e), "{e} missing in:\n{err}");
    }
    db.drop_db().await;
    role.drop_role().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_a_schema_the_role_may_not_use() {
    let db = TestDb::new("no_usage").await;
    db.exec("CREATE SCHEMA crm; CREATE TABLE crm.c (id int PRIMARY KEY)")
        .await;
    let setup = Setup::new(&db, &["crm.c"], "", "");
    let role = db.role("REPLICATION").await;
    db.exec(&fill(
        "CREATE PUBLICATION {pub} FOR TABLE crm.c WITH (publish_via_partition_root = true); \
         GRANT SELECT ON crm.c TO {role};",
        &role,
        &db,
        &setup,
    ))
    .await;
    names_the_missing_privilege(
        &db,
        &setup,
        &role,
        &[
            "the role {role} lacks USAGE on schema crm",
            "GRANT USAGE ON SCHEMA \"crm\" TO \"{role}\"",
        ],
    )
    .await;
    db.drop_db().await;
    role.drop_role().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_owning_nothing_passes_check_and_captures_through_an_existing_publication() {
    let (db, setup) = two_tables("owns_nothing").await;
    db.exec("INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)")
        .await;
    let role = db.role("REPLICATION").await;
    db.exec(&fill(
        "CREATE PUBLICATION {pub} FOR TABLE a, b WITH (publish_via_partition_root = true); \
         GRANT SELECT ON a, b TO {role};",
        &role,
        &db,
        &setup,
    ))
    .await;
    let (code, err) = check_as(&setup, &role);
    assert_eq!(code, Some(0), "{err}");
    let mut cap = capture_as(&setup, &role);
    cap.wait_streaming().await;
    assert_eq!(read_n(&setup.topic("public.a"), 1, WAIT).len(), 1);
    db.exec("INSERT INTO b VALUES (3)").await;
    assert_eq!(read_n(&setup.topic("public.b"), 2, WAIT).len(), 2);
    stop_cleanly(&mut cap, db).await;
    role.drop_role().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publication_with_other_tables_is_reported_and_left_alone_unless_managed() {
    let (db, setup) = two_tables("pub_differs").await;
    let role = db.role("REPLICATION").await;
    // Another subscriber's publication of that name: a and z.
    db.exec(&fill(
        &format!(
            "CREATE TABLE z (id int PRIMARY KEY); GRANT CREATE ON DATABASE {{db}} TO {{role}}; \
             {OWNS_BOTH} CREATE PUBLICATION {{pub}} FOR TABLE a, z \
             WITH (publish_via_partition_root = true);"
        ),
        &role,
        &db,
        &setup,
    ))
    .await;
    let theirs = BTreeSet::from(["public.a".to_string(), "public.z".to_string()]);
    let differs = format!(
        "publication {} exists with other tables than source.tables (missing from it: \
         public.b; not in source.tables: public.z); driftless does not alter it",
        setup.slot
    );
    let (code, err) = check_as(&setup, &role);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("1 problem(s):") && err.contains(&differs),
        "{err}"
    );
    assert!(err.contains("source.manage_publication = true"), "{err}");
    let mut cap = capture_as(&setup, &role);
    assert_eq!(cap.wait_exit(WAIT), Some(3), "{}", cap.log_text());
    assert!(cap.log_text().contains(&differs), "{}", cap.log_text());
    assert_eq!(published(&db, &setup.slot).await, theirs, "left alone");

    setup.edit_config(
        "status_interval_ms = 200",
        "status_interval_ms = 200\nmanage_publication = true",
    );
    let (code, err) = check_as(&setup, &role);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "the role {} does not own publication {}",
            role.name, setup.slot
        )),
        "{err}"
    );
    assert_eq!(
        published(&db, &setup.slot).await,
        theirs,
        "check alters nothing"
    );

    db.exec(&fill(
        "ALTER PUBLICATION {pub} OWNER TO {role}",
        &role,
        &db,
        &setup,
    ))
    .await;
    let (code, err) = check_as(&setup, &role);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        published(&db, &setup.slot).await,
        theirs,
        "check alters nothing"
    );
    let mut cap = capture_as(&setup, &role);
    cap.wait_streaming().await;
    let ours = BTreeSet::from(["public.a".to_string(), "public.b".to_string()]);
    assert_eq!(
        published(&db, &setup.slot).await,
        ours,
        "altered by capture"
    );
    assert!(
        cap.log_text()
            .contains("publication altered to source.tables"),
        "and said so: {}",
        cap.log_text()
    );
    db.exec("INSERT INTO b VALUES (1)").await;
    assert_eq!(read_n(&setup.topic("public.b"), 1, WAIT).len(), 1);
    stop_cleanly(&mut cap, db).await;
    role.drop_role().await;
}
