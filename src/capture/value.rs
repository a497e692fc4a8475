//! PostgreSQL text-format column values → JSON values of driftless change events.
//!
//! This module owns the mapping from a column's type OID to a [`PgType`] (how its values are
//! converted) and the conversion of one value from PostgreSQL's TEXT output format to
//! [`serde_json::Value`]. Logical replication (pgoutput) and the snapshot reader (simple-query
//! protocol) both hand us values in that format, so both share this code.
//!
//! # Session settings assumed
//!
//! The sessions producing the text run with `DateStyle=ISO, MDY`, `TimeZone=UTC`,
//! `IntervalStyle=iso_8601`, `extra_float_digits=3`, `bytea_output=hex` and
//! `client_encoding=UTF8`. Under other settings values still convert without panicking, but
//! date/time values and intervals then mostly come out as their text (the fallback below).
//!
//! # Invariants
//!
//! * Pure: no I/O, no global state, no clock, no time-zone database.
//! * Total: every `(type, text)` pair gives a value; nothing here panics, whatever the input.
//! * Never loses text: a value that does not parse under its type's rule becomes its original text
//!   as a JSON string. The only lossy case is the documented one for `json`/`jsonb` numbers (see
//!   [`text_to_json`]).
//! * Hot path: no regex, at most one allocation for most scalars, integers via `str::parse`.
//!
//! See [`text_to_json`] for the per-type rules (the product's contract).

use std::borrow::Cow;

use base64::Engine as _;
use chrono::{Datelike as _, NaiveDate, TimeDelta, Timelike as _};
use serde_json::{Number, Value};

/// A column type resolved far enough to convert its values.
///
/// Several PostgreSQL types share one variant: `text`, `varchar`, `bpchar`, `name` and `"char"`
/// are all [`PgType::Text`]; built-in types without a dedicated rule (inet, cidr, macaddr, xml,
/// bit, point, ranges, reg* types, ...) are [`PgType::Other`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgType {
    /// `bool`: `t`/`f` → `true`/`false`.
    Bool,
    /// `int2` → JSON number.
    Int2,
    /// `int4` → JSON number.
    Int4,
    /// `int8` → JSON number (i64, exact).
    Int8,
    /// `oid` → JSON number (u32).
    Oid,
    /// `float4` → JSON number, or `"NaN"`/`"Infinity"`/`"-Infinity"`.
    Float4,
    /// `float8` → JSON number, or `"NaN"`/`"Infinity"`/`"-Infinity"`.
    Float8,
    /// `numeric` → JSON string with the exact text.
    Numeric,
    /// `money` → JSON string as given (`$12.34`).
    Money,
    /// `text`, `varchar`, `bpchar`, `name`, `"char"` → JSON string.
    Text,
    /// `json` → the parsed JSON value.
    Json,
    /// `jsonb` → the parsed JSON value.
    Jsonb,
    /// `bytea` → base64 string (standard alphabet, padded).
    Bytea,
    /// `date` → `YYYY-MM-DD` string.
    Date,
    /// `time` → `HH:MM:SS.ffffff` string.
    Time,
    /// `timetz` → `HH:MM:SS.ffffff+HH:MM` string.
    TimeTz,
    /// `timestamp` → `YYYY-MM-DDTHH:MM:SS.ffffff` string.
    Timestamp,
    /// `timestamptz` → `YYYY-MM-DDTHH:MM:SS.ffffffZ` string (UTC).
    TimestampTz,
    /// `interval` → the ISO 8601 text as given (`P1Y2M3DT4H5M6.5S`).
    Interval,
    /// `uuid` → JSON string as given.
    Uuid,
    /// An array type: a JSON array (nested for multi-dimensional arrays) of converted elements.
    Array {
        /// The element type.
        element: Box<PgType>,
        /// The element type's `typdelim`: `,` for all built-in types except `box` (`;`).
        delimiter: u8,
    },
    /// Enums, domains over text, and anything else: the text form as a JSON string.
    Other,
}

/// One built-in base type: its OID, its array type's OID, its conversion class, its `typdelim`.
type Builtin = (u32, u32, PgType, u8);

