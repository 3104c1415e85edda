//! StarRocks column types and typed values.
//!
//! Owns the one place where text (CSV fields, JSON scalars, expression
//! results) becomes a typed StarRocks value, and where a typed value is
//! formatted back. The emulator's table engine, the bucket hash (which runs on
//! typed values, never on CSV text) and the loader's encoders all go through
//! here so that they cannot disagree about what `2024-01-01 00:00:00` or
//! `12.50` means.
//!
//! Invariants:
//! - `Value::Int` carries every integer type (TINYINT..LARGEINT); the column
//!   type decides the width used for range checks and hashing.
//! - `Value::Decimal` carries the unscaled integer; the scale lives in the type.
//! - `Value::Date` is days since 1970-01-01, `Value::DateTime` microseconds
//!   since 1970-01-01 00:00:00 (no time zone: StarRocks DATETIME is naive).
//! - FLOAT values are rounded to `f32` on conversion, as the column stores them.

use compact_str::CompactString;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// A column type of the subset rockfeed generates and the emulator accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Boolean,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    LargeInt,
    Float,
    Double,
    /// DECIMAL(p, s). `v2` marks DECIMALV2, which hashes like DECIMAL128(27, 9).
    Decimal {
        precision: u8,
        scale: u8,
        v2: bool,
    },
    /// CHAR(n): n is a byte length.
    Char(u32),
    /// VARCHAR(n): n is a byte length.
    Varchar(u32),
    /// STRING: VARCHAR(65533).
    String,
    Date,
    DateTime,
}

/// Longest VARCHAR/STRING StarRocks accepts, in bytes.
pub const MAX_VARCHAR_LEN: u32 = 65533;

impl ColType {
    /// True for CHAR/VARCHAR/STRING.
    pub fn is_string(&self) -> bool {
        matches!(self, ColType::Char(_) | ColType::Varchar(_) | ColType::String)
    }

