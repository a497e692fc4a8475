//! Column values of every built-in type class, with edge values, through both paths: the
//! initial snapshot (op `r`, simple-query text) and the WAL (op `c`, pgoutput text). Each test
//! inserts the same rows before capture starts (snapshot) and after (stream), asserts the exact
//! JSON of every column, and that both paths give byte-identical `after` images.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::support::*;

/// Stream rows get `id = STREAM_ID_BASE + n`; snapshot rows `id = 1 + n`.
const STREAM_ID_BASE: i64 = 101;

/// One row: the SQL values of the columns after `id`, and the expected `after` without `id`
/// (its keys in table column order).
type Case = (String, Value);

fn case(sql: &str, expected: Value) -> Case {
    (sql.to_string(), expected)
}

/// `after` without its `id`, keeping column order.
fn without_id(after: &Value) -> Map<String, Value> {
    after
        .as_object()
        .unwrap_or_else(|| panic!("after is an object: {after}"))
        .iter()
        .filter(|(k, _)| k.as_str() != "id")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The row of NULLs: every column of `columns` (`name type, ...`) NULL.
fn all_null(columns: &str) -> Case {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (i, ch) in columns.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                item_start = false;
                let name = columns[i..].split_whitespace().next().unwrap();
                names.push(name.to_string());
            }
            _ => {}
        }
    }
    let sql = vec!["NULL"; names.len()].join(", ");
    let expected = names.into_iter().map(|n| (n, Value::Null)).collect();
    (sql, Value::Object(expected))
}

