//! Unit and property tests of the text-to-JSON conversion.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn conv(ty: PgType, text: &str) -> Value {
    text_to_json(&ty, text)
}

fn arr(element: PgType) -> PgType {
    PgType::Array {
        element: Box::new(element),
        delimiter: b',',
    }
}

/// Every malformed input keeps its text.
fn assert_text(ty: PgType, text: &str) {
    assert_eq!(text_to_json(&ty, text), json!(text), "{ty:?} {text:?}");
}

#[test]
fn json_numbers_keep_every_digit() {
    let text = r#"{"a": 1.50, "b": 123456789012345678901234567890, "c": -0.000000000000000000001}"#;
    let v = text_to_json(&PgType::Jsonb, text);
    assert_eq!(
        serde_json::to_string(&v).unwrap(),
        r#"{"a":1.50,"b":123456789012345678901234567890,"c":-0.000000000000000000001}"#
    );
}

#[test]
fn integers() {
    assert_eq!(conv(PgType::Int2, "-32768"), json!(-32768));
    assert_eq!(conv(PgType::Int4, "2147483647"), json!(2147483647));
    assert_eq!(conv(PgType::Int4, "0"), json!(0));
    assert_eq!(conv(PgType::Int8, "9223372036854775807"), json!(i64::MAX));
    assert_eq!(conv(PgType::Int8, "-9223372036854775808"), json!(i64::MIN));
    assert_eq!(
        serde_json::to_string(&conv(PgType::Int8, "9007199254740993")).unwrap(),
        "9007199254740993"
    );
    assert_eq!(conv(PgType::Oid, "4294967295"), json!(4294967295u32));
    assert_eq!(conv(PgType::Oid, "0"), json!(0));
}

#[test]
fn floats() {
    let s = |ty, t| serde_json::to_string(&conv(ty, t)).unwrap();
    // float4 text (shortest round-trip digits, extra_float_digits=3) keeps its digits.
    assert_eq!(s(PgType::Float4, "1.1"), "1.1");
    assert_eq!(s(PgType::Float8, "0.1"), "0.1");
    assert_eq!(
        s(PgType::Float8, "0.30000000000000004"),
        "0.30000000000000004"
    );
    // Exponent spelling is up to serde_json's float writer; the values are exact.
    let f = |ty, t| conv(ty, t).as_f64().unwrap();
    assert_eq!(f(PgType::Float4, "3.4028235e+38"), 3.4028235e38);
    assert_eq!(f(PgType::Float4, "1e-45"), 1e-45);
    assert_eq!(f(PgType::Float4, "1.2345679e+08"), 123456790.0);
    assert_eq!(f(PgType::Float8, "5e-324"), 5e-324);
    assert_eq!(f(PgType::Float8, "1.7976931348623157e+308"), f64::MAX);
    assert_eq!(f(PgType::Float8, "1e+300"), 1e300);
    assert_eq!(s(PgType::Float8, "-0"), "-0.0");
    assert_eq!(s(PgType::Float8, "42"), "42.0");
    assert_eq!(conv(PgType::Float8, "1.5"), json!(1.5));
    assert_eq!(conv(PgType::Float8, "0e-400"), json!(0.0));
}

#[test]
fn bools() {
    assert_eq!(conv(PgType::Bool, "t"), json!(true));
    assert_eq!(conv(PgType::Bool, "f"), json!(false));
}