    /// True for types a SUM/MIN/MAX aggregate may apply to.
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            ColType::TinyInt
                | ColType::SmallInt
                | ColType::Int
                | ColType::BigInt
                | ColType::LargeInt
                | ColType::Float
                | ColType::Double
                | ColType::Decimal { .. }
        )
    }

    /// Integer range of an integer type, as i128 bounds.
    fn int_bounds(&self) -> Option<(i128, i128)> {
        Some(match self {
            ColType::TinyInt => (i8::MIN as i128, i8::MAX as i128),
            ColType::SmallInt => (i16::MIN as i128, i16::MAX as i128),
            ColType::Int => (i32::MIN as i128, i32::MAX as i128),
            ColType::BigInt => (i64::MIN as i128, i64::MAX as i128),
            ColType::LargeInt => (i128::MIN, i128::MAX),
            _ => return None,
        })
    }

    /// Converts a text field to a typed value. `\N` handling is the caller's.
    pub fn parse(&self, raw: &[u8]) -> Result<Value, ConvError> {
        match self {
            ColType::Char(_) | ColType::Varchar(_) | ColType::String => Ok(Value::Str(self.check_str(raw)?.into())),
            _ => {
                if let Some(v) = self.parse_fast(raw) {
                    return Ok(v);
                }
                let s = std::str::from_utf8(raw).map_err(|_| ConvError::InvalidUtf8)?;
                self.parse_str(s.trim())
            }
        }
    }

    /// Like [`ColType::parse`] for text already known to be UTF-8.
    pub fn parse_text(&self, s: &str) -> Result<Value, ConvError> {
        match self {
            ColType::Char(_) | ColType::Varchar(_) | ColType::String => Ok(Value::Str(self.check_str_len(s)?.into())),
            ColType::Double | ColType::Float => match self.parse_float(s) {
                Some(v) => Ok(v),
                None => self.parse_str(s.trim()),
            },
            _ => match self.parse_fast(s.as_bytes()) {
                Some(v) => Ok(v),
                None => self.parse_str(s.trim()),
            },
        }
    }

    /// A finite float, or `None` (NaN and infinities are not values).
    fn parse_float(&self, s: &str) -> Option<Value> {
        let v: f64 = s.parse().ok().filter(|v: &f64| v.is_finite())?;
        Some(Value::Float(if *self == ColType::Float { v as f32 as f64 } else { v }))
    }

    /// Validates a string field (byte length and UTF-8) without allocating.
    pub fn check_str<'a>(&self, raw: &'a [u8]) -> Result<&'a str, ConvError> {
        self.check_str_len(std::str::from_utf8(raw).map_err(|_| ConvError::InvalidUtf8)?)
    }

    /// Checks an already valid string field against the column's byte length.
    pub fn check_str_len<'a>(&self, s: &'a str) -> Result<&'a str, ConvError> {
        let max = match self {
            ColType::Char(n) | ColType::Varchar(n) => *n,
            _ => MAX_VARCHAR_LEN,
        };
        if s.len() > max as usize {
            return Err(ConvError::TooLong { len: s.len(), max });
        }
        Ok(s)
    }

    /// Byte-level fast paths for the canonical forms (plain integers,
    /// `YYYY-MM-DD[ HH:MM:SS]`); `None` falls back to the general parser,
    /// which also produces the error.
    fn parse_fast(&self, raw: &[u8]) -> Option<Value> {
        match self {
            ColType::TinyInt | ColType::SmallInt | ColType::Int | ColType::BigInt => {
                let (neg, digits) = match raw.first()? {
                    b'-' => (true, &raw[1..]),
                    _ => (false, raw),
                };
                if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                let v = digits.iter().fold(0i64, |a, d| a * 10 + (d - b'0') as i64);
                self.check_int(if neg { -(v as i128) } else { v as i128 }).ok()
            }
            ColType::Date if raw.len() == 10 => fast_date(raw).map(Value::Date),
            ColType::DateTime if raw.len() == 19 => {
                let d = fast_date(&raw[..10])? as i64;
                let t = &raw[10..];
                if t[0] != b' ' || t[3] != b':' || t[6] != b':' {
                    return None;
                }
                let (h, mi, se) = (two(&t[1..3])?, two(&t[4..6])?, two(&t[7..9])?);
                if h > 23 || mi > 59 || se > 59 {
                    return None;
                }
                Some(Value::DateTime(d * MICROS_PER_DAY + ((h * 60 + mi) * 60 + se) as i64 * 1_000_000))
            }
            ColType::Double | ColType::Float => self.parse_float(std::str::from_utf8(raw).ok()?),
            _ => None,
        }
    }

    fn parse_str(&self, s: &str) -> Result<Value, ConvError> {
        let bad = || ConvError::Invalid { ty: *self, text: truncate(s) };
        match self {
            ColType::Boolean => match s.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Value::Bool(true)),
                "false" | "0" => Ok(Value::Bool(false)),
                _ => Err(bad()),
            },
            ColType::TinyInt | ColType::SmallInt | ColType::Int | ColType::BigInt | ColType::LargeInt => {
                let v: i128 = s.parse().map_err(|_| bad())?;
                self.check_int(v)
            }
            ColType::Float => {
                let v: f64 = s.parse().map_err(|_| bad())?;
                if !v.is_finite() {
                    return Err(bad());
                }
                Ok(Value::Float(v as f32 as f64))
            }
            ColType::Double => {
                let v: f64 = s.parse().map_err(|_| bad())?;
                if !v.is_finite() {
                    return Err(bad());
                }
                Ok(Value::Float(v))
            }
            ColType::Decimal { precision, scale, .. } => parse_decimal(s, *precision, *scale).ok_or_else(bad),
            ColType::Date => parse_date(s).map(Value::Date).ok_or_else(bad),
            ColType::DateTime => parse_datetime(s).map(Value::DateTime).ok_or_else(bad),
            ColType::Char(_) | ColType::Varchar(_) | ColType::String => Ok(Value::Str(s.into())),
        }
    }

    fn check_int(&self, v: i128) -> Result<Value, ConvError> {
        let (lo, hi) = self.int_bounds().unwrap_or((i128::MIN, i128::MAX));
        if v < lo || v > hi {
            return Err(ConvError::OutOfRange { ty: *self, text: v.to_string() });
        }
        Ok(Value::Int(v))
    }

    /// Converts a value of any kind (an expression result, a JSON scalar) to
    /// this column type.
    pub fn coerce(&self, v: Value) -> Result<Value, ConvError> {
        match (self, v) {
            (_, Value::Null) => Ok(Value::Null),
            (ColType::Boolean, Value::Bool(b)) => Ok(Value::Bool(b)),
            (ColType::Boolean, Value::Int(i)) => Ok(Value::Bool(i != 0)),
            (t, Value::Int(i)) if t.int_bounds().is_some() => t.check_int(i),
            (t, Value::Bool(b)) if t.int_bounds().is_some() => Ok(Value::Int(b as i128)),
            (ColType::Float, Value::Int(i)) => Ok(Value::Float(i as f64 as f32 as f64)),
            (ColType::Double, Value::Int(i)) => Ok(Value::Float(i as f64)),
            (ColType::Float, Value::Float(f)) if f.is_finite() => Ok(Value::Float(f as f32 as f64)),
            (ColType::Double, Value::Float(f)) if f.is_finite() => Ok(Value::Float(f)),
            (ColType::Date, Value::Date(d)) => Ok(Value::Date(d)),
            (ColType::Date, Value::DateTime(t)) => Ok(Value::Date(t.div_euclid(MICROS_PER_DAY) as i32)),
            (ColType::DateTime, Value::DateTime(t)) => Ok(Value::DateTime(t)),
            (ColType::DateTime, Value::Date(d)) => Ok(Value::DateTime(d as i64 * MICROS_PER_DAY)),
            (t, Value::Str(s)) => t.parse(s.as_bytes()),
            (t, other) => {
                let text = other.to_string();
                t.parse(text.as_bytes())
            }
        }
    }
}

