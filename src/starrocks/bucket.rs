//! The StarRocks bucket function: which tablet of a partition a row lands in.
//!
//! StarRocks hashes the row's *typed* distribution-column values with a chain
//! of zlib CRC-32 calls (`h = crc32(h, encode(col))`, declaration order, seed
//! 0) and takes `h % buckets` (see `starrocks-stream-load.md` §7.3, from SR
//! `tablet_info.cpp` and `column_hash.cpp`). A chained CRC-32 equals the
//! CRC-32 of the concatenated encodings, so one hasher fed every column in
//! order is enough.
//!
//! Encodings: fixed-width integers and floats as native little-endian bytes
//! of the column's width; strings as raw bytes (an empty string leaves the
//! hash unchanged); DATE/DATETIME as the bytes of their string form; DECIMALV2
//! and DECIMAL128(27,9) as int64 integer part then int32 fraction (9 digits);
//! other decimals as the raw LE bytes of the unscaled value at the width the
//! precision implies (32/64/128 bits); NULL as a 4-byte zero int.
//!
//! The emulator assigns tablets with this function and the pipeline routes
//! with it, so both sides agree by construction.

use super::text::{write_date, write_datetime};
use super::types::{ColType, Value};

/// Feeds one typed value into a running bucket hash.
pub fn hash_value(hasher: &mut crc32fast::Hasher, ty: &ColType, v: &Value) {
    match v {
        Value::Null => hasher.update(&0i32.to_le_bytes()),
        Value::Bool(b) => hasher.update(&[*b as u8]),
        Value::Int(i) => match ty {
            ColType::Boolean | ColType::TinyInt => hasher.update(&(*i as i8).to_le_bytes()),
            ColType::SmallInt => hasher.update(&(*i as i16).to_le_bytes()),
            ColType::Int => hasher.update(&(*i as i32).to_le_bytes()),
            ColType::LargeInt => hasher.update(&i.to_le_bytes()),
            _ => hasher.update(&(*i as i64).to_le_bytes()),
        },
        Value::Float(f) => match ty {
            ColType::Float => hasher.update(&(*f as f32).to_le_bytes()),
            _ => hasher.update(&f.to_le_bytes()),
        },
        Value::Decimal(u) => match ty {
            ColType::Decimal { precision, scale, v2 } => {
                if *v2 || (*precision == 27 && *scale == 9) {
                    // DecimalV2: value scaled to 9 fraction digits, split.
                    let scaled = rescale(*u, *scale, 9);
                    let int_part = (scaled / 1_000_000_000) as i64;
                    let frac = (scaled % 1_000_000_000) as i32;
                    hasher.update(&int_part.to_le_bytes());
                    hasher.update(&frac.to_le_bytes());
                } else if *precision <= 9 {
                    hasher.update(&(*u as i32).to_le_bytes());
                } else if *precision <= 18 {
                    hasher.update(&(*u as i64).to_le_bytes());
                } else {
                    hasher.update(&u.to_le_bytes());
                }
            }
            _ => hasher.update(&u.to_le_bytes()),
        },
        Value::Str(s) => hasher.update(s.as_bytes()),
        Value::Date(d) => {
            let mut buf = [0u8; 26];
            let n = write_date(&mut buf, *d);
            hasher.update(&buf[..n]);
        }
        Value::DateTime(t) => {
            let mut buf = [0u8; 26];
            let n = write_datetime(&mut buf, *t);
            hasher.update(&buf[..n]);
        }
    }
}

fn rescale(u: i128, from: u8, to: u8) -> i128 {
    if from <= to { u * 10i128.pow((to - from) as u32) } else { u / 10i128.pow((from - to) as u32) }
}

/// CRC-32 chain over the distribution columns' values, in order.
pub fn bucket_hash<'a>(cols: impl IntoIterator<Item = (&'a ColType, &'a Value)>) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (ty, v) in cols {
        hash_value(&mut h, ty, v);
    }
    h.finalize()
}

/// Bucket index of a row: `hash % buckets` (uint32 modulo).
pub fn bucket_of<'a>(cols: impl IntoIterator<Item = (&'a ColType, &'a Value)>, buckets: u32) -> u32 {
    bucket_hash(cols) % buckets.max(1)
}

/// Bucket of a typed row of `def` (its DISTRIBUTED BY HASH columns, in order).
pub fn row_bucket(def: &super::ddl::TableDef, row: &[Value]) -> u32 {
    bucket_of(def.distribution.iter().map(|&i| (&def.columns[i].ty, &row[i])), def.buckets)
}

