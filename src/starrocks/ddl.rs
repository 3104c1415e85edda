//! Table definitions: the model of a StarRocks table and a parser for the
//! `CREATE TABLE` subset rockfeed generates.
//!
//! Accepted statements: `CREATE DATABASE [IF NOT EXISTS] d`, `USE d`,
//! `CREATE TABLE [IF NOT EXISTS] [d.]t (cols) [ENGINE=OLAP]
//! [DUPLICATE|AGGREGATE|PRIMARY|UNIQUE KEY(...)] [COMMENT ".."]
//! [PARTITION BY date_trunc('unit', c) | PARTITION BY RANGE(c) (...)]
//! DISTRIBUTED BY HASH(...) [BUCKETS n] [ORDER BY (...)] [PROPERTIES (...)]`,
//! and `CREATE [MATERIALIZED] VIEW` (kept as text, not evaluated). Anything
//! else is an error that names the line it starts on, so a misconfigured
//! emulator fails at startup instead of mis-loading data later.

use super::sql::{Cursor, Tok, Token, lex};
use super::types::{ColType, Value, format_date, parse_date};

/// The aggregate function of a value column in an Aggregate table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFn {
    Sum,
    Min,
    Max,
    Replace,
    ReplaceIfNotNull,
}

impl AggFn {
    pub fn name(&self) -> &'static str {
        match self {
            AggFn::Sum => "SUM",
            AggFn::Min => "MIN",
            AggFn::Max => "MAX",
            AggFn::Replace => "REPLACE",
            AggFn::ReplaceIfNotNull => "REPLACE_IF_NOT_NULL",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysType {
    Duplicate,
    Aggregate,
    Primary,
    /// UNIQUE KEY: merge-on-read REPLACE semantics.
    Unique,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: ColType,
    pub agg: Option<AggFn>,
    pub nullable: bool,
    /// Typed default (`DEFAULT "0"`); `None` means no default.
    pub default: Option<Value>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncUnit {
    Hour,
    Day,
    Month,
    Year,
}

/// One RANGE partition: `[lower, upper)` on the partition column's value.
#[derive(Debug, Clone, PartialEq)]
pub struct RangePartition {
    pub name: String,
    pub lower: Option<Value>,
    pub upper: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Partitioning {
    /// Unpartitioned: one implicit partition named like the table.
    None,
    /// Expression partitioning: partitions are created on demand per unit.
    DateTrunc { unit: TruncUnit, column: usize },
    /// Explicit ranges; a row outside every range is filtered.
    Range { column: usize, partitions: Vec<RangePartition> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    pub db: String,
    pub name: String,
    pub columns: Vec<Column>,
    pub keys: KeysType,
    /// Indices of the key columns, in table order.
    pub key_columns: Vec<usize>,
    pub partitioning: Partitioning,
    /// Indices of the DISTRIBUTED BY HASH columns, in declaration order.
    pub distribution: Vec<usize>,
    pub buckets: u32,
    pub properties: Vec<(String, String)>,
    /// Line of the CREATE TABLE statement in its file.
    pub line: usize,
}

impl TableDef {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name.eq_ignore_ascii_case(name))
    }

    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }
}

impl TableDef {
    /// The table as StarRocks 3.3 prints it in `SHOW CREATE TABLE`: no
    /// database qualifier, lower-case types with display widths
    /// (`bigint(20)`), the aggregate before the nullability, a `COMMENT`
    /// on every column, and the properties sorted by name with the ones
    /// StarRocks adds on its own (`compression`, `fast_schema_evolution`,
    /// `replicated_storage`). [`parse_ddl`] reads it back.
    pub fn show_create(&self) -> String {
        let q = |s: &str| format!("`{}`", s.replace('`', "``"));
        let lit = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let names = |idx: &[usize]| idx.iter().map(|i| q(&self.columns[*i].name)).collect::<Vec<_>>().join(", ");
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let mut line = format!("  {} {}", q(&c.name), c.ty.show_name());
                if let Some(a) = c.agg {
                    line.push(' ');
                    line.push_str(a.name());
                }
                line.push_str(if c.nullable { " NULL" } else { " NOT NULL" });
                match &c.default {
                    Some(Value::Null) => line.push_str(" DEFAULT NULL"),
                    Some(v) => line.push_str(&format!(" DEFAULT {}", lit(&v.render(&c.ty)))),
                    None => {}
                }
                line.push_str(&format!(" COMMENT {}", lit(c.comment.as_deref().unwrap_or(""))));
                line
            })
            .collect();
        let keys = match self.keys {
            KeysType::Duplicate => "DUPLICATE",
            KeysType::Aggregate => "AGGREGATE",
            KeysType::Primary => "PRIMARY",
            KeysType::Unique => "UNIQUE",
        };
        let mut out = format!("CREATE TABLE {} (\n{}\n) ENGINE=OLAP \n", q(&self.name), cols.join(",\n"));
        out.push_str(&format!("{keys} KEY({})\n", names(&self.key_columns)));
        match &self.partitioning {
            Partitioning::None => {}
            Partitioning::DateTrunc { unit, column } => {
                let unit = match unit {
                    TruncUnit::Hour => "hour",
                    TruncUnit::Day => "day",
                    TruncUnit::Month => "month",
                    TruncUnit::Year => "year",
                };
                out.push_str(&format!("PARTITION BY date_trunc('{unit}', {})\n", self.columns[*column].name));
            }
            Partitioning::Range { column, partitions } => {
                let ty = &self.columns[*column].ty;
                let bound = |v: &Value| format!("({})", lit(&v.render(ty)));
                let parts: Vec<String> = partitions
                    .iter()
                    .map(|p| match (&p.lower, &p.upper) {
                        (Some(lo), Some(hi)) => format!("PARTITION {} VALUES [{}, {})", p.name, bound(lo), bound(hi)),
                        (_, Some(hi)) => format!("PARTITION {} VALUES LESS THAN {}", p.name, bound(hi)),
                        (_, None) => format!("PARTITION {} VALUES LESS THAN MAXVALUE", p.name),
                    })
                    .collect();
                out.push_str(&format!(
                    "PARTITION BY RANGE({})\n({})\n",
                    q(&self.columns[*column].name),
                    parts.join(",\n")
                ));
            }
        }
        out.push_str(&format!("DISTRIBUTED BY HASH({}) BUCKETS {} \n", names(&self.distribution), self.buckets));
        let mut props = self.properties.clone();
        for (k, v) in [("compression", "LZ4"), ("fast_schema_evolution", "true"), ("replicated_storage", "true")] {
            if self.property(k).is_none() {
                props.push((k.to_string(), v.to_string()));
            }
        }
        props.sort_by(|a, b| a.0.cmp(&b.0));
        let props: Vec<String> = props.iter().map(|(k, v)| format!("{} = {}", lit(k), lit(v))).collect();
        out.push_str(&format!("PROPERTIES (\n{}\n);", props.join(",\n")));
        out
    }
}