#[test]
fn json_values_are_embedded() {
    for ty in [PgType::Json, PgType::Jsonb] {
        assert_eq!(
            conv(ty.clone(), r#"{"a": [1, 2.5, {"c": null}], "b": "😀"}"#),
            json!({"a": [1, 2.5, {"c": null}], "b": "😀"})
        );
        assert_eq!(conv(ty.clone(), "[]"), json!([]));
        assert_eq!(conv(ty.clone(), "null"), Value::Null);
        assert_eq!(conv(ty.clone(), "\"s\""), json!("s"));
        assert_eq!(conv(ty.clone(), "12"), json!(12));
        assert_eq!(conv(ty.clone(), " true "), json!(true));
    }
    // Deeper than serde_json's recursion limit: kept as text, no stack overflow.
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    assert_text(PgType::Jsonb, &deep);
}

/// Inputs that must keep their text: malformed (for PostgreSQL or for JSON), or text by rule.
#[test]
fn values_that_keep_their_text() {
    const NOT_JSON: &[&str] = &["", "{", "{\"a\":}", "nope", "[1,]", "{} {}"];
    const TEXT_LIKE: &[&str] = &[
        "",
        " ",
        "hello",
        "NULL",
        "null",
        "ab  ",
        "tab\there\nnewline",
        "ünïcödé",
        "😀 𝄞 emoji and 4-byte",
        "\\x01",
        "{1,2}",
        "\"quoted\"",
    ];
    const MALFORMED_ARRAYS: &[&str] = &[
        "",
        "{",
        "}",
        "{1,2",
        "{1,2}}",
        "{1,2} x",
        "{1,,2}",
        "{,}",
        "{1,}",
        "{\"a}",
        "{\"a\"b}",
        "{a\"b\"}",
        "{a{b}}",
        "{1,{2}}",
        "{{1},2}",
        "{{{{{{{1}}}}}}}",
        "[0:1]{1,2}",
        "[a]={1}",
        "[0:1",
        "1,2",
        "{a\\}",
        "{\"a\\\"}",
        "x{1}",
    ];
    let cases: Vec<(PgType, &[&str])> = vec![
        // Malformed or out of range.
        (
            PgType::Int8,
            &[
                "",
                " 1",
                "1 ",
                "1.0",
                "12a",
                "9223372036854775808",
                "--1",
                "0x10",
                "一",
            ],
        ),
        (PgType::Oid, &["-1", "4294967296"]),
        // Exact text by rule.
        (
            PgType::Numeric,
            &[
                "123456789012345678901234567890.000000001",
                "NaN",
                "Infinity",
                "-Infinity",
                "-0.00",
                "0",
                "1e5",
            ],
        ),
        (PgType::Money, &["$12.34", "-$1,000.00"]),
        // Not JSON numbers.
        (PgType::Float4, &["NaN", "Infinity", "-Infinity"]),
        (PgType::Float8, &["NaN", "Infinity", "-Infinity"]),
        // Not PostgreSQL output, but must not be silently changed.
        (
            PgType::Float8,
            &[
                "",
                "abc",
                "1e400",
                "-1e400",
                "1e-400",
                "0.0001e-400",
                "inf",
                "1,5",
            ],
        ),
        (PgType::Bool, &["", "true", "T", "yes", "tt"]),
        // Text by rule.
        (PgType::Text, TEXT_LIKE),
        (PgType::Other, TEXT_LIKE),
        (PgType::Uuid, &["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
        (PgType::Interval, &["P1Y2M3DT4H5M6.5S", "PT-1.5S", "PT0S"]),
        (
            PgType::Date,
            &[
                "2024-03-01",
                "0001-01-01",
                "infinity",
                "-infinity",
                "4713-01-01 BC",
            ],
        ),
        // Not JSON.
        (PgType::Json, NOT_JSON),
        (PgType::Jsonb, NOT_JSON),
        // Malformed or out of range.
        (
            PgType::Bytea,
            &[
                "\\x0", "\\x0g", "\\x 01", "\\", "a\\0", "a\\400", "a\\08x", "\\y",
            ],
        ),
        (
            PgType::TimestampTz,
            &[
                "infinity",
                "-infinity",
                "0044-03-15 12:00:00+00 BC",
                "10000-01-01 00:00:00+00",
                "294276-12-31 23:59:59.999999+00",
                "9999-12-31 23:00:00-05",
                "0001-01-01 00:00:00+01",
                "0000-01-01 00:00:00+00",
                "2024-02-30 00:00:00+00",
                "2024-03-01 24:00:00+00",
                "2024-03-01 12:60:00+00",
                "2024-03-01 12:00:60+00",
                "2024-03-01 12:34:56.1234567+00",
                "2024-03-01 12:34:56.+00",
                "2024-03-01 12:34:56",
                "2024-03-01T12:34:56+00",
                "2024-03-01 12:34:56+0",
                "2024-03-01 12:34:56+00:",
                "2024-03-01 12:34:56+00:99",
                "2024-03-01 12:34:56+00 ",
                "24-03-01 12:34:56+00",
                "",
                "2024-03-01 12:34:56+00😀",
            ],
        ),
        (
            PgType::Timestamp,
            &[
                "infinity",
                "-infinity",
                "4713-01-01 00:00:00 BC",
                "10000-01-01 00:00:00",
                "2023-02-29 00:00:00",
                "2024-03-01 12:34:56+00",
                "2024-03-01",
                "",
            ],
        ),
        (
            PgType::Time,
            &[
                "",
                "12:34",
                "25:00:00",
                "12:34:56.1234567",
                "12:34:56+00",
                "1:02:03",
            ],
        ),
        (
            PgType::TimeTz,
            &[
                "",
                "12:34:56",
                "12:34:56+",
                "12:34:56+5",
                "12:34:56 +05",
                "12:34:56+05:60",
            ],
        ),
        (arr(PgType::Int4), MALFORMED_ARRAYS),
        (arr(PgType::Text), MALFORMED_ARRAYS),
        (arr(PgType::Other), MALFORMED_ARRAYS),
    ];
    for (ty, texts) in cases {
        for text in texts {
            assert_text(ty.clone(), text);
        }
    }
}

#[test]
fn json_object_order_follows_input() {
    let v = conv(PgType::Json, r#"{"z": 1, "a": 2}"#);
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    // With serde_json's preserve_order the input order is kept, without it keys are sorted.
    assert!(keys == ["z", "a"] || keys == ["a", "z"]);
}

#[test]
fn bytea() {
    assert_eq!(conv(PgType::Bytea, "\\x0102ff"), json!("AQL/"));
    assert_eq!(conv(PgType::Bytea, "\\x"), json!(""));
    assert_eq!(conv(PgType::Bytea, "\\x6162"), json!("YWI="));
    assert_eq!(conv(PgType::Bytea, "\\xDEADbeef"), json!("3q2+7w=="));
    // Legacy escape format.
    assert_eq!(conv(PgType::Bytea, "ab"), json!("YWI="));
    assert_eq!(conv(PgType::Bytea, ""), json!(""));
    assert_eq!(conv(PgType::Bytea, "a\\\\b\\000\\377"), json!("YVxiAP8="));
}

#[test]
fn timestamptz() {
    let c = |t| conv(PgType::TimestampTz, t);
    assert_eq!(
        c("2024-03-01 12:34:56.123456+00"),
        json!("2024-03-01T12:34:56.123456Z")
    );
    assert_eq!(
        c("2024-03-01 12:34:56+00"),
        json!("2024-03-01T12:34:56.000000Z")
    );
    assert_eq!(
        c("2024-03-01 12:34:56.5+00"),
        json!("2024-03-01T12:34:56.500000Z")
    );
    assert_eq!(
        c("2024-03-01 12:34:56.000001+00"),
        json!("2024-03-01T12:34:56.000001Z")
    );
    assert_eq!(
        c("2024-03-01 12:34:56.123+05:30"),
        json!("2024-03-01T07:04:56.123000Z")
    );
    assert_eq!(
        c("2024-03-01 01:00:00-05"),
        json!("2024-03-01T06:00:00.000000Z")
    );
    assert_eq!(
        c("2024-03-01 02:00:00+03"),
        json!("2024-02-29T23:00:00.000000Z")
    );
    assert_eq!(
        c("2023-12-31 22:00:00-02:00:15"),
        json!("2024-01-01T00:00:15.000000Z")
    );
    assert_eq!(
        c("1999-12-31 23:59:59.999999+00"),
        json!("1999-12-31T23:59:59.999999Z")
    );
    assert_eq!(
        c("0001-01-01 00:00:00+00"),
        json!("0001-01-01T00:00:00.000000Z")
    );
    assert_eq!(
        c("9999-12-31 23:59:59.999999+00"),
        json!("9999-12-31T23:59:59.999999Z")
    );
    assert_eq!(
        c("1970-01-01 00:00:00-00"),
        json!("1970-01-01T00:00:00.000000Z")
    );
}

#[test]
fn timestamp() {
    let c = |t| conv(PgType::Timestamp, t);
    assert_eq!(
        c("2024-03-01 12:34:56.5"),
        json!("2024-03-01T12:34:56.500000")
    );
    assert_eq!(
        c("2024-03-01 12:34:56"),
        json!("2024-03-01T12:34:56.000000")
    );
    assert_eq!(
        c("2024-02-29 00:00:00.123456"),
        json!("2024-02-29T00:00:00.123456")
    );
}

#[test]
fn time_and_timetz() {
    let t = |s| conv(PgType::Time, s);
    assert_eq!(t("12:34:56.123"), json!("12:34:56.123000"));
    assert_eq!(t("12:34:56"), json!("12:34:56.000000"));
    assert_eq!(t("00:00:00.000001"), json!("00:00:00.000001"));
    assert_eq!(t("24:00:00"), json!("24:00:00.000000"));
    let tz = |s| conv(PgType::TimeTz, s);
    assert_eq!(tz("12:34:56.1+05:30"), json!("12:34:56.100000+05:30"));
    assert_eq!(tz("01:02:03+00"), json!("01:02:03.000000+00:00"));
    assert_eq!(tz("01:02:03-08"), json!("01:02:03.000000-08:00"));
    assert_eq!(tz("12:00:00-00:00:15"), json!("12:00:00.000000-00:00:15"));
    assert_eq!(tz("24:00:00-15:59"), json!("24:00:00.000000-15:59"));
    assert_eq!(tz("23:59:59.999999+14"), json!("23:59:59.999999+14:00"));
}

#[test]
fn arrays_basic() {
    let ints = arr(PgType::Int4);
    assert_eq!(conv(ints.clone(), "{1,2,NULL}"), json!([1, 2, null]));
    assert_eq!(conv(ints.clone(), "{}"), json!([]));
    assert_eq!(
        conv(ints.clone(), "{{1,2},{3,NULL}}"),
        json!([[1, 2], [3, null]])
    );
    assert_eq!(
        conv(ints.clone(), "{{{1},{2}},{{3},{4}}}"),
        json!([[[1], [2]], [[3], [4]]])
    );
    assert_eq!(conv(ints.clone(), "[0:1]={1,2}"), json!([1, 2]));
    assert_eq!(conv(ints.clone(), "[1:1][-2:-1]={{1,2}}"), json!([[1, 2]]));
    assert_eq!(
        conv(ints.clone(), " { 1 , 2 ,\tnull } "),
        json!([1, 2, null])
    );
    assert_eq!(conv(ints.clone(), "{\"1\",\"NULL\"}"), json!([1, "NULL"]));
    assert_eq!(conv(ints.clone(), "{1,x}"), json!([1, "x"]));
    assert_eq!(
        conv(arr(PgType::Bool), "{t,f,NULL}"),
        json!([true, false, null])
    );
    assert_eq!(
        conv(arr(PgType::Oid), "{0,4294967295}"),
        json!([0, 4294967295u32])
    );
    assert_eq!(
        conv(arr(PgType::Int8), "{-9223372036854775808}"),
        json!([i64::MIN])
    );
}

#[test]
fn arrays_quoting() {
    let texts = arr(PgType::Text);
    // Each element of ARRAY['a,b','c"d',NULL,'NULL','',' x ','back\slash','{}','😀']::text[]
    // as PG 15.18's array_out writes it, and its value.
    let elements = [
        (r#""a,b""#, json!("a,b")),
        (r#""c\"d""#, json!("c\"d")),
        ("NULL", Value::Null),
        (r#""NULL""#, json!("NULL")),
        (r#""""#, json!("")),
        (r#"" x ""#, json!(" x ")),
        (r#""back\\slash""#, json!("back\\slash")),
        (r#""{}""#, json!("{}")),
        ("😀", json!("😀")),
    ];
    let literal = format!(
        "{{{}}}",
        elements.iter().map(|e| e.0).collect::<Vec<_>>().join(",")
    );
    assert_eq!(
        literal,
        r#"{"a,b","c\"d",NULL,"NULL",""," x ","back\\slash","{}",😀}"#
    );
    assert_eq!(
        conv(texts.clone(), &literal),
        Value::Array(elements.into_iter().map(|e| e.1).collect())
    );
    assert_eq!(
        conv(texts.clone(), r#"{nULl,"null",null\ }"#),
        json!([null, "null", "null "])
    );
    assert_eq!(
        conv(texts.clone(), r#"{a\,b,c\"d,\\}"#),
        json!(["a,b", "c\"d", "\\"])
    );
    assert_eq!(conv(texts.clone(), "{ab cd  ,  x}"), json!(["ab cd", "x"]));
    assert_eq!(conv(texts.clone(), r#"{\😀,"\é"}"#), json!(["😀", "é"]));
    assert_eq!(conv(texts.clone(), "{ünï,𝄞}"), json!(["ünï", "𝄞"]));
    assert_eq!(
        conv(texts.clone(), r#"{"{\"a\": 1}"}"#),
        json!(["{\"a\": 1}"])
    );
    // box[] uses ';'; the ',' inside an element is then data.
    let boxes = PgType::from_builtin_oid(1020).unwrap();
    assert_eq!(
        conv(boxes, "{(1,1),(0,0);(2,2),(1,1)}"),
        json!(["(1,1),(0,0)", "(2,2),(1,1)"])
    );
}

#[test]
fn arrays_of_converted_elements() {
    let tstz = PgType::from_builtin_oid(1185).unwrap();
    // Produced by PG 15.18: array['2024-01-01 00:00:00+00'::timestamptz,'infinity']
    assert_eq!(
        conv(tstz, r#"{"2024-01-01 00:00:00+00",infinity}"#),
        json!(["2024-01-01T00:00:00.000000Z", "infinity"])
    );
    let jsonb = PgType::from_builtin_oid(3807).unwrap();
    // Produced by PG 15.18: array['{"a": 1}'::jsonb, '[1,2]', 'null', '"s"']
    assert_eq!(
        conv(jsonb, r#"{"{\"a\": 1}","[1, 2]","null","\"s\"",NULL}"#),
        json!([{"a": 1}, [1, 2], null, "s", null])
    );
    let bytea = PgType::from_builtin_oid(1001).unwrap();
    // Produced by PG 15.18: array['\x01'::bytea, '']
    assert_eq!(conv(bytea, r#"{"\\x01","\\x"}"#), json!(["AQ==", ""]));
    let floats = PgType::from_builtin_oid(1022).unwrap();
    assert_eq!(
        conv(floats, "{1.5,NaN,Infinity,-Infinity}"),
        json!([1.5, "NaN", "Infinity", "-Infinity"])
    );
    let nums = PgType::from_builtin_oid(1231).unwrap();
    assert_eq!(
        conv(nums, "{123456789012345678901234567890.000000001,NaN}"),
        json!(["123456789012345678901234567890.000000001", "NaN"])
    );
    // An array type whose elements are themselves array literals (not a PostgreSQL type,
    // but representable): each element is parsed again.
    assert_eq!(
        conv(arr(arr(PgType::Int2)), r#"{"{1,2}","{}",NULL}"#),
        json!([[1, 2], [], null])
    );
}

#[test]
fn malformed_arrays_keep_text() {
    // Six dimensions (PostgreSQL's maximum) are fine.
    assert_eq!(
        conv(arr(PgType::Int4), "{{{{{{1}}}}}}"),
        json!([[[[[[1]]]]]])
    );
    // Deep nesting cannot overflow the stack.
    let deep = "{".repeat(100_000) + &"}".repeat(100_000);
    assert_text(arr(PgType::Int4), &deep);
    // A non-ASCII delimiter is not supported: text.
    let odd = PgType::Array {
        element: Box::new(PgType::Text),
        delimiter: 0xC3,
    };
    assert_text(odd, "{é}");
}

/// Encodes elements as `array_out` does.
fn array_literal(items: &[Option<String>], delimiter: u8) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(char::from(delimiter));
        }
        match item {
            None => out.push_str("NULL"),
            Some(s) => {
                let quote = s.is_empty()
                    || s.eq_ignore_ascii_case("NULL")
                    || s.bytes().any(|c| {
                        matches!(c, b'{' | b'}' | b'"' | b'\\')
                            || c == delimiter
                            || is_array_space(c)
                    });
                if quote {
                    out.push('"');
                    for ch in s.chars() {
                        if ch == '"' || ch == '\\' {
                            out.push('\\');
                        }
                        out.push(ch);
                    }
                    out.push('"');
                } else {
                    out.push_str(s);
                }
            }
        }
    }
    out.push('}');
    out
}

fn scalar_type() -> impl Strategy<Value = PgType> {
    use PgType::*;
    prop_oneof![
        Just(Bool),
        Just(Int2),
        Just(Int4),
        Just(Int8),
        Just(Oid),
        Just(Float4),
        Just(Float8),
        Just(Numeric),
        Just(Money),
        Just(Text),
        Just(Json),
        Just(Jsonb),
        Just(Bytea),
        Just(Date),
        Just(Time),
        Just(TimeTz),
        Just(Timestamp),
        Just(TimestampTz),
        Just(Interval),
        Just(Uuid),
        Just(Other),
    ]
}

/// Scalars and arrays of them, nested up to 3 levels, with `,`, `;` or any byte as delimiter.
fn any_type() -> impl Strategy<Value = PgType> {
    scalar_type().prop_recursive(3, 8, 1, |inner| {
        (inner, prop_oneof![Just(b','), Just(b';'), any::<u8>()]).prop_map(|(e, d)| PgType::Array {
            element: Box::new(e),
            delimiter: d,
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics(
        ty in any_type(),
        text in prop_oneof![
            any::<String>(),
            "[{}\",;\\\\ \tNULnul0-9a-fxT:.+\\-\\[\\]=é😀]{0,48}",
            "[0-9 :.+\\-]{0,32}",
        ],
    ) {
        let v = text_to_json(&ty, &text);
        if matches!(ty, PgType::Text | PgType::Other | PgType::Numeric) {
            prop_assert_eq!(v, json!(text));
        }
    }

    #[test]
    fn text_arrays_round_trip(
        items in proptest::collection::vec(proptest::option::of(".{0,12}"), 0..8),
        delimiter in prop_oneof![Just(b','), Just(b';')],
    ) {
        let ty = PgType::Array { element: Box::new(PgType::Text), delimiter };
        let literal = array_literal(&items, delimiter);
        let expected: Vec<Value> =
            items.iter().map(|i| i.as_ref().map_or(Value::Null, |s| json!(s))).collect();
        prop_assert_eq!(text_to_json(&ty, &literal), Value::Array(expected));
    }

    #[test]
    fn integers_round_trip(n in any::<i64>()) {
        prop_assert_eq!(text_to_json(&PgType::Int8, &n.to_string()), json!(n));
    }

    #[test]
    fn floats_round_trip(x in any::<f64>()) {
        let text = x.to_string();
        let v = text_to_json(&PgType::Float8, &text);
        if x.is_finite() {
            prop_assert_eq!(v.as_f64().map(f64::to_bits), Some(x.to_bits()));
        } else {
            prop_assert_eq!(v, json!(text));
        }
    }
}