impl ColType {
    /// The type as `SHOW CREATE TABLE` prints it: lower case, integers with
    /// their MySQL display widths, STRING as `varchar(65533)`.
    pub fn show_name(&self) -> String {
        match self {
            ColType::Boolean => "boolean".into(),
            ColType::TinyInt => "tinyint(4)".into(),
            ColType::SmallInt => "smallint(6)".into(),
            ColType::Int => "int(11)".into(),
            ColType::BigInt => "bigint(20)".into(),
            ColType::LargeInt => "largeint(40)".into(),
            ColType::Float => "float".into(),
            ColType::Double => "double".into(),
            ColType::Decimal { precision, scale, v2: false } => format!("decimal({precision}, {scale})"),
            ColType::Decimal { precision, scale, v2: true } => format!("decimalv2({precision}, {scale})"),
            ColType::Char(n) => format!("char({n})"),
            ColType::Varchar(n) => format!("varchar({n})"),
            ColType::String => format!("varchar({MAX_VARCHAR_LEN})"),
            ColType::Date => "date".into(),
            ColType::DateTime => "datetime".into(),
        }
    }
}

impl fmt::Display for ColType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColType::Boolean => f.write_str("BOOLEAN"),
            ColType::TinyInt => f.write_str("TINYINT"),
            ColType::SmallInt => f.write_str("SMALLINT"),
            ColType::Int => f.write_str("INT"),
            ColType::BigInt => f.write_str("BIGINT"),
            ColType::LargeInt => f.write_str("LARGEINT"),
            ColType::Float => f.write_str("FLOAT"),
            ColType::Double => f.write_str("DOUBLE"),
            ColType::Decimal { precision, scale, v2: false } => write!(f, "DECIMAL({precision},{scale})"),
            ColType::Decimal { precision, scale, v2: true } => write!(f, "DECIMALV2({precision},{scale})"),
            ColType::Char(n) => write!(f, "CHAR({n})"),
            ColType::Varchar(n) => write!(f, "VARCHAR({n})"),
            ColType::String => f.write_str("STRING"),
            ColType::Date => f.write_str("DATE"),
            ColType::DateTime => f.write_str("DATETIME"),
        }
    }
}

/// Why a field could not become a value of its column's type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvError {
    #[error("the length of input is too long than schema. input length: {len}, schema length: {max}")]
    TooLong { len: usize, max: u32 },
    #[error("invalid UTF-8 in string value")]
    InvalidUtf8,
    #[error("'{text}' is not a valid {ty} value")]
    Invalid { ty: ColType, text: String },
    #[error("'{text}' is out of range for {ty}")]
    OutOfRange { ty: ColType, text: String },
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A typed StarRocks value.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    /// Unscaled decimal; the scale is the column's.
    Decimal(i128),
    Str(CompactString),
    Date(i32),
    DateTime(i64),
}