/// Bucket of a single VARCHAR key given as bytes: the pipeline's hot path
/// (colocation key = vin) without building a `Value`.
pub fn bucket_of_str(key: &[u8], buckets: u32) -> u32 {
    crc32fast::hash(key) % buckets.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed independently with Python's zlib.crc32 over
    // struct.pack'ed little-endian bytes / UTF-8 strings, e.g.
    // `zlib.crc32(struct.pack('<i', 42))` = 4006318150.
    fn one(ty: ColType, v: Value) -> u32 {
        bucket_hash([(&ty, &v)])
    }

    #[test]
    fn integer_types_hash_their_native_width() {
        assert_eq!(one(ColType::Int, Value::Int(42)), 4006318150);
        assert_eq!(one(ColType::BigInt, Value::Int(-7)), 3878409883);
        assert_eq!(one(ColType::TinyInt, Value::Int(5)), 2724731650);
        assert_eq!(one(ColType::SmallInt, Value::Int(300)), 267340231);
        assert_eq!(one(ColType::LargeInt, Value::Int(1i128 << 100)), 3164740810);
        assert_eq!(one(ColType::Boolean, Value::Bool(true)), 2768625435);
    }

    #[test]
    fn floats_hash_their_ieee_bytes() {
        assert_eq!(one(ColType::Float, Value::Float(1.5)), 1557669231);
        assert_eq!(one(ColType::Double, Value::Float(2.25)), 566819963);
    }

    #[test]
    fn strings_hash_raw_bytes_and_empty_leaves_seed() {
        assert_eq!(one(ColType::Varchar(32), Value::Str("VIN0001".into())), 1210422663);
        assert_eq!(one(ColType::String, Value::Str("".into())), 0);
        assert_eq!(bucket_of_str(b"VIN0001", u32::MAX), 1210422663);
    }

    #[test]
    fn dates_hash_their_string_form() {
        let d = super::super::text::parse_date("2024-05-06").unwrap();
        assert_eq!(one(ColType::Date, Value::Date(d)), 3354853316);
        let t = super::super::text::parse_datetime("2024-05-06 07:08:09").unwrap();
        assert_eq!(one(ColType::DateTime, Value::DateTime(t)), 3694311775);
        assert_eq!(one(ColType::DateTime, Value::DateTime(t + 500_000)), 2241633901);
    }

    #[test]
    fn allocation_free_date_text_matches_display() {
        use super::super::text::{format_date, format_datetime};
        use super::super::types::MICROS_PER_DAY;
        for t in [0i64, 1_714_978_800_123_456, -86_400_000_001, 253_402_300_799_000_000] {
            let mut b = [0u8; 26];
            let n = write_datetime(&mut b, t);
            assert_eq!(std::str::from_utf8(&b[..n]).unwrap(), format_datetime(t));
            let d = t.div_euclid(MICROS_PER_DAY) as i32;
            let n = write_date(&mut b, d);
            assert_eq!(std::str::from_utf8(&b[..n]).unwrap(), format_date(d));
        }
    }

    #[test]
    fn null_hashes_a_zero_int() {
        assert_eq!(one(ColType::Int, Value::Null), 558161692);
        assert_eq!(one(ColType::Varchar(8), Value::Null), 558161692);
    }

    #[test]
    fn decimals_hash_by_width_or_v2_split() {
        let d = |p, s, v2| ColType::Decimal { precision: p, scale: s, v2 };
        assert_eq!(one(d(9, 2, false), Value::Decimal(1234)), 2853177042);
        assert_eq!(one(d(10, 2, false), Value::Decimal(1234)), 3579152923);
        assert_eq!(one(d(30, 2, false), Value::Decimal(1234)), 1975725765);
        // -12.5 as DECIMALV2: int part -12, frac -500000000.
        assert_eq!(one(d(27, 9, true), Value::Decimal(-12_500_000_000)), 1182989139);
        assert_eq!(one(d(10, 1, true), Value::Decimal(-125)), 1182989139);
        assert_eq!(one(d(27, 9, false), Value::Decimal(-12_500_000_000)), 1182989139);
    }

    #[test]
    fn columns_chain_in_declaration_order() {
        let (a, b) = (Value::Str("VIN0001".into()), Value::Int(42));
        let (ta, tb) = (ColType::Varchar(17), ColType::Int);
        assert_eq!(bucket_hash([(&ta, &a), (&tb, &b)]), 4117331354);
        assert_eq!(bucket_of([(&ta, &a), (&tb, &b)], 16), 10);
        assert_ne!(bucket_hash([(&tb, &b), (&ta, &a)]), 4117331354);
    }
}
