//! One load request: its headers (§2 of the protocol reference) turned into a
//! plan, and its body turned into typed, partitioned, bucketed rows.
//!
//! Header errors are plan-time failures (the whole load fails with the
//! message StarRocks gives). Row errors are per row: the row is *filtered*,
//! counted, and its reason kept for the error log behind `ErrorURL`. Rows a
//! `where` predicate rejects are *unselected*. `NumberTotalRows` = loaded +
//! filtered + unselected.
//!
//! Conversion rules follow StarRocks: `\N` is NULL in CSV; with
//! `strict_mode=false` (default) a field that does not convert becomes NULL
//! (and the row is filtered only if the column is NOT NULL); with
//! `strict_mode=true` such a row is filtered.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use http::HeaderMap;

use super::engine::{FastHash, RowOp, StagedBatch, StagedRow, TabletKey, partition_key, partition_label};
use super::registry::LoadCounts;
use crate::starrocks::ddl::{AggFn, KeysType, TableDef};
use crate::starrocks::expr::{Expr, parse_expr, parse_with, truth};
use crate::starrocks::sql::{Cursor, lex};
use crate::starrocks::types::{ColType, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    Deflate,
    Bzip2,
    Lz4Frame,
    Zstd,
}

/// One `columns` entry: a source column, or `name = expr`.
#[derive(Debug, Clone)]
pub struct ColumnItem {
    pub name: String,
    pub expr: Option<Expr>,
}

/// Everything the headers say about how to read the body.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub format: Format,
    pub codec: Option<Codec>,
    pub col_sep: Vec<u8>,
    pub row_delim: Vec<u8>,
    pub columns: Option<Vec<ColumnItem>>,
    pub where_: Option<Expr>,
    pub max_filter_ratio: f64,
    pub strict: bool,
    pub timeout_s: u64,
    pub partial_update: bool,
    pub merge_condition: Option<String>,
    pub jsonpaths: Option<Vec<String>>,
    pub json_root: Option<String>,
    pub strip_outer_array: bool,
    pub ignore_json_size: bool,
    pub skip_header: usize,
    pub trim_space: bool,
    pub enclose: Option<u8>,
    pub escape: Option<u8>,
    pub partitions: Option<Vec<String>>,
    pub negative: bool,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn bool_header(h: &HeaderMap, name: &str, err: &str) -> Result<bool, String> {
    match header(h, name) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(err.to_string()),
    }
}

/// Decodes a separator header: `\x01`, `\\x0D0A` (hex) or literal bytes.
pub fn decode_separator(raw: &str) -> Result<Vec<u8>, String> {
    let hex = raw.strip_prefix("\\\\x").or_else(|| raw.strip_prefix("\\x"));
    let out = match hex {
        Some(h) if !h.is_empty() && h.len() % 2 == 0 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap_or(0)).collect()
        }
        _ => match raw {
            "\\t" => b"\t".to_vec(),
            "\\n" => b"\n".to_vec(),
            _ => raw.as_bytes().to_vec(),
        },
    };
    if out.is_empty() || out.len() > 50 {
        return Err(format!("column separator or row delimiter is invalid or longer than 50 bytes: {raw}"));
    }
    Ok(out)
}

/// Checks a label against StarRocks' rule: 1–128 chars of `[-_A-Za-z0-9:]`.
pub fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > 128 || !label.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:".contains(&b))
    {
        return Err(format!("Label format error. regex: ^[-_A-Za-z0-9:]{{1,128}}$, label: {label}"));
    }
    Ok(())
}

/// Parses a `columns` header: `a, b, tmp, c = tmp * 100`.
pub fn parse_columns(src: &str) -> Result<Vec<ColumnItem>, String> {
    let toks = lex(src, 1).map_err(|e| e.msg)?;
    let mut c = Cursor::new(&toks);
    let mut out = Vec::new();
    loop {
        let name = c.ident()?.to_ascii_lowercase();
        let expr = if c.eat_sym("=") { Some(parse_with(&mut c)?) } else { None };
        out.push(ColumnItem { name, expr });
        if c.at_end() {
            break;
        }
        c.expect_sym(",")?;
    }
    Ok(out)
}