pub const MICROS_PER_DAY: i64 = 86_400_000_000;

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Float(_) => 3,
            Value::Decimal(_) => 4,
            Value::Str(_) => 5,
            Value::Date(_) => 6,
            Value::DateTime(_) => 7,
        }
    }

    /// Numeric view, for SUM/MIN/MAX and expression arithmetic.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Bool(b) => Some(*b as i32 as f64),
            _ => None,
        }
    }

    /// Renders the value as StarRocks prints it, given its column type
    /// (needed for decimals). NULL renders as `\N`.
    pub fn render(&self, ty: &ColType) -> String {
        match (self, ty) {
            (Value::Decimal(u), ColType::Decimal { scale, .. }) => format_decimal(*u, *scale),
            (Value::Bool(b), _) => (if *b { "1" } else { "0" }).to_string(),
            _ => self.to_string(),
        }
    }

    /// JSON form used by the emulator's inspection endpoint and state files.
    pub fn to_json(&self, ty: &ColType) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => match i64::try_from(*i) {
                Ok(v) => J::from(v),
                Err(_) => J::String(i.to_string()),
            },
            Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            Value::Decimal(_) => J::String(self.render(ty)),
            Value::Str(s) => J::String(s.to_string()),
            Value::Date(_) | Value::DateTime(_) => J::String(self.to_string()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("\\N"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Decimal(u) => write!(f, "{u}"),
            Value::Str(s) => f.write_str(s),
            Value::Date(d) => f.write_str(&format_date(*d)),
            Value::DateTime(t) => f.write_str(&format_datetime(*t)),
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Int(a), Value::Float(b)) => (*a as f64).total_cmp(b),
            (Value::Float(a), Value::Int(b)) => a.total_cmp(&(*b as f64)),
            (Value::Decimal(a), Value::Decimal(b)) => a.cmp(b),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (Value::Date(a), Value::Date(b)) => a.cmp(b),
            (Value::DateTime(a), Value::DateTime(b)) => a.cmp(b),
            (Value::Date(a), Value::DateTime(b)) => (*a as i64 * MICROS_PER_DAY).cmp(b),
            (Value::DateTime(a), Value::Date(b)) => a.cmp(&(*b as i64 * MICROS_PER_DAY)),
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }
}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Value::Null => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(i) => i.hash(state),
            Value::Float(f) => f.to_bits().hash(state),
            Value::Decimal(u) => u.hash(state),
            Value::Str(s) => s.hash(state),
            Value::Date(d) => d.hash(state),
            Value::DateTime(t) => t.hash(state),
        }
    }
}

// ---------------------------------------------------------------------------
// Decimal, date and datetime text forms.

/// Parses `[-+]digits[.digits][e±n]` into an unscaled integer at `scale`,
/// rounding half away from zero, and checks the precision.
pub fn parse_decimal(s: &str, precision: u8, scale: u8) -> Option<Value> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], body[i + 1..].parse::<i32>().ok()?),
        None => (body, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = int_part.chars().chain(frac_part.chars()).collect();
    // value = digits * 10^(exp - frac_len); we want value * 10^scale.
    let shift = exp + scale as i32 - frac_part.len() as i32;
    let digits = digits.trim_start_matches('0');
    let mut unscaled: i128 = 0;
    if shift >= 0 {
        for b in digits.bytes() {
            unscaled = unscaled.checked_mul(10)?.checked_add((b - b'0') as i128)?;
        }
        for _ in 0..shift {
            unscaled = unscaled.checked_mul(10)?;
        }
    } else {
        let cut = (digits.len() as i32 + shift).max(0) as usize;
        let (keep, dropped) = digits.split_at(cut.min(digits.len()));
        for b in keep.bytes() {
            unscaled = unscaled.checked_mul(10)?.checked_add((b - b'0') as i128)?;
        }
        let round_digit = if (-shift) as usize > digits.len() { b'0' } else { dropped.bytes().next().unwrap_or(b'0') };
        if round_digit >= b'5' {
            unscaled = unscaled.checked_add(1)?;
        }
    }
    let limit = 10i128.checked_pow(precision as u32)?;
    if unscaled >= limit {
        return None;
    }
    Some(Value::Decimal(if neg { -unscaled } else { unscaled }))
}