/// Built-in types of PostgreSQL 15 (`pg_catalog` base, range and multirange types that have an
/// array type), checked against `pg_type` of PostgreSQL 15.18.
static BUILTINS: &[Builtin] = &[
    (16, 1000, PgType::Bool, b','),
    (17, 1001, PgType::Bytea, b','),
    (18, 1002, PgType::Text, b','), // "char"
    (19, 1003, PgType::Text, b','), // name
    (20, 1016, PgType::Int8, b','),
    (21, 1005, PgType::Int2, b','),
    (22, 1006, PgType::Other, b','), // int2vector
    (23, 1007, PgType::Int4, b','),
    (24, 1008, PgType::Other, b','), // regproc
    (25, 1009, PgType::Text, b','),
    (26, 1028, PgType::Oid, b','),
    (27, 1010, PgType::Other, b','), // tid
    (28, 1011, PgType::Other, b','), // xid
    (29, 1012, PgType::Other, b','), // cid
    (30, 1013, PgType::Other, b','), // oidvector
    (114, 199, PgType::Json, b','),
    (142, 143, PgType::Other, b','),  // xml
    (600, 1017, PgType::Other, b','), // point
    (601, 1018, PgType::Other, b','), // lseg
    (602, 1019, PgType::Other, b','), // path
    (603, 1020, PgType::Other, b';'), // box
    (604, 1027, PgType::Other, b','), // polygon
    (628, 629, PgType::Other, b','),  // line
    (650, 651, PgType::Other, b','),  // cidr
    (700, 1021, PgType::Float4, b','),
    (701, 1022, PgType::Float8, b','),
    (718, 719, PgType::Other, b','), // circle
    (774, 775, PgType::Other, b','), // macaddr8
    (790, 791, PgType::Money, b','),
    (829, 1040, PgType::Other, b','),  // macaddr
    (869, 1041, PgType::Other, b','),  // inet
    (1033, 1034, PgType::Other, b','), // aclitem
    (1042, 1014, PgType::Text, b','),  // bpchar
    (1043, 1015, PgType::Text, b','),  // varchar
    (1082, 1182, PgType::Date, b','),
    (1083, 1183, PgType::Time, b','),
    (1114, 1115, PgType::Timestamp, b','),
    (1184, 1185, PgType::TimestampTz, b','),
    (1186, 1187, PgType::Interval, b','),
    (1266, 1270, PgType::TimeTz, b','),
    (1560, 1561, PgType::Other, b','), // bit
    (1562, 1563, PgType::Other, b','), // varbit
    (1700, 1231, PgType::Numeric, b','),
    (1790, 2201, PgType::Other, b','), // refcursor
    (2202, 2207, PgType::Other, b','), // regprocedure
    (2203, 2208, PgType::Other, b','), // regoper
    (2204, 2209, PgType::Other, b','), // regoperator
    (2205, 2210, PgType::Other, b','), // regclass
    (2206, 2211, PgType::Other, b','), // regtype
    (2249, 2287, PgType::Other, b','), // record
    (2950, 2951, PgType::Uuid, b','),
    (2970, 2949, PgType::Other, b','), // txid_snapshot
    (3220, 3221, PgType::Other, b','), // pg_lsn
    (3614, 3643, PgType::Other, b','), // tsvector
    (3615, 3645, PgType::Other, b','), // tsquery
    (3642, 3644, PgType::Other, b','), // gtsvector
    (3734, 3735, PgType::Other, b','), // regconfig
    (3769, 3770, PgType::Other, b','), // regdictionary
    (3802, 3807, PgType::Jsonb, b','),
    (3904, 3905, PgType::Other, b','), // int4range
    (3906, 3907, PgType::Other, b','), // numrange
    (3908, 3909, PgType::Other, b','), // tsrange
    (3910, 3911, PgType::Other, b','), // tstzrange
    (3912, 3913, PgType::Other, b','), // daterange
    (3926, 3927, PgType::Other, b','), // int8range
    (4072, 4073, PgType::Other, b','), // jsonpath
    (4089, 4090, PgType::Other, b','), // regnamespace
    (4096, 4097, PgType::Other, b','), // regrole
    (4191, 4192, PgType::Other, b','), // regcollation
    (4451, 6150, PgType::Other, b','), // int4multirange
    (4532, 6151, PgType::Other, b','), // nummultirange
    (4533, 6152, PgType::Other, b','), // tsmultirange
    (4534, 6153, PgType::Other, b','), // tstzmultirange
    (4535, 6155, PgType::Other, b','), // datemultirange
    (4536, 6157, PgType::Other, b','), // int8multirange
    (5038, 5039, PgType::Other, b','), // pg_snapshot
    (5069, 271, PgType::Other, b','),  // xid8
];

impl PgType {
    /// Resolves a built-in type OID (a `pg_catalog` base, range or multirange type, or its array
    /// type) to its conversion class. Returns `None` for any other OID (user-defined enums,
    /// domains, composites, extension types...): the caller resolves those (usually to
    /// [`PgType::Other`], or via a domain's base type).
    pub fn from_builtin_oid(oid: u32) -> Option<PgType> {
        BUILTINS.iter().find_map(|(scalar, array, ty, delimiter)| {
            if *scalar == oid {
                Some(ty.clone())
            } else if *array == oid {
                Some(PgType::Array {
                    element: Box::new(ty.clone()),
                    delimiter: *delimiter,
                })
            } else {
                None
            }
        })
    }

    /// Short name of the conversion class for event metadata, in `pg_type.typname` style: the
    /// canonical type's name (`"bool"`, `"int4"`, `"text"`, `"timestamptz"`, ...), `"other"` for
    /// [`PgType::Other`], and `"_"` + the element's name for arrays (`"_int4"`, `"_other"`).
    /// Types sharing a class share its name: `varchar`, `bpchar`, `name` and `"char"` give
    /// `"text"`.
    pub fn name(&self) -> String {
        match self {
            PgType::Array { element, .. } => {
                let mut name = String::from("_");
                name.push_str(&element.name());
                name
            }
            scalar => scalar.scalar_name().to_owned(),
        }
    }

    fn scalar_name(&self) -> &'static str {
        match self {
            PgType::Bool => "bool",
            PgType::Int2 => "int2",
            PgType::Int4 => "int4",
            PgType::Int8 => "int8",
            PgType::Oid => "oid",
            PgType::Float4 => "float4",
            PgType::Float8 => "float8",
            PgType::Numeric => "numeric",
            PgType::Money => "money",
            PgType::Text => "text",
            PgType::Json => "json",
            PgType::Jsonb => "jsonb",
            PgType::Bytea => "bytea",
            PgType::Date => "date",
            PgType::Time => "time",
            PgType::TimeTz => "timetz",
            PgType::Timestamp => "timestamp",
            PgType::TimestampTz => "timestamptz",
            PgType::Interval => "interval",
            PgType::Uuid => "uuid",
            PgType::Array { .. } => "array",
            PgType::Other => "other",
        }
    }
}