impl LoadSpec {
    /// Reads and validates every load header that applies.
    pub fn from_headers(h: &HeaderMap, table: &TableDef) -> Result<LoadSpec, String> {
        let mut format = Format::Csv;
        let mut codec = None;
        if let Some(f) = header(h, "format") {
            match f.to_ascii_lowercase().as_str() {
                "csv" | "" => {}
                "json" => format = Format::Json,
                "gzip" => codec = Some(Codec::Gzip),
                "bzip2" => codec = Some(Codec::Bzip2),
                "lz4" => codec = Some(Codec::Lz4Frame),
                "deflate" => codec = Some(Codec::Deflate),
                "zstd" => codec = Some(Codec::Zstd),
                _ => return Err(format!("unknown data format, format={f}")),
            }
        }
        let comp = header(h, "compression");
        let enc = header(h, "content-encoding");
        if comp.is_some() && enc.is_some() {
            return Err("Only one of http header content-encoding and compression can be set".into());
        }
        if let Some(c) = comp.or(enc) {
            let parsed = match c.to_ascii_uppercase().as_str() {
                "GZIP" => Codec::Gzip,
                "DEFLATE" => Codec::Deflate,
                "BZIP2" => Codec::Bzip2,
                "LZ4_FRAME" | "LZ4" => Codec::Lz4Frame,
                "ZSTD" => Codec::Zstd,
                _ => return Err(format!("Unsupported compression type: {c}")),
            };
            if codec.is_some() {
                return Err("a compressed format and a compression header cannot both be set".into());
            }
            codec = Some(parsed);
        }
        let col_sep =
            header(h, "column_separator").map(decode_separator).transpose()?.unwrap_or_else(|| b"\t".to_vec());
        let row_delim = header(h, "row_delimiter").map(decode_separator).transpose()?.unwrap_or_else(|| b"\n".to_vec());
        let columns = header(h, "columns").filter(|s| !s.is_empty()).map(parse_columns).transpose()?;
        let where_ = header(h, "where").filter(|s| !s.is_empty()).map(parse_expr).transpose()?;
        let max_filter_ratio = match header(h, "max_filter_ratio") {
            None => 0.0,
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("Invalid max_filter_ratio: {v}"))?,
        };
        let strict = bool_header(h, "strict_mode", "Invalid strict mode format. Must be bool type")?;
        let timeout_s = match header(h, "timeout") {
            None => 600,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|t| (1..=259_200).contains(t))
                .ok_or_else(|| format!("Invalid timeout format: {v}. The value must be in [1, 259200]"))?,
        };
        let partial_update = bool_header(h, "partial_update", "Invalid partial update format. Must be bool type")?;
        if partial_update && table.keys != KeysType::Primary {
            return Err("Only primary key table support partial update".into());
        }
        if let Some(m) = header(h, "partial_update_mode")
            && !["row", "column", "auto"].contains(&m.to_ascii_lowercase().as_str())
        {
            return Err(format!("Invalid partial update mode: {m}"));
        }
        let merge_condition = header(h, "merge_condition").filter(|s| !s.is_empty()).map(str::to_string);
        // As the FE's `Load.checkMergeCondition` words its refusals.
        if let Some(mc) = &merge_condition {
            if table.keys != KeysType::Primary {
                return Err(format!("Conditional update only support primary key table {}", table.name));
            }
            let idx = table.column_index(mc).ok_or_else(|| {
                format!(
                    "Merge condition column {mc} does not exist. If you are doing partial update with condition update, please check condition column is in the given update columns. Otherwise please check condition column is in table {}",
                    table.name
                )
            })?;
            if table.key_columns.contains(&idx) {
                return Err(format!("Merge condition column {mc} should not be primary key!"));
            }
            if matches!(table.columns[idx].ty, ColType::Char(_) | ColType::Varchar(_) | ColType::String) {
                return Err("Merge condition column has invalid type maybe bitmap/hll/percentile/json/varchar!".into());
            }
        }
        let jsonpaths = match header(h, "jsonpaths") {
            None => None,
            Some(j) => Some(serde_json::from_str::<Vec<String>>(j).map_err(|_| format!("Invalid jsonpaths: {j}"))?),
        };
        let strip_outer_array = bool_header(h, "strip_outer_array", "Invalid strip_outer_array format")?;
        let ignore_json_size = bool_header(h, "ignore_json_size", "Invalid ignore_json_size format")?;
        let skip_header = match header(h, "skip_header") {
            None => 0,
            Some(v) => v.parse().map_err(|_| format!("Invalid skip_header: {v}"))?,
        };
        let trim_space = bool_header(h, "trim_space", "Invalid trim_space format")?;
        let first_byte = |name: &str| header(h, name).and_then(|v| v.as_bytes().first().copied());
        let parts = header(h, "partitions");
        let temp_parts = header(h, "temporary_partitions");
        if parts.is_some() && temp_parts.is_some() {
            return Err("Can not specify both partitions and temporary partitions".into());
        }
        let partitions =
            parts.or(temp_parts).map(|p| p.split(',').map(|s| s.trim().trim_matches('`').to_string()).collect());
        let negative = bool_header(h, "negative", "Invalid negative format")?;
        if let Some(v) = header(h, "exec_mem_limit")
            && v.parse::<i64>().map(|n| n <= 0).unwrap_or(true)
        {
            return Err(format!("Invalid exec_mem_limit: {v}"));
        }
        if bool_header(h, "enable_merge_commit", "Invalid enable_merge_commit format")? {
            return Err(
                "merge commit (batch write) is not supported by the emulator; rockfeed relies on label idempotency"
                    .into(),
            );
        }
        if header(h, "envelope").is_some() {
            return Err("envelope is not supported by the emulator".into());
        }
        Ok(LoadSpec {
            format,
            codec,
            col_sep,
            row_delim,
            columns,
            where_,
            max_filter_ratio,
            strict,
            timeout_s,
            partial_update,
            merge_condition,
            jsonpaths,
            json_root: header(h, "json_root").filter(|s| !s.is_empty()).map(str::to_string),
            strip_outer_array,
            ignore_json_size,
            skip_header,
            trim_space,
            enclose: first_byte("enclose"),
            escape: first_byte("escape"),
            partitions,
            negative,
        })
    }
}

/// Where a table column's value comes from.
#[derive(Debug, Clone)]
enum Assign {
    Source(usize),
    Derived(usize),
    Default(Value),
    /// Partial update: not loaded, keep the stored value.
    Keep,
}

/// The resolved column mapping of a load.
#[derive(Debug)]
pub struct Plan {
    table: Arc<TableDef>,
    /// Source column names, in body order (CSV position / JSON field / jsonpath).
    sources: Vec<String>,
    /// Table column index a source converts to directly (same name).
    source_target: Vec<Option<usize>>,
    derived: Vec<(String, Expr)>,
    assign: Vec<Assign>,
    /// Where `__op` comes from.
    op: Option<Assign>,
    partial: Option<Vec<bool>>,
    merge_condition: Option<usize>,
    /// No expressions, no where: fields convert straight to columns.
    simple: bool,
}

