//! Table partitions in the DDL: `PARTITION BY date_trunc('unit', c)` and
//! `PARTITION BY RANGE(c) (...)` with single ranges and batches
//! (`START (..) END (..) EVERY (INTERVAL n unit)`), read into the model's
//! [`Partitioning`](super::Partitioning).

use super::parse::{PResult, name_list};
use super::{RangePartition, TruncUnit};
use crate::starrocks::sql::{Cursor, Tok};
use crate::starrocks::text::{format_date, parse_date};
use crate::starrocks::types::{ColType, Value};

pub(super) enum PartClause {
    Trunc(TruncUnit, String),
    Range(String, Vec<RawRange>),
}

pub(super) enum RawRange {
    LessThan(String, Option<String>),
    Fixed(String, String, String),
    Batch { start: String, end: String, every: i64, unit: TruncUnit },
}

pub(super) fn parse_partition_clause(c: &mut Cursor<'_>) -> PResult<PartClause> {
    // StarRocks 3.4+ prints an expression partition in parentheses
    // (`PARTITION BY (date_trunc('day', ts))`) in SHOW CREATE TABLE.
    let wrapped = c.eat_sym("(");
    if c.eat_kw("date_trunc") {
        return date_trunc(c, wrapped);
    }
    if wrapped {
        return Err(Ok(format!("unsupported PARTITION BY ({}: use date_trunc('day', col)", c.describe())));
    }
    if !c.eat_kw("RANGE") {
        return Err(Ok(format!("unsupported PARTITION BY {}: use date_trunc('day', col) or RANGE(col)", c.describe())));
    }
    let cols = name_list(c)?;
    if cols.len() != 1 {
        return Err(Ok("RANGE partitioning on more than one column is not supported".into()));
    }
    c.expect_sym("(").map_err(Ok)?;
    let mut raw = Vec::new();
    if c.eat_sym(")") {
        return Ok(PartClause::Range(cols[0].clone(), raw));
    }
    loop {
        raw.push(range_item(c)?);
        if c.eat_sym(")") {
            break;
        }
        c.expect_sym(",").map_err(Ok)?;
    }
    Ok(PartClause::Range(cols[0].clone(), raw))
}

/// `date_trunc('<unit>', col)` after the keyword, and the closing
/// parenthesis when the clause was `wrapped`.
fn date_trunc(c: &mut Cursor<'_>, wrapped: bool) -> PResult<PartClause> {
    c.expect_sym("(").map_err(Ok)?;
    let unit = match c.advance() {
        Some(Tok::Str(s)) => match s.to_ascii_lowercase().as_str() {
            "hour" => TruncUnit::Hour,
            "day" => TruncUnit::Day,
            "month" => TruncUnit::Month,
            "year" => TruncUnit::Year,
            u => return Err(Ok(format!("unsupported date_trunc unit '{u}'"))),
        },
        _ => return Err(Ok("expected a unit string in date_trunc".into())),
    };
    c.expect_sym(",").map_err(Ok)?;
    let col = c.ident().map_err(Ok)?;
    c.expect_sym(")").map_err(Ok)?;
    if wrapped {
        c.expect_sym(")").map_err(Ok)?;
    }
    Ok(PartClause::Trunc(unit, col))
}

/// A partition bound: `("<literal>")`.
fn bound(c: &mut Cursor<'_>) -> PResult<String> {
    c.expect_sym("(").map_err(Ok)?;
    let v = match c.advance() {
        Some(Tok::Str(s)) | Some(Tok::Num(s)) => s.clone(),
        _ => return Err(Ok("expected a partition bound literal".into())),
    };
    c.expect_sym(")").map_err(Ok)?;
    Ok(v)
}

