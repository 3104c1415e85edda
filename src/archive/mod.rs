//! The raw archive (DESIGN.md §5): every reading, unaggregated, as Parquet
//! in a Hive layout on `object_store`, for offline Hive/HDFS use and as the
//! audit trail behind the StarRocks numbers.
//!
//! This first part is the file format and the layout:
//! - [`RawRows`] collects readings column-wise, with the strings (vin,
//!   metric, source, dims) interned per file.
//! - [`encode`] sorts them by (vin, metric, ts) and writes one Parquet file
//!   (zstd, dictionary-encoded strings, page statistics, row groups of a
//!   configurable size, the sort order recorded in the footer).
//! - [`layout::file_path`] names it
//!   `{table}/dt=YYYY-MM-DD/hour=HH/part-{shard}-{first_epoch}-{last_epoch}.parquet`.
//! - [`publish`] puts it through `object_store`. A put is visible only once
//!   complete: the local store stages and renames; S3 completes one upload.
//!
//! Spooling, rolling and the epoch protocol build on these.

pub mod layout;
pub mod parquet;
pub mod roll;

pub use self::parquet::{ArchiveFormat, Schema, encode};

use std::collections::HashMap;

use compact_str::CompactString;

/// How a reading's value was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Number,
    /// A boolean, stored as 0/1.
    Bool,
}

impl ValueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueKind::Number => "number",
            ValueKind::Bool => "bool",
        }
    }
}

/// Interned strings of one file: id → string, string → id.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    pub values: Vec<CompactString>,
    index: HashMap<CompactString, u32>,
}

impl Interner {
    pub fn id(&mut self, s: &str) -> u32 {
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        let i = self.values.len() as u32;
        self.values.push(s.into());
        self.index.insert(s.into(), i);
        i
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Readings of one future file, column-wise. Strings are interned ids;
/// `dims[d]` holds the id of dimension d's value (`None`: NULL).
#[derive(Debug, Default, Clone)]
pub struct RawRows {
    pub vin: Vec<u32>,
    pub ts_ms: Vec<i64>,
    pub seq: Vec<Option<i64>>,
    pub metric: Vec<u32>,
    pub value: Vec<f64>,
    pub kind: Vec<ValueKind>,
    pub received_ms: Vec<i64>,
    pub source: Vec<u32>,
    pub dims: Vec<Vec<Option<u32>>>,
    pub vins: Interner,
    pub metrics: Interner,
    pub sources: Interner,
    pub dim_values: Interner,
}

/// One reading, for [`RawRows::push`].
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a> {
    pub vin: &'a str,
    pub ts_ms: i64,
    pub seq: Option<i64>,
    pub metric: &'a str,
    pub value: f64,
    pub kind: ValueKind,
    pub received_ms: i64,
    pub source: &'a str,
}

impl RawRows {
    /// Rows with `ndims` dimension columns.
    pub fn new(ndims: usize) -> Self {
        RawRows { dims: vec![Vec::new(); ndims], ..Default::default() }
    }

    pub fn len(&self) -> usize {
        self.ts_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts_ms.is_empty()
    }

    /// Appends one reading; `dims` has one entry per dimension column.
    pub fn push(&mut self, r: Raw<'_>, dims: &[Option<&str>]) {
        self.vin.push(self.vins.id(r.vin));
        self.ts_ms.push(r.ts_ms);
        self.seq.push(r.seq);
        self.metric.push(self.metrics.id(r.metric));
        self.value.push(r.value);
        self.kind.push(r.kind);
        self.received_ms.push(r.received_ms);
        self.source.push(self.sources.id(r.source));
        for (d, col) in self.dims.iter_mut().enumerate() {
            let v = dims.get(d).copied().flatten();
            col.push(v.map(|v| self.dim_values.id(v)));
        }
    }
}

/// Puts an encoded file at `path` (visible only when complete).
pub async fn publish(
    store: &dyn object_store::ObjectStore,
    path: &str,
    bytes: bytes::Bytes,
) -> Result<(), object_store::Error> {
    use object_store::ObjectStoreExt;
    store.put(&object_store::path::Path::from(path), bytes.into()).await.map(|_| ())
}