impl Plan {
    pub fn new(spec: &LoadSpec, table: Arc<TableDef>) -> Result<Plan, String> {
        let items: Vec<ColumnItem> = match &spec.columns {
            Some(c) => c.clone(),
            None => {
                table.columns.iter().map(|c| ColumnItem { name: c.name.to_ascii_lowercase(), expr: None }).collect()
            }
        };
        let mut sources = Vec::new();
        let mut derived = Vec::new();
        for it in &items {
            match &it.expr {
                None => sources.push(it.name.clone()),
                Some(e) => derived.push((it.name.clone(), e.clone())),
            }
        }
        let mut known: Vec<String> = sources.clone();
        for (name, e) in &derived {
            let mut refs = Vec::new();
            e.columns(&mut refs);
            if let Some(r) = refs.iter().find(|r| !known.contains(r)) {
                return Err(format!("Unknown column '{r}' in expression of column '{name}'"));
            }
            known.push(name.clone());
        }
        let pos = |name: &str| -> Option<Assign> {
            if let Some(i) = derived.iter().rposition(|(n, _)| n == name) {
                return Some(Assign::Derived(i));
            }
            sources.iter().position(|n| n == name).map(Assign::Source)
        };
        let mut assign = Vec::new();
        let mut partial = spec.partial_update.then(|| vec![false; table.columns.len()]);
        for (i, col) in table.columns.iter().enumerate() {
            let lname = col.name.to_ascii_lowercase();
            match pos(&lname) {
                Some(a) => {
                    if let Some(m) = partial.as_mut() {
                        m[i] = true;
                    }
                    assign.push(a)
                }
                None if spec.partial_update && !table.key_columns.contains(&i) => assign.push(Assign::Keep),
                None => match &col.default {
                    Some(d) => assign.push(Assign::Default(d.clone())),
                    None if col.nullable => assign.push(Assign::Default(Value::Null)),
                    None => {
                        return Err(format!("Column has no default value. column: {}", col.name));
                    }
                },
            }
        }
        if let Some(m) = &partial {
            for &k in &table.key_columns {
                if !m[k] {
                    return Err(format!(
                        "partial update must include all key columns, missing: {}",
                        table.columns[k].name
                    ));
                }
            }
        }
        let op = pos("__op");
        if op.is_some() && table.keys != KeysType::Primary {
            return Err("__op is only supported for primary key tables".into());
        }
        for name in items.iter().map(|i| &i.name) {
            if name.starts_with("__") && name != "__op" {
                return Err(format!("column name {name} is reserved"));
            }
        }
        let source_target = sources.iter().map(|s| table.column_index(s)).collect();
        let merge_condition = spec.merge_condition.as_deref().and_then(|m| table.column_index(m));
        // A partial update compares only a column it carries.
        if let (Some(m), Some(mask), Some(name)) = (merge_condition, &partial, spec.merge_condition.as_deref())
            && !mask[m]
        {
            return Err(format!(
                "Merge condition column {name} does not exist. If you are doing partial update with condition update, please check condition column is in the given update columns. Otherwise please check condition column is in table {}",
                table.name
            ));
        }
        let simple = derived.is_empty() && spec.where_.is_none() && op.is_none() && !spec.negative;
        Ok(Plan { table, sources, source_target, derived, assign, op, partial, merge_condition, simple })
    }
}

/// The outcome of parsing one body.
#[derive(Debug, Default)]
pub struct Parsed {
    pub batch: StagedBatch,
    pub counts: LoadCounts,
    /// One line per filtered row: `Error: <reason>. Row: <row>`.
    pub errors: Vec<String>,
    pub touched: Vec<TabletKey>,
}

/// Largest JSON body accepted without `ignore_json_size` (100 MB).
pub const JSON_MAX_BYTES: usize = 104_857_600;

/// Decompresses a body according to the spec's codec.
pub fn decompress(codec: Option<Codec>, body: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    let Some(codec) = codec else {
        return Ok(Cow::Borrowed(body));
    };
    let mut out = Vec::with_capacity(body.len() * 4);
    let res = match codec {
        Codec::Gzip => flate2::read::MultiGzDecoder::new(body).read_to_end(&mut out),
        Codec::Deflate => flate2::read::ZlibDecoder::new(body).read_to_end(&mut out),
        Codec::Bzip2 => bzip2::read::BzDecoder::new(body).read_to_end(&mut out),
        Codec::Lz4Frame => lz4_flex::frame::FrameDecoder::new(body).read_to_end(&mut out),
        Codec::Zstd => zstd::stream::read::Decoder::new(body).and_then(|mut d| d.read_to_end(&mut out)),
    };
    res.map_err(|e| format!("failed to decompress the body ({codec:?}): {e}"))?;
    Ok(Cow::Owned(out))
}

struct RowBuilder<'a> {
    plan: &'a Plan,
    /// The whole body, when it is valid UTF-8 (checked once, not per field).
    body_str: Option<&'a str>,
    spec: &'a LoadSpec,
    part_cache: HashMap<i64, Arc<str>>,
    /// The partition of the previous row: consecutive rows usually share it.
    last_part: Option<(i64, Arc<str>)>,
    /// Reused per-row buffer of source values.
    src_buf: Vec<Value>,
    /// Distinct (partition key, bucket) pairs the load writes to.
    touched: std::collections::HashSet<(i64, u32), FastHash>,
    out: Parsed,
}

