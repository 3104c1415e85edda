//! SQL scalar expressions of the kind Stream Load accepts in its `columns`
//! (`c3 = tmp * 100`, `__op = 'delete'`) and `where` headers.
//!
//! Three-valued logic as in SQL: any comparison with NULL is NULL, and a
//! `where` predicate keeps a row only when it is TRUE. Supported: literals,
//! column references, `+ - * / %`, comparisons, `AND OR NOT`, `IS [NOT] NULL`,
//! `[NOT] IN (…)`, `[NOT] BETWEEN`, `[NOT] LIKE`, `CAST(x AS type)` and the
//! functions listed in `call`. Anything else is a plan-time error, reported
//! before any row is read, as StarRocks does.

use super::ddl::parse_type;
use super::sql::{Cursor, Tok, lex};
use super::text::{format_date, format_datetime};
use super::types::{ColType, MICROS_PER_DAY, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Value),
    /// A column reference, lower-cased (StarRocks column names are case-insensitive).
    Col(String),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    IsNull(Box<Expr>, bool),
    In(Box<Expr>, Vec<Expr>, bool),
    Between(Box<Expr>, Box<Expr>, Box<Expr>, bool),
    Like(Box<Expr>, Box<Expr>, bool),
    Cast(Box<Expr>, ColType),
    Func(String, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Eq,
    NullSafeEq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

const FUNCS: &[&str] = &[
    "if",
    "ifnull",
    "nullif",
    "coalesce",
    "concat",
    "upper",
    "lower",
    "length",
    "substr",
    "substring",
    "abs",
    "round",
    "floor",
    "ceil",
    "from_unixtime",
    "unix_timestamp",
    "now",
    "date",
    "to_date",
    "str_to_date",
];

/// Parses one expression; the whole input must be consumed.
pub fn parse_expr(src: &str) -> Result<Expr, String> {
    let toks = lex(src, 1).map_err(|e| e.msg)?;
    let mut c = Cursor::new(&toks);
    let e = parse_with(&mut c)?;
    if !c.at_end() {
        return Err(format!("unexpected {} in expression '{src}'", c.describe()));
    }
    Ok(e)
}

/// Parses an expression from a cursor (used by the `columns` header parser).
pub fn parse_with(c: &mut Cursor<'_>) -> Result<Expr, String> {
    or(c)
}

fn or(c: &mut Cursor<'_>) -> Result<Expr, String> {
    let mut l = and(c)?;
    while c.eat_kw("OR") {
        l = Expr::Bin(BinOp::Or, Box::new(l), Box::new(and(c)?));
    }
    Ok(l)
}

fn and(c: &mut Cursor<'_>) -> Result<Expr, String> {
    let mut l = not(c)?;
    while c.eat_kw("AND") {
        l = Expr::Bin(BinOp::And, Box::new(l), Box::new(not(c)?));
    }
    Ok(l)
}

fn not(c: &mut Cursor<'_>) -> Result<Expr, String> {
    if c.eat_kw("NOT") {
        return Ok(Expr::Not(Box::new(not(c)?)));
    }
    predicate(c)
}

fn predicate(c: &mut Cursor<'_>) -> Result<Expr, String> {
    let l = additive(c)?;
    if c.eat_kw("IS") {
        let neg = c.eat_kw("NOT");
        c.expect_kw("NULL")?;
        return Ok(Expr::IsNull(Box::new(l), neg));
    }
    let neg = c.eat_kw("NOT");
    if c.eat_kw("IN") {
        c.expect_sym("(")?;
        let mut items = vec![or(c)?];
        while c.eat_sym(",") {
            items.push(or(c)?);
        }
        c.expect_sym(")")?;
        return Ok(Expr::In(Box::new(l), items, neg));
    }
    if c.eat_kw("BETWEEN") {
        let lo = additive(c)?;
        c.expect_kw("AND")?;
        let hi = additive(c)?;
        return Ok(Expr::Between(Box::new(l), Box::new(lo), Box::new(hi), neg));
    }
    if c.eat_kw("LIKE") {
        return Ok(Expr::Like(Box::new(l), Box::new(additive(c)?), neg));
    }
    if neg {
        return Err(format!("expected IN, BETWEEN or LIKE after NOT, found {}", c.describe()));
    }
    let op = match c.peek() {
        Some(Tok::Sym("=")) => BinOp::Eq,
        Some(Tok::Sym("<=>")) => BinOp::NullSafeEq,
        Some(Tok::Sym("!=")) | Some(Tok::Sym("<>")) => BinOp::Ne,
        Some(Tok::Sym("<")) => BinOp::Lt,
        Some(Tok::Sym("<=")) => BinOp::Le,
        Some(Tok::Sym(">")) => BinOp::Gt,
        Some(Tok::Sym(">=")) => BinOp::Ge,
        _ => return Ok(l),
    };
    c.advance();
    Ok(Expr::Bin(op, Box::new(l), Box::new(additive(c)?)))
}

fn additive(c: &mut Cursor<'_>) -> Result<Expr, String> {
    let mut l = term(c)?;
    loop {
        let op = if c.eat_sym("+") {
            BinOp::Add
        } else if c.eat_sym("-") {
            BinOp::Sub
        } else {
            return Ok(l);
        };
        l = Expr::Bin(op, Box::new(l), Box::new(term(c)?));
    }
}

fn term(c: &mut Cursor<'_>) -> Result<Expr, String> {
    let mut l = unary(c)?;
    loop {
        let op = if c.eat_sym("*") {
            BinOp::Mul
        } else if c.eat_sym("/") {
            BinOp::Div
        } else if c.eat_sym("%") || c.eat_kw("MOD") {
            BinOp::Mod
        } else {
            return Ok(l);
        };
        l = Expr::Bin(op, Box::new(l), Box::new(unary(c)?));
    }
}

fn unary(c: &mut Cursor<'_>) -> Result<Expr, String> {
    if c.eat_sym("-") {
        return Ok(Expr::Neg(Box::new(unary(c)?)));
    }
    if c.eat_sym("+") {
        return unary(c);
    }
    primary(c)
}

fn primary(c: &mut Cursor<'_>) -> Result<Expr, String> {
    match c.advance() {
        Some(Tok::Num(n)) => parse_number(n).map(Expr::Lit),
        Some(Tok::Str(s)) => Ok(Expr::Lit(Value::Str(s.as_str().into()))),
        Some(Tok::Sym("(")) => {
            let e = or(c)?;
            c.expect_sym(")")?;
            Ok(e)
        }
        Some(Tok::Quoted(q)) => Ok(Expr::Col(q.to_ascii_lowercase())),
        Some(Tok::Word(w)) => {
            let lw = w.to_ascii_lowercase();
            match lw.as_str() {
                "null" => return Ok(Expr::Lit(Value::Null)),
                "true" => return Ok(Expr::Lit(Value::Bool(true))),
                "false" => return Ok(Expr::Lit(Value::Bool(false))),
                _ => {}
            }
            if !c.eat_sym("(") {
                return Ok(Expr::Col(lw));
            }
            if lw == "cast" {
                let e = or(c)?;
                c.expect_kw("AS")?;
                let ty = parse_type(c)?;
                c.expect_sym(")")?;
                return Ok(Expr::Cast(Box::new(e), ty));
            }
            if !FUNCS.contains(&lw.as_str()) {
                return Err(format!("No matching function with signature: {lw}"));
            }
            let mut args = Vec::new();
            if !c.eat_sym(")") {
                args.push(or(c)?);
                while c.eat_sym(",") {
                    args.push(or(c)?);
                }
                c.expect_sym(")")?;
            }
            Ok(Expr::Func(lw, args))
        }
        Some(t) => Err(format!("unexpected '{t}' in expression")),
        None => Err("unexpected end of expression".into()),
    }
}

fn parse_number(n: &str) -> Result<Value, String> {
    if let Ok(i) = n.parse::<i128>() {
        return Ok(Value::Int(i));
    }
    n.parse::<f64>().map(Value::Float).map_err(|_| format!("bad number '{n}'"))
}

impl Expr {
    /// Column names the expression reads.
    pub fn columns(&self, out: &mut Vec<String>) {
        match self {
            Expr::Lit(_) => {}
            Expr::Col(c) => out.push(c.clone()),
            Expr::Neg(e) | Expr::Not(e) | Expr::IsNull(e, _) | Expr::Cast(e, _) => e.columns(out),
            Expr::Bin(_, a, b) | Expr::Like(a, b, _) => {
                a.columns(out);
                b.columns(out);
            }
            Expr::In(a, items, _) => {
                a.columns(out);
                items.iter().for_each(|i| i.columns(out));
            }
            Expr::Between(a, b, d, _) => {
                a.columns(out);
                b.columns(out);
                d.columns(out);
            }
            Expr::Func(_, args) => args.iter().for_each(|a| a.columns(out)),
        }
    }

    /// Evaluates against a row; `col` resolves a lower-cased column name.
    pub fn eval(&self, col: &dyn Fn(&str) -> Option<Value>) -> Result<Value, String> {
        Ok(match self {
            Expr::Lit(v) => v.clone(),
            Expr::Col(c) => col(c).ok_or_else(|| format!("Unknown column '{c}'"))?,
            Expr::Neg(e) => match e.eval(col)? {
                Value::Null => Value::Null,
                Value::Int(i) => i.checked_neg().map(Value::Int).unwrap_or(Value::Null),
                v => Value::Float(-num(&v)?),
            },
            Expr::Not(e) => match truth(&e.eval(col)?) {
                None => Value::Null,
                Some(b) => Value::Bool(!b),
            },
            Expr::Bin(op, a, b) => binary(*op, a.eval(col)?, b.eval(col)?)?,
            Expr::IsNull(e, neg) => Value::Bool(e.eval(col)?.is_null() != *neg),
            Expr::In(e, items, neg) => {
                let v = e.eval(col)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                let mut saw_null = false;
                for i in items {
                    let iv = i.eval(col)?;
                    if iv.is_null() {
                        saw_null = true;
                    } else if compare(&v, &iv) == Some(std::cmp::Ordering::Equal) {
                        return Ok(Value::Bool(!neg));
                    }
                }
                if saw_null { Value::Null } else { Value::Bool(*neg) }
            }
            Expr::Between(e, lo, hi, neg) => {
                let (v, lo, hi) = (e.eval(col)?, lo.eval(col)?, hi.eval(col)?);
                match (compare(&v, &lo), compare(&v, &hi)) {
                    (Some(a), Some(b)) => Value::Bool((a.is_ge() && b.is_le()) != *neg),
                    _ => Value::Null,
                }
            }
            Expr::Like(e, p, neg) => match (e.eval(col)?, p.eval(col)?) {
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (v, p) => Value::Bool(like(&v.to_string(), &p.to_string()) != *neg),
            },
            Expr::Cast(e, ty) => ty.coerce(e.eval(col)?).map_err(|e| e.to_string())?,
            Expr::Func(name, args) => {
                let vals = args.iter().map(|a| a.eval(col)).collect::<Result<Vec<_>, _>>()?;
                call(name, vals)?
            }
        })
    }
}

/// SQL truth value: NULL is `None`.
pub fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(*b),
        Value::Int(i) => Some(*i != 0),
        Value::Float(f) => Some(*f != 0.0),
        Value::Str(s) => Some(s.parse::<f64>().map(|f| f != 0.0).unwrap_or(false)),
        _ => Some(true),
    }
}

