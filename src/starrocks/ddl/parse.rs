//! The parser of the `CREATE TABLE` subset (module doc of `ddl`): a whole
//! script into a [`Catalog`], statement by statement.

use super::partition::{PartClause, build_ranges, parse_partition_clause};
use super::{AggFn, Catalog, Column, DdlError, KeysType, Partitioning, TableDef, ViewDef};
use crate::starrocks::sql::{Cursor, Tok, Token, lex};
use crate::starrocks::types::{ColType, Value};

/// Parses a whole DDL script.
pub fn parse_ddl(src: &str) -> Result<Catalog, DdlError> {
    let toks = lex(src, 1).map_err(|e| DdlError { line: e.line, msg: e.msg })?;
    let mut cat = Catalog::default();
    let mut current_db: Option<String> = None;
    // Split into statements at top-level ';'.
    let mut start = 0;
    let mut depth = 0i32;
    let mut stmts: Vec<&[Token]> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t.tok {
            // A range partition's `[lower, upper)` opens with `[` and closes with `)`.
            Tok::Sym("(") | Tok::Sym("[") => depth += 1,
            Tok::Sym(")") | Tok::Sym("]") => depth -= 1,
            Tok::Sym(";") if depth == 0 => {
                stmts.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    stmts.push(&toks[start..]);
    for stmt in stmts.into_iter().filter(|s| !s.is_empty()) {
        let line = stmt[0].line;
        let mut c = Cursor::new(stmt);
        let err = |c: &Cursor<'_>, msg: String| DdlError { line: c.line(), msg };
        if c.eat_kw("USE") {
            let db = c.ident().map_err(|m| err(&c, m))?;
            if !cat.databases.contains(&db) {
                return Err(DdlError { line, msg: format!("Unknown database '{db}'") });
            }
            current_db = Some(db);
        } else if c.eat_kw("CREATE") {
            if c.eat_kw("DATABASE") {
                if c.eat_kw("IF") {
                    c.expect_kw("NOT").and_then(|_| c.expect_kw("EXISTS")).map_err(|m| err(&c, m))?;
                }
                let db = c.ident().map_err(|m| err(&c, m))?;
                if !cat.databases.contains(&db) {
                    cat.databases.push(db);
                }
            } else if c.peek().is_some_and(|t| t.is_kw("VIEW") || t.is_kw("MATERIALIZED") || t.is_kw("OR")) {
                while !c.eat_kw("VIEW") {
                    c.advance().ok_or_else(|| err(&c, "expected VIEW".into()))?;
                }
                if c.eat_kw("IF") {
                    c.expect_kw("NOT").and_then(|_| c.expect_kw("EXISTS")).map_err(|m| err(&c, m))?;
                }
                let (db, name) = qualified(&mut c, &current_db, line)?;
                let sql = stmt.iter().map(|t| t.tok.to_string()).collect::<Vec<_>>().join(" ");
                cat.views.push(ViewDef { db, name, sql });
            } else if c.eat_kw("TABLE") {
                let t = parse_create_table(&mut c, &current_db, line).map_err(|e| match e {
                    Ok(m) => err(&c, m),
                    Err(d) => d,
                })?;
                if !cat.databases.contains(&t.db) {
                    return Err(DdlError { line, msg: format!("Unknown database '{}'", t.db) });
                }
                if cat.table(&t.db, &t.name).is_some() {
                    return Err(DdlError { line, msg: format!("Table '{}' already exists", t.name) });
                }
                cat.tables.push(t);
            } else {
                return Err(err(&c, format!("unsupported CREATE statement: {}", c.describe())));
            }
        } else {
            return Err(DdlError { line, msg: format!("unsupported statement starting with '{}'", stmt[0].tok) });
        }
    }
    Ok(cat)
}

fn qualified(c: &mut Cursor<'_>, current_db: &Option<String>, line: usize) -> Result<(String, String), DdlError> {
    let first = c.ident().map_err(|msg| DdlError { line: c.line(), msg })?;
    if c.eat_sym(".") {
        let name = c.ident().map_err(|msg| DdlError { line: c.line(), msg })?;
        return Ok((first, name));
    }
    match current_db {
        Some(db) => Ok((db.clone(), first)),
        None => Err(DdlError {
            line,
            msg: format!("No database selected for table '{first}': add `USE <db>;` or write <db>.{first}"),
        }),
    }
}

/// `Err(Ok(msg))` is an error at the cursor's line; `Err(Err(e))` carries its own line.
pub(super) type PResult<T> = Result<T, Result<String, DdlError>>;

fn parse_create_table(c: &mut Cursor<'_>, current_db: &Option<String>, line: usize) -> PResult<TableDef> {
    if c.eat_kw("IF") {
        c.expect_kw("NOT").map_err(Ok)?;
        c.expect_kw("EXISTS").map_err(Ok)?;
    }
    let (db, name) = qualified(c, current_db, line).map_err(Err)?;
    c.expect_sym("(").map_err(Ok)?;
    let mut columns = Vec::new();
    loop {
        if c.peek().is_some_and(|t| t.is_kw("INDEX")) {
            return Err(Ok("INDEX definitions are not supported by the emulator".into()));
        }
        columns.push(parse_column(c)?);
        if c.eat_sym(")") {
            break;
        }
        c.expect_sym(",").map_err(Ok)?;
    }
    let clauses = parse_clauses(c)?;
    build_table(db, name, columns, clauses, line)
}

/// The clauses after a table's columns, as written.
#[derive(Default)]
struct Clauses {
    keys: Option<(KeysType, Vec<String>)>,
    partition: Option<(usize, PartClause)>,
    /// `DISTRIBUTED BY HASH(...)`'s columns (`None`: no such clause).
    distribution: Option<Vec<String>>,
    buckets: Option<u32>,
    properties: Vec<(String, String)>,
}

fn parse_clauses(c: &mut Cursor<'_>) -> PResult<Clauses> {
    let mut cl = Clauses::default();
    while let Some(t) = c.peek() {
        if c.eat_kw("ENGINE") {
            c.expect_sym("=").map_err(Ok)?;
            let engine = c.ident().map_err(Ok)?;
            if !engine.eq_ignore_ascii_case("OLAP") {
                return Err(Ok(format!("ENGINE={engine} is not supported; only OLAP")));
            }
        } else if t.is_kw("DUPLICATE") || t.is_kw("AGGREGATE") || t.is_kw("PRIMARY") || t.is_kw("UNIQUE") {
            let keys = match c.ident().map_err(Ok)?.to_ascii_uppercase().as_str() {
                "DUPLICATE" => KeysType::Duplicate,
                "AGGREGATE" => KeysType::Aggregate,
                "PRIMARY" => KeysType::Primary,
                _ => KeysType::Unique,
            };
            c.expect_kw("KEY").map_err(Ok)?;
            cl.keys = Some((keys, name_list(c)?));
        } else if c.eat_kw("COMMENT") {
            c.advance();
        } else if c.eat_kw("PARTITION") {
            c.expect_kw("BY").map_err(Ok)?;
            let l = c.line();
            cl.partition = Some((l, parse_partition_clause(c)?));
        } else if c.eat_kw("DISTRIBUTED") {
            c.expect_kw("BY").map_err(Ok)?;
            (cl.distribution, cl.buckets) = parse_distribution(c)?;
        } else if c.eat_kw("ORDER") {
            c.expect_kw("BY").map_err(Ok)?;
            name_list(c)?;
        } else if c.eat_kw("PROPERTIES") {
            cl.properties = parse_properties(c)?;
        } else {
            return Err(Ok(format!("unsupported table clause starting at {}", c.describe())));
        }
    }
    Ok(cl)
}

/// `HASH(...) [BUCKETS n]`, after `DISTRIBUTED BY`.
fn parse_distribution(c: &mut Cursor<'_>) -> PResult<(Option<Vec<String>>, Option<u32>)> {
    let names = if c.eat_kw("HASH") {
        name_list(c)?
    } else if c.eat_kw("RANDOM") {
        return Err(Ok("DISTRIBUTED BY RANDOM is not supported: rockfeed shards by the hash bucket".into()));
    } else {
        return Err(Ok(format!("expected HASH after DISTRIBUTED BY, found {}", c.describe())));
    };
    let mut buckets = None;
    if c.eat_kw("BUCKETS") {
        match c.advance() {
            Some(Tok::Num(n)) => {
                buckets = Some(n.parse::<u32>().ok().filter(|b| *b > 0).ok_or_else(|| Ok(format!("bad BUCKETS {n}")))?)
            }
            _ => return Err(Ok("expected a number after BUCKETS".into())),
        }
    }
    Ok((Some(names), buckets))
}

/// `( "k" = "v", ... )`, after `PROPERTIES`.
fn parse_properties(c: &mut Cursor<'_>) -> PResult<Vec<(String, String)>> {
    c.expect_sym("(").map_err(Ok)?;
    let mut properties = Vec::new();
    loop {
        let k = match c.advance() {
            Some(Tok::Str(s)) => s.clone(),
            _ => return Err(Ok("expected a quoted property name".into())),
        };
        c.expect_sym("=").map_err(Ok)?;
        let v = match c.advance() {
            Some(Tok::Str(s)) => s.clone(),
            _ => return Err(Ok("expected a quoted property value".into())),
        };
        properties.push((k, v));
        if c.eat_sym(")") {
            return Ok(properties);
        }
        c.expect_sym(",").map_err(Ok)?;
    }
}

/// The table the clauses describe, checked as StarRocks checks it.
fn build_table(db: String, name: String, columns: Vec<Column>, cl: Clauses, line: usize) -> PResult<TableDef> {
    let col_idx = |n: &str| -> PResult<usize> {
        columns
            .iter()
            .position(|c: &Column| c.name.eq_ignore_ascii_case(n))
            .ok_or_else(|| Ok(format!("Unknown column '{n}' in table '{name}'")))
    };
    let Some(dist_names) = cl.distribution else {
        return Err(Err(DdlError {
            line,
            msg: format!(
                "table '{name}' has no DISTRIBUTED BY HASH(...) clause; the emulator needs the bucket columns"
            ),
        }));
    };
    let (keys, key_columns): (KeysType, Vec<usize>) = match &cl.keys {
        Some((keys, names)) => (*keys, names.iter().map(|n| col_idx(n)).collect::<PResult<_>>()?),
        None => {
            // StarRocks picks leading columns for DUPLICATE KEY when absent.
            (KeysType::Duplicate, (0..columns.len().min(3)).take_while(|i| columns[*i].agg.is_none()).collect())
        }
    };
    check_columns(&columns, keys, &key_columns, line)?;
    let distribution: Vec<usize> = dist_names.iter().map(|n| col_idx(n)).collect::<PResult<_>>()?;
    if distribution.is_empty() {
        return Err(Err(DdlError { line, msg: "DISTRIBUTED BY HASH needs at least one column".into() }));
    }
    if keys != KeysType::Duplicate && distribution.iter().any(|d| !key_columns.contains(d)) {
        return Err(Err(DdlError { line, msg: "distribution columns must be key columns".into() }));
    }
    let partitioning = match cl.partition {
        None => Partitioning::None,
        Some((pl, PartClause::Trunc(unit, col))) => {
            let column = col_idx(&col)?;
            if !matches!(columns[column].ty, ColType::Date | ColType::DateTime) {
                return Err(Err(DdlError {
                    line: pl,
                    msg: format!("date_trunc partition column '{col}' must be DATE or DATETIME"),
                }));
            }
            Partitioning::DateTrunc { unit, column }
        }
        Some((pl, PartClause::Range(col, raw))) => {
            let column = col_idx(&col)?;
            let ty = columns[column].ty;
            let partitions = build_ranges(&ty, raw).map_err(|msg| Err(DdlError { line: pl, msg }))?;
            Partitioning::Range { column, partitions }
        }
    };
    Ok(TableDef {
        db,
        name,
        columns,
        keys,
        key_columns,
        partitioning,
        distribution,
        buckets: cl.buckets.unwrap_or(10),
        properties: cl.properties,
        line,
    })
}

/// Keys lead, in order; aggregate functions only on an AGGREGATE table's
/// values, each valid for its column's type; no floating-point keys outside
/// DUPLICATE tables.
fn check_columns(columns: &[Column], keys: KeysType, key_columns: &[usize], line: usize) -> PResult<()> {
    let refuse = |msg: String| Err(Err(DdlError { line, msg }));
    for (pos, k) in key_columns.iter().enumerate() {
        if *k != pos {
            return refuse("key columns must be the leading columns, in order".into());
        }
    }
    for (i, col) in columns.iter().enumerate() {
        let is_key = key_columns.contains(&i);
        match (keys, is_key, col.agg) {
            (KeysType::Aggregate, false, None) => {
                return refuse(format!(
                    "value column '{}' of an AGGREGATE table needs an aggregate function",
                    col.name
                ));
            }
            (KeysType::Aggregate, true, Some(_))
            | (KeysType::Duplicate | KeysType::Primary | KeysType::Unique, _, Some(_)) => {
                return refuse(format!("column '{}' may not have an aggregate function here", col.name));
            }
            _ => {}
        }
        if is_key && matches!(col.ty, ColType::Float | ColType::Double) && keys != KeysType::Duplicate {
            return refuse(format!("key column '{}' may not be FLOAT/DOUBLE", col.name));
        }
        if let Some(agg @ (AggFn::Sum | AggFn::Min | AggFn::Max)) = col.agg
            && !col.ty.is_numeric()
            && !(agg != AggFn::Sum
                && matches!(
                    col.ty,
                    ColType::Date | ColType::DateTime | ColType::Varchar(_) | ColType::Char(_) | ColType::String
                ))
        {
            return refuse(format!("{} is not valid for {} column '{}'", agg.name(), col.ty, col.name));
        }
    }
    Ok(())
}

pub(super) fn name_list(c: &mut Cursor<'_>) -> PResult<Vec<String>> {
    c.expect_sym("(").map_err(Ok)?;
    let mut names = vec![c.ident().map_err(Ok)?];
    while c.eat_sym(",") {
        names.push(c.ident().map_err(Ok)?);
    }
    c.expect_sym(")").map_err(Ok)?;
    Ok(names)
}

/// Parses a type name: `INT`, `int(11)`, `VARCHAR(64)`, `DECIMAL(10,2)`, …
pub fn parse_type(c: &mut Cursor<'_>) -> Result<ColType, String> {
    let word = c.ident()?.to_ascii_uppercase();
    let mut args: Vec<u32> = Vec::new();
    if c.eat_sym("(") {
        loop {
            match c.advance() {
                Some(Tok::Num(n)) => args.push(n.parse().map_err(|_| format!("bad type argument {n}"))?),
                other => return Err(format!("bad type argument {other:?}")),
            }
            if c.eat_sym(")") {
                break;
            }
            c.expect_sym(",")?;
        }
    }
    let ty = match word.as_str() {
        "BOOLEAN" | "BOOL" => ColType::Boolean,
        "TINYINT" => ColType::TinyInt,
        "SMALLINT" => ColType::SmallInt,
        "INT" | "INTEGER" => ColType::Int,
        "BIGINT" => ColType::BigInt,
        "LARGEINT" => ColType::LargeInt,
        "FLOAT" => ColType::Float,
        "DOUBLE" => ColType::Double,
        "DECIMAL" | "DECIMALV2" | "DECIMAL32" | "DECIMAL64" | "DECIMAL128" | "NUMERIC" => {
            let precision = *args.first().unwrap_or(&10) as u8;
            let scale = *args.get(1).unwrap_or(&0) as u8;
            if precision == 0 || precision > 38 || scale > precision {
                return Err(format!("invalid DECIMAL({precision},{scale})"));
            }
            ColType::Decimal { precision, scale, v2: word == "DECIMALV2" }
        }
        "CHAR" => ColType::Char(*args.first().unwrap_or(&1)),
        "VARCHAR" => {
            let n = *args.first().unwrap_or(&1);
            if n == 0 || n > 1_048_576 {
                return Err(format!("invalid VARCHAR length {n}"));
            }
            ColType::Varchar(n)
        }
        "STRING" => ColType::String,
        "DATE" => ColType::Date,
        "DATETIME" => ColType::DateTime,
        other => return Err(format!("unsupported column type {other}")),
    };
    Ok(ty)
}

fn parse_column(c: &mut Cursor<'_>) -> PResult<Column> {
    let name = c.ident().map_err(Ok)?;
    let ty = parse_type(c).map_err(Ok)?;
    let mut col = Column { name, ty, agg: None, nullable: true, default: None, comment: None };
    loop {
        if c.eat_kw("NOT") {
            c.expect_kw("NULL").map_err(Ok)?;
            col.nullable = false;
        } else if c.eat_kw("NULL") {
            col.nullable = true;
        } else if c.eat_kw("SUM") {
            col.agg = Some(AggFn::Sum);
        } else if c.eat_kw("MIN") {
            col.agg = Some(AggFn::Min);
        } else if c.eat_kw("MAX") {
            col.agg = Some(AggFn::Max);
        } else if c.eat_kw("REPLACE") {
            col.agg = Some(AggFn::Replace);
        } else if c.eat_kw("REPLACE_IF_NOT_NULL") {
            col.agg = Some(AggFn::ReplaceIfNotNull);
        } else if c
            .peek()
            .is_some_and(|t| t.is_kw("HLL_UNION") || t.is_kw("BITMAP_UNION") || t.is_kw("PERCENTILE_UNION"))
        {
            return Err(Ok(format!("aggregate {} is not supported by the emulator", c.describe())));
        } else if c.eat_kw("DEFAULT") {
            let v = match c.advance() {
                Some(Tok::Str(s)) | Some(Tok::Num(s)) => s.clone(),
                Some(t) if t.is_kw("NULL") => {
                    col.default = Some(Value::Null);
                    continue;
                }
                Some(t) if t.is_kw("CURRENT_TIMESTAMP") => {
                    return Err(Ok("DEFAULT CURRENT_TIMESTAMP is not supported by the emulator".into()));
                }
                _ => return Err(Ok("expected a default value".into())),
            };
            col.default = Some(ty.parse(v.as_bytes()).map_err(|e| Ok(format!("bad DEFAULT for '{}': {e}", col.name)))?);
        } else if c.eat_kw("COMMENT") {
            match c.advance() {
                // StarRocks prints `COMMENT ""` for a column without one.
                Some(Tok::Str(s)) => col.comment = Some(s.clone()).filter(|s| !s.is_empty()),
                _ => return Err(Ok("expected a comment string".into())),
            }
        } else if c.peek().is_some_and(|t| t.is_kw("AUTO_INCREMENT") || t.is_kw("AS")) {
            return Err(Ok(format!("{} columns are not supported by the emulator", c.describe())));
        } else {
            break;
        }
    }
    Ok(col)
}
