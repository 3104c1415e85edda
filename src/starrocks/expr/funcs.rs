//! The built-in functions a Stream Load `columns` header may call: the
//! conditionals (`if`, `ifnull`, `nullif`, `coalesce`), strings, numbers,
//! and dates and times. Any other name is a plan-time error, as in
//! StarRocks. A NULL argument makes the result NULL except for the
//! conditionals and `now()`.

use super::eval::{compare, num, truth};
use crate::starrocks::text::{format_date, format_datetime};
use crate::starrocks::types::{ColType, MICROS_PER_DAY, Value};

fn arity(name: &str, args: &[Value], n: std::ops::RangeInclusive<usize>) -> Result<(), String> {
    if n.contains(&args.len()) {
        Ok(())
    } else {
        Err(format!("No matching function with signature: {name} with {} arguments", args.len()))
    }
}

/// Calls a built-in function on evaluated arguments.
pub(super) fn call(name: &str, a: Vec<Value>) -> Result<Value, String> {
    let null_in = a.iter().any(Value::is_null);
    Ok(match name {
        "if" => {
            arity(name, &a, 3..=3)?;
            if truth(&a[0]) == Some(true) { a[1].clone() } else { a[2].clone() }
        }
        "ifnull" => {
            arity(name, &a, 2..=2)?;
            if a[0].is_null() { a[1].clone() } else { a[0].clone() }
        }
        "nullif" => {
            arity(name, &a, 2..=2)?;
            if compare(&a[0], &a[1]) == Some(std::cmp::Ordering::Equal) { Value::Null } else { a[0].clone() }
        }
        "coalesce" => a.into_iter().find(|v| !v.is_null()).unwrap_or(Value::Null),
        _ if null_in && name != "now" => Value::Null,
        _ => return strings_and_numbers(name, a),
    })
}

/// String and number functions, on arguments none of which is NULL.
fn strings_and_numbers(name: &str, a: Vec<Value>) -> Result<Value, String> {
    Ok(match name {
        "concat" => Value::Str(a.iter().map(|v| v.to_string()).collect::<String>().into()),
        "upper" => {
            arity(name, &a, 1..=1)?;
            Value::Str(a[0].to_string().to_uppercase().into())
        }
        "lower" => {
            arity(name, &a, 1..=1)?;
            Value::Str(a[0].to_string().to_lowercase().into())
        }
        "length" => {
            arity(name, &a, 1..=1)?;
            Value::Int(a[0].to_string().len() as i128)
        }
        "substr" | "substring" => {
            arity(name, &a, 2..=3)?;
            let s: Vec<char> = a[0].to_string().chars().collect();
            let pos = num(&a[1])? as i64;
            let start = if pos > 0 {
                (pos - 1) as usize
            } else if pos < 0 {
                s.len().saturating_sub((-pos) as usize)
            } else {
                s.len()
            };
            let len = if a.len() == 3 { num(&a[2])?.max(0.0) as usize } else { usize::MAX };
            Value::Str(s.iter().skip(start).take(len).collect::<String>().into())
        }
        "abs" => {
            arity(name, &a, 1..=1)?;
            match &a[0] {
                Value::Int(i) => i.checked_abs().map(Value::Int).unwrap_or(Value::Null),
                v => Value::Float(num(v)?.abs()),
            }
        }
        "round" | "floor" | "ceil" => {
            arity(name, &a, 1..=2)?;
            let digits = if a.len() == 2 { num(&a[1])? as i32 } else { 0 };
            let m = 10f64.powi(digits);
            let x = num(&a[0])? * m;
            let r = match name {
                "round" => x.round(),
                "floor" => x.floor(),
                _ => x.ceil(),
            } / m;
            if digits == 0 { Value::Int(r as i128) } else { Value::Float(r) }
        }
        _ => return dates_and_times(name, a),
    })
}

/// Date and time functions, on arguments none of which is NULL.
fn dates_and_times(name: &str, a: Vec<Value>) -> Result<Value, String> {
    Ok(match name {
        "from_unixtime" => {
            arity(name, &a, 1..=1)?;
            // Years 1..9999 only, as DATETIME allows.
            let secs = num(&a[0])?;
            if !(-62_135_596_800.0..=253_402_300_799.0).contains(&secs) {
                return Ok(Value::Null);
            }
            Value::Str(format_datetime(secs as i64 * 1_000_000).into())
        }
        "unix_timestamp" => {
            arity(name, &a, 1..=1)?;
            match ColType::DateTime.coerce(a[0].clone()).map_err(|e| e.to_string())? {
                Value::DateTime(t) => Value::Int((t.div_euclid(1_000_000)) as i128),
                _ => Value::Null,
            }
        }
        "now" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            Value::DateTime(now * 1_000_000)
        }
        "date" | "to_date" => {
            arity(name, &a, 1..=1)?;
            match ColType::DateTime.coerce(a[0].clone()) {
                Ok(Value::DateTime(t)) => Value::Str(format_date(t.div_euclid(MICROS_PER_DAY) as i32).into()),
                _ => Value::Null,
            }
        }
        "str_to_date" => {
            arity(name, &a, 2..=2)?;
            str_to_date(&a[0].to_string(), &a[1].to_string()).unwrap_or(Value::Null)
        }
        other => return Err(format!("No matching function with signature: {other}")),
    })
}

/// MySQL-style `str_to_date` for the common specifiers (%Y %m %d %H %i %s %f).
fn str_to_date(s: &str, fmt: &str) -> Option<Value> {
    let (mut y, mut mo, mut d, mut h, mut mi, mut se, mut us) = (1970i32, 1u32, 1u32, 0i64, 0i64, 0i64, 0i64);
    let mut si = s.chars().peekable();
    let mut fi = fmt.chars();
    let mut has_time = false;
    let take = |n: usize, si: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Option<i64> {
        let mut v = String::new();
        while v.len() < n && si.peek().is_some_and(|c| c.is_ascii_digit()) {
            v.push(si.next()?);
        }
        v.parse().ok()
    };
    while let Some(f) = fi.next() {
        if f != '%' {
            if si.next()? != f {
                return None;
            }
            continue;
        }
        match fi.next()? {
            'Y' => y = take(4, &mut si)? as i32,
            'm' | 'c' => mo = take(2, &mut si)? as u32,
            'd' | 'e' => d = take(2, &mut si)? as u32,
            'H' | 'k' => {
                h = take(2, &mut si)?;
                has_time = true
            }
            'i' => mi = take(2, &mut si)?,
            's' | 'S' => se = take(2, &mut si)?,
            'f' => us = take(6, &mut si)?,
            _ => return None,
        }
    }
    let text = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{se:02}.{us:06}");
    let t = crate::starrocks::text::parse_datetime(&text)?;
    Some(if has_time { Value::DateTime(t) } else { Value::Date(t.div_euclid(MICROS_PER_DAY) as i32) })
}