/// Formats an unscaled decimal with `scale` fraction digits.
pub fn format_decimal(unscaled: i128, scale: u8) -> String {
    if scale == 0 {
        return unscaled.to_string();
    }
    let p = 10i128.pow(scale as u32);
    let sign = if unscaled < 0 { "-" } else { "" };
    let a = unscaled.unsigned_abs();
    format!("{sign}{}.{:0width$}", a / p as u128, a % p as u128, width = scale as usize)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = (y - era * 400) as u32;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe as i32 - 719_468
}

/// (year, month, day) of days since 1970-01-01.
pub fn civil_from_days(z: i32) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u32;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i32 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn two(b: &[u8]) -> Option<u32> {
    if b[0].is_ascii_digit() && b[1].is_ascii_digit() {
        Some(((b[0] - b'0') * 10 + (b[1] - b'0')) as u32)
    } else {
        None
    }
}

/// `YYYY-MM-DD` from exactly 10 bytes.
fn fast_date(b: &[u8]) -> Option<i32> {
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = two(&b[0..2])? * 100 + two(&b[2..4])?;
    let (m, d) = (two(&b[5..7])?, two(&b[8..10])?);
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y as i32, m) {
        return None;
    }
    Some(days_from_civil(y as i32, m, d))
}

/// Parses `YYYY-MM-DD` (also `YYYYMMDD`; a time part is accepted and dropped).
pub fn parse_date(s: &str) -> Option<i32> {
    let date = s.split([' ', 'T']).next()?;
    let (y, m, d) = if date.len() == 8 && !date.contains('-') {
        (digits(&date[0..4])?, digits(&date[4..6])?, digits(&date[6..8])?)
    } else {
        let mut it = date.split('-');
        let y = digits(it.next()?)?;
        let m = digits(it.next()?)?;
        let d = digits(it.next()?)?;
        if it.next().is_some() {
            return None;
        }
        (y, m, d)
    };
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y as i32, m) {
        return None;
    }
    if s.len() > date.len() {
        // A time part must at least be a valid time.
        parse_time_micros(s[date.len() + 1..].trim())?;
    }
    Some(days_from_civil(y as i32, m, d))
}

fn parse_time_micros(t: &str) -> Option<i64> {
    let (hms, frac) = match t.find('.') {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, ""),
    };
    let mut it = hms.split(':');
    let h = digits(it.next()?)?;
    let mi = it.next().map(digits).unwrap_or(Some(0))?;
    let se = it.next().map(digits).unwrap_or(Some(0))?;
    if it.next().is_some() || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let mut micros = 0i64;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let padded = format!("{frac:0<6}");
        micros = padded[..6].parse().ok()?;
    }
    Some(((h as i64 * 60 + mi as i64) * 60 + se as i64) * 1_000_000 + micros)
}

/// Parses `YYYY-MM-DD[ HH:MM:SS[.ffffff]]` (a `T` separator is accepted).
pub fn parse_datetime(s: &str) -> Option<i64> {
    let days = parse_date(s)? as i64;
    let split = s.find([' ', 'T']);
    let time = match split {
        Some(i) => parse_time_micros(s[i + 1..].trim())?,
        None => 0,
    };
    Some(days * MICROS_PER_DAY + time)
}

pub fn format_date(d: i32) -> String {
    let (y, m, dd) = civil_from_days(d);
    format!("{y:04}-{m:02}-{dd:02}")
}

/// `YYYY-MM-DD HH:MM:SS`, with `.ffffff` only when the microseconds are not zero
/// (StarRocks' `to_string` of a TIMESTAMP value).
pub fn format_datetime(t: i64) -> String {
    let days = t.div_euclid(MICROS_PER_DAY) as i32;
    let rem = t.rem_euclid(MICROS_PER_DAY);
    let (secs, micros) = (rem / 1_000_000, rem % 1_000_000);
    let base = format!("{} {:02}:{:02}:{:02}", format_date(days), secs / 3600, secs / 60 % 60, secs % 60);
    if micros == 0 { base } else { format!("{base}.{micros:06}") }
}

