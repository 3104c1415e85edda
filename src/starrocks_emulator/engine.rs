//! The table engine: visible rows per table, tablets and their versions.
//!
//! A load's rows are *staged* (typed, partitioned, bucketed) while its
//! transaction is open and applied only when the transaction becomes VISIBLE,
//! one version per touched tablet, in commit order. Merge semantics per model:
//! - DUPLICATE: append;
//! - AGGREGATE: rows with equal keys merge with each value column's function
//!   (SUM/MIN/MAX ignore NULL inputs, REPLACE takes the newest,
//!   REPLACE_IF_NOT_NULL the newest non-NULL);
//! - UNIQUE: the newest row per key;
//! - PRIMARY KEY: `__op` upsert/delete, partial update of the loaded columns,
//!   and `merge_condition` (a row applies only when its condition value is
//!   ≥ the one stored before its batch; NULL is the smallest).
//!
//! Versions: each publish adds one version to each tablet it touched.
//! Compaction removes `compaction_per_sec` versions per tablet per second
//! (never below one); a load that would push a tablet past `max_versions`
//! fails with StarRocks' `too many versions` error, so the error arises from
//! genuine load frequency.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::starrocks::ddl::{AggFn, KeysType, Partitioning, TableDef, TruncUnit};
use crate::starrocks::text::{civil_from_days, format_date};
use crate::starrocks::types::{MICROS_PER_DAY, Value};
pub use crate::util::hash::FastHash;

/// A row-level operation for Primary Key tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RowOp {
    Upsert,
    Delete,
}

/// One typed row ready to apply; `values` is in table column order.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedRow {
    pub values: Vec<Value>,
    pub op: RowOp,
    pub tablet: TabletKey,
}

/// The rows of one load request (a stream load, or one `load` of a txn).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StagedBatch {
    pub rows: Vec<StagedRow>,
    /// Partial update: which columns the load carries (Primary Key only).
    pub partial: Option<Vec<bool>>,
    /// `merge_condition` column index (Primary Key only).
    pub merge_condition: Option<usize>,
}

/// (partition name, bucket index).
pub type TabletKey = (Arc<str>, u32);

#[derive(Debug, Clone, serde::Serialize)]
pub struct TabletInfo {
    pub id: i64,
    pub partition: String,
    pub bucket: u32,
    /// Versions ever published to this tablet.
    pub versions_total: u64,
    /// Versions not yet compacted away.
    pub versions_live: f64,
    #[serde(skip)]
    pub last_compact_ms: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct VersionPolicy {
    pub max_versions: u64,
    pub compaction_per_sec: f64,
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy { max_versions: 1000, compaction_per_sec: 10.0 }
    }
}

/// Stored rows of one table.
#[derive(Debug)]
enum Rows {
    Dup(Vec<Vec<Value>>),
    /// Key columns → value columns.
    Keyed(HashMap<Vec<Value>, Vec<Value>, FastHash>),
}

#[derive(Debug)]
pub struct Table {
    pub def: Arc<TableDef>,
    rows: Rows,
    pub tablets: BTreeMap<(String, u32), TabletInfo>,
}

impl Table {
    pub fn new(def: Arc<TableDef>) -> Self {
        let rows =
            if def.keys == KeysType::Duplicate { Rows::Dup(Vec::new()) } else { Rows::Keyed(HashMap::default()) };
        Table { def, rows, tablets: BTreeMap::new() }
    }

    /// Name of the partition a typed row belongs to, or why none fits.
    pub fn partition_of(&self, row: &[Value]) -> Result<Arc<str>, String> {
        Ok(partition_label(&self.def, partition_key(&self.def, row)?).into())
    }

    /// Bucket of a typed row (CRC-32 chain of the distribution columns).
    pub fn bucket_of(&self, row: &[Value]) -> u32 {
        crate::starrocks::bucket::row_bucket(&self.def, row)
    }