/// A field as read from the body, before conversion.
enum Field<'a> {
    Null,
    Text(Cow<'a, [u8]>),
    Json(&'a serde_json::Value),
}

impl<'a> RowBuilder<'a> {
    /// `b` as a `&str` without re-validating, when it is a slice of the
    /// already validated body.
    fn in_body(&self, b: &[u8]) -> Option<&'a str> {
        let body = self.body_str?;
        let off = (b.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
        body.get(off..off.checked_add(b.len())?)
    }

    fn filter(&mut self, reason: String, row: &dyn Fn() -> String) {
        self.out.counts.filtered += 1;
        if self.out.errors.len() < 1000 {
            self.out.errors.push(format!("Error: {reason}. Row: {}", row()));
        }
    }

    /// Converts, maps, filters and stages one row of source fields.
    fn row(&mut self, fields: &[Field<'_>], raw: &dyn Fn() -> String) {
        self.out.counts.total += 1;
        let plan = self.plan;
        let table = &*plan.table;
        if fields.len() != plan.sources.len() {
            let reason = format!(
                "Value count does not match column count. Expect {}, but got {}",
                plan.sources.len(),
                fields.len()
            );
            return self.filter(reason, raw);
        }
        // Sources as values: typed by their target column when they have one.
        let mut src_vals = std::mem::take(&mut self.src_buf);
        src_vals.clear();
        for (i, f) in fields.iter().enumerate() {
            let v = match (f, plan.source_target[i]) {
                (Field::Null, _) => Value::Null,
                (Field::Json(serde_json::Value::Null), _) => Value::Null,
                (f, Some(t)) if plan.simple || !matches!(plan.assign[t], Assign::Derived(_)) => {
                    let col = &table.columns[t];
                    let conv = match f {
                        // Validated once with the whole body: no per-field UTF-8 check.
                        Field::Text(b) => match self.in_body(b) {
                            Some(s) => col.ty.parse_text(s),
                            None => col.ty.parse(b),
                        },
                        Field::Json(j) => col.ty.coerce(json_scalar(j)),
                        Field::Null => Ok(Value::Null),
                    };
                    match conv {
                        Ok(v) => v,
                        Err(e) if self.spec.strict => {
                            return self.filter(format!("Value is invalid for column '{}': {e}", col.name), raw);
                        }
                        Err(_) => Value::Null,
                    }
                }
                (Field::Text(b), _) => Value::Str(String::from_utf8_lossy(b).into()),
                (Field::Json(j), _) => json_scalar(j),
            };
            src_vals.push(v);
        }
        let mut derived_vals: Vec<Value> = Vec::with_capacity(plan.derived.len());
        for (_, e) in &plan.derived {
            let lookup = |name: &str| -> Option<Value> {
                if let Some(i) = plan.derived[..derived_vals.len()].iter().rposition(|(n, _)| n == name) {
                    return Some(derived_vals[i].clone());
                }
                plan.sources.iter().position(|n| n == name).map(|i| src_vals[i].clone())
            };
            match e.eval(&lookup) {
                Ok(v) => derived_vals.push(v),
                Err(msg) => return self.filter(msg, raw),
            }
        }
        let mut values: Vec<Value> = Vec::with_capacity(table.columns.len());
        for (i, a) in plan.assign.iter().enumerate() {
            let col = &table.columns[i];
            let v = match a {
                // In the simple plan each source feeds one column: move it.
                Assign::Source(s) if plan.simple => std::mem::replace(&mut src_vals[*s], Value::Null),
                Assign::Source(s) => src_vals[*s].clone(),
                Assign::Derived(d) => match col.ty.coerce(derived_vals[*d].clone()) {
                    Ok(v) => v,
                    Err(e) if self.spec.strict => {
                        return self.filter(format!("Value is invalid for column '{}': {e}", col.name), raw);
                    }
                    Err(_) => Value::Null,
                },
                Assign::Default(d) => d.clone(),
                Assign::Keep => Value::Null,
            };
            if v.is_null() && !col.nullable && !matches!(a, Assign::Keep) {
                return self.filter(format!("NULL value in non-nullable column '{}'", col.name), raw);
            }
            values.push(v);
        }
        if let Some(w) = &self.spec.where_ {
            let lookup = |name: &str| -> Option<Value> {
                if let Some(i) = table.column_index(name) {
                    return Some(values[i].clone());
                }
                plan.sources.iter().position(|n| n == name).map(|i| src_vals[i].clone())
            };
            match w.eval(&lookup) {
                Ok(v) if truth(&v) == Some(true) => {}
                Ok(_) => {
                    self.out.counts.unselected += 1;
                    return;
                }
                Err(msg) => return self.filter(msg, raw),
            }
        }
        let op = match &plan.op {
            None => RowOp::Upsert,
            Some(a) => {
                let v = match a {
                    Assign::Source(s) => &src_vals[*s],
                    Assign::Derived(d) => &derived_vals[*d],
                    _ => &Value::Null,
                };
                match v {
                    Value::Int(0) | Value::Bool(false) => RowOp::Upsert,
                    Value::Int(1) | Value::Bool(true) => RowOp::Delete,
                    Value::Str(s) if s.eq_ignore_ascii_case("upsert") || &**s == "0" => RowOp::Upsert,
                    Value::Str(s) if s.eq_ignore_ascii_case("delete") || &**s == "1" => RowOp::Delete,
                    other => {
                        return self.filter(format!("invalid __op value '{other}', expected 0/1/upsert/delete"), raw);
                    }
                }
            }
        };
        if self.spec.negative && table.keys == KeysType::Aggregate {
            for (i, col) in table.columns.iter().enumerate() {
                if col.agg == Some(AggFn::Sum) {
                    values[i] = match &values[i] {
                        Value::Int(x) => x.checked_neg().map(Value::Int).unwrap_or(Value::Null),
                        Value::Float(x) => Value::Float(-x),
                        Value::Decimal(x) => Value::Decimal(x.saturating_neg()),
                        other => other.clone(),
                    };
                }
            }
        }
        self.stage(values, op, raw);
        self.src_buf = src_vals;
    }

    /// Partitions, buckets and stages a converted row.
    fn stage(&mut self, values: Vec<Value>, op: RowOp, raw: &dyn Fn() -> String) {
        let table = &*self.plan.table;
        let pkey = match partition_key(table, &values) {
            Ok(k) => k,
            Err(msg) => return self.filter(msg, raw),
        };
        let part = match &self.last_part {
            Some((k, p)) if *k == pkey => p.clone(),
            _ => {
                let p = self.part_cache.entry(pkey).or_insert_with(|| partition_label(table, pkey).into()).clone();
                self.last_part = Some((pkey, p.clone()));
                p
            }
        };
        if let Some(allowed) = &self.spec.partitions
            && !allowed.iter().any(|p| p.eq_ignore_ascii_case(&part))
        {
            return self.filter(format!("The row is not in the specified partitions; it belongs to {part}"), raw);
        }
        let bucket = crate::starrocks::bucket::row_bucket(table, &values);
        self.out.counts.loaded += 1;
        self.touched.insert((pkey, bucket));
        self.out.batch.rows.push(StagedRow { values, op, tablet: (part, bucket) });
    }

    /// The fast lane for the common load: CSV, one-byte separators, no
    /// enclose/trim, a body that is valid UTF-8, and a simple plan (fields map
    /// to columns, no expressions, `where` or `__op`). Fields convert straight
    /// into the row; the result is the same as through [`RowBuilder::row`].
    fn csv_fast(&mut self, body: &'a str, sep: u8, delim: u8) {
        let plan = self.plan;
        let table = &*plan.table;
        let template: Vec<Value> = plan
            .assign
            .iter()
            .map(|a| match a {
                Assign::Default(d) => d.clone(),
                _ => Value::Null,
            })
            .collect();
        let must: Vec<usize> = plan
            .assign
            .iter()
            .enumerate()
            .filter(|(i, a)| !table.columns[*i].nullable && !matches!(a, Assign::Keep))
            .map(|(i, _)| i)
            .collect();
        let nsrc = plan.sources.len();
        // A trailing delimiter ends the last row; it does not start one.
        let body = body.strip_suffix(delim as char).unwrap_or(body);
        let mut starts = std::iter::once(0).chain(memchr::memchr_iter(delim, body.as_bytes()).map(|p| p + 1));
        let mut ends = memchr::memchr_iter(delim, body.as_bytes()).chain(std::iter::once(body.len()));
        if body.is_empty() {
            starts.next();
            ends.next();
        }
        for _ in 0..self.spec.skip_header {
            starts.next();
            ends.next();
        }
        let mut fields: Vec<&str> = Vec::with_capacity(nsrc + 1);
        for (a, b) in starts.zip(ends) {
            // Separators are ASCII, so every split point is a char boundary.
            let line = &body[a..b];
            fields.clear();
            let mut at = 0;
            for p in memchr::memchr_iter(sep, line.as_bytes()) {
                fields.push(&line[at..p]);
                at = p + 1;
            }
            fields.push(&line[at..]);
            self.out.counts.total += 1;
            let raw = || line.chars().take(512).collect::<String>();
            let mut values = template.clone();
            let n = fields.len();
            let mut failed = None;
            for (i, field) in fields.iter().enumerate().take(nsrc) {
                if let Some(t) = plan.source_target[i]
                    && *field != "\\N"
                {
                    match table.columns[t].ty.parse_text(field) {
                        Ok(v) => values[t] = v,
                        Err(e) if self.spec.strict => {
                            failed = Some(format!("Value is invalid for column '{}': {e}", table.columns[t].name));
                        }
                        Err(_) => {}
                    }
                }
            }
            if n != nsrc {
                let reason = format!("Value count does not match column count. Expect {nsrc}, but got {n}");
                self.filter(reason, &raw);
                continue;
            }
            if let Some(reason) = failed {
                self.filter(reason, &raw);
                continue;
            }
            if let Some(&i) = must.iter().find(|&&i| values[i].is_null()) {
                self.filter(format!("NULL value in non-nullable column '{}'", table.columns[i].name), &raw);
                continue;
            }
            self.stage(values, RowOp::Upsert, &raw);
        }
    }
}

fn json_scalar(j: &serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i as i128),
            None => match n.as_u64() {
                Some(u) => Value::Int(u as i128),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
        },
        serde_json::Value::String(s) => Value::Str(s.as_str().into()),
        other => Value::Str(other.to_string().into()),
    }
}