/// One item of a RANGE list: `PARTITION p VALUES LESS THAN (…)`,
/// `PARTITION p VALUES [(…), (…))`, or `START (…) END (…) EVERY (INTERVAL n unit)`.
fn range_item(c: &mut Cursor<'_>) -> PResult<RawRange> {
    if c.eat_kw("PARTITION") {
        let pname = c.ident().map_err(Ok)?;
        c.expect_kw("VALUES").map_err(Ok)?;
        if c.eat_kw("LESS") {
            c.expect_kw("THAN").map_err(Ok)?;
            if c.eat_kw("MAXVALUE") {
                return Ok(RawRange::LessThan(pname, None));
            }
            return Ok(RawRange::LessThan(pname, Some(bound(c)?)));
        }
        if c.eat_sym("[") {
            let lo = bound(c)?;
            c.expect_sym(",").map_err(Ok)?;
            let hi = bound(c)?;
            c.expect_sym(")").map_err(Ok)?;
            return Ok(RawRange::Fixed(pname, lo, hi));
        }
        return Err(Ok(format!("expected LESS THAN or [ after VALUES, found {}", c.describe())));
    }
    if !c.eat_kw("START") {
        return Err(Ok(format!("expected PARTITION or START, found {}", c.describe())));
    }
    let start = bound(c)?;
    c.expect_kw("END").map_err(Ok)?;
    let end = bound(c)?;
    c.expect_kw("EVERY").map_err(Ok)?;
    c.expect_sym("(").map_err(Ok)?;
    c.expect_kw("INTERVAL").map_err(Ok)?;
    let every = match c.advance() {
        Some(Tok::Num(n)) => n.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| Ok(format!("bad EVERY {n}")))?,
        _ => return Err(Ok("expected a number after INTERVAL".into())),
    };
    let unit = match c.ident().map_err(Ok)?.to_ascii_uppercase().as_str() {
        "HOUR" => TruncUnit::Hour,
        "DAY" => TruncUnit::Day,
        "MONTH" => TruncUnit::Month,
        "YEAR" => TruncUnit::Year,
        u => return Err(Ok(format!("unsupported INTERVAL unit {u}"))),
    };
    c.expect_sym(")").map_err(Ok)?;
    Ok(RawRange::Batch { start, end, every, unit })
}

pub(super) fn build_ranges(ty: &ColType, raw: Vec<RawRange>) -> Result<Vec<RangePartition>, String> {
    let parse = |s: &str| ty.parse(s.as_bytes()).map_err(|e| format!("bad partition bound: {e}"));
    let mut out: Vec<RangePartition> = Vec::new();
    for r in raw {
        match r {
            RawRange::LessThan(name, upper) => {
                let lower = out.last().and_then(|p| p.upper.clone());
                let upper = upper.map(|u| parse(&u)).transpose()?;
                out.push(RangePartition { name, lower, upper });
            }
            RawRange::Fixed(name, lo, hi) => {
                out.push(RangePartition { name, lower: Some(parse(&lo)?), upper: Some(parse(&hi)?) });
            }
            RawRange::Batch { start, end, every, unit } => {
                let mut d = parse_date(&start).ok_or("bad START date")?;
                let end_d = parse_date(&end).ok_or("bad END date")?;
                let mut n = 0;
                while d < end_d {
                    let next = add_units(d, unit, every);
                    let to_val = |d: i32| ty.coerce(Value::Date(d)).map_err(|e| e.to_string());
                    out.push(RangePartition {
                        name: format!("p{}", format_date(d).replace('-', "")),
                        lower: Some(to_val(d)?),
                        upper: Some(to_val(next.min(end_d))?),
                    });
                    d = next;
                    n += 1;
                    if n > 100_000 {
                        return Err("too many partitions in START/END/EVERY".into());
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Adds `n` units to a day number (hours are not meaningful for DATE ranges
/// and advance by whole days).
pub fn add_units(d: i32, unit: TruncUnit, n: i64) -> i32 {
    match unit {
        TruncUnit::Hour | TruncUnit::Day => d + n as i32,
        TruncUnit::Month | TruncUnit::Year => {
            let months = if unit == TruncUnit::Year { n * 12 } else { n };
            let (y, m, _) = crate::starrocks::text::civil_from_days(d);
            let total = y as i64 * 12 + (m as i64 - 1) + months;
            crate::starrocks::text::days_from_civil((total / 12) as i32, (total % 12) as u32 + 1, 1)
        }
    }
}