/// Converts one non-NULL column value from PostgreSQL's text output format to JSON.
///
/// Rules (any text that does not parse under its type's rule becomes the text as a JSON string):
/// * `int2`/`int4`/`int8` → number (i64); `oid` → number (u32).
/// * `numeric`, `money` → string with the exact text (`"NaN"`, `"Infinity"`, `"-Infinity"` too).
/// * `float4`/`float8` → number when finite, else the text (`"NaN"`, `"Infinity"`,
///   `"-Infinity"`). Both are parsed as f64 from the text, so the number has the digits
///   PostgreSQL printed (float4 `1.1` stays `1.1`).
/// * `bool` → `true`/`false`.
/// * `text`-like, `uuid`, `interval` (ISO 8601 text), `date`, [`PgType::Other`] → the text.
/// * `json`/`jsonb` → the parsed value (text that is not JSON: the text). The crate enables
///   serde_json's `arbitrary_precision`, so numbers keep exactly the digits PostgreSQL printed
///   (`1.50`, integers beyond 64 bits); no precision is lost.
/// * `bytea` (hex `\x0102`, or the legacy escape format) → base64 string, standard padded.
/// * `timestamptz` → `2024-03-01T12:34:56.123456Z`: converted to UTC, exactly 6 fractional
///   digits. `timestamp` → the same without `Z`. `infinity`, `-infinity`, BC years, and years
///   outside 1..=9999 (also after shifting to UTC) → the text.
/// * `time` → `12:34:56.123456`; `timetz` → `12:34:56.123456+05:30` (offset kept, written with
///   minutes; an offset with seconds keeps them). `24:00:00` is accepted.
/// * arrays → JSON arrays (nested per dimension), elements converted by the element type's rule,
///   unquoted `NULL` → null, bounds decoration (`[0:1]=`) dropped. A malformed literal → the
///   whole text.
pub fn text_to_json(ty: &PgType, text: &str) -> Value {
    let converted = match ty {
        PgType::Bool => match text {
            "t" => Some(Value::Bool(true)),
            "f" => Some(Value::Bool(false)),
            _ => None,
        },
        PgType::Int2 | PgType::Int4 | PgType::Int8 => text.parse::<i64>().ok().map(Value::from),
        PgType::Oid => text.parse::<u32>().ok().map(Value::from),
        PgType::Float4 | PgType::Float8 => float(text),
        PgType::Json | PgType::Jsonb => serde_json::from_str(text).ok(),
        PgType::Bytea => bytea(text).map(Value::String),
        PgType::Time => time(text).map(Value::String),
        PgType::TimeTz => timetz(text).map(Value::String),
        PgType::Timestamp => timestamp(text, false).map(Value::String),
        PgType::TimestampTz => timestamp(text, true).map(Value::String),
        PgType::Array { element, delimiter } => array(element, *delimiter, text),
        // Already in their JSON form: the text itself. `date` under DateStyle=ISO is
        // `YYYY-MM-DD`; its special values (`infinity`, BC dates) are kept as text too.
        PgType::Numeric
        | PgType::Money
        | PgType::Text
        | PgType::Uuid
        | PgType::Interval
        | PgType::Date
        | PgType::Other => None,
    };
    converted.unwrap_or_else(|| Value::String(text.to_owned()))
}

/// Finite floats → number; anything else (NaN, infinities, overflow, underflow to zero of a
/// non-zero literal, garbage) → `None` (the caller keeps the text).
fn float(text: &str) -> Option<Value> {
    let v = text.parse::<f64>().ok()?;
    if v == 0.0
        && text
            .bytes()
            .take_while(|b| !matches!(b, b'e' | b'E'))
            .any(|b| b.is_ascii_digit() && b != b'0')
    {
        return None;
    }
    Number::from_f64(v).map(Value::Number)
}

/// `bytea` text → base64. Hex format `\x..`; anything else is the escape format.
fn bytea(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let bytes = if let Some(hex) = b.strip_prefix(b"\\x") {
        if hex.len() % 2 != 0 {
            return None;
        }
        let mut out = Vec::with_capacity(hex.len() / 2);
        for pair in hex.chunks_exact(2) {
            out.push((hex_val(pair[0])? << 4) | hex_val(pair[1])?);
        }
        out
    } else {
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'\\' {
                out.push(b[i]);
                i += 1;
            } else if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
            } else {
                let d = b.get(i + 1..i + 4)?;
                if !(b'0'..=b'3').contains(&d[0])
                    || !d[1..].iter().all(|c| (b'0'..=b'7').contains(c))
                {
                    return None;
                }
                out.push(((d[0] - b'0') << 6) | ((d[1] - b'0') << 3) | (d[2] - b'0'));
                i += 4;
            }
        }
        out
    };
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A byte cursor for the fixed-layout date/time formats.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor {
            b: text.as_bytes(),
            i: 0,
        }
    }

    fn done(&self) -> bool {
        self.i == self.b.len()
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        if self.peek()? != c {
            return None;
        }
        self.i += 1;
        Some(())
    }

    /// Exactly `n` ASCII digits as a number.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let d = self.b.get(self.i..self.i + n)?;
        let mut v = 0u32;
        for &c in d {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        self.i += n;
        Some(v)
    }

    /// `HH:MM:SS[.f{1,6}]` → (h, m, s, fraction digits). Hours up to 24, as in `time`.
    fn time(&mut self) -> Option<(u32, u32, u32, &'a [u8])> {
        let h = self.digits(2)?;
        self.expect(b':')?;
        let m = self.digits(2)?;
        self.expect(b':')?;
        let s = self.digits(2)?;
        if h > 24 || m > 59 || s > 59 {
            return None;
        }
        let mut frac: &[u8] = &[];
        if self.peek() == Some(b'.') {
            self.i += 1;
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            frac = &self.b[start..self.i];
            if frac.is_empty() || frac.len() > 6 {
                return None;
            }
        }
        Some((h, m, s, frac))
    }

    /// `+HH[:MM[:SS]]` → (sign, the parts, how many parts were given: 1..=3).
    fn offset(&mut self) -> Option<(i32, [u32; 3], usize)> {
        let sign = match self.peek()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        self.i += 1;
        let mut parts = [self.digits(2)?, 0, 0];
        let mut n = 1;
        while n < 3 && self.peek() == Some(b':') {
            self.i += 1;
            parts[n] = self.digits(2)?;
            if parts[n] > 59 {
                return None;
            }
            n += 1;
        }
        Some((sign, parts, n))
    }

    /// An offset as seconds east of UTC.
    fn offset_seconds(&mut self) -> Option<i32> {
        let (sign, [h, m, s], _) = self.offset()?;
        Some(sign * (h * 3600 + m * 60 + s) as i32)
    }
}