/// Parses a (decompressed) body into staged rows.
pub fn parse_body(spec: &LoadSpec, plan: &Plan, body: &[u8]) -> Result<Parsed, String> {
    let mut b = RowBuilder {
        plan,
        body_str: None,
        spec,
        part_cache: HashMap::new(),
        last_part: None,
        src_buf: Vec::new(),
        touched: Default::default(),
        out: Parsed::default(),
    };
    b.out.counts.bytes = body.len() as u64;
    match spec.format {
        Format::Csv => parse_csv(&mut b, body),
        Format::Json => {
            if body.len() > JSON_MAX_BYTES && !spec.ignore_json_size {
                return Err(format!(
                    "The size of this batch exceed the max size [{JSON_MAX_BYTES}] of json type data  data [ {} ]. Split the file, or use 'strip_outer_array' or set 'ignore_json_size'",
                    body.len()
                ));
            }
            parse_json(&mut b, body)?;
        }
    }
    let b_touched: Vec<TabletKey> = b.touched.iter().map(|(k, bucket)| (b.part_cache[k].clone(), *bucket)).collect();
    let mut out = b.out;
    out.batch.partial = plan.partial.clone();
    out.batch.merge_condition = plan.merge_condition;
    let mut touched: Vec<TabletKey> = b_touched;
    touched.sort();
    out.touched = touched;
    Ok(out)
}

fn parse_csv<'a>(b: &mut RowBuilder<'a>, body: &'a [u8]) {
    let spec = b.spec;
    b.body_str = std::str::from_utf8(body).ok();
    if let (Some(text), [sep], [delim], None, false, true) =
        (b.body_str, &spec.col_sep[..], &spec.row_delim[..], spec.enclose, spec.trim_space, b.plan.simple)
        && sep.is_ascii()
        && delim.is_ascii()
    {
        b.out.batch.rows.reserve(memchr::memchr_iter(*delim, body).count());
        b.csv_fast(text, *sep, *delim);
        return;
    }
    let rows = split_rows(body, &spec.row_delim, spec.enclose, spec.escape);
    b.out.batch.rows.reserve(rows.len());
    let mut fields: Vec<Field<'_>> = Vec::with_capacity(b.plan.sources.len());
    for line in rows.into_iter().skip(spec.skip_header) {
        fields.clear();
        split_fields(line, &spec.col_sep, spec.enclose, spec.escape, spec.trim_space, &mut fields);
        let raw = || String::from_utf8_lossy(&line[..line.len().min(512)]).into_owned();
        b.row(&fields, &raw);
    }
}

