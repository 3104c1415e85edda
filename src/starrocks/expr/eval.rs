//! Evaluating a parsed [`Expr`] against a row, with SQL's three-valued
//! logic: any comparison with NULL is NULL, and NULL is not TRUE.

use super::funcs::call;
use super::{BinOp, Expr};
use crate::starrocks::types::{ColType, Value};

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

pub(super) fn num(v: &Value) -> Result<f64, String> {
    match v {
        Value::Str(s) => s.trim().parse().map_err(|_| format!("'{s}' is not a number")),
        other => other.as_f64().ok_or_else(|| format!("'{other}' is not a number")),
    }
}

/// Compares two values across kinds the way SQL does (strings that look like
/// numbers compare numerically against numbers).
pub(super) fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
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