/// Reads one table's `CREATE TABLE` text, as `SHOW CREATE TABLE` returns
/// it (no database qualifier), as a table of database `db`.
pub fn parse_table(db: &str, create: &str) -> Result<TableDef, DdlError> {
    let q = format!("`{}`", db.replace('`', "``"));
    // Two lines of preamble: line numbers in errors are shifted back.
    let cat = parse_ddl(&format!("CREATE DATABASE {q};\nUSE {q};\n{create}"))
        .map_err(|e| DdlError { line: e.line.saturating_sub(2).max(1), msg: e.msg })?;
    let mut tables = cat.tables.into_iter();
    match (tables.next(), tables.next(), cat.views.is_empty()) {
        (Some(t), None, true) => Ok(t),
        _ => Err(DdlError { line: 1, msg: "expected exactly one CREATE TABLE statement".into() }),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ViewDef {
    pub db: String,
    pub name: String,
    pub sql: String,
}

/// Everything a DDL file defines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    pub databases: Vec<String>,
    pub tables: Vec<TableDef>,
    pub views: Vec<ViewDef>,
}

impl Catalog {
    pub fn table(&self, db: &str, name: &str) -> Option<&TableDef> {
        self.tables.iter().find(|t| t.db == db && t.name.eq_ignore_ascii_case(name))
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("DDL line {line}: {msg}")]
pub struct DdlError {
    pub line: usize,
    pub msg: String,
}

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
type PResult<T> = Result<T, Result<String, DdlError>>;

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
    let mut keys = KeysType::Duplicate;
    let mut key_names: Option<Vec<String>> = None;
    let mut part_clause: Option<(usize, PartClause)> = None;
    let mut dist_names: Vec<String> = Vec::new();
    let mut buckets = None;
    let mut properties = Vec::new();
    let mut saw_dist = false;
    while let Some(t) = c.peek() {
        if c.eat_kw("ENGINE") {
            c.expect_sym("=").map_err(Ok)?;
            let engine = c.ident().map_err(Ok)?;
            if !engine.eq_ignore_ascii_case("OLAP") {
                return Err(Ok(format!("ENGINE={engine} is not supported; only OLAP")));
            }
        } else if t.is_kw("DUPLICATE") || t.is_kw("AGGREGATE") || t.is_kw("PRIMARY") || t.is_kw("UNIQUE") {
            keys = match c.ident().map_err(Ok)?.to_ascii_uppercase().as_str() {
                "DUPLICATE" => KeysType::Duplicate,
                "AGGREGATE" => KeysType::Aggregate,
                "PRIMARY" => KeysType::Primary,
                _ => KeysType::Unique,
            };
            c.expect_kw("KEY").map_err(Ok)?;
            key_names = Some(name_list(c)?);
        } else if c.eat_kw("COMMENT") {
            c.advance();
        } else if c.eat_kw("PARTITION") {
            c.expect_kw("BY").map_err(Ok)?;
            let l = c.line();
            part_clause = Some((l, parse_partition_clause(c)?));
        } else if c.eat_kw("DISTRIBUTED") {
            c.expect_kw("BY").map_err(Ok)?;
            saw_dist = true;
            if c.eat_kw("HASH") {
                dist_names = name_list(c)?;
            } else if c.eat_kw("RANDOM") {
                return Err(Ok("DISTRIBUTED BY RANDOM is not supported: rockfeed shards by the hash bucket".into()));
            } else {
                return Err(Ok(format!("expected HASH after DISTRIBUTED BY, found {}", c.describe())));
            }
            if c.eat_kw("BUCKETS") {
                match c.advance() {
                    Some(Tok::Num(n)) => {
                        buckets = Some(
                            n.parse::<u32>().ok().filter(|b| *b > 0).ok_or_else(|| Ok(format!("bad BUCKETS {n}")))?,
                        )
                    }
                    _ => return Err(Ok("expected a number after BUCKETS".into())),
                }
            }
        } else if c.eat_kw("ORDER") {
            c.expect_kw("BY").map_err(Ok)?;
            name_list(c)?;
        } else if c.eat_kw("PROPERTIES") {
            c.expect_sym("(").map_err(Ok)?;
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
                    break;
                }
                c.expect_sym(",").map_err(Ok)?;
            }
        } else {
            return Err(Ok(format!("unsupported table clause starting at {}", c.describe())));
        }
    }
    let col_idx = |n: &str| -> PResult<usize> {
        columns
            .iter()
            .position(|c: &Column| c.name.eq_ignore_ascii_case(n))
            .ok_or_else(|| Ok(format!("Unknown column '{n}' in table '{name}'")))
    };
    if !saw_dist {
        return Err(Err(DdlError {
            line,
            msg: format!(
                "table '{name}' has no DISTRIBUTED BY HASH(...) clause; the emulator needs the bucket columns"
            ),
        }));
    }
    let key_columns: Vec<usize> = match &key_names {
        Some(names) => names.iter().map(|n| col_idx(n)).collect::<PResult<_>>()?,
        None => {
            // StarRocks picks leading columns for DUPLICATE KEY when absent.
            (0..columns.len().min(3)).take_while(|i| columns[*i].agg.is_none()).collect()
        }
    };
    for (pos, k) in key_columns.iter().enumerate() {
        if *k != pos {
            return Err(Err(DdlError { line, msg: "key columns must be the leading columns, in order".into() }));
        }
    }
    for (i, col) in columns.iter().enumerate() {
        let is_key = key_columns.contains(&i);
        match (keys, is_key, col.agg) {
            (KeysType::Aggregate, false, None) => {
                return Err(Err(DdlError {
                    line,
                    msg: format!("value column '{}' of an AGGREGATE table needs an aggregate function", col.name),
                }));
            }
            (KeysType::Aggregate, true, Some(_))
            | (KeysType::Duplicate | KeysType::Primary | KeysType::Unique, _, Some(_)) => {
                return Err(Err(DdlError {
                    line,
                    msg: format!("column '{}' may not have an aggregate function here", col.name),
                }));
            }
            _ => {}
        }
        if is_key && matches!(col.ty, ColType::Float | ColType::Double) && keys != KeysType::Duplicate {
            return Err(Err(DdlError { line, msg: format!("key column '{}' may not be FLOAT/DOUBLE", col.name) }));
        }
        if let Some(AggFn::Sum | AggFn::Min | AggFn::Max) = col.agg
            && !col.ty.is_numeric()
            && !(col.agg != Some(AggFn::Sum)
                && matches!(
                    col.ty,
                    ColType::Date | ColType::DateTime | ColType::Varchar(_) | ColType::Char(_) | ColType::String
                ))
        {
            return Err(Err(DdlError {
                line,
                msg: format!("{} is not valid for {} column '{}'", col.agg.unwrap().name(), col.ty, col.name),
            }));
        }
    }
    let distribution: Vec<usize> = dist_names.iter().map(|n| col_idx(n)).collect::<PResult<_>>()?;
    if distribution.is_empty() {
        return Err(Err(DdlError { line, msg: "DISTRIBUTED BY HASH needs at least one column".into() }));
    }
    if keys != KeysType::Duplicate && distribution.iter().any(|d| !key_columns.contains(d)) {
        return Err(Err(DdlError { line, msg: "distribution columns must be key columns".into() }));
    }
    let partitioning = match part_clause {
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
        buckets: buckets.unwrap_or(10),
        properties,
        line,
    })
}