/// Splits a body into rows; a trailing delimiter does not make an empty row.
fn split_rows<'a>(body: &'a [u8], delim: &[u8], enclose: Option<u8>, escape: Option<u8>) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    if let (Some(q), false) = (enclose, delim.is_empty()) {
        let (mut start, mut i, mut inq) = (0, 0, false);
        while i < body.len() {
            let c = body[i];
            if Some(c) == escape && i + 1 < body.len() {
                i += 2;
                continue;
            }
            if c == q {
                inq = !inq;
            } else if !inq && body[i..].starts_with(delim) {
                out.push(&body[start..i]);
                i += delim.len();
                start = i;
                continue;
            }
            i += 1;
        }
        if start < body.len() {
            out.push(&body[start..]);
        }
        return out;
    }
    let mut start = 0;
    for pos in memchr::memmem::find_iter(body, delim) {
        if pos >= start {
            out.push(&body[start..pos]);
            start = pos + delim.len();
        }
    }
    if start < body.len() {
        out.push(&body[start..]);
    }
    out
}

fn field<'a>(raw: &'a [u8], trim: bool) -> Field<'a> {
    let raw = if trim { raw.trim_ascii() } else { raw };
    if raw == b"\\N" { Field::Null } else { Field::Text(Cow::Borrowed(raw)) }
}

fn split_fields<'a>(
    line: &'a [u8],
    sep: &[u8],
    enclose: Option<u8>,
    escape: Option<u8>,
    trim: bool,
    out: &mut Vec<Field<'a>>,
) {
    let Some(q) = enclose else {
        if sep.len() == 1 {
            let mut start = 0;
            for pos in memchr::memchr_iter(sep[0], line) {
                out.push(field(&line[start..pos], trim));
                start = pos + 1;
            }
            out.push(field(&line[start..], trim));
        } else {
            let mut start = 0;
            for pos in memchr::memmem::find_iter(line, sep) {
                if pos >= start {
                    out.push(field(&line[start..pos], trim));
                    start = pos + sep.len();
                }
            }
            out.push(field(&line[start..], trim));
        }
        return;
    };
    let mut i = 0;
    loop {
        // Optional leading spaces before an enclosed field when trimming.
        let mut j = i;
        if trim {
            while j < line.len() && line[j] == b' ' {
                j += 1;
            }
        }
        if j < line.len() && line[j] == q {
            let mut val = Vec::new();
            let mut k = j + 1;
            while k < line.len() {
                let c = line[k];
                if Some(c) == escape && k + 1 < line.len() {
                    val.push(line[k + 1]);
                    k += 2;
                    continue;
                }
                if c == q {
                    if line.get(k + 1) == Some(&q) {
                        val.push(q);
                        k += 2;
                        continue;
                    }
                    k += 1;
                    break;
                }
                val.push(c);
                k += 1;
            }
            out.push(Field::Text(Cow::Owned(val)));
            match memchr::memmem::find(&line[k..], sep) {
                Some(p) => i = k + p + sep.len(),
                None => return,
            }
        } else {
            match memchr::memmem::find(&line[i..], sep) {
                Some(p) => {
                    out.push(field(&line[i..i + p], trim));
                    i += p + sep.len();
                }
                None => {
                    out.push(field(&line[i..], trim));
                    return;
                }
            }
        }
    }
}

/// Resolves a simple JsonPath: `$`, `$.a.b`, `$.a[0]`, `$["a"]`.
fn json_path<'v>(root: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    let p = path.trim();
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut cur = root;
    let mut rest = p;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get(&r[..end])?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = r[..end].trim();
            cur = match inner.parse::<usize>() {
                Ok(i) => cur.get(i)?,
                Err(_) => cur.get(inner.trim_matches(['"', '\'']))?,
            };
            rest = &r[end + 1..];
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            cur = cur.get(&rest[..end])?;
            rest = &rest[end..];
        }
    }
    Some(cur)
}