    /// Fails with StarRocks' message when a tablet has no room for one more version.
    pub fn check_versions(
        &mut self,
        touched: &[TabletKey],
        policy: &VersionPolicy,
        now: u64,
        next_tablet_id: &mut i64,
    ) -> Result<(), String> {
        for key in touched {
            let t = self.tablet(key, now, next_tablet_id);
            compact(t, policy, now);
            let live = t.versions_live.ceil() as u64;
            if live + 1 > policy.max_versions {
                return Err(format!(
                    "Failed to load data into tablet {}, because of too many versions, current/limit: {}/{}. You can reduce the loading job concurrency, or increase loading data batch size. If you are loading data with Routine Load, you can increase FE configs routine_load_task_consume_second and max_routine_load_batch_size,",
                    t.id,
                    live + 1,
                    policy.max_versions
                ));
            }
        }
        Ok(())
    }

    fn tablet(&mut self, key: &TabletKey, now: u64, next_id: &mut i64) -> &mut TabletInfo {
        self.tablets.entry((key.0.to_string(), key.1)).or_insert_with(|| {
            *next_id += 1;
            TabletInfo {
                id: *next_id,
                partition: key.0.to_string(),
                bucket: key.1,
                versions_total: 1,
                versions_live: 1.0,
                last_compact_ms: now,
            }
        })
    }

    /// Applies one published transaction's batches as one new version.
    pub fn apply(&mut self, batches: Vec<StagedBatch>, policy: &VersionPolicy, now: u64, next_tablet_id: &mut i64) {
        let mut touched: Vec<TabletKey> =
            batches.iter().flat_map(|b| b.rows.iter().map(|r| r.tablet.clone())).collect();
        touched.sort();
        touched.dedup();
        for key in &touched {
            let t = self.tablet(key, now, next_tablet_id);
            compact(t, policy, now);
            t.versions_total += 1;
            t.versions_live += 1.0;
        }
        let def = self.def.clone();
        for b in batches {
            let (partial, mc) = (b.partial, b.merge_condition);
            // A conditional update compares each row with the value stored
            // before its batch, as the BE's `_do_update_with_condition`
            // reads the old condition values of a whole segment from the
            // primary index before it upserts any of its rows.
            let before = mc.map(|m| self.condition_values(&def, &b.rows, m));
            for r in b.rows {
                self.apply_row(&def, r, partial.as_deref(), mc.zip(before.as_ref()));
            }
        }
    }

    /// The stored condition column (`mc`) of every key `rows` touch.
    fn condition_values(&self, def: &TableDef, rows: &[StagedRow], mc: usize) -> HashMap<Vec<Value>, Value> {
        let nkeys = def.key_columns.len();
        let Rows::Keyed(map) = &self.rows else { return HashMap::new() };
        rows.iter()
            .filter_map(|r| {
                let key = &r.values[..nkeys];
                map.get(key).map(|old| (key.to_vec(), old[mc - nkeys].clone()))
            })
            .collect()
    }

    fn apply_row(
        &mut self,
        def: &TableDef,
        r: StagedRow,
        partial: Option<&[bool]>,
        merge_condition: Option<(usize, &HashMap<Vec<Value>, Value>)>,
    ) {
        let nkeys = def.key_columns.len();
        let map = match &mut self.rows {
            Rows::Dup(v) => return v.push(r.values),
            Rows::Keyed(map) => map,
        };
        let mut key = r.values;
        let vals = key.split_off(nkeys);
        match def.keys {
            KeysType::Aggregate => match map.get_mut(&key) {
                None => {
                    map.insert(key, vals);
                }
                Some(old) => {
                    for ((slot, col), new) in old.iter_mut().zip(&def.columns[nkeys..]).zip(&vals) {
                        let agg = col.agg.unwrap_or(AggFn::Replace);
                        *slot = merge(agg, std::mem::replace(slot, Value::Null), new);
                    }
                }
            },
            KeysType::Unique => {
                map.insert(key, vals);
            }
            KeysType::Primary => {
                if r.op == RowOp::Delete {
                    map.remove(&key);
                    return;
                }
                // Applies only when new >= stored (NULL is the smallest:
                // the BE compares with `compare_at(.., nan_direction_hint = -1)`).
                if let Some((mc, before)) = merge_condition
                    && before.get(&key).is_some_and(|stored| vals[mc - nkeys] < *stored)
                {
                    return;
                }
                match map.get_mut(&key) {
                    Some(old) => match partial {
                        Some(mask) => {
                            for ((slot, new), keep) in old.iter_mut().zip(vals).zip(&mask[nkeys..]) {
                                if *keep {
                                    *slot = new;
                                }
                            }
                        }
                        None => *old = vals,
                    },
                    None => {
                        map.insert(key, vals);
                    }
                }
            }
            KeysType::Duplicate => unreachable!("duplicate tables store Rows::Dup"),
        }
    }

