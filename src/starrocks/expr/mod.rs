//! SQL scalar expressions of the kind Stream Load accepts in its `columns`
//! (`c3 = tmp * 100`, `__op = 'delete'`) and `where` headers.
//!
//! Three-valued logic as in SQL: any comparison with NULL is NULL, and a
//! `where` predicate keeps a row only when it is TRUE. Supported: literals,
//! column references, `+ - * / %`, comparisons, `AND OR NOT`, `IS [NOT] NULL`,
//! `[NOT] IN (…)`, `[NOT] BETWEEN`, `[NOT] LIKE`, `CAST(x AS type)` and the
//! functions listed in `funcs.rs`. Anything else is a plan-time error, reported
//! before any row is read, as StarRocks does.

mod eval;
mod funcs;

pub use eval::truth;

use super::ddl::parse_type;
use super::sql::{Cursor, Tok, lex};
use super::types::{ColType, Value};

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