fn put(buf: &mut [u8], at: usize, v: u32, width: usize) {
    let mut v = v;
    for i in (0..width).rev() {
        buf[at + i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// `YYYY-MM-DD` into `buf` without allocating (same text as `format_date`).
pub fn write_date(buf: &mut [u8; 26], d: i32) -> usize {
    let (y, m, dd) = civil_from_days(d);
    put(buf, 0, y.clamp(0, 9999) as u32, 4);
    buf[4] = b'-';
    put(buf, 5, m, 2);
    buf[7] = b'-';
    put(buf, 8, dd, 2);
    10
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` into `buf` (same text as `format_datetime`).
pub fn write_datetime(buf: &mut [u8; 26], t: i64) -> usize {
    write_date(buf, t.div_euclid(MICROS_PER_DAY) as i32);
    let rem = t.rem_euclid(MICROS_PER_DAY);
    let (secs, micros) = (rem / 1_000_000, (rem % 1_000_000) as u32);
    buf[10] = b' ';
    put(buf, 11, (secs / 3600) as u32, 2);
    buf[13] = b':';
    put(buf, 14, (secs / 60 % 60) as u32, 2);
    buf[16] = b':';
    put(buf, 17, (secs % 60) as u32, 2);
    if micros == 0 {
        return 19;
    }
    buf[19] = b'.';
    put(buf, 20, micros, 6);
    26
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_range_checked_per_type() {
        assert_eq!(ColType::TinyInt.parse(b"127").unwrap(), Value::Int(127));
        assert!(matches!(ColType::TinyInt.parse(b"128"), Err(ConvError::OutOfRange { .. })));
        assert!(ColType::Int.parse(b"2147483648").is_err());
        assert_eq!(
            ColType::LargeInt.parse(b"-170141183460469231731687303715884105728").unwrap(),
            Value::Int(i128::MIN)
        );
        assert!(ColType::BigInt.parse(b"12a").is_err());
    }

    #[test]
    fn decimals_round_half_away_and_check_precision() {
        let t = ColType::Decimal { precision: 5, scale: 2, v2: false };
        assert_eq!(t.parse(b"12.345").unwrap(), Value::Decimal(1235));
        assert_eq!(t.parse(b"-12.344").unwrap(), Value::Decimal(-1234));
        assert_eq!(t.parse(b"1e2").unwrap(), Value::Decimal(10000));
        assert!(t.parse(b"1000.00").is_err());
        assert_eq!(format_decimal(-1234, 2), "-12.34");
        assert_eq!(format_decimal(5, 3), "0.005");
    }

    #[test]
    fn dates_and_datetimes_round_trip() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-02-29"), Some(days_from_civil(2024, 2, 29)));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("20240301"), parse_date("2024-03-01"));
        let t = parse_datetime("2024-05-06 07:08:09.5").unwrap();
        assert_eq!(format_datetime(t), "2024-05-06 07:08:09.500000");
        assert_eq!(format_datetime(parse_datetime("2024-05-06T07:08:09").unwrap()), "2024-05-06 07:08:09");
        assert_eq!(format_datetime(parse_datetime("1969-12-31 23:59:59").unwrap()), "1969-12-31 23:59:59");
        for d in [-800_000, -1, 0, 1, 19_000, 2_900_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn strings_are_checked_against_byte_length() {
        assert!(ColType::Varchar(3).parse(b"abcd").is_err());
        assert_eq!(ColType::Varchar(4).parse(b" ab ").unwrap(), Value::Str(" ab ".into()));
        assert!(ColType::Char(2).parse("é1".as_bytes()).is_err());
    }

    #[test]
    fn non_finite_floats_are_rejected() {
        assert!(ColType::Double.parse(b"NaN").is_err());
        assert!(ColType::Double.parse(b"inf").is_err());
        assert_eq!(ColType::Float.parse(b"0.1").unwrap(), Value::Float(0.1f32 as f64));
    }
}
