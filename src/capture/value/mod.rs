//! PostgreSQL text-format column values → JSON values of driftless change events.
//!
//! This module owns the conversion of one value from PostgreSQL's TEXT output format to
//! [`serde_json::Value`], by the value's [`PgType`] (the type OID → class mapping lives in
//! [`crate::pgtype`] and is re-exported here for the converter's callers). Logical replication (pgoutput) and the snapshot reader (simple-query
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

pub mod debezium;

use std::borrow::Cow;

use base64::Engine as _;
use chrono::{Datelike as _, NaiveDate, TimeDelta, Timelike as _};
use serde_json::{Number, Value};

/// The conversion class of a column (defined in [`crate::pgtype`]).
pub use crate::pgtype::PgType;

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
mod tests;