fn num(v: &Value) -> Result<f64, String> {
    match v {
        Value::Str(s) => s.trim().parse().map_err(|_| format!("'{s}' is not a number")),
        other => other.as_f64().ok_or_else(|| format!("'{other}' is not a number")),
    }
}

/// Compares two values across kinds the way SQL does (strings that look like
/// numbers compare numerically against numbers).
fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Str(s), Value::Date(_) | Value::DateTime(_)) => {
            ColType::DateTime.parse(s.as_bytes()).ok().map(|v| v.cmp(b))
        }
        (Value::Date(_) | Value::DateTime(_), Value::Str(s)) => {
            ColType::DateTime.parse(s.as_bytes()).ok().map(|v| a.cmp(&v))
        }
        (Value::Str(_), _) | (_, Value::Str(_)) => num(a).ok()?.partial_cmp(&num(b).ok()?),
        _ => Some(a.cmp(b)),
    }
}

fn binary(op: BinOp, a: Value, b: Value) -> Result<Value, String> {
    use BinOp::*;
    match op {
        And => {
            return Ok(match (truth(&a), truth(&b)) {
                (Some(false), _) | (_, Some(false)) => Value::Bool(false),
                (Some(true), Some(true)) => Value::Bool(true),
                _ => Value::Null,
            });
        }
        Or => {
            return Ok(match (truth(&a), truth(&b)) {
                (Some(true), _) | (_, Some(true)) => Value::Bool(true),
                (Some(false), Some(false)) => Value::Bool(false),
                _ => Value::Null,
            });
        }
        NullSafeEq => {
            return Ok(Value::Bool(match (a.is_null(), b.is_null()) {
                (true, true) => true,
                (false, false) => compare(&a, &b) == Some(std::cmp::Ordering::Equal),
                _ => false,
            }));
        }
        _ => {}
    }
    if a.is_null() || b.is_null() {
        return Ok(Value::Null);
    }
    let cmp = |f: fn(std::cmp::Ordering) -> bool| Ok(compare(&a, &b).map(|o| Value::Bool(f(o))).unwrap_or(Value::Null));
    match op {
        Eq => cmp(|o| o.is_eq()),
        Ne => cmp(|o| o.is_ne()),
        Lt => cmp(|o| o.is_lt()),
        Le => cmp(|o| o.is_le()),
        Gt => cmp(|o| o.is_gt()),
        Ge => cmp(|o| o.is_ge()),
        Add | Sub | Mul | Mod if matches!((&a, &b), (Value::Int(_), Value::Int(_))) => {
            let (Value::Int(x), Value::Int(y)) = (a, b) else { unreachable!() };
            Ok(match op {
                Add => x.checked_add(y).map(Value::Int).unwrap_or(Value::Null),
                Sub => x.checked_sub(y).map(Value::Int).unwrap_or(Value::Null),
                Mul => x.checked_mul(y).map(Value::Int).unwrap_or(Value::Null),
                _ => x.checked_rem(y).map(Value::Int).unwrap_or(Value::Null),
            })
        }
        _ => {
            let (x, y) = (num(&a)?, num(&b)?);
            let r = match op {
                Add => x + y,
                Sub => x - y,
                Mul => x * y,
                Div => x / y,
                _ => x % y,
            };
            Ok(if r.is_finite() { Value::Float(r) } else { Value::Null })
        }
    }
}

