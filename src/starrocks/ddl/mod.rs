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
//!
//! Files: this one holds the model (and `SHOW CREATE TABLE` text);
//! `parse.rs` the statement parser, `partition.rs` the partition clauses.

use super::types::{ColType, Value};

mod parse;
mod partition;

pub use parse::{parse_ddl, parse_type};
pub use partition::add_units;

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