fn push2(out: &mut String, v: u32) {
    out.push(char::from(b'0' + (v / 10 % 10) as u8));
    out.push(char::from(b'0' + (v % 10) as u8));
}

/// `HH:MM:SS.ffffff`, the fraction padded to 6 digits.
fn push_time(out: &mut String, h: u32, m: u32, s: u32, frac: &[u8]) {
    push2(out, h);
    out.push(':');
    push2(out, m);
    out.push(':');
    push2(out, s);
    out.push('.');
    for i in 0..6 {
        out.push(char::from(frac.get(i).copied().unwrap_or(b'0')));
    }
}

fn time(text: &str) -> Option<String> {
    let mut c = Cursor::new(text);
    let (h, m, s, frac) = c.time()?;
    if !c.done() {
        return None;
    }
    let mut out = String::with_capacity(15);
    push_time(&mut out, h, m, s, frac);
    Some(out)
}

fn timetz(text: &str) -> Option<String> {
    let mut c = Cursor::new(text);
    let (h, m, s, frac) = c.time()?;
    let (sign, parts, n) = c.offset()?;
    if !c.done() {
        return None;
    }
    let mut out = String::with_capacity(24);
    push_time(&mut out, h, m, s, frac);
    out.push(if sign < 0 { '-' } else { '+' });
    push2(&mut out, parts[0]);
    out.push(':');
    push2(&mut out, parts[1]);
    if n == 3 {
        out.push(':');
        push2(&mut out, parts[2]);
    }
    Some(out)
}

/// `YYYY-MM-DD HH:MM:SS[.f]` (+ offset when `tz`) → ISO 8601 (`T`, 6 digits, `Z` when `tz`).
/// `None` for anything else: special values, BC, years outside 1..=9999, invalid dates.
fn timestamp(text: &str, tz: bool) -> Option<String> {
    let mut c = Cursor::new(text);
    let year = c.digits(4)?;
    c.expect(b'-')?;
    let month = c.digits(2)?;
    c.expect(b'-')?;
    let day = c.digits(2)?;
    c.expect(b' ')?;
    let (h, m, s, frac) = c.time()?;
    let offset = if tz { c.offset_seconds()? } else { 0 };
    if !c.done() || h > 23 || year == 0 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let (date, h, m, s) = if offset == 0 {
        (date, h, m, s)
    } else {
        let utc = date
            .and_hms_opt(h, m, s)?
            .checked_sub_signed(TimeDelta::try_seconds(i64::from(offset))?)?;
        (utc.date(), utc.hour(), utc.minute(), utc.second())
    };
    let year = u32::try_from(date.year())
        .ok()
        .filter(|y| (1..=9999).contains(y))?;
    let mut out = String::with_capacity(27);
    push2(&mut out, year / 100);
    push2(&mut out, year);
    out.push('-');
    push2(&mut out, date.month());
    out.push('-');
    push2(&mut out, date.day());
    out.push('T');
    push_time(&mut out, h, m, s, frac);
    if tz {
        out.push('Z');
    }
    Some(out)
}

/// PostgreSQL's limit on array dimensions (MAXDIM); deeper nesting is malformed.
const MAX_DIMS: usize = 6;

/// Whitespace as `array_in` sees it.
fn is_array_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Parses an array literal (`array_in` syntax); `None` when malformed.
fn array(element: &PgType, delimiter: u8, text: &str) -> Option<Value> {
    if !delimiter.is_ascii() {
        // Slicing at a non-ASCII byte could split a character; no real type has such a delimiter.
        return None;
    }
    let mut p = ArrayParser {
        text,
        b: text.as_bytes(),
        i: 0,
        element,
        delimiter,
    };
    p.skip_space();
    if p.peek() == Some(b'[') {
        // Dimension decoration `[lb:ub][lb:ub]=`: validated loosely, then dropped.
        while p.peek() == Some(b'[') {
            p.i += 1;
            while p.peek()? != b']' {
                let c = p.peek()?;
                if !(c.is_ascii_digit() || matches!(c, b':' | b'-' | b'+') || is_array_space(c)) {
                    return None;
                }
                p.i += 1;
            }
            p.i += 1;
            p.skip_space();
        }
        if p.peek()? != b'=' {
            return None;
        }
        p.i += 1;
        p.skip_space();
    }
    if p.peek()? != b'{' {
        return None;
    }
    p.i += 1;
    let value = p.level(1)?;
    p.skip_space();
    p.at_end().then_some(value)
}

