//! PostgreSQL text-format column values → JSON values as Debezium's PostgreSQL connector writes
//! them (JsonConverter, `schemas.enable=false`, `time.precision.mode=adaptive`,
//! `interval.handling.mode=numeric`, `hstore`/`json` as text, `money.fraction.digits=2`).
//!
//! Used by the `debezium` envelope only; the driftless envelope keeps [`super::text_to_json`].
//! Same invariants as the parent module: pure, total (text that does not parse under its type's
//! rule becomes the text), no panics. Types whose Debezium encoding equals driftless's
//! (integers, floats, bool, text, bytea, uuid, arrays, ...) go through [`super::text_to_json`].
//! Years are proleptic Gregorian and may have up to 7 digits, as PostgreSQL writes them.
//!
//! Rules that differ from driftless's (`typmod` is the column's type modifier, -1 if none):
//! * `date` → days since 1970-01-01; `infinity`/`-infinity` → the day numbers Debezium derives
//!   from PostgreSQL's internal sentinels (`-2147472692`/`-2147472691`); in a row read by SQL
//!   ([`read_to_debezium`]) as Debezium's snapshot writes it, through JDBC's Julian calendar.
//! * `time` → µs since midnight, or ms when the precision is 0..=3.
//! * `timetz` → converted to UTC, `HH:MM:SS[.f]Z` with trailing fraction zeros dropped.
//! * `timestamp` → µs since the epoch, or ms when the precision is 0..=3; `infinity` and
//!   `-infinity` → pgjdbc's sentinel numbers; a value beyond 64 bits stays the text.
//! * `timestamptz` → the instant in UTC as Java's ISO format writes it (6 fraction digits;
//!   years outside 0000..=9999 signed, astronomical: 5 BC is `-0004`).
//! * `interval` → µs, a month counting as 30.4375 days.
//! * `json`/`jsonb` → the JSON text as a string.
//! * `numeric` per [`DecimalMode`]: `precise` → base64 of the unscaled big-endian two's
//!   complement integer (Java's `BigInteger.toByteArray`), wrapped as `{"scale", "value"}` when the
//!   column has no typmod, `NaN`/infinities → null; `string` → the plain text (`NAN`,
//!   `POSITIVE_INFINITY`, `NEGATIVE_INFINITY`); `double` → number (specials as strings).
//! * `money` → as a numeric with scale 2 per the mode (currency symbol and separators dropped).

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::{Cursor, PgType, push_time, push2, text_to_json};

pub use crate::config::debezium::DecimalMode;

/// The value Debezium writes for an unchanged TOAST column it did not receive.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

const US_PER_DAY: i64 = 86_400_000_000;
/// 30.4375 days (Debezium's average month) in seconds.
const SECONDS_PER_MONTH: i128 = 2_629_800;

/// Converts one non-NULL value from PostgreSQL's text output to Debezium's JSON value.
pub fn text_to_debezium(ty: &PgType, typmod: i32, text: &str, mode: DecimalMode) -> Value {
    let converted = match ty {
        PgType::Json | PgType::Jsonb => Some(Value::String(text.to_owned())),
        PgType::Date => date(text).map(Value::from),
        PgType::Time => time(text).and_then(|us| millis_if_low(i128::from(us), typmod)),
        PgType::TimeTz => timetz(text).map(Value::String),
        PgType::Timestamp => timestamp(text).and_then(|us| millis_if_low(us, typmod)),
        PgType::TimestampTz => timestamptz(text).map(Value::String),
        PgType::Interval => interval(text).map(Value::from),
        PgType::Numeric => return numeric(text, typmod, mode),
        PgType::Money => money(text).map(|plain| decimal(&plain, true, mode)),
        _ => return text_to_json(ty, text),
    };
    converted.unwrap_or_else(|| Value::String(text.to_owned()))
}

