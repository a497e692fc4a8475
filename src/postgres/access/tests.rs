//! Unit tests of the privilege and publication decisions over hand-built facts.

use super::*;

fn table(name: &str) -> TableName {
    let (schema, name) = name.split_once('.').unwrap();
    TableName {
        schema: schema.into(),
        name: name.into(),
    }
}

/// A table the role may do everything with.
fn full(name: &str) -> TableAccess {
    TableAccess {
        name: table(name),
        exists: true,
        schema_usage: true,
        select: true,
        owned: true,
        partitioned: false,
    }
}

fn facts(tables: Vec<TableAccess>, publication: Option<PublicationFacts>) -> AccessFacts {
    AccessFacts {
        role: "capture".into(),
        database: "app".into(),
        can_create: true,
        tables,
        publication,
        filters: BTreeMap::new(),
    }
}

fn publication(tables: &[&str]) -> PublicationFacts {
    PublicationFacts {
        all_tables: false,
        via_root: true,
        owner: "admin".into(),
        owned: false,
        tables: tables.iter().map(|t| table(t)).collect(),
        shapes: BTreeMap::new(),
        row_filters: BTreeMap::new(),
    }
}

fn messages(p: &[Problem]) -> String {
    p.iter()
        .map(|(m, h)| format!("{m} => {h}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_role_with_every_privilege_creates_the_publication() {
    let f = facts(vec![full("public.a"), full("public.b")], None);
    assert_eq!(plan(&f, "p", false), Ok(PublicationPlan::Create));
    assert!(problems(&f, "p", false, true).is_empty());
}

#[test]
fn each_missing_privilege_is_named_with_its_grant() {
    let mut f = facts(
        vec![
            full("public.a"),
            TableAccess {
                select: false,
                owned: false,
                ..full("public.b")
            },
            TableAccess {
                schema_usage: false,
                ..full("crm.c")
            },
        ],
        None,
    );
    f.can_create = false;
    let p = problems(&f, "p", false, true);
    let text = messages(&p);
    assert_eq!(p.len(), 4, "{text}");
    assert!(text.contains("lacks USAGE on schema crm"), "{text}");
    assert!(
        text.contains("GRANT USAGE ON SCHEMA \"crm\" TO \"capture\""),
        "{text}"
    );
    assert!(text.contains("lacks SELECT on public.b,"), "{text}");
    assert!(
        text.contains("GRANT SELECT ON \"public\".\"b\" TO \"capture\""),
        "{text}"
    );
    assert!(text.contains("lacks CREATE on database app"), "{text}");
    assert!(
        text.contains("GRANT CREATE ON DATABASE \"app\" TO \"capture\""),
        "{text}"
    );
    assert!(text.contains("does not own public.b =>"), "{text}");
    assert!(
        text.contains("ALTER TABLE \"public\".\"b\" OWNER TO \"capture\""),
        "{text}"
    );
    assert!(
        text.contains(
            "CREATE PUBLICATION \"p\" FOR TABLE \"public\".\"a\", \"public\".\"b\", \
             \"crm\".\"c\" WITH (publish_via_partition_root = true)"
        ),
        "the owner's alternative: {text}"
    );
}

#[test]
fn without_a_snapshot_select_and_schema_usage_are_not_needed_to_keep_a_publication() {
    let t = TableAccess {
        schema_usage: false,
        select: false,
        owned: false,
        ..full("public.a")
    };
    let f = facts(vec![t], Some(publication(&["public.a"])));
    assert!(problems(&f, "p", false, false).is_empty());
    assert_eq!(problems(&f, "p", false, true).len(), 2);
}

#[test]
fn an_existing_publication_of_exactly_the_tables_needs_no_ownership() {
    let tables = vec![
        TableAccess {
            owned: false,
            ..full("public.a")
        },
        TableAccess {
            owned: false,
            ..full("public.b")
        },
    ];
    let mut f = facts(tables, Some(publication(&["public.b", "public.a"])));
    f.can_create = false;
    for manage in [false, true] {
        assert_eq!(plan(&f, "p", manage), Ok(PublicationPlan::Keep));
        assert!(problems(&f, "p", manage, true).is_empty());
    }
}

#[test]
fn a_publication_with_other_tables_is_reported_not_altered() {
    let f = facts(
        vec![full("public.a"), full("public.b")],
        Some(publication(&["public.a", "public.z"])),
    );
    let p = plan(&f, "p", false).unwrap_err();
    let text = messages(&p);
    assert_eq!(p.len(), 1, "{text}");
    assert!(
        text.contains("missing from it: public.b; not in source.tables: public.z"),
        "{text}"
    );
    assert!(text.contains("driftless does not alter it"), "{text}");
    assert!(text.contains("source.manage_publication = true"), "{text}");
}

#[test]
fn managing_a_publication_needs_ownership_of_it_and_of_the_tables() {
    let tables = vec![
        full("public.a"),
        TableAccess {
            owned: false,
            ..full("public.b")
        },
    ];
    let f = facts(tables.clone(), Some(publication(&["public.a"])));
    let p = plan(&f, "p", true).unwrap_err();
    let text = messages(&p);
    assert_eq!(p.len(), 2, "{text}");
    assert!(
        text.contains("does not own publication p (owner: admin)"),
        "{text}"
    );
    assert!(
        text.contains("ALTER PUBLICATION \"p\" OWNER TO \"capture\""),
        "{text}"
    );
    assert!(text.contains("does not own public.b"), "{text}");
    let owned = PublicationFacts {
        owned: true,
        ..publication(&["public.a"])
    };
    let f = facts(vec![full("public.a"), full("public.b")], Some(owned));
    assert_eq!(
        plan(&f, "p", true),
        Ok(PublicationPlan::Alter {
            tables: true,
            via_root: false
        })
    );
}

#[test]
fn a_publication_without_the_partition_root_is_refused_or_managed() {
    let parted = TableAccess {
        partitioned: true,
        ..full("public.events")
    };
    // Without the option, pg_publication_tables lists the partitions.
    let mut existing = publication(&["public.events_low"]);
    existing.via_root = false;
    let f = facts(vec![parted.clone()], Some(existing.clone()));
    let p = plan(&f, "p", false).unwrap_err();
    let text = messages(&p);
    assert_eq!(p.len(), 1, "the partitions are no table difference: {text}");
    assert!(text.contains("publish_via_partition_root = true"), "{text}");
    existing.owned = true;
    let f = facts(vec![parted], Some(existing));
    assert_eq!(
        plan(&f, "p", true),
        Ok(PublicationPlan::Alter {
            tables: true,
            via_root: true
        })
    );
}

#[test]
fn a_row_filter_differs_only_when_the_server_reads_it_otherwise() {
    let condition = |text: &str| TableFilter {
        columns: None,
        row_filter: Some(text.into()),
    };
    let mut existing = publication(&["public.a"]);
    existing.owned = true;
    existing
        .shapes
        .insert(table("public.a"), condition("(status = 'lead'::text)"));
    let mut f = facts(vec![full("public.a")], None);
    f.filters
        .insert(table("public.a"), condition("STATUS='customer'"));
    let read = |want: filter::Reading, have: filter::Reading| {
        let mut p = existing.clone();
        p.row_filters.insert(table("public.a"), (want, have));
        AccessFacts {
            publication: Some(p),
            ..f.clone()
        }
    };
    let lead = Ok::<_, String>("Output: ((status = 'lead'::text) IS TRUE)".to_string());
    let customer = Ok("Output: ((status = 'customer'::text) IS TRUE)".to_string());
    let same = read(lead.clone(), lead.clone());
    assert_eq!(plan(&same, "p", false), Ok(PublicationPlan::Keep));
    let changed = read(customer, lead.clone());
    let text = messages(&plan(&changed, "p", false).unwrap_err());
    assert!(
        text.contains("(other columns or row filter than source.tables: public.a)"),
        "{text}"
    );
    assert!(
        text.contains("WHERE (STATUS='customer')"),
        "the hint sets the configured condition: {text}"
    );
    assert_eq!(
        plan(&changed, "p", true),
        Ok(PublicationPlan::Alter {
            tables: true,
            via_root: false
        })
    );
    // A condition the server refuses is reported as such by the filter check.
    let refused = read(Err("syntax error".into()), lead);
    assert_eq!(plan(&refused, "p", false), Ok(PublicationPlan::Keep));
}

#[test]
fn a_for_all_tables_publication_is_refused_even_when_managed() {
    let mut all = publication(&["public.a"]);
    all.all_tables = true;
    all.owned = true;
    let f = facts(vec![full("public.a")], Some(all));
    for manage in [false, true] {
        let text = messages(&plan(&f, "p", manage).unwrap_err());
        assert!(text.contains("FOR ALL TABLES"), "{text}");
    }
}

#[test]
fn missing_tables_are_left_to_the_table_check() {
    let gone = TableAccess {
        exists: false,
        schema_usage: false,
        select: false,
        owned: false,
        ..full("public.gone")
    };
    let f = facts(vec![full("public.a"), gone], None);
    assert!(problems(&f, "p", false, true).is_empty());
}