struct ArrayParser<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    element: &'a PgType,
    delimiter: u8,
}

impl ArrayParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(is_array_space) {
            self.i += 1;
        }
    }

    /// One `{...}` level; the cursor is just past its `{`.
    fn level(&mut self, depth: usize) -> Option<Value> {
        let mut items = Vec::new();
        self.skip_space();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(Value::Array(items));
        }
        let mut sub_arrays = None;
        loop {
            self.skip_space();
            let sub = self.peek()? == b'{';
            if *sub_arrays.get_or_insert(sub) != sub {
                return None; // mixes elements and sub-arrays
            }
            if sub {
                if depth >= MAX_DIMS {
                    return None;
                }
                self.i += 1;
                items.push(self.level(depth + 1)?);
            } else {
                items.push(self.element()?);
            }
            self.skip_space();
            let c = self.peek()?;
            self.i += 1;
            if c == b'}' {
                return Some(Value::Array(items));
            }
            if c != self.delimiter {
                return None;
            }
        }
    }

    /// One element, quoted or not; the cursor is on its first character.
    fn element(&mut self) -> Option<Value> {
        let (raw, escaped, quoted) = if self.peek()? == b'"' {
            self.i += 1;
            let start = self.i;
            let mut escaped = false;
            loop {
                match self.peek()? {
                    b'"' => break,
                    b'\\' => {
                        escaped = true;
                        self.i += 2;
                    }
                    _ => self.i += 1,
                }
            }
            let raw = self.text.get(start..self.i)?;
            self.i += 1;
            (raw, escaped, true)
        } else {
            let start = self.i;
            let mut end = start; // past the last character that is not trailing whitespace
            let mut escaped = false;
            loop {
                let c = self.peek()?;
                if c == self.delimiter || c == b'}' {
                    break;
                }
                match c {
                    b'\\' => {
                        escaped = true;
                        self.i += 2;
                        end = self.i;
                    }
                    b'"' | b'{' => return None,
                    c if is_array_space(c) => self.i += 1,
                    _ => {
                        self.i += 1;
                        end = self.i;
                    }
                }
            }
            if end == start {
                return None; // empty unquoted element
            }
            (self.text.get(start..end)?, escaped, false)
        };
        if !quoted && !escaped && raw.eq_ignore_ascii_case("NULL") {
            return Some(Value::Null);
        }
        let value: Cow<'_, str> = if escaped {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        };
        Some(text_to_json(self.element, &value))
    }
}

