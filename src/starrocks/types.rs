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

use super::text::{
    fast_date, format_date, format_datetime, format_decimal, parse_date, parse_datetime, parse_decimal, two,
};

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