    /// Visible rows (full, in table column order): in key order for keyed
    /// tables, in load order for duplicate tables.
    pub fn rows(&self) -> Vec<Vec<Value>> {
        match &self.rows {
            Rows::Dup(v) => v.clone(),
            Rows::Keyed(m) => {
                let mut out: Vec<Vec<Value>> = m.iter().map(|(k, v)| k.iter().chain(v).cloned().collect()).collect();
                out.sort();
                out
            }
        }
    }

    pub fn row_count(&self) -> usize {
        match &self.rows {
            Rows::Dup(v) => v.len(),
            Rows::Keyed(m) => m.len(),
        }
    }
}

fn compact(t: &mut TabletInfo, policy: &VersionPolicy, now: u64) {
    let elapsed = now.saturating_sub(t.last_compact_ms) as f64 / 1000.0;
    t.versions_live = (t.versions_live - elapsed * policy.compaction_per_sec).max(1.0);
    t.last_compact_ms = now;
}

/// Merges a new value into a stored one with an aggregate function.
pub fn merge(agg: AggFn, old: Value, new: &Value) -> Value {
    match (agg, old, new) {
        (AggFn::Replace, _, n) => n.clone(),
        (AggFn::ReplaceIfNotNull, o, Value::Null) => o,
        (AggFn::ReplaceIfNotNull, _, n) => n.clone(),
        (_, o, Value::Null) => o,
        (_, Value::Null, n) => n.clone(),
        (AggFn::Sum, Value::Int(a), Value::Int(b)) => Value::Int(a.saturating_add(*b)),
        (AggFn::Sum, Value::Decimal(a), Value::Decimal(b)) => Value::Decimal(a.saturating_add(*b)),
        (AggFn::Sum, Value::Float(a), Value::Float(b)) => Value::Float(a + b),
        (AggFn::Sum, o, n) => Value::Float(o.as_f64().unwrap_or(0.0) + n.as_f64().unwrap_or(0.0)),
        (AggFn::Min, o, n) => {
            if *n < o {
                n.clone()
            } else {
                o
            }
        }
        (AggFn::Max, o, n) => {
            if *n > o {
                n.clone()
            } else {
                o
            }
        }
    }
}

/// A cheap identity of the partition a row falls in: the truncated time unit
/// for expression partitioning, the range index for RANGE, 0 otherwise.
pub fn partition_key(def: &TableDef, row: &[Value]) -> Result<i64, String> {
    match &def.partitioning {
        Partitioning::None => Ok(0),
        Partitioning::DateTrunc { unit, column } => {
            let micros = match &row[*column] {
                Value::Date(d) => *d as i64 * MICROS_PER_DAY,
                Value::DateTime(t) => *t,
                v => {
                    return Err(format!("The partition column could not be aligned to any partition: {v}"));
                }
            };
            let day = micros.div_euclid(MICROS_PER_DAY);
            Ok(match unit {
                TruncUnit::Hour => micros.div_euclid(3_600_000_000),
                TruncUnit::Day => day,
                TruncUnit::Month | TruncUnit::Year => {
                    let (y, m, _) = civil_from_days(day as i32);
                    if *unit == TruncUnit::Year { y as i64 } else { y as i64 * 12 + m as i64 - 1 }
                }
            })
        }
        Partitioning::Range { column, partitions } => {
            let v = &row[*column];
            partitions
                .iter()
                .position(|p| p.lower.as_ref().is_none_or(|lo| v >= lo) && p.upper.as_ref().is_none_or(|hi| v < hi))
                .map(|i| i as i64)
                .ok_or_else(|| {
                    let shown = match v {
                        Value::Date(d) => format_date(*d),
                        other => other.to_string(),
                    };
                    format!("The row is out of partition ranges. Please add a new partition. value: {shown}")
                })
        }
    }
}