/// Drops array-literal backslashes: `\x` → `x`.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
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
        let text =
            r#"{"a": 1.50, "b": 123456789012345678901234567890, "c": -0.000000000000000000001}"#;
        let v = text_to_json(&PgType::Jsonb, text);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"a":1.50,"b":123456789012345678901234567890,"c":-0.000000000000000000001}"#
        );
    }

    #[test]
    fn builtin_oids_scalars_and_arrays() {
        use PgType::*;
        let cases: &[(u32, u32, PgType)] = &[
            (16, 1000, Bool),
            (21, 1005, Int2),
            (23, 1007, Int4),
            (20, 1016, Int8),
            (26, 1028, Oid),
            (700, 1021, Float4),
            (701, 1022, Float8),
            (1700, 1231, Numeric),
            (790, 791, Money),
            (25, 1009, Text),
            (1043, 1015, Text),
            (1042, 1014, Text),
            (19, 1003, Text),
            (18, 1002, Text),
            (114, 199, Json),
            (3802, 3807, Jsonb),
            (17, 1001, Bytea),
            (1082, 1182, Date),
            (1083, 1183, Time),
            (1266, 1270, TimeTz),
            (1114, 1115, Timestamp),
            (1184, 1185, TimestampTz),
            (1186, 1187, Interval),
            (2950, 2951, Uuid),
            (869, 1041, Other),
            (650, 651, Other),
            (829, 1040, Other),
            (774, 775, Other),
            (142, 143, Other),
            (1560, 1561, Other),
            (1562, 1563, Other),
            (600, 1017, Other),
            (3904, 3905, Other),
            (3220, 3221, Other),
            (5069, 271, Other),
        ];
        for (oid, array_oid, ty) in cases {
            assert_eq!(
                PgType::from_builtin_oid(*oid),
                Some(ty.clone()),
                "oid {oid}"
            );
            assert_eq!(
                PgType::from_builtin_oid(*array_oid),
                Some(arr(ty.clone())),
                "oid {array_oid}"
            );
        }
        assert_eq!(PgType::from_builtin_oid(603), Some(Other));
        assert_eq!(
            PgType::from_builtin_oid(1020),
            Some(Array {
                element: Box::new(Other),
                delimiter: b';'
            })
        );
        for unknown in [0, 1, 2276, 16384, 99999, u32::MAX] {
            assert_eq!(PgType::from_builtin_oid(unknown), None, "oid {unknown}");
        }
    }

    #[test]
    fn builtin_table_has_unique_oids() {
        let mut oids: Vec<u32> = BUILTINS.iter().flat_map(|(s, a, _, _)| [*s, *a]).collect();
        let n = oids.len();
        oids.sort_unstable();
        oids.dedup();
        assert_eq!(oids.len(), n);
    }

    #[test]
    fn names() {
        assert_eq!(PgType::Int4.name(), "int4");
        assert_eq!(PgType::TimestampTz.name(), "timestamptz");
        assert_eq!(PgType::Other.name(), "other");
        assert_eq!(PgType::from_builtin_oid(1043).unwrap().name(), "text");
        assert_eq!(PgType::from_builtin_oid(1007).unwrap().name(), "_int4");
        assert_eq!(PgType::from_builtin_oid(1020).unwrap().name(), "_other");
        assert_eq!(arr(arr(PgType::Bool)).name(), "__bool");
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
        for bad in [
            "",
            " 1",
            "1 ",
            "1.0",
            "12a",
            "9223372036854775808",
            "--1",
            "0x10",
            "一",
        ] {
            assert_text(PgType::Int8, bad);
        }
        assert_text(PgType::Oid, "-1");
        assert_text(PgType::Oid, "4294967296");
    }

    #[test]
    fn numeric_and_money_keep_text() {
        for t in [
            "123456789012345678901234567890.000000001",
            "NaN",
            "Infinity",
            "-Infinity",
            "-0.00",
            "0",
            "1e5",
        ] {
            assert_text(PgType::Numeric, t);
        }
        assert_text(PgType::Money, "$12.34");
        assert_text(PgType::Money, "-$1,000.00");
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
        for t in ["NaN", "Infinity", "-Infinity"] {
            assert_text(PgType::Float4, t);
            assert_text(PgType::Float8, t);
        }
        // Not PostgreSQL output, but must not be silently changed.
        for t in [
            "",
            "abc",
            "1e400",
            "-1e400",
            "1e-400",
            "0.0001e-400",
            "inf",
            "1,5",
        ] {
            assert_text(PgType::Float8, t);
        }
        assert_eq!(conv(PgType::Float8, "0e-400"), json!(0.0));
    }

    #[test]
    fn bools() {
        assert_eq!(conv(PgType::Bool, "t"), json!(true));
        assert_eq!(conv(PgType::Bool, "f"), json!(false));
        for t in ["", "true", "T", "yes", "tt"] {
            assert_text(PgType::Bool, t);
        }
    }

    #[test]
    fn text_like_values_are_unchanged() {
        for t in [
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
        ] {
            assert_text(PgType::Text, t);
            assert_text(PgType::Other, t);
        }
        assert_text(PgType::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        assert_text(PgType::Interval, "P1Y2M3DT4H5M6.5S");
        assert_text(PgType::Interval, "PT-1.5S");
        assert_text(PgType::Interval, "PT0S");
        for t in [
            "2024-03-01",
            "0001-01-01",
            "infinity",
            "-infinity",
            "4713-01-01 BC",
        ] {
            assert_text(PgType::Date, t);
        }
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
            for bad in ["", "{", "{\"a\":}", "nope", "[1,]", "{} {}"] {
                assert_text(ty.clone(), bad);
            }
        }
        // Deeper than serde_json's recursion limit: kept as text, no stack overflow.
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert_text(PgType::Jsonb, &deep);
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
        for bad in [
            "\\x0", "\\x0g", "\\x 01", "\\", "a\\0", "a\\400", "a\\08x", "\\y",
        ] {
            assert_text(PgType::Bytea, bad);
        }
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
        for t in [
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
        ] {
            assert_text(PgType::TimestampTz, t);
        }
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
        for t in [
            "infinity",
            "-infinity",
            "4713-01-01 00:00:00 BC",
            "10000-01-01 00:00:00",
            "2023-02-29 00:00:00",
            "2024-03-01 12:34:56+00",
            "2024-03-01",
            "",
        ] {
            assert_text(PgType::Timestamp, t);
        }
    }

    #[test]
    fn time_and_timetz() {
        let t = |s| conv(PgType::Time, s);
        assert_eq!(t("12:34:56.123"), json!("12:34:56.123000"));
        assert_eq!(t("12:34:56"), json!("12:34:56.000000"));
        assert_eq!(t("00:00:00.000001"), json!("00:00:00.000001"));
        assert_eq!(t("24:00:00"), json!("24:00:00.000000"));
        for bad in [
            "",
            "12:34",
            "25:00:00",
            "12:34:56.1234567",
            "12:34:56+00",
            "1:02:03",
        ] {
            assert_text(PgType::Time, bad);
        }
        let tz = |s| conv(PgType::TimeTz, s);
        assert_eq!(tz("12:34:56.1+05:30"), json!("12:34:56.100000+05:30"));
        assert_eq!(tz("01:02:03+00"), json!("01:02:03.000000+00:00"));
        assert_eq!(tz("01:02:03-08"), json!("01:02:03.000000-08:00"));
        assert_eq!(tz("12:00:00-00:00:15"), json!("12:00:00.000000-00:00:15"));
        assert_eq!(tz("24:00:00-15:59"), json!("24:00:00.000000-15:59"));
        assert_eq!(tz("23:59:59.999999+14"), json!("23:59:59.999999+14:00"));
        for bad in [
            "",
            "12:34:56",
            "12:34:56+",
            "12:34:56+5",
            "12:34:56 +05",
            "12:34:56+05:60",
        ] {
            assert_text(PgType::TimeTz, bad);
        }
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
        // Produced by PG 15.18 for
        // ARRAY['a,b','c"d',NULL,'NULL','',' x ','back\slash','{}','😀']::text[]
        assert_eq!(
            conv(
                texts.clone(),
                r#"{"a,b","c\"d",NULL,"NULL",""," x ","back\\slash","{}",😀}"#
            ),
            json!([
                "a,b",
                "c\"d",
                null,
                "NULL",
                "",
                " x ",
                "back\\slash",
                "{}",
                "😀"
            ])
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
        for ty in [arr(PgType::Int4), arr(PgType::Text), arr(PgType::Other)] {
            for bad in [
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
            ] {
                assert_text(ty.clone(), bad);
            }
        }
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

    /// Runs `sql` through psql against the project's test server with the capture session
    /// settings; one row, fields separated by U+001F. `None` when no server is reachable.
    fn live_psql(sql: &str) -> Option<Vec<String>> {
        use std::process::Command;
        let mut cmd = Command::new("psql");
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-F",
            "\u{1f}",
            "-R",
            "\u{1e}",
        ])
        .env(
            "PGOPTIONS",
            "-c DateStyle=ISO,MDY -c TimeZone=UTC -c IntervalStyle=iso_8601 \
                 -c extra_float_digits=3 -c bytea_output=hex",
        )
        .env("PGCLIENTENCODING", "UTF8")
        .env("PGCONNECT_TIMEOUT", "5");
        if let Ok(url) = std::env::var("DRIFTLESS_PG_URL") {
            cmd.args(["-d", &url]);
        } else {
            let password =
                std::fs::read_to_string("/var/tmp/driftless/pg15-54329.password").ok()?;
            cmd.args([
                "-h",
                "127.0.0.1",
                "-p",
                "54329",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .env("PGPASSWORD", password.trim());
        }
        let out = cmd.arg("-c").arg(sql).output().ok()?;
        if !out.status.success() {
            eprintln!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        let text = String::from_utf8(out.stdout).ok()?;
        let row = text.trim_end_matches(['\n', '\u{1e}']);
        Some(row.split('\u{1f}').map(str::to_owned).collect())
    }

    /// Values rendered by a live PostgreSQL (the one `scripts/pg-start` runs) under the capture
    /// session settings: checks both our idea of the text format and the OID table. Skipped,
    /// with a note, when no server is reachable.
    #[test]
    fn live_server_text_formats() {
        if live_psql("select 1").is_none() {
            eprintln!("live_server_text_formats: no PostgreSQL reachable, skipped");
            return;
        }
        let cases: Vec<(&str, Value)> = vec![
            ("true", json!(true)),
            ("false", json!(false)),
            ("(-32768)::int2", json!(-32768)),
            ("2147483647::int4", json!(2147483647)),
            ("(-9223372036854775808)::int8", json!(i64::MIN)),
            ("4294967295::oid", json!(4294967295u32)),
            ("1.1::float4", json!(1.1)),
            ("123456789.123::float4", json!(123456790.0)),
            ("3.4028235e38::float4", json!(3.4028235e38)),
            ("'-Infinity'::float4", json!("-Infinity")),
            ("0.1::float8", json!(0.1)),
            ("0.1::float8 + 0.2::float8", json!(0.30000000000000004)),
            ("5e-324::float8", json!(5e-324)),
            ("'NaN'::float8", json!("NaN")),
            (
                "123456789012345678901234567890.000000001::numeric",
                json!("123456789012345678901234567890.000000001"),
            ),
            ("'NaN'::numeric", json!("NaN")),
            ("'-Infinity'::numeric", json!("-Infinity")),
            ("'12.34'::money", json!("$12.34")),
            ("''::text", json!("")),
            ("'😀 𝄞 ü'::varchar", json!("😀 𝄞 ü")),
            ("'ab'::char(4)", json!("ab  ")),
            ("'x'::\"char\"", json!("x")),
            ("'pg'::name", json!("pg")),
            (
                "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid",
                json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            ),
            (
                "'{\"b\": [1, 2.5, null], \"a\": \"😀\"}'::jsonb",
                json!({"a": "😀", "b": [1, 2.5, null]}),
            ),
            ("'{\"b\":1, \"a\":2}'::json", json!({"b": 1, "a": 2})),
            ("'null'::jsonb", Value::Null),
            ("'\\x0102ff'::bytea", json!("AQL/")),
            ("''::bytea", json!("")),
            (
                "'2024-03-01 12:34:56.123456+05:30'::timestamptz",
                json!("2024-03-01T07:04:56.123456Z"),
            ),
            (
                "'2024-03-01 12:34:56'::timestamptz",
                json!("2024-03-01T12:34:56.000000Z"),
            ),
            ("'infinity'::timestamptz", json!("infinity")),
            (
                "'0044-03-15 12:00 BC'::timestamptz",
                json!("0044-03-15 12:00:00+00 BC"),
            ),
            (
                "'10000-01-01'::timestamptz",
                json!("10000-01-01 00:00:00+00"),
            ),
            (
                "'2024-03-01 12:34:56.5'::timestamp",
                json!("2024-03-01T12:34:56.500000"),
            ),
            ("'-infinity'::timestamp", json!("-infinity")),
            ("'2024-03-01'::date", json!("2024-03-01")),
            ("'infinity'::date", json!("infinity")),
            ("'4713-01-01 BC'::date", json!("4713-01-01 BC")),
            ("'12:34:56.123'::time", json!("12:34:56.123000")),
            ("'24:00:00'::time", json!("24:00:00.000000")),
            ("'12:34:56.1+05:30'::timetz", json!("12:34:56.100000+05:30")),
            ("'01:02:03+00'::timetz", json!("01:02:03.000000+00:00")),
            (
                "'12:00-00:00:15'::timetz",
                json!("12:00:00.000000-00:00:15"),
            ),
            (
                "'1 year 2 mons 3 days 04:05:06.5'::interval",
                json!("P1Y2M3DT4H5M6.5S"),
            ),
            ("'-1.5 sec'::interval", json!("PT-1.5S")),
            ("'192.168.0.1/24'::inet", json!("192.168.0.1/24")),
            ("'(1,2)'::point", json!("(1,2)")),
            ("B'101'", json!("101")),
            ("'[1,5)'::int4range", json!("[1,5)")),
            (
                "ARRAY['a,b','c\"d',NULL,'NULL','',' x ','back\\slash','{}','😀']::text[]",
                json!([
                    "a,b",
                    "c\"d",
                    null,
                    "NULL",
                    "",
                    " x ",
                    "back\\slash",
                    "{}",
                    "😀"
                ]),
            ),
            ("'{{1,2},{3,NULL}}'::int[]", json!([[1, 2], [3, null]])),
            ("'[0:1]={1,2}'::int8[]", json!([1, 2])),
            ("'[1:1][-2:-1]={{1,2}}'::int2[]", json!([[1, 2]])),
            ("'{}'::int4[]", json!([])),
            ("'{{{1}},{{2}}}'::oid[]", json!([[[1]], [[2]]])),
            ("'{t,f,NULL}'::bool[]", json!([true, false, null])),
            (
                "'{1.5,NaN,-Infinity}'::float8[]",
                json!([1.5, "NaN", "-Infinity"]),
            ),
            ("'{1.1,NULL}'::float4[]", json!([1.1, null])),
            ("'{1.50,NaN}'::numeric[]", json!(["1.50", "NaN"])),
            (
                "'{(1,1),(0,0);(2,2),(1,1)}'::box[]",
                json!(["(1,1),(0,0)", "(2,2),(1,1)"]),
            ),
            (
                "ARRAY['2024-01-01 00:00:00+00'::timestamptz, 'infinity', NULL]",
                json!(["2024-01-01T00:00:00.000000Z", "infinity", null]),
            ),
            (
                "ARRAY['2024-01-01 10:00'::timestamp]",
                json!(["2024-01-01T10:00:00.000000"]),
            ),
            (
                "ARRAY['{\"a\": 1}'::jsonb, '[1,2]', 'null', '\"s\"']",
                json!([{"a": 1}, [1, 2], null, "s"]),
            ),
            ("ARRAY['{\"a\":1}'::json]", json!([{"a": 1}])),
            ("ARRAY['\\x01'::bytea, '']", json!(["AQ==", ""])),
            (
                "ARRAY['2024-03-01'::date, 'infinity']",
                json!(["2024-03-01", "infinity"]),
            ),
            ("ARRAY['12:00'::time]", json!(["12:00:00.000000"])),
            (
                "ARRAY['12:00+01'::timetz]",
                json!(["12:00:00.000000+01:00"]),
            ),
            ("ARRAY['1 day'::interval]", json!(["P1D"])),
            (
                "ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]",
                json!(["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
            ),
            (
                "ARRAY['a b'::varchar, 'NULL', 'null', '😀']",
                json!(["a b", "NULL", "null", "😀"]),
            ),
            ("ARRAY['x'::bpchar(2)]", json!(["x "])),
            ("'{a,b}'::name[]", json!(["a", "b"])),
            ("ARRAY['$1.00'::money]", json!(["$1.00"])),
            ("ARRAY['10.0.0.1'::inet, NULL]", json!(["10.0.0.1", null])),
            ("ARRAY['[1,2]'::int4range]", json!(["[1,3)"])),
        ];
        let sql = format!(
            "SELECT {}",
            cases
                .iter()
                .map(|(e, _)| format!("pg_typeof({e})::oid, {e}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let fields = live_psql(&sql).expect("the query runs");
        assert_eq!(fields.len(), cases.len() * 2, "{fields:?}");
        for ((expr, expected), pair) in cases.iter().zip(fields.chunks(2)) {
            let oid: u32 = pair[0].parse().unwrap();
            let ty = PgType::from_builtin_oid(oid).unwrap_or_else(|| panic!("{expr}: oid {oid}"));
            assert_eq!(
                &text_to_json(&ty, &pair[1]),
                expected,
                "{expr} ({oid}) text {:?}",
                pair[1]
            );
        }

        // The OID table against pg_type: every pg_catalog base/range/multirange type that has
        // an array type is known, and its array maps to Array of it with its typdelim.
        let rows = live_psql(
            "SELECT string_agg(concat_ws(':', oid, typname, typarray, typdelim), ' ') FROM pg_type \
             WHERE typnamespace = 'pg_catalog'::regnamespace AND typtype IN ('b', 'r', 'm') \
             AND typarray <> 0 AND typname NOT LIKE '\\_%'",
        )
        .expect("the catalog query runs");
        let mut checked = 0;
        for row in rows[0].split(' ') {
            let parts: Vec<&str> = row.split(':').collect();
            let (oid, name, array): (u32, &str, u32) = (
                parts[0].parse().unwrap(),
                parts[1],
                parts[2].parse().unwrap(),
            );
            let delimiter = parts[3].as_bytes()[0];
            let ty = PgType::from_builtin_oid(oid).unwrap_or_else(|| panic!("{name} ({oid})"));
            let expected = PgType::Array {
                element: Box::new(ty),
                delimiter,
            };
            assert_eq!(
                PgType::from_builtin_oid(array),
                Some(expected),
                "{name} array {array}"
            );
            checked += 1;
        }
        assert!(checked > 60, "{checked}");
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
            (inner, prop_oneof![Just(b','), Just(b';'), any::<u8>()]).prop_map(|(e, d)| {
                PgType::Array {
                    element: Box::new(e),
                    delimiter: d,
                }
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
}