/// Converts one non-NULL value of a row read by SQL (the initial snapshot, a backfill) as
/// Debezium's snapshots write it: they read through JDBC, which changes only `date` (see
/// [`read_date`]); every other type as [`text_to_debezium`].
pub fn read_to_debezium(ty: &PgType, typmod: i32, text: &str, mode: DecimalMode) -> Value {
    match ty {
        PgType::Date => read_date(text).unwrap_or_else(|| Value::String(text.to_owned())),
        _ => text_to_debezium(ty, typmod, text, mode),
    }
}

/// A `date` as Debezium's snapshot writes it. pgjdbc turns the text into a `java.sql.Date`
/// through Java's Julian/Gregorian calendar and Debezium reads its fields back
/// (`Date.toLocalDate()`), so: a BC date loses its era (`0044-03-15 BC` → the days of
/// `0044-03-15`; null when that day does not exist, e.g. `0005-02-29 BC`); a day of the
/// calendar switch's gap (`1582-10-05` to `1582-10-14`) moves 10 days later; `infinity` and
/// `-infinity` become the day numbers of pgjdbc's sentinels in a UTC JVM (`-622191234`,
/// `-625821272`). Other dates as in the stream. `None`: the text is not a date.
fn read_date(text: &str) -> Option<Value> {
    match text {
        "infinity" => return Some(Value::from(-622_191_234)),
        "-infinity" => return Some(Value::from(-625_821_272)),
        _ => {}
    }
    let (body, bc) = split_bc(text);
    let mut c = Cursor::new(body);
    let (year, month, day) = ymd_fields(&mut c)?;
    if !c.done() {
        return None;
    }
    let Some(days) = civil_days(year, month, day) else {
        // A BC leap day of a year that is no leap year AD: Debezium's conversion fails.
        return bc.then_some(Value::Null);
    };
    // 1582-10-05 ..= 1582-10-14 (proleptic Gregorian), the days the switch skipped.
    if !bc && (-141_437..-141_427).contains(&days) {
        return Some(Value::from(days + 10));
    }
    Some(Value::from(days))
}

/// Adaptive precision: precision 0..=3 → milliseconds, else microseconds.
/// `None` when the value does not fit in 64 bits.
fn millis_if_low(us: i128, typmod: i32) -> Option<Value> {
    let v = if (0..=3).contains(&typmod) {
        us.div_euclid(1000)
    } else {
        us
    };
    i64::try_from(v).ok().map(Value::from)
}

/// Fraction digits (at most 6) → microseconds.
fn frac_us(frac: &[u8]) -> i64 {
    (0..6).fold(0, |acc, i| {
        acc * 10 + i64::from(frac.get(i).map_or(0, |c| c - b'0'))
    })
}

/// `YYYY-MM-DD` at the cursor (4 to 7 year digits, as PostgreSQL writes years) → (year,
/// month, day), not checked to be a day.
fn ymd_fields(c: &mut Cursor<'_>) -> Option<(i64, u32, u32)> {
    let start = c.i;
    while c.peek().is_some_and(|b| b.is_ascii_digit()) && c.i - start < 7 {
        c.i += 1;
    }
    let digits = &c.b[start..c.i];
    if digits.len() < 4 {
        return None;
    }
    let year = digits
        .iter()
        .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
    c.expect(b'-')?;
    let month = c.digits(2)?;
    c.expect(b'-')?;
    let day = c.digits(2)?;
    Some((year, month, day))
}