/// The partition's name for a key from [`partition_key`] (`p20240506` for
/// day partitions, as StarRocks names automatically created partitions).
pub fn partition_label(def: &TableDef, key: i64) -> String {
    match &def.partitioning {
        Partitioning::None => def.name.clone(),
        Partitioning::DateTrunc { unit, .. } => match unit {
            TruncUnit::Year => format!("p{key:04}"),
            TruncUnit::Month => format!("p{:04}{:02}", key.div_euclid(12), key.rem_euclid(12) + 1),
            TruncUnit::Day => format!("p{}", format_date(key as i32).replace('-', "")),
            TruncUnit::Hour => {
                let day = key.div_euclid(24) as i32;
                format!("p{}{:02}", format_date(day).replace('-', ""), key.rem_euclid(24))
            }
        },
        Partitioning::Range { partitions, .. } => partitions[key as usize].name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::starrocks::ddl::parse_ddl;

    fn table(ddl: &str) -> Table {
        let cat = parse_ddl(&format!("CREATE DATABASE d; USE d; {ddl}")).unwrap();
        Table::new(Arc::new(cat.tables[0].clone()))
    }

    fn stage(t: &mut Table, rows: Vec<Vec<Value>>, op: RowOp) -> StagedBatch {
        let rows = rows
            .into_iter()
            .map(|values| {
                let p = t.partition_of(&values).unwrap();
                let b = t.bucket_of(&values);
                StagedRow { values, op, tablet: (p, b) }
            })
            .collect();
        StagedBatch { rows, partial: None, merge_condition: None }
    }

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    #[test]
    fn aggregate_functions_merge_per_version() {
        let mut t = table(
            "CREATE TABLE a (k VARCHAR(8), c BIGINT SUM, lo DOUBLE MIN, hi DOUBLE MAX, r INT REPLACE, rn INT REPLACE_IF_NOT_NULL)
             AGGREGATE KEY(k) DISTRIBUTED BY HASH(k) BUCKETS 4",
        );
        let mut id = 0;
        let p = VersionPolicy::default();
        let v1 = stage(
            &mut t,
            vec![vec![s("a"), Value::Int(1), Value::Float(5.0), Value::Float(5.0), Value::Int(1), Value::Int(1)]],
            RowOp::Upsert,
        );
        let v2 = stage(
            &mut t,
            vec![
                vec![s("a"), Value::Int(2), Value::Float(3.0), Value::Float(4.0), Value::Int(2), Value::Null],
                vec![s("a"), Value::Null, Value::Null, Value::Float(9.0), Value::Null, Value::Int(7)],
            ],
            RowOp::Upsert,
        );
        t.apply(vec![v1], &p, 0, &mut id);
        t.apply(vec![v2], &p, 0, &mut id);
        let rows = t.rows();
        assert_eq!(
            rows,
            vec![vec![s("a"), Value::Int(3), Value::Float(3.0), Value::Float(9.0), Value::Null, Value::Int(7)]]
        );
    }

    #[test]
    fn primary_key_upsert_delete_partial_and_condition() {
        let mut t = table(
            "CREATE TABLE p (id INT NOT NULL, name VARCHAR(10), score INT) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 2",
        );
        let (mut id, p) = (0, VersionPolicy::default());
        let b = stage(
            &mut t,
            vec![vec![Value::Int(1), s("a"), Value::Int(10)], vec![Value::Int(2), s("b"), Value::Int(20)]],
            RowOp::Upsert,
        );
        t.apply(vec![b], &p, 0, &mut id);
        let mut partial = stage(&mut t, vec![vec![Value::Int(1), Value::Null, Value::Int(11)]], RowOp::Upsert);
        partial.partial = Some(vec![true, false, true]);
        t.apply(vec![partial], &p, 0, &mut id);
        let del = stage(&mut t, vec![vec![Value::Int(2), Value::Null, Value::Null]], RowOp::Delete);
        t.apply(vec![del], &p, 0, &mut id);
        let mut cond = stage(&mut t, vec![vec![Value::Int(1), s("z"), Value::Int(5)]], RowOp::Upsert);
        cond.merge_condition = Some(2);
        t.apply(vec![cond], &p, 0, &mut id);
        let rows = t.rows();
        assert_eq!(rows, vec![vec![Value::Int(1), s("a"), Value::Int(11)]]);
        // Equal applies; each row of a batch compares with the value stored
        // before the batch, and of those that pass the last one stays.
        let mut cond = stage(
            &mut t,
            vec![
                vec![Value::Int(1), s("eq"), Value::Int(11)],
                vec![Value::Int(1), s("old"), Value::Int(10)],
                vec![Value::Int(3), s("new"), Value::Null],
            ],
            RowOp::Upsert,
        );
        cond.merge_condition = Some(2);
        t.apply(vec![cond], &p, 0, &mut id);
        assert_eq!(
            t.rows(),
            vec![vec![Value::Int(1), s("eq"), Value::Int(11)], vec![Value::Int(3), s("new"), Value::Null]]
        );
        // A stored NULL is the smallest: anything replaces it.
        let mut cond = stage(&mut t, vec![vec![Value::Int(3), s("num"), Value::Int(-5)]], RowOp::Upsert);
        cond.merge_condition = Some(2);
        t.apply(vec![cond], &p, 0, &mut id);
        assert_eq!(t.rows()[1], vec![Value::Int(3), s("num"), Value::Int(-5)]);
    }

    #[test]
    fn too_many_versions_arises_from_load_frequency() {
        let mut t = table("CREATE TABLE d (k INT) DUPLICATE KEY(k) DISTRIBUTED BY HASH(k) BUCKETS 1");
        let policy = VersionPolicy { max_versions: 3, compaction_per_sec: 1.0 };
        let mut id = 0;
        let b = stage(&mut t, vec![vec![Value::Int(1)]], RowOp::Upsert);
        let keys = vec![b.rows[0].tablet.clone()];
        for _ in 0..2 {
            t.check_versions(&keys, &policy, 0, &mut id).unwrap();
            t.apply(vec![b.clone()], &policy, 0, &mut id);
        }
        let err = t.check_versions(&keys, &policy, 0, &mut id).unwrap_err();
        assert!(err.contains("too many versions, current/limit: 4/3"), "{err}");
        // Two seconds of compaction make room again.
        t.check_versions(&keys, &policy, 2_000, &mut id).unwrap();
    }

    #[test]
    fn rows_outside_range_partitions_are_rejected() {
        let t = table(
            "CREATE TABLE r (d DATE, v INT) DUPLICATE KEY(d) PARTITION BY RANGE(d) (PARTITION p1 VALUES LESS THAN (\"2024-01-01\"))
             DISTRIBUTED BY HASH(d) BUCKETS 1",
        );
        let ok = t.partition_of(&[Value::Date(0), Value::Int(1)]).unwrap();
        assert_eq!(&*ok, "p1");
        let err = t.partition_of(&[Value::Date(20_000), Value::Int(1)]).unwrap_err();
        assert!(err.contains("out of partition ranges"));
    }

    #[test]
    fn date_trunc_partitions_by_day() {
        let t = table(
            "CREATE TABLE e (ts DATETIME, v INT) DUPLICATE KEY(ts) PARTITION BY date_trunc('day', ts) DISTRIBUTED BY HASH(ts) BUCKETS 1",
        );
        let ts = crate::starrocks::text::parse_datetime("2024-05-06 23:59:59").unwrap();
        assert_eq!(&*t.partition_of(&[Value::DateTime(ts), Value::Int(1)]).unwrap(), "p20240506");
    }
}