fn parse_json(b: &mut RowBuilder<'_>, body: &[u8]) -> Result<(), String> {
    let spec = b.spec;
    let docs = serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>();
    for doc in docs {
        let doc = match doc {
            Ok(d) => d,
            Err(e) => {
                b.out.counts.total += 1;
                let reason = format!("JSON parse error: {e}");
                b.filter(reason, &|| String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned());
                break;
            }
        };
        let root = match &spec.json_root {
            Some(p) => match json_path(&doc, p) {
                Some(r) => r.clone(),
                None => {
                    b.out.counts.total += 1;
                    b.filter(format!("JSON root not found: {p}"), &|| doc.to_string());
                    continue;
                }
            },
            None => doc,
        };
        let objs: Vec<&serde_json::Value> = match (&root, spec.strip_outer_array) {
            (serde_json::Value::Array(items), true) => items.iter().collect(),
            (serde_json::Value::Array(_), false) => {
                return Err("The value is array type in json document stream, you can set strip_outer_array=true to parse each element of the array as individual rows".into());
            }
            (other, _) => vec![other],
        };
        for obj in objs {
            let raw = || obj.to_string();
            if !obj.is_object() && spec.jsonpaths.is_none() {
                b.out.counts.total += 1;
                b.filter("The value is not an object in json document".into(), &raw);
                continue;
            }
            let fields: Vec<Field<'_>> = match &spec.jsonpaths {
                Some(paths) => {
                    paths.iter().map(|p| json_path(obj, p).map(Field::Json).unwrap_or(Field::Null)).collect()
                }
                None => b
                    .plan
                    .sources
                    .iter()
                    .map(|name| {
                        let map = obj.as_object();
                        let v = map.and_then(|m| {
                            m.get(name).or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
                        });
                        v.map(Field::Json).unwrap_or(Field::Null)
                    })
                    .collect(),
            };
            b.row(&fields, &raw);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::starrocks::ddl::parse_ddl;

    fn table(ddl: &str) -> Arc<TableDef> {
        Arc::new(parse_ddl(&format!("CREATE DATABASE d; USE d; {ddl}")).unwrap().tables[0].clone())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn load(t: &Arc<TableDef>, pairs: &[(&'static str, &str)], body: &str) -> Result<Parsed, String> {
        let spec = LoadSpec::from_headers(&headers(pairs), t)?;
        let plan = Plan::new(&spec, t.clone())?;
        parse_body(&spec, &plan, body.as_bytes())
    }

    fn dup() -> Arc<TableDef> {
        table(
            "CREATE TABLE t (id INT NOT NULL, name VARCHAR(8), score INT) DUPLICATE KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 3",
        )
    }

    #[test]
    fn csv_with_separator_and_null() {
        let p = load(&dup(), &[("column_separator", ",")], "1,a,10\n2,\\N,20\n").unwrap();
        assert_eq!(p.counts.loaded, 2);
        assert_eq!(p.batch.rows[1].values, vec![Value::Int(2), Value::Null, Value::Int(20)]);
    }

    #[test]
    fn fast_lane_matches_the_general_path() {
        let t = table(
            "CREATE TABLE f (id INT NOT NULL, name VARCHAR(4), d DATETIME, x DOUBLE, y DECIMAL(6,2) DEFAULT \"1.5\")
             DUPLICATE KEY(id) PARTITION BY date_trunc('day', d) DISTRIBUTED BY HASH(id, name) BUCKETS 5",
        );
        let body = "1,ab,2024-01-01 00:00:00,1.5\n\n2,toolong,2024-01-02 03:04:05,x\n\\N,a,2024-01-01 00:00:00,1\n3,b\n4,c,bad,2\n5,é,2024-01-03 00:00:00.5,1e3\n\n";
        for strict in ["false", "true"] {
            let cols = ("columns", "id,name,d,x");
            let fast = load(&t, &[("column_separator", ","), ("strict_mode", strict), cols], body).unwrap();
            let slow = load(&t, &[("column_separator", ","), ("strict_mode", strict), cols, ("where", "1 = 1")], body)
                .unwrap();
            assert_eq!(fast.counts, slow.counts, "strict={strict}");
            assert_eq!(fast.batch.rows, slow.batch.rows, "strict={strict}");
            assert_eq!(fast.errors.len(), slow.errors.len());
            let mut ft = fast.touched.clone();
            let mut st = slow.touched.clone();
            ft.sort();
            st.sort();
            assert_eq!(ft, st);
        }
        let p = load(&t, &[("column_separator", ","), ("columns", "id,name,d,x")], "").unwrap();
        assert_eq!(p.counts.total, 0);
    }

    #[test]
    fn hex_separators_decode() {
        assert_eq!(decode_separator("\\x01").unwrap(), vec![1]);
        assert_eq!(decode_separator("\\\\x0D0A").unwrap(), b"\r\n".to_vec());
        let p = load(&dup(), &[("column_separator", "\\x01"), ("row_delimiter", "\\x0A")], "1\x01a\x0110\n").unwrap();
        assert_eq!(p.counts.loaded, 1);
    }

    #[test]
    fn bad_rows_are_filtered_with_reasons() {
        let p = load(&dup(), &[("column_separator", ",")], "1,a,10\nx,b,1\n3,c\n\\N,d,4\n5,toolongname,1\n").unwrap();
        assert_eq!((p.counts.total, p.counts.loaded, p.counts.filtered), (5, 2, 3));
        assert!(p.errors[0].contains("non-nullable column 'id'"), "{:?}", p.errors);
        assert!(p.errors[1].contains("Value count does not match column count. Expect 3, but got 2"));
        // Non-strict: the too-long string became NULL in a nullable column.
        assert_eq!(p.batch.rows[1].values[1], Value::Null);
        let strict = load(&dup(), &[("column_separator", ","), ("strict_mode", "true")], "5,toolongname,1\n").unwrap();
        assert_eq!(strict.counts.filtered, 1);
    }

    #[test]
    fn columns_mapping_with_expressions_and_where() {
        let p = load(
            &dup(),
            &[
                ("column_separator", ","),
                ("columns", "name, tmp, id = tmp * 100, score = tmp + 1"),
                ("where", "score > 2"),
            ],
            "a,1\nb,2\n",
        )
        .unwrap();
        assert_eq!((p.counts.loaded, p.counts.unselected), (1, 1));
        assert_eq!(p.batch.rows[0].values, vec![Value::Int(200), Value::Str("b".into()), Value::Int(3)]);
    }

    #[test]
    fn json_with_paths_and_outer_array() {
        let t = table("CREATE TABLE j (id INT, city VARCHAR(16)) DUPLICATE KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1");
        let body = r#"{"RECORDS":[{"name":"Beijing","code":2},{"name":"Shenzhen","code":3}]}"#;
        let p = load(
            &t,
            &[
                ("format", "json"),
                ("jsonpaths", "[\"$.name\",\"$.code\"]"),
                ("columns", "city,tmp_id, id = tmp_id * 100"),
                ("json_root", "$.RECORDS"),
                ("strip_outer_array", "true"),
            ],
            body,
        )
        .unwrap();
        assert_eq!(p.counts.loaded, 2);
        assert_eq!(p.batch.rows[1].values, vec![Value::Int(300), Value::Str("Shenzhen".into())]);
        let err = load(&t, &[("format", "json")], "[{\"id\":1}]").unwrap_err();
        assert!(err.contains("strip_outer_array"));
        let p = load(&t, &[("format", "json")], "{\"id\":1,\"city\":\"x\"} {\"ID\":2}").unwrap();
        assert_eq!(p.counts.loaded, 2, "a document stream, field names case-insensitive");
    }

    #[test]
    fn header_validation_matches_starrocks_messages() {
        let t = dup();
        let e = |h: &[(&'static str, &str)]| LoadSpec::from_headers(&headers(h), &t).unwrap_err();
        assert_eq!(e(&[("format", "xml")]), "unknown data format, format=xml");
        assert_eq!(
            e(&[("compression", "gzip"), ("content-encoding", "gzip")]),
            "Only one of http header content-encoding and compression can be set"
        );
        assert_eq!(e(&[("strict_mode", "yes")]), "Invalid strict mode format. Must be bool type");
        assert_eq!(e(&[("partial_update", "true")]), "Only primary key table support partial update");
        assert!(e(&[("timeout", "0")]).contains("Invalid timeout"));
        assert!(check_label("ok-label_1:2").is_ok());
        assert!(check_label("bad label").is_err());
    }

    #[test]
    fn enclose_and_escape() {
        let p = load(
            &dup(),
            &[("column_separator", ","), ("enclose", "\""), ("escape", "\\")],
            "1,\"a,b\",2\n2,\"x\\\"y\",3\n",
        )
        .unwrap();
        assert_eq!(p.batch.rows[0].values[1], Value::Str("a,b".into()));
        assert_eq!(p.batch.rows[1].values[1], Value::Str("x\"y".into()));
    }

    #[test]
    fn compressed_bodies_decode() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"1\ta\t2\n").unwrap();
        let body = gz.finish().unwrap();
        assert_eq!(&*decompress(Some(Codec::Gzip), &body).unwrap(), b"1\ta\t2\n");
        let lz = {
            let mut w = lz4_flex::frame::FrameEncoder::new(Vec::new());
            w.write_all(b"x").unwrap();
            w.finish().unwrap()
        };
        assert_eq!(&*decompress(Some(Codec::Lz4Frame), &lz).unwrap(), b"x");
        let z = zstd::encode_all(&b"y"[..], 1).unwrap();
        assert_eq!(&*decompress(Some(Codec::Zstd), &z).unwrap(), b"y");
        assert!(decompress(Some(Codec::Gzip), b"not gzip").is_err());
    }

    /// Deterministic pseudo-random garbage: no header, expression or body
    /// may panic the emulator; each must become a plan error or filtered rows.
    #[test]
    fn garbage_never_panics() {
        let t = table(
            "CREATE TABLE g (k LARGEINT NOT NULL, d DATE, ts DATETIME, s VARCHAR(4), x DECIMAL(5,2), b BOOLEAN, f FLOAT MAX, v BIGINT SUM)
             AGGREGATE KEY(k, d, ts, s, x, b) DISTRIBUTED BY HASH(k, s, d, ts, x) BUCKETS 7",
        );
        let alphabet: &[&[u8]] = &[
            b"1",
            b"-",
            b"9",
            b"\\N",
            b",",
            b"\n",
            b"\t",
            b"\"",
            b"'",
            b"e",
            b"9999-12-31",
            b"0000-00-00",
            b"2024-02-30",
            b" 23:59:60",
            b".",
            b"170141183460469231731687303715884105727",
            b"-170141183460469231731687303715884105728",
            b"NaN",
            b"inf",
            b"\xff\xfe",
            b"{",
            b"}",
            b"[",
            b"]",
            b":",
            b"\"k\"",
            b"true",
            b"null",
            b"\x01",
            b"1e309",
        ];
        let exprs = [
            "k * 100",
            "-k",
            "abs(k)",
            "from_unixtime(k)",
            "str_to_date(s, '%Y%m')",
            "k / 0",
            "k % 0",
            "substr(s, -99, 99)",
            "cast(s AS DATE)",
            "concat(k, s)",
            "round(k, 400)",
            "k IN (1, NULL)",
            "s LIKE '%%_'",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut parsed_rows, mut filtered_rows) = (0, 0);
        for round in 0..400 {
            let mut body = Vec::new();
            for _ in 0..rnd(60) {
                body.extend_from_slice(alphabet[rnd(alphabet.len())]);
            }
            let text = String::from_utf8_lossy(&body).into_owned();
            let e = exprs[round % exprs.len()];
            let derived = format!("k,d,ts,s,x,b,f,tmp,v = {e}");
            let mut hs: Vec<(&'static str, &str)> = vec![("column_separator", ",")];
            match round % 4 {
                0 => hs.push(("format", "json")),
                1 => hs.push(("columns", &derived)),
                2 => hs.extend([("strict_mode", "true"), ("where", "k > 0 AND s <> 'a'")]),
                _ => hs.extend([("enclose", "\""), ("escape", "\\"), ("negative", "true")]),
            }
            if round % 8 == 5 {
                hs.push(("strip_outer_array", "true"));
                hs[1] = ("format", "json");
            }
            // Either a clean error or counted rows; a panic fails the test.
            if let Ok(p) = load(&t, &hs, &text) {
                let c = &p.counts;
                assert_eq!(c.total, c.loaded + c.filtered + c.unselected, "{text:?} {hs:?}");
                parsed_rows += c.total;
                filtered_rows += c.filtered;
            }
            let _ = parse_expr(&text);
            let _ = parse_columns(&text);
            let _ = crate::starrocks::ddl::parse_ddl(&text);
        }
        assert!(
            parsed_rows > 500 && filtered_rows > 100,
            "the garbage reached row parsing: {parsed_rows} rows, {filtered_rows} filtered"
        );
    }

    #[test]
    fn primary_key_op_column() {
        let t = table("CREATE TABLE p (id INT NOT NULL, v INT) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1");
        let p = load(&t, &[("column_separator", ","), ("columns", "id,v,__op")], "1,2,0\n2,3,1\n3,3,delete\n4,4,7\n")
            .unwrap();
        let ops: Vec<_> = p.batch.rows.iter().map(|r| r.op).collect();
        assert_eq!(ops, vec![RowOp::Upsert, RowOp::Delete, RowOp::Delete]);
        assert_eq!(p.counts.filtered, 1);
        let all = load(&t, &[("column_separator", ","), ("columns", "id,v,__op='delete'")], "1,2\n").unwrap();
        assert_eq!(all.batch.rows[0].op, RowOp::Delete);
        let dup_err = load(&dup(), &[("columns", "id,name,score,__op")], "").unwrap_err();
        assert!(dup_err.contains("primary key"));
    }
}