/// Days since 1970-01-01 of a proleptic Gregorian day (astronomical year: 1 BC is 0); `None`
/// when there is no such day.
fn civil_days(year: i64, month: u32, day: u32) -> Option<i64> {
    let leap = year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let max = *month_days.get(usize::try_from(month).ok()?.checked_sub(1)?)?;
    if day == 0 || day > max {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The proleptic Gregorian (astronomical year, month, day) of a day since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD` at the cursor, BC when `bc` → days since 1970-01-01.
fn ymd_days(c: &mut Cursor<'_>, bc: bool) -> Option<i64> {
    let (year, month, day) = ymd_fields(c)?;
    civil_days(if bc { 1 - year } else { year }, month, day)
}

fn date(text: &str) -> Option<i64> {
    match text {
        // PostgreSQL's DATEVAL_NOEND / NOBEGIN shifted to the Unix epoch in 32 bits.
        "infinity" => return Some(i64::from(i32::MAX.wrapping_add(10_957))),
        "-infinity" => return Some(i64::from(i32::MIN.wrapping_add(10_957))),
        _ => {}
    }
    let (body, bc) = split_bc(text);
    let mut c = Cursor::new(body);
    let days = ymd_days(&mut c, bc)?;
    c.done().then_some(days)
}

fn split_bc(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (text, false),
    }
}

fn time(text: &str) -> Option<i64> {
    let mut c = Cursor::new(text);
    let (h, m, s, frac) = c.time()?;
    if !c.done() {
        return None;
    }
    Some(i64::from(h * 3600 + m * 60 + s) * 1_000_000 + frac_us(frac))
}

fn timetz(text: &str) -> Option<String> {
    let mut c = Cursor::new(text);
    let (h, m, s, frac) = c.time()?;
    let offset = c.offset_seconds()?;
    if !c.done() {
        return None;
    }
    let secs = (i64::from(h * 3600 + m * 60 + s) - i64::from(offset)).rem_euclid(86_400);
    let mut out = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    let digits = frac.iter().rposition(|&d| d != b'0').map_or(0, |i| i + 1);
    if digits > 0 {
        out.push('.');
        out.extend(frac[..digits].iter().map(|&d| char::from(d)));
    }
    out.push('Z');
    Some(out)
}

/// `timestamp` text → µs since the Unix epoch (wider than `i64`: the last years PostgreSQL
/// allows fit only in milliseconds).
fn timestamp(text: &str) -> Option<i128> {
    match text {
        "infinity" => return Some(9_223_372_036_825_200_000),
        "-infinity" => return Some(-9_223_372_036_832_400_000),
        _ => {}
    }
    let (body, bc) = split_bc(text);
    let mut c = Cursor::new(body);
    let days = ymd_days(&mut c, bc)?;
    c.expect(b' ')?;
    let (h, m, s, frac) = c.time()?;
    if !c.done() || h > 23 {
        return None;
    }
    let us = i64::from(h * 3600 + m * 60 + s) * 1_000_000 + frac_us(frac);
    Some(i128::from(days) * i128::from(US_PER_DAY) + i128::from(us))
}

/// `timestamptz` text → Debezium's `ZonedTimestamp`: the instant in UTC as Java's ISO format
/// writes it, with 6 fraction digits (`2024-02-29T11:45:30.123456Z`; astronomical years
/// outside 0000..=9999 signed: `-0004-02-29T10:00:00.000000Z`, `+10000-01-01T...`).
fn timestamptz(text: &str) -> Option<String> {
    let (body, bc) = split_bc(text);
    let mut c = Cursor::new(body);
    let days = ymd_days(&mut c, bc)?;
    c.expect(b' ')?;
    let (h, m, s, frac) = c.time()?;
    let offset = c.offset_seconds()?;
    if !c.done() || h > 23 {
        return None;
    }
    let secs = days * 86_400 + i64::from(h * 3600 + m * 60 + s) - i64::from(offset);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    let mut out = String::with_capacity(32);
    match u32::try_from(year) {
        Ok(y @ 0..=9999) => {
            push2(&mut out, y / 100);
            push2(&mut out, y);
        }
        Ok(y) => out.push_str(&format!("+{y}")),
        Err(_) => out.push_str(&format!("-{:04}", -year)),
    }
    out.push('-');
    push2(&mut out, month);
    out.push('-');
    push2(&mut out, day);
    out.push('T');
    push_time(&mut out, sod / 3600, sod / 60 % 60, sod % 60, frac);
    out.push('Z');
    Some(out)
}

/// ISO 8601 interval text (`IntervalStyle=iso_8601`, e.g. `P1Y2M3DT-4H5M6.5S`) → µs.
fn interval(text: &str) -> Option<i64> {
    let rest = text.strip_prefix('P')?;
    let mut months: i128 = 0;
    let mut us: i128 = 0;
    let mut in_time = false;
    let mut b = rest.as_bytes();
    while !b.is_empty() {
        if b[0] == b'T' {
            in_time = true;
            b = &b[1..];
            continue;
        }
        let len = b
            .iter()
            .position(|c| !(c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.')))?;
        let num = std::str::from_utf8(&b[..len]).ok()?;
        let unit = *b.get(len)?;
        b = &b[len + 1..];
        let whole = |n: &str| n.parse::<i128>().ok();
        match (in_time, unit) {
            (false, b'Y') => months += whole(num)? * 12,
            (false, b'M') => months += whole(num)?,
            (false, b'W') => us += whole(num)? * 7 * i128::from(US_PER_DAY),
            (false, b'D') => us += whole(num)? * i128::from(US_PER_DAY),
            (true, b'H') => us += whole(num)? * 3_600_000_000,
            (true, b'M') => us += whole(num)? * 60_000_000,
            (true, b'S') => us += seconds_us(num)?,
            _ => return None,
        }
    }
    i64::try_from(months * SECONDS_PER_MONTH * 1_000_000 + us).ok()
}

/// `-6.5` → -6_500_000.
fn seconds_us(num: &str) -> Option<i128> {
    let (neg, digits) = match num.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if frac.len() > 6 || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let v = int.parse::<i128>().ok()? * 1_000_000 + i128::from(frac_us(frac.as_bytes()));
    Some(if neg { -v } else { v })
}

/// `numeric` text under `mode`.
fn numeric(text: &str, typmod: i32, mode: DecimalMode) -> Value {
    match (text, mode) {
        ("NaN" | "Infinity" | "-Infinity", DecimalMode::Precise) => Value::Null,
        ("NaN", DecimalMode::String) => Value::from("NAN"),
        ("Infinity", DecimalMode::String) => Value::from("POSITIVE_INFINITY"),
        ("-Infinity", DecimalMode::String) => Value::from("NEGATIVE_INFINITY"),
        ("NaN" | "Infinity" | "-Infinity", DecimalMode::Double) => Value::from(text),
        _ if is_plain_decimal(text) => decimal(text, typmod != -1, mode),
        _ => Value::String(text.to_owned()),
    }
}

/// `[-]digits[.digits]`.
fn is_plain_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    !int.is_empty()
        && int.bytes().all(|c| c.is_ascii_digit())
        && frac.bytes().all(|c| c.is_ascii_digit())
        && (!digits.contains('.') || !frac.is_empty())
}

/// A plain decimal (`[-]digits[.digits]`) under `mode`; `fixed_scale` is false for a numeric
/// column without typmod (Debezium's `VariableScaleDecimal` struct under `precise`).
fn decimal(plain: &str, fixed_scale: bool, mode: DecimalMode) -> Value {
    match mode {
        DecimalMode::String => Value::String(plain.to_owned()),
        DecimalMode::Double => plain
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or_else(|| Value::String(plain.to_owned()), Value::Number),
        DecimalMode::Precise => {
            let (neg, digits) = match plain.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, plain),
            };
            let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
            let bytes = twos_complement(neg, int.bytes().chain(frac.bytes()));
            let value = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
            if fixed_scale {
                value
            } else {
                let mut m = Map::with_capacity(2);
                m.insert("scale".into(), Value::from(frac.len()));
                m.insert("value".into(), value);
                Value::Object(m)
            }
        }
    }
}

/// Decimal digits (ASCII) → Java's `BigInteger.toByteArray()` of the (negated) integer: the
/// shortest big-endian two's complement form.
fn twos_complement(neg: bool, digits: impl Iterator<Item = u8>) -> Vec<u8> {
    // Little-endian magnitude while accumulating.
    let mut mag: Vec<u8> = Vec::with_capacity(16);
    for d in digits {
        let mut carry = u32::from(d - b'0');
        for byte in &mut mag {
            let v = u32::from(*byte) * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        if carry > 0 {
            mag.push(carry as u8);
        }
    }
    while mag.last() == Some(&0) {
        mag.pop();
    }
    let is_zero = mag.is_empty();
    if neg && !is_zero {
        // Two's complement: invert and add one (little-endian).
        let mut carry = true;
        for byte in &mut mag {
            let (v, c) = (!*byte).overflowing_add(u8::from(carry));
            *byte = v;
            carry = c;
        }
        if mag.last().is_none_or(|b| b & 0x80 == 0) {
            mag.push(0xff);
        }
    } else if mag.last().is_none_or(|b| b & 0x80 != 0) {
        mag.push(0);
    }
    mag.reverse();
    mag
}

/// `money` text (`$1,234.56`, `-$0.01`, `($5.00)`) → a plain decimal with 2 fraction digits.
fn money(text: &str) -> Option<String> {
    let neg = text.contains('-') || text.starts_with('(');
    let mut out = String::with_capacity(text.len());
    if neg {
        out.push('-');
    }
    let mut seen_digit = false;
    for c in text.chars() {
        match c {
            '0'..='9' => {
                seen_digit = true;
                out.push(c);
            }
            '.' => out.push('.'),
            _ => {}
        }
    }
    (seen_digit && is_plain_decimal(&out)).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dbz(ty: PgType, typmod: i32, text: &str) -> Value {
        text_to_debezium(&ty, typmod, text, DecimalMode::Precise)
    }

    /// The values Debezium 3.6.3 wrote for these (in its stream and its snapshot alike).
    #[test]
    fn far_and_bc_temporal_values_match_debezium() {
        let cases = [
            (PgType::Date, -1, "20000-01-01", json!(6_585_322)),
            (PgType::Date, -1, "0005-02-29 BC", json!(-720_930)),
            (PgType::Date, -1, "4713-01-01 BC", json!(-2_440_550)),
            (
                PgType::Timestamp,
                6,
                "20000-01-01 00:00:00",
                json!(568_971_820_800_000_000_i64),
            ),
            (
                PgType::Timestamp,
                3,
                "10000-01-01 00:00:00",
                json!(253_402_300_800_000_i64),
            ),
            (
                PgType::Timestamp,
                3,
                "294276-12-31 23:59:59.999",
                json!(9_224_318_015_999_999_i64),
            ),
            (
                PgType::Timestamp,
                6,
                "0001-12-31 23:59:59.999 BC",
                json!(-62_135_596_800_001_000_i64),
            ),
            (
                PgType::TimestampTz,
                -1,
                "0005-02-29 10:00:00+00 BC",
                json!("-0004-02-29T10:00:00.000000Z"),
            ),
            (
                PgType::TimestampTz,
                -1,
                "0001-01-01 00:00:00+00 BC",
                json!("0000-01-01T00:00:00.000000Z"),
            ),
            (
                PgType::TimestampTz,
                -1,
                "4713-01-01 00:00:00+00 BC",
                json!("-4712-01-01T00:00:00.000000Z"),
            ),
            (
                PgType::TimestampTz,
                -1,
                "1000-03-01 00:00:00+05",
                json!("1000-02-28T19:00:00.000000Z"),
            ),
            (
                PgType::TimestampTz,
                -1,
                "10000-01-01 00:00:00+00",
                json!("+10000-01-01T00:00:00.000000Z"),
            ),
            (
                PgType::TimestampTz,
                -1,
                "294276-12-31 23:59:59.999999+00",
                json!("+294276-12-31T23:59:59.999999Z"),
            ),
            (
                PgType::TimestampTz,
                -1,
                "0100-01-01 00:00:00+01:02:03",
                json!("0099-12-31T22:57:57.000000Z"),
            ),
            (
                PgType::TimestampTz,
                -1,
                "2024-06-01 12:00:00+05:30",
                json!("2024-06-01T06:30:00.000000Z"),
            ),
            (
                PgType::TimestampTz,
                -1,
                "1969-12-31 23:59:59.999999+00",
                json!("1969-12-31T23:59:59.999999Z"),
            ),
            (PgType::TimestampTz, -1, "-infinity", json!("-infinity")),
            (PgType::TimestampTz, -1, "infinity", json!("infinity")),
        ];
        for (ty, typmod, text, want) in cases {
            assert_eq!(dbz(ty, typmod, text), want, "{text}");
        }
        // Debezium writes an overflowed number here; driftless keeps the text.
        assert_eq!(
            dbz(PgType::Timestamp, 6, "294276-12-31 23:59:59.999999"),
            json!("294276-12-31 23:59:59.999999")
        );
    }

    /// The values Debezium 3.6.3 wrote for these dates in its initial snapshot (UTC JVM).
    #[test]
    fn read_dates_match_debeziums_snapshot() {
        let read = |text| read_to_debezium(&PgType::Date, -1, text, DecimalMode::Precise);
        for (text, days) in [
            ("infinity", json!(-622_191_234)),
            ("-infinity", json!(-625_821_272)),
            ("0044-03-15 BC", json!(-703_383)),
            ("0001-01-01 BC", json!(-719_162)),
            ("4713-01-01 BC", json!(1_001_860)),
            ("0005-02-29 BC", json!(null)),
            ("1582-10-04", json!(-141_438)),
            ("1582-10-05", json!(-141_427)),
            ("1582-10-10", json!(-141_422)),
            ("1582-10-14", json!(-141_418)),
            ("1582-10-15", json!(-141_427)),
            ("1000-03-01", json!(-354_226)),
            ("1900-01-01", json!(-25_567)),
            ("20000-01-01", json!(6_585_322)),
            ("5874897-12-31", json!(2_145_042_905)),
            ("2024-02-29", json!(19_782)),
            ("not a date", json!("not a date")),
        ] {
            assert_eq!(read(text), days, "{text}");
        }
        // Every other type as in the stream.
        let ts = |f: fn(&PgType, i32, &str, DecimalMode) -> Value| {
            f(
                &PgType::Timestamp,
                6,
                "0010-01-01 00:00:00 BC",
                DecimalMode::Precise,
            )
        };
        assert_eq!(ts(read_to_debezium), ts(text_to_debezium));
    }

    #[test]
    fn temporal_values_match_debezium_adaptive() {
        assert_eq!(dbz(PgType::Date, -1, "2024-02-29"), json!(19782));
        assert_eq!(dbz(PgType::Date, -1, "infinity"), json!(-2147472692));
        assert_eq!(dbz(PgType::Date, -1, "1969-12-31"), json!(-1));
        assert_eq!(
            dbz(PgType::Time, -1, "13:45:30.123456"),
            json!(49530123456_i64)
        );
        assert_eq!(dbz(PgType::Time, -1, "24:00:00"), json!(86400000000_i64));
        assert_eq!(dbz(PgType::Time, 3, "13:45:30.123"), json!(49530123));
        assert_eq!(
            dbz(PgType::TimeTz, -1, "13:45:30.5+02"),
            json!("11:45:30.5Z")
        );
        assert_eq!(
            dbz(PgType::TimeTz, -1, "01:00:00-03:30"),
            json!("04:30:00Z")
        );
        assert_eq!(dbz(PgType::TimeTz, -1, "00:30:00+01"), json!("23:30:00Z"));
        assert_eq!(
            dbz(PgType::Timestamp, -1, "2024-02-29 13:45:30.123456"),
            json!(1709214330123456_i64)
        );
        assert_eq!(
            dbz(PgType::Timestamp, 3, "2024-02-29 13:45:30.123"),
            json!(1709214330123_i64)
        );
        assert_eq!(
            dbz(PgType::Timestamp, 6, "-infinity"),
            json!(-9223372036832400000_i64)
        );
        assert_eq!(
            dbz(PgType::Timestamp, -1, "1969-12-31 23:59:59.5"),
            json!(-500000)
        );
        assert_eq!(
            dbz(PgType::TimestampTz, -1, "2024-02-29 13:45:30.123456+02"),
            json!("2024-02-29T11:45:30.123456Z")
        );
    }

    #[test]
    fn intervals_count_a_month_as_30_4375_days() {
        let i = |t| dbz(PgType::Interval, -1, t);
        assert_eq!(i("P1Y2M3DT4H5M6.5S"), json!(37091106500000_i64));
        assert_eq!(i("PT0S"), json!(0));
        assert_eq!(i("PT-1.5S"), json!(-1500000));
        assert_eq!(i("P-1M"), json!(-2629800000000_i64));
        assert_eq!(i("garbage"), json!("garbage"));
    }

    #[test]
    fn decimals_follow_the_mode() {
        assert_eq!(
            dbz(PgType::Numeric, 786_439, "12345.678"),
            json!("ALxhTg==")
        );
        assert_eq!(
            dbz(PgType::Numeric, -1, "12345678901234567890.123456789"),
            json!({"scale": 9, "value": "J+QbMka+ybFuOYEV"})
        );
        assert_eq!(dbz(PgType::Numeric, -1, "NaN"), Value::Null);
        assert_eq!(dbz(PgType::Money, -1, "$1,234.56"), json!("AeJA"));
        let s = |t: PgType, x| text_to_debezium(&t, -1, x, DecimalMode::String);
        assert_eq!(s(PgType::Numeric, "NaN"), json!("NAN"));
        assert_eq!(s(PgType::Numeric, "-0.000001"), json!("-0.000001"));
        assert_eq!(s(PgType::Money, "-$0.01"), json!("-0.01"));
        let d = |t: PgType, x| text_to_debezium(&t, -1, x, DecimalMode::Double);
        assert_eq!(d(PgType::Numeric, "1.5"), json!(1.5));
        assert_eq!(d(PgType::Money, "$1,234.56"), json!(1234.56));
    }

    #[test]
    fn twos_complement_matches_java_big_integer() {
        let t = |neg, s: &str| twos_complement(neg, s.bytes());
        assert_eq!(t(false, "0"), [0]);
        assert_eq!(t(false, "127"), [0x7f]);
        assert_eq!(t(false, "128"), [0, 0x80]);
        assert_eq!(t(true, "1"), [0xff]);
        assert_eq!(t(true, "128"), [0x80]);
        assert_eq!(t(true, "129"), [0xff, 0x7f]);
        assert_eq!(t(true, "256"), [0xff, 0x00]);
        assert_eq!(t(false, "000"), [0]);
    }

    #[test]
    fn json_is_text_and_shared_types_keep_driftless_rules() {
        assert_eq!(dbz(PgType::Jsonb, -1, r#"{"a": 1}"#), json!(r#"{"a": 1}"#));
        assert_eq!(dbz(PgType::Int8, -1, "42"), json!(42));
        assert_eq!(dbz(PgType::Bytea, -1, "\\xdeadbeef00"), json!("3q2+7wA="));
    }

    proptest::proptest! {
        #[test]
        fn total_on_any_text(text in ".{0,40}", typmod in -1i32..10) {
            for ty in [PgType::Date, PgType::Time, PgType::TimeTz, PgType::Timestamp,
                PgType::Interval, PgType::Numeric, PgType::Money] {
                for mode in [DecimalMode::Precise, DecimalMode::String, DecimalMode::Double] {
                    let _ = text_to_debezium(&ty, typmod, &text, mode);
                    let _ = read_to_debezium(&ty, typmod, &text, mode);
                }
            }
        }
    }
}