fn like(s: &str, pat: &str) -> bool {
    fn rec(s: &[char], p: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('%') => (0..=s.len()).any(|i| rec(&s[i..], &p[1..])),
            Some('_') => !s.is_empty() && rec(&s[1..], &p[1..]),
            Some(c) => s.first() == Some(c) && rec(&s[1..], &p[1..]),
        }
    }
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pat.chars().collect();
    rec(&s, &p)
}

fn arity(name: &str, args: &[Value], n: std::ops::RangeInclusive<usize>) -> Result<(), String> {
    if n.contains(&args.len()) {
        Ok(())
    } else {
        Err(format!("No matching function with signature: {name} with {} arguments", args.len()))
    }
}

/// Calls a built-in function on evaluated arguments.
fn call(name: &str, a: Vec<Value>) -> Result<Value, String> {
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
    let t = super::text::parse_datetime(&text)?;
    Some(if has_time { Value::DateTime(t) } else { Value::Date(t.div_euclid(MICROS_PER_DAY) as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str, row: &[(&str, Value)]) -> Value {
        let e = parse_expr(src).unwrap();
        e.eval(&|c| row.iter().find(|(n, _)| *n == c).map(|(_, v)| v.clone())).unwrap()
    }

    #[test]
    fn arithmetic_follows_precedence() {
        assert_eq!(eval("tmp_id * 100 + 1", &[("tmp_id", Value::Int(3))]), Value::Int(301));
        assert_eq!(eval("(1 + 2) * 3 - 10 / 4", &[]), Value::Float(6.5));
        assert_eq!(eval("-x % 4", &[("x", Value::Int(7))]), Value::Int(-3));
    }

    #[test]
    fn comparisons_with_null_are_null() {
        assert_eq!(eval("a > 1", &[("a", Value::Null)]), Value::Null);
        assert_eq!(eval("a > 1 OR true", &[("a", Value::Null)]), Value::Bool(true));
        assert_eq!(eval("a > 1 AND false", &[("a", Value::Null)]), Value::Bool(false));
        assert_eq!(eval("a <=> NULL", &[("a", Value::Null)]), Value::Bool(true));
        assert_eq!(eval("a IS NOT NULL", &[("a", Value::Null)]), Value::Bool(false));
    }

    #[test]
    fn in_between_like_and_strings() {
        let row = [("city", Value::Str("Beijing".into())), ("k", Value::Str("20".into()))];
        assert_eq!(eval("city IN ('Shanghai', 'Beijing')", &row), Value::Bool(true));
        assert_eq!(eval("city NOT LIKE 'Bei%'", &row), Value::Bool(false));
        assert_eq!(eval("k BETWEEN 10 AND 30", &row), Value::Bool(true));
        assert_eq!(eval("concat(upper(city), '-', k)", &row), Value::Str("BEIJING-20".into()));
        assert_eq!(eval("substr(city, 2, 3)", &row), Value::Str("eij".into()));
    }

    #[test]
    fn casts_and_time_functions() {
        assert_eq!(eval("cast('12' AS INT) + 1", &[]), Value::Int(13));
        assert_eq!(eval("from_unixtime(86400)", &[]), Value::Str("1970-01-02 00:00:00".into()));
        assert_eq!(eval("unix_timestamp('1970-01-02 00:00:01')", &[]), Value::Int(86401));
        assert_eq!(
            eval("str_to_date('2024/05/06 07:08', '%Y/%m/%d %H:%i')", &[]),
            Value::DateTime(super::super::text::parse_datetime("2024-05-06 07:08:00").unwrap())
        );
    }

    #[test]
    fn unknown_functions_fail_at_parse_time() {
        assert!(parse_expr("frobnicate(a)").unwrap_err().contains("No matching function"));
        assert!(parse_expr("a +").is_err());
    }
}
