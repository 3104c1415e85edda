//! The text forms of DECIMAL, DATE and DATETIME values, parsed and
//! formatted exactly as StarRocks writes them: decimals as an unscaled
//! integer at a scale (rounded half away from zero), dates as days since
//! 1970-01-01 (proleptic Gregorian), datetimes as microseconds since
//! 1970-01-01 00:00:00 without a time zone. `types.rs` turns them into
//! typed values; the bucket hash and the CSV encoder write them without
//! allocating (`write_date`, `write_datetime`).

use super::types::{MICROS_PER_DAY, Value};

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

pub(super) fn two(b: &[u8]) -> Option<u32> {
    if b[0].is_ascii_digit() && b[1].is_ascii_digit() {
        Some(((b[0] - b'0') * 10 + (b[1] - b'0')) as u32)
    } else {
        None
    }
}

/// `YYYY-MM-DD` from exactly 10 bytes.
pub(super) fn fast_date(b: &[u8]) -> Option<i32> {
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
}