/// Creates `vals (id int PRIMARY KEY, {columns})` (after `prelude`), inserts `cases` and a row
/// of NULLs ([`all_null`]) before capture starts (ids 1..) and again once it runs (ids 101..),
/// and checks every event.
async fn assert_round_trip(tag: &str, prelude: &str, columns: &str, cases: &[Case]) {
    let cases: Vec<Case> = cases.iter().cloned().chain([all_null(columns)]).collect();
    let db = TestDb::new(tag).await;
    if !prelude.is_empty() {
        db.exec(prelude).await;
    }
    db.exec(&format!(
        "CREATE TABLE vals (id int PRIMARY KEY, {columns})"
    ))
    .await;
    let inserts = |base: i64| -> String {
        cases
            .iter()
            .enumerate()
            .map(|(i, (sql, _))| format!("INSERT INTO vals VALUES ({}, {sql});\n", base + i as i64))
            .collect()
    };
    db.exec(&inserts(1)).await;

    let setup = Setup::new(&db, &["public.vals"], "", "");
    let mut cap = setup.start();
    let topic = setup.topic("public.vals");
    // The snapshot rows are on Kafka: the slot is consistent, later rows are streamed.
    let snap = read_n(&topic, cases.len(), WAIT);
    assert_eq!(snap.len(), cases.len(), "snapshot rows: {snap:?}");
    db.exec(&inserts(STREAM_ID_BASE)).await;

    // One r and one c event per row, nothing else.
    let records = read_exactly(&topic, 2 * cases.len());
    let mut events: BTreeMap<i64, (Value, Option<Vec<u8>>)> = BTreeMap::new();
    for r in &records {
        let ev = r.json();
        let id = ev["after"]["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("after.id is a number: {ev}"));
        assert!(
            events.insert(id, (ev, r.key.clone())).is_none(),
            "row {id} published twice"
        );
    }

    for (i, (sql, expected)) in cases.iter().enumerate() {
        let expected = expected.as_object().expect("expected is an object");
        let (r, r_key) = &events[&(1 + i as i64)];
        let (c, c_key) = &events[&(STREAM_ID_BASE + i as i64)];

        assert_eq!(r["op"], "r", "{r}");
        assert_eq!(r["source"]["snapshot"], true, "{r}");
        assert_eq!(r["before"], Value::Null, "{r}");
        assert!(r["id"].as_str().unwrap().starts_with("snapshot:"), "{r}");
        assert_eq!(c["op"], "c", "{c}");
        assert_eq!(c["source"]["snapshot"], false, "{c}");
        assert_eq!(c["before"], Value::Null, "{c}");
        assert_eq!(
            r_key.as_deref(),
            Some(format!(r#"{{"id":{}}}"#, 1 + i).as_bytes())
        );
        assert_eq!(
            c_key.as_deref(),
            Some(format!(r#"{{"id":{}}}"#, STREAM_ID_BASE + i as i64).as_bytes())
        );

        let (r_after, c_after) = (without_id(&r["after"]), without_id(&c["after"]));
        for (path, got) in [("snapshot (r)", &r_after), ("stream (c)", &c_after)] {
            for (col, want) in expected {
                assert_eq!(
                    got.get(col),
                    Some(want),
                    "{path}: column {col} of row ({sql})\nfull after: {}",
                    Value::Object(got.clone())
                );
            }
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                expected.keys().collect::<Vec<_>>(),
                "{path}: columns, in table order, of row ({sql})"
            );
        }
        // Same converter on both paths: byte-identical images (order, number forms, escapes).
        assert_eq!(
            serde_json::to_string(&r_after).unwrap(),
            serde_json::to_string(&c_after).unwrap(),
            "snapshot and stream images differ for row ({sql})"
        );
    }
    stop_cleanly(&mut cap, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn integers_bool_and_text_round_trip_exactly() {
    let columns = "i2 smallint, i4 int, i8 bigint, b bool, t text, vc varchar(40), ch char(5)";
    let nasty = "it's \"quoted\" \\back\\slash\\ tab\there\nnew line 😀𝄞 ü €";
    let cases = vec![
        case(
            "-32768, -2147483648, -9223372036854775808, true, '', 'héllo 😀', 'ab'",
            json!({
                "i2": -32768, "i4": -2147483648i64, "i8": i64::MIN, "b": true,
                "t": "", "vc": "héllo 😀", "ch": "ab   ",
            }),
        ),
        case(
            &format!(
                "32767, 2147483647, 9223372036854775807, false, E'{}', 'NULL', '😀'",
                nasty
                    .replace('\\', "\\\\")
                    .replace('\'', "\\'")
                    .replace('\n', "\\n")
                    .replace('\t', "\\t")
            ),
            json!({
                "i2": 32767, "i4": 2147483647, "i8": i64::MAX, "b": false,
                "t": nasty, "vc": "NULL", "ch": "😀    ",
            }),
        ),
        case(
            "0, 0, 0, false, 'null', '{}', ''",
            json!({
                "i2": 0, "i4": 0, "i8": 0, "b": false, "t": "null", "vc": "{}", "ch": "     ",
            }),
        ),
    ];
    assert_round_trip("ints", "", columns, &cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn numeric_and_float_edge_values_are_exact() {
    let columns = "num numeric, num_s numeric(12, 4), f4 real, f8 double precision";
    let huge = "123456789012345678901234567890123456789012345.678901234567890123456789";
    let cases = vec![
        case(
            &format!("'{huge}', 1.5, 'NaN', 'Infinity'"),
            json!({"num": huge, "num_s": "1.5000", "f4": "NaN", "f8": "Infinity"}),
        ),
        case(
            "'NaN', -0.0001, 'Infinity', '-Infinity'",
            json!({"num": "NaN", "num_s": "-0.0001", "f4": "Infinity", "f8": "-Infinity"}),
        ),
        case(
            "'-0.000000000000000000000000000000000000000001', 99999999.9999, '-Infinity', 'NaN'",
            json!({
                "num": "-0.000000000000000000000000000000000000000001",
                "num_s": "99999999.9999",
                "f4": "-Infinity",
                "f8": "NaN",
            }),
        ),
        case(
            "'Infinity', 0, 1.1, 0.1",
            json!({"num": "Infinity", "num_s": "0.0000", "f4": 1.1, "f8": 0.1}),
        ),
        case(
            "'-Infinity', 2, -1.5, 1e300",
            json!({"num": "-Infinity", "num_s": "2.0000", "f4": -1.5, "f8": 1e300}),
        ),
        case(
            "1e-50, 3, 3.4028235e38, 5e-324",
            json!({
                "num": "0.00000000000000000000000000000000000000000000000001",
                "num_s": "3.0000",
                "f4": 3.4028235e38,
                "f8": 5e-324,
            }),
        ),
        case(
            "1.500, -4, 16777217, 9007199254740993",
            json!({
                "num": "1.500",
                "num_s": "-4.0000",
                "f4": 16777216.0,
                "f8": 9007199254740992.0,
            }),
        ),
    ];
    assert_round_trip("num", "", columns, &cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn timestamps_are_rfc3339_utc_with_microseconds() {
    let columns = "ts timestamp, tstz timestamptz, d date, tm time, tmtz timetz";
    let cases = vec![
        case(
            "'2024-01-01 12:00:00.123456', '2024-01-01 12:00:00+05:30', '2024-02-29', \
             '23:59:59.999999', '12:34:56.789+05:30'",
            json!({
                "ts": "2024-01-01T12:00:00.123456",
                "tstz": "2024-01-01T06:30:00.000000Z",
                "d": "2024-02-29",
                "tm": "23:59:59.999999",
                "tmtz": "12:34:56.789000+05:30",
            }),
        ),
        case(
            "'2000-01-01 00:00:00', '1999-12-31 23:59:59.999999-08', '1970-01-01', '00:00', \
             '01:02:03-08'",
            json!({
                "ts": "2000-01-01T00:00:00.000000",
                "tstz": "2000-01-01T07:59:59.999999Z",
                "d": "1970-01-01",
                "tm": "00:00:00.000000",
                "tmtz": "01:02:03.000000-08:00",
            }),
        ),
        case(
            "'infinity', '-infinity', 'infinity', '24:00:00', '00:00:00.000001+00'",
            json!({
                "ts": "infinity",
                "tstz": "-infinity",
                "d": "infinity",
                "tm": "24:00:00.000000",
                "tmtz": "00:00:00.000001+00:00",
            }),
        ),
        case(
            "'-infinity', 'infinity', '-infinity', '12:00:00.5', '23:59:59-12:45'",
            json!({
                "ts": "-infinity",
                "tstz": "infinity",
                "d": "-infinity",
                "tm": "12:00:00.500000",
                "tmtz": "23:59:59.000000-12:45",
            }),
        ),
        case(
            "'2024-06-30 23:59:59.000001', '2024-06-30 23:59:59.000001+00', '0044-03-15 BC', \
             '08:09:10.000001', '08:09:10.1+14'",
            json!({
                "ts": "2024-06-30T23:59:59.000001",
                "tstz": "2024-06-30T23:59:59.000001Z",
                "d": "0044-03-15 BC",
                "tm": "08:09:10.000001",
                "tmtz": "08:09:10.100000+14:00",
            }),
        ),
        // Outside years 1..=9999 (also once shifted to UTC): PostgreSQL's text.
        case(
            "'294276-12-31 23:59:59.999999', '9999-12-31 23:59:59.999999-01', \
             '5874897-12-31', '12:00:00.1234567', '00:00+00'",
            json!({
                "ts": "294276-12-31 23:59:59.999999",
                "tstz": "10000-01-01 00:59:59.999999+00",
                "d": "5874897-12-31",
                "tm": "12:00:00.123457",
                "tmtz": "00:00:00.000000+00:00",
            }),
        ),
        case(
            "'4713-01-01 00:00:00 BC', '0001-01-01 00:00:00+00', '0001-01-01', '00:00:00', \
             '00:00-00'",
            json!({
                "ts": "4713-01-01 00:00:00 BC",
                "tstz": "0001-01-01T00:00:00.000000Z",
                "d": "0001-01-01",
                "tm": "00:00:00.000000",
                "tmtz": "00:00:00.000000+00:00",
            }),
        ),
    ];
    assert_round_trip("time", "", columns, &cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_uuid_bytea_and_interval_round_trip() {
    let columns = "j json, jb jsonb, u uuid, by bytea, iv interval";
    let all_bytes =
        base64::engine::general_purpose::STANDARD.encode((0u8..=255).collect::<Vec<_>>());
    let cases = vec![
        case(
            r#"'{"b": 1, "a": [1, 2.5, null], "s": "x\"y\\z"}', '{"z": {"y": [1, {"x": null}], "w": "😀"}, "a": true, "n": -7}', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '\x00ff10', '1 year 2 mons 3 days 04:05:06.5'"#,
            json!({
                "j": {"b": 1, "a": [1, 2.5, null], "s": "x\"y\\z"},
                "jb": {"a": true, "n": -7, "z": {"w": "😀", "y": [1, {"x": null}]}},
                "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "by": "AP8Q",
                "iv": "P1Y2M3DT4H5M6.5S",
            }),
        ),
        case(
            r#"'[]', '"a string"', '00000000-0000-0000-0000-000000000000', '', '-1 day'"#,
            json!({
                "j": [],
                "jb": "a string",
                "u": "00000000-0000-0000-0000-000000000000",
                "by": "",
                "iv": "P-1D",
            }),
        ),
        case(
            &format!(
                "'3', '[1, [2, [3, {{\"k\": \"v\"}}]]]', 'ffffffff-ffff-ffff-ffff-ffffffffffff', \
                 decode('{}', 'hex'), '0'",
                (0u8..=255).map(|b| format!("{b:02x}")).collect::<String>()
            ),
            json!({
                "j": 3,
                "jb": [1, [2, [3, {"k": "v"}]]],
                "u": "ffffffff-ffff-ffff-ffff-ffffffffffff",
                "by": all_bytes,
                "iv": "PT0S",
            }),
        ),
    ];
    assert_round_trip("json", "", columns, &cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn arrays_become_nested_json_arrays() {
    let columns = "ia int[], ta text[], na numeric[], tsa timestamptz[], ba bool[], i3 int8[]";
    let cases = vec![
        case(
            r#"'{{1,NULL,3},{4,5,NULL}}', ARRAY['a,b', 'say "hi"', 'NULL', NULL, 'back\slash', '', '{}', ' x ', '😀'], '{1.50,NaN,-0.000000000000000000000000000000000000000001}', ARRAY['2024-01-01 12:00:00+05:30'::timestamptz, 'infinity', NULL], '{t,f,NULL}', '{{{1,2}},{{3,NULL}}}'"#,
            json!({
                "ia": [[1, null, 3], [4, 5, null]],
                "ta": ["a,b", "say \"hi\"", "NULL", null, "back\\slash", "", "{}", " x ", "😀"],
                "na": ["1.50", "NaN", "-0.000000000000000000000000000000000000000001"],
                "tsa": ["2024-01-01T06:30:00.000000Z", "infinity", null],
                "ba": [true, false, null],
                "i3": [[[1, 2]], [[3, null]]],
            }),
        ),
        case(
            "'{}', '{}', '{}', '{}', '{}', '[0:1]={-9223372036854775808,9223372036854775807}'",
            json!({
                "ia": [], "ta": [], "na": [], "tsa": [], "ba": [],
                "i3": [i64::MIN, i64::MAX],
            }),
        ),
        case(
            r#"'{NULL}', '{"",NULL,"null"}', '{NULL}', '{NULL}', '{NULL}', '{{NULL,NULL}}'"#,
            json!({
                "ia": [null], "ta": ["", null, "null"], "na": [null], "tsa": [null],
                "ba": [null], "i3": [[null, null]],
            }),
        ),
    ];
    assert_round_trip("arr", "", columns, &cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn enums_and_domains_convert_by_their_underlying_type() {
    let prelude = "CREATE TYPE mood AS ENUM ('happy', 'sad', 'it''s, \"complicated\"', '😀'); \
                   CREATE DOMAIN posint AS int CHECK (VALUE > 0); \
                   CREATE DOMAIN small_posint AS posint CHECK (VALUE < 1000); \
                   CREATE DOMAIN stamp AS timestamptz; \
                   CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%');";
    let columns = "e mood, ea mood[], p posint, sp small_posint, st stamp, em email";
    let cases = vec![
        case(
            "'happy', '{happy,sad}', 42, 999, '2024-01-01 12:00:00+05:30', 'a@b.io'",
            json!({
                "e": "happy",
                "ea": ["happy", "sad"],
                "p": 42,
                "sp": 999,
                "st": "2024-01-01T06:30:00.000000Z",
                "em": "a@b.io",
            }),
        ),
        case(
            r#"'it''s, "complicated"', ARRAY['it''s, "complicated"', NULL, '😀']::mood[], 2147483647, 1, 'infinity', '"q"@x'"#,
            json!({
                "e": "it's, \"complicated\"",
                "ea": ["it's, \"complicated\"", null, "😀"],
                "p": 2147483647,
                "sp": 1,
                "st": "infinity",
                "em": "\"q\"@x",
            }),
        ),
    ];
    assert_round_trip("enum", prelude, columns, &cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn other_builtin_types_keep_their_text() {
    let columns = "m money, ip inet, net cidr, mac macaddr, bits bit(3), vb varbit, pt point, \
                   r int4range, tv tsvector, x xml, o oid, nm name, ch \"char\", l pg_lsn, \
                   jp jsonpath, boxes box[], mr int4multirange, ips inet[]";
    let cases = vec![
        case(
            "'12.34', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', B'101', '1101', \
             '(1,2)', '[1,5)', 'a fat cat', '<a>x</a>', 4294967295, 'nm', 'x', '16/B374D848', \
             '$.a', '{(1,1),(0,0);(2,2),(1,1)}', '{[1,2]}', ARRAY['10.0.0.1'::inet, NULL]",
            json!({
                "m": "$12.34",
                "ip": "192.168.0.1/24",
                "net": "10.0.0.0/8",
                "mac": "08:00:2b:01:02:03",
                "bits": "101",
                "vb": "1101",
                "pt": "(1,2)",
                "r": "[1,5)",
                "tv": "'a' 'cat' 'fat'",
                "x": "<a>x</a>",
                "o": 4294967295u32,
                "nm": "nm",
                "ch": "x",
                "l": "16/B374D848",
                "jp": "$.\"a\"",
                "boxes": ["(1,1),(0,0)", "(2,2),(1,1)"],
                "mr": "{[1,3)}",
                "ips": ["10.0.0.1", null],
            }),
        ),
        case(
            "'-1234567.891', '::1', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', B'000', '', \
             '(-1.5,0)', 'empty', '', '<r a=\"1\"/>', 0, '', '\"', '0/0', '$', '{}', '{}', '{}'",
            json!({
                "m": "-$1,234,567.89",
                "ip": "::1",
                "net": "2001:db8::/32",
                "mac": "ff:ff:ff:ff:ff:ff",
                "bits": "000",
                "vb": "",
                "pt": "(-1.5,0)",
                "r": "empty",
                "tv": "",
                "x": "<r a=\"1\"/>",
                "o": 0,
                "nm": "",
                "ch": "\"",
                "l": "0/0",
                "jp": "$",
                "boxes": [],
                "mr": "{}",
                "ips": [],
            }),
        ),
    ];
    assert_round_trip("other", "", columns, &cases).await;
}