fn name_list(c: &mut Cursor<'_>) -> PResult<Vec<String>> {
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

enum PartClause {
    Trunc(TruncUnit, String),
    Range(String, Vec<RawRange>),
}

enum RawRange {
    LessThan(String, Option<String>),
    Fixed(String, String, String),
    Batch { start: String, end: String, every: i64, unit: TruncUnit },
}

fn parse_partition_clause(c: &mut Cursor<'_>) -> PResult<PartClause> {
    // StarRocks 3.4+ prints an expression partition in parentheses
    // (`PARTITION BY (date_trunc('day', ts))`) in SHOW CREATE TABLE.
    let wrapped = c.eat_sym("(");
    if c.eat_kw("date_trunc") {
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
        return Ok(PartClause::Trunc(unit, col));
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
    let lit = |c: &mut Cursor<'_>| -> PResult<String> {
        c.expect_sym("(").map_err(Ok)?;
        let v = match c.advance() {
            Some(Tok::Str(s)) | Some(Tok::Num(s)) => s.clone(),
            _ => return Err(Ok("expected a partition bound literal".into())),
        };
        c.expect_sym(")").map_err(Ok)?;
        Ok(v)
    };
    loop {
        if c.eat_kw("PARTITION") {
            let pname = c.ident().map_err(Ok)?;
            c.expect_kw("VALUES").map_err(Ok)?;
            if c.eat_kw("LESS") {
                c.expect_kw("THAN").map_err(Ok)?;
                if c.eat_kw("MAXVALUE") {
                    raw.push(RawRange::LessThan(pname, None));
                } else {
                    let v = lit(c)?;
                    raw.push(RawRange::LessThan(pname, Some(v)));
                }
            } else if c.eat_sym("[") {
                let lo = lit(c)?;
                c.expect_sym(",").map_err(Ok)?;
                let hi = lit(c)?;
                c.expect_sym(")").map_err(Ok)?;
                raw.push(RawRange::Fixed(pname, lo, hi));
            } else {
                return Err(Ok(format!("expected LESS THAN or [ after VALUES, found {}", c.describe())));
            }
        } else if c.eat_kw("START") {
            let start = lit(c)?;
            c.expect_kw("END").map_err(Ok)?;
            let end = lit(c)?;
            c.expect_kw("EVERY").map_err(Ok)?;
            c.expect_sym("(").map_err(Ok)?;
            c.expect_kw("INTERVAL").map_err(Ok)?;
            let every = match c.advance() {
                Some(Tok::Num(n)) => {
                    n.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| Ok(format!("bad EVERY {n}")))?
                }
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
            raw.push(RawRange::Batch { start, end, every, unit });
        } else {
            return Err(Ok(format!("expected PARTITION or START, found {}", c.describe())));
        }
        if c.eat_sym(")") {
            break;
        }
        c.expect_sym(",").map_err(Ok)?;
    }
    Ok(PartClause::Range(cols[0].clone(), raw))
}

fn build_ranges(ty: &ColType, raw: Vec<RawRange>) -> Result<Vec<RangePartition>, String> {
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
            let (y, m, _) = super::types::civil_from_days(d);
            let total = y as i64 * 12 + (m as i64 - 1) + months;
            super::types::days_from_civil((total / 12) as i32, (total % 12) as u32 + 1, 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TELEMETRY: &str = r#"
CREATE DATABASE IF NOT EXISTS rockfeed;
USE rockfeed;
CREATE TABLE IF NOT EXISTS telemetry_1m (
  vehicle_id   VARCHAR(32) NOT NULL COMMENT "vin",
  window_start DATETIME NOT NULL,
  metric       VARCHAR(128) NOT NULL,
  fleet        VARCHAR(64) NULL,
  cnt   BIGINT SUM DEFAULT "0",
  total DOUBLE SUM,
  min   DOUBLE MIN,
  max   DOUBLE MAX
) ENGINE=OLAP
AGGREGATE KEY(vehicle_id, window_start, metric, fleet)
PARTITION BY date_trunc('day', window_start)
DISTRIBUTED BY HASH(vehicle_id) BUCKETS 16
PROPERTIES ("replication_num" = "1", "colocate_with" = "vehicle");
"#;

    #[test]
    fn parses_the_telemetry_aggregate_table() {
        let cat = parse_ddl(TELEMETRY).unwrap();
        let t = cat.table("rockfeed", "telemetry_1m").unwrap();
        assert_eq!(t.keys, KeysType::Aggregate);
        assert_eq!(t.key_columns, vec![0, 1, 2, 3]);
        assert_eq!(t.distribution, vec![0]);
        assert_eq!(t.buckets, 16);
        assert_eq!(t.columns[4].agg, Some(AggFn::Sum));
        assert_eq!(t.columns[4].default, Some(Value::Int(0)));
        assert!(!t.columns[0].nullable);
        assert_eq!(t.partitioning, Partitioning::DateTrunc { unit: TruncUnit::Day, column: 1 });
        assert_eq!(t.property("colocate_with"), Some("vehicle"));
        assert_eq!(t.line, 4);
    }

    #[test]
    fn parses_range_partitions_including_batches() {
        let cat = parse_ddl(
            "CREATE DATABASE d; CREATE TABLE d.t (k DATE, v INT) DUPLICATE KEY(k)
             PARTITION BY RANGE(k) (PARTITION p1 VALUES LESS THAN (\"2024-01-01\"),
               START (\"2024-01-01\") END (\"2024-01-04\") EVERY (INTERVAL 1 DAY),
               PARTITION pmax VALUES LESS THAN MAXVALUE)
             DISTRIBUTED BY HASH(k) BUCKETS 2",
        )
        .unwrap();
        let Partitioning::Range { partitions, .. } = &cat.tables[0].partitioning else { panic!() };
        let names: Vec<_> = partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["p1", "p20240101", "p20240102", "p20240103", "pmax"]);
        assert_eq!(partitions[0].lower, None);
        assert_eq!(partitions[4].upper, None);
    }

    #[test]
    fn unsupported_ddl_names_the_line() {
        let err = parse_ddl("CREATE DATABASE d;\nUSE d;\nCREATE TABLE t (\n  k INT,\n  b BITMAP BITMAP_UNION\n) DISTRIBUTED BY HASH(k);").unwrap_err();
        assert_eq!(err.line, 5, "{err}");
        let err = parse_ddl("CREATE DATABASE d;\n\nDROP TABLE x;").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.msg.contains("DROP"));
        let err = parse_ddl("CREATE TABLE t (k INT) DISTRIBUTED BY HASH(k);").unwrap_err();
        assert!(err.msg.contains("No database selected"));
    }

    #[test]
    fn aggregate_tables_need_functions_on_values() {
        let err =
            parse_ddl("CREATE DATABASE d; CREATE TABLE d.t (k INT, v INT) AGGREGATE KEY(k) DISTRIBUTED BY HASH(k)")
                .unwrap_err();
        assert!(err.msg.contains("needs an aggregate function"), "{err}");
    }

    #[test]
    fn show_create_table_reads_back_as_the_same_table() {
        let cat = parse_ddl(TELEMETRY).unwrap();
        let t = cat.table("rockfeed", "telemetry_1m").unwrap();
        let shown = t.show_create();
        assert!(
            shown.starts_with("CREATE TABLE `telemetry_1m` (\n  `vehicle_id` varchar(32) NOT NULL COMMENT \"vin\",\n")
        );
        assert!(shown.contains("  `cnt` bigint(20) SUM NULL DEFAULT \"0\" COMMENT \"\",\n"), "{shown}");
        assert!(shown.contains("PARTITION BY date_trunc('day', window_start)\n"), "{shown}");
        assert!(shown.contains("DISTRIBUTED BY HASH(`vehicle_id`) BUCKETS 16 \n"), "{shown}");
        // Sorted, with StarRocks' own properties added.
        assert!(shown.ends_with("PROPERTIES (\n\"colocate_with\" = \"vehicle\",\n\"compression\" = \"LZ4\",\n\"fast_schema_evolution\" = \"true\",\n\"replicated_storage\" = \"true\",\n\"replication_num\" = \"1\"\n);"), "{shown}");
        let back = parse_table("rockfeed", &shown).unwrap();
        assert_eq!(back.columns, t.columns);
        assert_eq!(
            (back.keys, &back.key_columns, &back.distribution, back.buckets),
            (t.keys, &t.key_columns, &t.distribution, t.buckets)
        );
        assert_eq!(back.partitioning, t.partitioning);
        assert_eq!(back.property("colocate_with"), Some("vehicle"));

        let ranged = parse_ddl(
            "CREATE DATABASE d; CREATE TABLE d.t (k DATE, v DECIMAL(10,2) NULL DEFAULT \"1.50\" COMMENT 'a \"b\"') DUPLICATE KEY(k)
             PARTITION BY RANGE(k) (PARTITION p1 VALUES LESS THAN (\"2024-01-01\"),
               PARTITION p2 VALUES [(\"2024-01-01\"), (\"2024-02-01\")), PARTITION pmax VALUES LESS THAN MAXVALUE)
             DISTRIBUTED BY HASH(k) BUCKETS 2",
        )
        .unwrap();
        let back = parse_table("d", &ranged.tables[0].show_create()).unwrap();
        assert_eq!(back.columns, ranged.tables[0].columns);
        assert_eq!(back.partitioning, ranged.tables[0].partitioning);
    }

    #[test]
    fn reads_a_starrocks_3_4_expression_partition_in_parentheses() {
        let t = parse_table(
            "d",
            "CREATE TABLE `agg_week_ddl` (\n  `event_day` datetime NOT NULL COMMENT \"\",\n  `city` varchar(64) NOT NULL COMMENT \"\",\n  `pv` bigint(20) SUM NULL COMMENT \"\"\n) ENGINE=OLAP \nAGGREGATE KEY(`event_day`, `city`)\nPARTITION BY (date_trunc('week', event_day))\nDISTRIBUTED BY HASH(`city`) BUCKETS 3 \nPROPERTIES (\n\"compression\" = \"LZ4\",\n\"replication_num\" = \"1\"\n);",
        )
        .unwrap_err();
        // 'week' is a unit the emulator does not partition by; the clause itself parses.
        assert!(t.msg.contains("unsupported date_trunc unit 'week'"), "{t}");
        let t = parse_table(
            "d",
            "CREATE TABLE `t` (\n  `d` datetime NOT NULL COMMENT \"\",\n  `pv` bigint(20) SUM NULL COMMENT \"\"\n) ENGINE=OLAP \nAGGREGATE KEY(`d`)\nPARTITION BY (date_trunc('day', d))\nDISTRIBUTED BY HASH(`d`) BUCKETS 3 \nPROPERTIES (\n\"replication_num\" = \"1\"\n);",
        )
        .unwrap();
        assert_eq!(t.partitioning, Partitioning::DateTrunc { unit: TruncUnit::Day, column: 0 });
        assert_eq!(t.db, "d");
    }

    #[test]
    fn parses_the_docs_primary_key_example() {
        let cat = parse_ddl(
            "CREATE DATABASE test_db; USE test_db;
            CREATE TABLE `table1`
            (
                `id` int(11) NOT NULL COMMENT \"user ID\",
                `name` varchar(65533) NULL COMMENT \"user name\",
                `score` int(11) NOT NULL COMMENT \"user score\"
            )
            ENGINE=OLAP
            PRIMARY KEY(`id`)
            DISTRIBUTED BY HASH(`id`) BUCKETS 10;",
        )
        .unwrap();
        let t = &cat.tables[0];
        assert_eq!(t.keys, KeysType::Primary);
        assert_eq!(t.columns[1].ty, ColType::Varchar(65533));
    }
}
