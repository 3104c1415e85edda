//! The raw archive (DESIGN.md §5): every reading, unaggregated, as Parquet
//! in a Hive layout on `object_store`, for offline Hive/HDFS use and as the
//! audit trail behind the StarRocks numbers.
//!
//! - [`RawRows`]: readings column-wise, strings interned (here: the
//!   binary block form of the spool, the sort order, row copies).
//! - [`parquet`]: the file format; [`layout`]: the Hive names.
//! - [`spool`], [`merge`], [`roll`]: raw rows on local disk per epoch,
//!   merged into a file when the roll policy cuts it.
//! - [`store`]: publishing through `object_store` (local, S3, HDFS).
//! - [`writer`]: the spooler and uploader threads and the epoch protocol.
//! - [`hive`], [`read`], [`config`]: `ddl --hive`, reading back, `[archive]`.

pub mod config;
pub mod hive;
pub mod layout;
pub mod merge;
pub mod parquet;
pub mod read;
pub mod roll;
pub mod spool;
pub mod store;
pub mod writer;

pub use self::config::ArchiveConfig;
pub use self::writer::{Archive, ArchiveSample};

pub use self::parquet::{ArchiveFormat, Schema, encode};

use std::collections::HashMap;

use compact_str::CompactString;

use crate::util::hash::FastHash;

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
///
/// The string → id index covers `values[..indexed]`: an interner read back
/// from a spool block, which is only read by id, never builds it.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    pub values: Vec<CompactString>,
    index: HashMap<CompactString, u32, FastHash>,
    indexed: usize,
}

impl Interner {
    /// An interner holding `values` (ids in that order, each distinct).
    pub fn from_values(values: Vec<CompactString>) -> Interner {
        Interner { values, index: HashMap::default(), indexed: 0 }
    }

    pub fn get(&self, id: u32) -> &str {
        &self.values[id as usize]
    }

    /// The id of `s`, if interned.
    pub fn find(&self, s: &str) -> Option<u32> {
        self.index.get(s).copied().or_else(|| {
            let tail = self.values[self.indexed..].iter().position(|v| v == s)?;
            Some((self.indexed + tail) as u32)
        })
    }

    pub fn id(&mut self, s: &str) -> u32 {
        if self.indexed < self.values.len() {
            for (i, v) in self.values.iter().enumerate().skip(self.indexed) {
                self.index.entry(v.clone()).or_insert(i as u32);
            }
            self.indexed = self.values.len();
        }
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        let i = self.values.len() as u32;
        self.values.push(s.into());
        self.index.insert(s.into(), i);
        self.indexed = self.values.len();
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

    /// Room for `n` more rows.
    pub fn reserve(&mut self, n: usize) {
        self.vin.reserve(n);
        self.ts_ms.reserve(n);
        self.seq.reserve(n);
        self.metric.reserve(n);
        self.value.reserve(n);
        self.kind.reserve(n);
        self.received_ms.reserve(n);
        self.source.reserve(n);
        for d in &mut self.dims {
            d.reserve(n);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ts_ms.is_empty()
    }

    /// Appends one reading whose strings are already interned here (ids
    /// from `vins`, `metrics`, `sources`, `dim_values`).
    #[allow(clippy::too_many_arguments)]
    pub fn push_ids(
        &mut self,
        vin: u32,
        ts_ms: i64,
        seq: Option<i64>,
        metric: u32,
        value: f64,
        kind: ValueKind,
        received_ms: i64,
        source: u32,
        dims: &[Option<u32>],
    ) {
        self.vin.push(vin);
        self.ts_ms.push(ts_ms);
        self.seq.push(seq);
        self.metric.push(metric);
        self.value.push(value);
        self.kind.push(kind);
        self.received_ms.push(received_ms);
        self.source.push(source);
        for (d, col) in self.dims.iter_mut().enumerate() {
            col.push(dims.get(d).copied().flatten());
        }
    }

    /// Appends one reading, interning its strings; `dims` has one entry per
    /// dimension column.
    pub fn push(&mut self, r: Raw<'_>, dims: &[Option<&str>]) {
        let (vin, metric, source) = (self.vins.id(r.vin), self.metrics.id(r.metric), self.sources.id(r.source));
        let dims: Vec<Option<u32>> = dims.iter().map(|v| v.map(|v| self.dim_values.id(v))).collect();
        self.push_ids(vin, r.ts_ms, r.seq, metric, r.value, r.kind, r.received_ms, source, &dims);
    }
}

/// Block-local ids of one string table, for [`RawRows::write_selected_to`]:
/// `ids[source id]` is the local id, and `used` the source ids in local
/// order (so a reset touches only what a block used).
#[derive(Debug, Default)]
pub struct LocalIds {
    ids: Vec<u32>,
    used: Vec<u32>,
}

impl LocalIds {
    fn reset(&mut self, len: usize) {
        for id in self.used.drain(..) {
            self.ids[id as usize] = UNMAPPED;
        }
        self.ids.resize(len, UNMAPPED);
    }

    fn local(&mut self, id: u32) -> u32 {
        let l = &mut self.ids[id as usize];
        if *l == UNMAPPED {
            *l = self.used.len() as u32;
            self.used.push(id);
        }
        *l
    }
}

/// Scratch space of [`RawRows::write_selected_to`], kept across blocks.
#[derive(Debug, Default)]
pub struct SelectScratch {
    vin: LocalIds,
    metric: LocalIds,
    source: LocalIds,
    dim: LocalIds,
}

impl SelectScratch {
    fn reset(&mut self, rows: &RawRows) {
        self.vin.reset(rows.vins.len());
        self.metric.reset(rows.metrics.len());
        self.source.reset(rows.sources.len());
        self.dim.reset(rows.dim_values.len());
    }
}

/// Id translation from one [`RawRows`] into another, filled as rows are
/// copied (one lookup per distinct string, not per row).
#[derive(Debug)]
struct Remap {
    vin: Vec<u32>,
    metric: Vec<u32>,
    source: Vec<u32>,
    dim: Vec<u32>,
}

/// No id yet (a [`Remap`] entry not filled), or a NULL dimension in a spool block.
pub(crate) const UNMAPPED: u32 = u32::MAX;

impl Remap {
    fn new(src: &RawRows) -> Remap {
        Remap {
            vin: vec![UNMAPPED; src.vins.len()],
            metric: vec![UNMAPPED; src.metrics.len()],
            source: vec![UNMAPPED; src.sources.len()],
            dim: vec![UNMAPPED; src.dim_values.len()],
        }
    }
}

fn remap(cache: &mut [u32], id: u32, src: &Interner, dst: &mut Interner) -> u32 {
    let c = &mut cache[id as usize];
    if *c == UNMAPPED {
        *c = dst.id(src.get(id));
    }
    *c
}

impl RawRows {
    /// The rows at `order`, (index into `from`, row) pairs, in that order,
    /// with only the strings they use. Built column by column, so each
    /// column of each source is read in turn (the merge's chunks come from
    /// up to `fan_in` blocks at once). The dimension columns' shared string
    /// table is numbered column by column: ids only key the Parquet
    /// writer's dictionaries, which follow each column's values.
    pub fn gather(from: &[RawRows], order: &[(u32, u32)], ndims: usize) -> RawRows {
        let mut out = RawRows::new(ndims);
        out.reserve(order.len());
        let mut maps: Vec<Remap> = from.iter().map(Remap::new).collect();
        let b = from;
        let at = |&(s, r): &(u32, u32)| (s as usize, r as usize);
        for o in order {
            let (s, r) = at(o);
            out.vin.push(remap(&mut maps[s].vin, b[s].vin[r], &b[s].vins, &mut out.vins));
        }
        out.ts_ms.extend(order.iter().map(at).map(|(s, r)| b[s].ts_ms[r]));
        out.seq.extend(order.iter().map(at).map(|(s, r)| b[s].seq[r]));
        for o in order {
            let (s, r) = at(o);
            out.metric.push(remap(&mut maps[s].metric, b[s].metric[r], &b[s].metrics, &mut out.metrics));
        }
        out.value.extend(order.iter().map(at).map(|(s, r)| b[s].value[r]));
        out.kind.extend(order.iter().map(at).map(|(s, r)| b[s].kind[r]));
        out.received_ms.extend(order.iter().map(at).map(|(s, r)| b[s].received_ms[r]));
        for o in order {
            let (s, r) = at(o);
            out.source.push(remap(&mut maps[s].source, b[s].source[r], &b[s].sources, &mut out.sources));
        }
        for (d, col) in out.dims.iter_mut().enumerate() {
            for o in order {
                let (s, r) = at(o);
                col.push(b[s].dims[d][r].map(|id| remap(&mut maps[s].dim, id, &b[s].dim_values, &mut out.dim_values)));
            }
        }
        out
    }

    /// The rows at `idx`, in that order, with only the strings they use.
    pub fn select(&self, idx: &[u32]) -> RawRows {
        let order: Vec<(u32, u32)> = idx.iter().map(|&i| (0, i)).collect();
        RawRows::gather(std::slice::from_ref(self), &order, self.dims.len())
    }

    /// Row order by (vin, metric, ts), ties in insertion order.
    pub fn sorted_order(&self) -> Vec<u32> {
        let vin_rank = ranks(&self.vins.values);
        let metric_rank = ranks(&self.metrics.values);
        let n = self.len();
        let nm = metric_rank.len().max(1);
        let groups = vin_rank.len().max(1).saturating_mul(nm);
        let group =
            |i: usize| vin_rank[self.vin[i] as usize] as usize * nm + metric_rank[self.metric[i] as usize] as usize;
        if groups > (2 * n).max(1 << 16) {
            // Too many (vin, metric) groups to count: one integer key per
            // row (vin rank, metric rank, ts with its sign bit flipped so
            // negative times order first), the row itself for ties.
            let mut keys: Vec<(u128, u32)> = (0..n)
                .map(|i| ((group(i) as u128) << 64 | u128::from((self.ts_ms[i] as u64) ^ (1 << 63)), i as u32))
                .collect();
            keys.sort_unstable();
            return keys.into_iter().map(|(_, i)| i).collect();
        }
        // A counting sort by (vin, metric) group, stable, then each group
        // by time, stably: a group's readings mostly arrive in time order,
        // so the second sort finds them sorted already.
        let mut start = vec![0u32; groups + 1];
        for i in 0..n {
            start[group(i) + 1] += 1;
        }
        for g in 0..groups {
            start[g + 1] += start[g];
        }
        let mut next = start.clone();
        let mut order = vec![0u32; n];
        for i in 0..n {
            let g = group(i);
            order[next[g] as usize] = i as u32;
            next[g] += 1;
        }
        for w in start.windows(2) {
            let run = &mut order[w[0] as usize..w[1] as usize];
            if run.len() > 1 {
                run.sort_by_key(|&i| self.ts_ms[i as usize]);
            }
        }
        order
    }

    /// Sort key of row `i`.
    pub fn key(&self, i: usize) -> (&str, &str, i64) {
        (self.vins.get(self.vin[i]), self.metrics.get(self.metric[i]), self.ts_ms[i])
    }

    /// Binary form (the spool's block payload, before compression):
    /// little-endian, [`BLOCK_V2`], the number of dimension columns (u32),
    /// the four string tables (the strings the rows use, in the order they
    /// first use them), the row count, then the columns. The string-id
    /// columns (vin, metric, source, each dimension) are each written as
    /// runs of one id when that is shorter ([`put_ids`]): a sorted block's
    /// vins, and a dimension's NULLs, are long runs, which the LZ4 decoder
    /// would otherwise copy back a byte at a time.
    ///
    /// [`RawRows::read_from`] also reads the first layout, which spools
    /// written by earlier builds hold: a one-byte dimension count first, and
    /// every id column a plain array.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let all: Vec<u32> = (0..self.len() as u32).collect();
        self.write_selected_to(&all, out, &mut SelectScratch::default());
    }

    /// What `self.select(idx).write_to(out)` writes, without the copy: the
    /// rows at `idx`, in that order, in binary form ([`RawRows::write_to`]).
    pub fn write_selected_to(&self, idx: &[u32], out: &mut Vec<u8>, s: &mut SelectScratch) {
        let n = idx.len();
        let rows = || idx.iter().map(|&i| i as usize);
        s.reset(self);
        let (vin, metric, source): (Vec<u32>, Vec<u32>, Vec<u32>) = (
            rows().map(|i| s.vin.local(self.vin[i])).collect(),
            rows().map(|i| s.metric.local(self.metric[i])).collect(),
            rows().map(|i| s.source.local(self.source[i])).collect(),
        );
        let ndims = self.dims.len();
        let mut dims = vec![UNMAPPED; n * ndims];
        for (r, i) in rows().enumerate() {
            for d in 0..ndims {
                if let Some(id) = self.dims[d][i] {
                    dims[d * n + r] = s.dim.local(id);
                }
            }
        }
        out.push(BLOCK_V2);
        out.extend_from_slice(&(ndims as u32).to_le_bytes());
        for (t, used) in
            [(&self.vins, &s.vin), (&self.metrics, &s.metric), (&self.sources, &s.source), (&self.dim_values, &s.dim)]
        {
            out.extend_from_slice(&(used.used.len() as u32).to_le_bytes());
            for id in &used.used {
                let v = t.get(*id);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v.as_bytes());
            }
        }
        out.extend_from_slice(&(n as u32).to_le_bytes());
        out.reserve(n * 45);
        put_ids(out, &vin);
        rows().for_each(|i| out.extend_from_slice(&self.ts_ms[i].to_le_bytes()));
        rows().for_each(|i| out.extend_from_slice(&self.seq[i].unwrap_or(0).to_le_bytes()));
        put_ids(out, &metric);
        rows().for_each(|i| out.extend_from_slice(&self.value[i].to_le_bytes()));
        for i in rows() {
            out.push(u8::from(self.seq[i].is_some()) | (u8::from(self.kind[i] == ValueKind::Bool) << 1));
        }
        rows().for_each(|i| out.extend_from_slice(&self.received_ms[i].to_le_bytes()));
        put_ids(out, &source);
        if n > 0 {
            dims.chunks(n).for_each(|col| put_ids(out, col));
        }
    }

    /// Reads what [`RawRows::write_to`] wrote (either layout); every id is
    /// checked.
    pub fn read_from(buf: &[u8]) -> Result<RawRows, String> {
        let mut r = Reader { buf, at: 0 };
        let first = r.take(1)?[0];
        let v2 = first == BLOCK_V2;
        let ndims = if v2 { r.u32()? as usize } else { first as usize };
        let mut tables = Vec::with_capacity(4);
        for _ in 0..4 {
            let count = r.u32()? as usize;
            let mut values = Vec::with_capacity(count.min(buf.len()));
            for _ in 0..count {
                let len = r.u32()? as usize;
                let s = std::str::from_utf8(r.take(len)?).map_err(|e| format!("spool block: {e}"))?;
                values.push(CompactString::from(s));
            }
            tables.push(Interner::from_values(values));
        }
        let dim_values = tables.pop().unwrap_or_default();
        let sources = tables.pop().unwrap_or_default();
        let metrics = tables.pop().unwrap_or_default();
        let vins = tables.pop().unwrap_or_default();
        let n = r.u32()? as usize;
        // Every row has at least 8 bytes of its own (its time), so a count
        // past that is damage: refused before runs could expand to it.
        if n > buf.len() / 8 {
            return Err(format!("spool block: {n} rows in {} bytes", buf.len()));
        }
        let ids = |r: &mut Reader, limit: usize| -> Result<Vec<u32>, String> {
            let v = if v2 { get_ids(r, n)? } else { plain_ids(r.take(n * 4)?) };
            match v.iter().find(|id| **id as usize >= limit) {
                Some(bad) => Err(format!("spool block: string id {bad} out of range {limit}")),
                None => Ok(v),
            }
        };
        let i64s = |r: &mut Reader| -> Result<Vec<i64>, String> {
            Ok(r.take(n * 8)?.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
        };
        let vin = ids(&mut r, vins.len())?;
        let ts_ms = i64s(&mut r)?;
        let seq_raw = i64s(&mut r)?;
        let metric = ids(&mut r, metrics.len())?;
        let value: Vec<f64> =
            r.take(n * 8)?.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
        let flags = r.take(n)?.to_vec();
        let received_ms = i64s(&mut r)?;
        let source = ids(&mut r, sources.len())?;
        let mut dims = Vec::with_capacity(ndims);
        for _ in 0..ndims {
            let raw = if v2 { get_ids(&mut r, n)? } else { plain_ids(r.take(n * 4)?) };
            let mut col = Vec::with_capacity(n);
            for id in raw {
                if id != UNMAPPED && id as usize >= dim_values.len() {
                    return Err(format!("spool block: dim id {id} out of range"));
                }
                col.push((id != UNMAPPED).then_some(id));
            }
            dims.push(col);
        }
        if r.at != buf.len() {
            return Err("spool block: trailing bytes".into());
        }
        let seq = seq_raw.iter().zip(&flags).map(|(s, f)| (f & 1 == 1).then_some(*s)).collect();
        let kind = flags.iter().map(|f| if f & 2 == 2 { ValueKind::Bool } else { ValueKind::Number }).collect();
        Ok(RawRows {
            vin,
            ts_ms,
            seq,
            metric,
            value,
            kind,
            received_ms,
            source,
            dims,
            vins,
            metrics,
            sources,
            dim_values,
        })
    }
}

/// The first byte of a spool block in the current layout ([`RawRows::write_to`]).
/// The first layout began with the dimension count, one byte; a block of
/// 255 dimension columns in that layout is the only one it is mistaken for,
/// and its columns would then fail the reader's checks.
const BLOCK_V2: u8 = 0xFF;

/// One string-id column of a block: `0` and the ids, or `1`, the number of
/// runs, and each run's id and length, whichever is shorter.
fn put_ids(out: &mut Vec<u8>, ids: &[u32]) {
    // Runs pay when there are fewer than half as many as ids: stop
    // counting there.
    let half = ids.len() / 2;
    let mut runs = 1;
    for w in ids.windows(2) {
        runs += usize::from(w[0] != w[1]);
        if runs >= half {
            break;
        }
    }
    if ids.is_empty() || runs >= half {
        out.push(0);
        ids.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        return;
    }
    out.push(1);
    out.extend_from_slice(&(runs as u32).to_le_bytes());
    let mut start = 0;
    for i in 1..=ids.len() {
        if i == ids.len() || ids[i] != ids[start] {
            out.extend_from_slice(&ids[start].to_le_bytes());
            out.extend_from_slice(&((i - start) as u32).to_le_bytes());
            start = i;
        }
    }
}

/// Reads what [`put_ids`] wrote: `n` ids.
fn get_ids(r: &mut Reader, n: usize) -> Result<Vec<u32>, String> {
    match r.take(1)?[0] {
        0 => Ok(plain_ids(r.take(n * 4)?)),
        1 => {
            let runs = r.u32()? as usize;
            let mut v = Vec::with_capacity(n);
            for _ in 0..runs {
                let (id, len) = (r.u32()?, r.u32()? as usize);
                if len > n - v.len() {
                    return Err(format!("spool block: runs of more than {n} ids"));
                }
                v.resize(v.len() + len, id);
            }
            if v.len() != n {
                return Err(format!("spool block: runs of {} ids, not {n}", v.len()));
            }
            Ok(v)
        }
        t => Err(format!("spool block: unknown id column encoding {t}")),
    }
}

fn plain_ids(raw: &[u8]) -> Vec<u32> {
    raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or("spool block: truncated")?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// `rank[id]`: the place of each interned string in sorted order.
fn ranks(values: &[CompactString]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..values.len() as u32).collect();
    order.sort_unstable_by(|a, b| values[*a as usize].cmp(&values[*b as usize]));
    let mut rank = vec![0u32; values.len()];
    for (r, id) in order.iter().enumerate() {
        rank[*id as usize] = r as u32;
    }
    rank
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` rows over `vins` × `metrics` names, times with ties and negative
    /// values, in a scrambled order.
    fn scrambled(n: usize, vins: usize, metrics: usize, seed: u64) -> RawRows {
        let mut r = RawRows::new(0);
        let mut x = seed;
        for i in 0..n {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let vin = format!("V{}", (x >> 20) as usize % vins);
            let metric = format!("m{}", (x >> 40) as usize % metrics);
            let ts = ((x >> 50) as i64 % 7) - 3;
            let raw = Raw {
                vin: &vin,
                ts_ms: ts,
                seq: Some(i as i64),
                metric: &metric,
                value: i as f64,
                kind: ValueKind::Number,
                received_ms: 0,
                source: "s",
            };
            r.push(raw, &[]);
        }
        r
    }

    /// Both ways of sorting (counting by group, or one key per row when
    /// groups outnumber rows) give the stable order by (vin, metric, ts).
    #[test]
    fn sorted_order_is_the_stable_order_by_vin_metric_and_time() {
        for (n, vins, metrics) in [(5000, 40, 12), (1000, 300, 300), (1, 1, 1), (0, 1, 1)] {
            let r = scrambled(n, vins, metrics, n as u64 + 7);
            let mut want: Vec<u32> = (0..r.len() as u32).collect();
            want.sort_by(|&a, &b| r.key(a as usize).cmp(&r.key(b as usize)));
            assert_eq!(r.sorted_order(), want, "{n} rows, {vins} × {metrics}");
        }
    }

    /// A block of the first layout, as an earlier build wrote it (four rows,
    /// a NULL dimension, a missing seq, a boolean), still reads back.
    #[test]
    fn blocks_of_the_first_layout_still_read_back() {
        const V1: &str = "02020000000200000056310200000056320200000005000000737065656403000000736f63010000000c0000006d7174743a744077616c3a310300000002000000657501000000780200000075730400000000000000000000000000000001000000e803000000000000e903000000000000ea03000000000000eb030000000000000000000000000000000000000000000002000000000000000300000000000000000000000000000001000000000000000000000000000000000000000000e03f000000000000f03f000000000000f83f01000301d007000000000000d107000000000000d207000000000000d3070000000000000000000000000000000000000000000000000000ffffffff020000000000000001000000010000000100000001000000";
        let bytes: Vec<u8> = (0..V1.len()).step_by(2).map(|i| u8::from_str_radix(&V1[i..i + 2], 16).unwrap()).collect();
        let r = RawRows::read_from(&bytes).unwrap();
        let rows: Vec<_> = (0..r.len())
            .map(|i| {
                let dim = |d: usize| r.dims[d][i].map(|id| r.dim_values.get(id).to_string());
                (
                    r.key(i),
                    r.seq[i],
                    r.value[i],
                    r.kind[i],
                    r.received_ms[i],
                    r.sources.get(r.source[i]),
                    dim(0),
                    dim(1),
                )
            })
            .collect();
        let (n, b) = (ValueKind::Number, ValueKind::Bool);
        let (eu, us, x, src) = (Some("eu".to_string()), Some("us".to_string()), Some("x".to_string()), "mqtt:t@wal:1");
        assert_eq!(
            rows,
            vec![
                (("V1", "speed", 1000), Some(0), 0.0, n, 2000, src, eu.clone(), x.clone()),
                (("V1", "speed", 1001), None, 0.5, n, 2001, src, None, x.clone()),
                (("V1", "soc", 1002), Some(2), 1.0, b, 2002, src, us, x.clone()),
                (("V2", "speed", 1003), Some(3), 1.5, n, 2003, src, eu, x),
            ]
        );
        // Written again, it takes the current layout and reads back the same.
        let mut again = Vec::new();
        r.write_to(&mut again);
        assert_eq!(again[0], BLOCK_V2);
        let back = RawRows::read_from(&again).unwrap();
        assert_eq!((0..4).map(|i| back.key(i)).collect::<Vec<_>>(), (0..4).map(|i| r.key(i)).collect::<Vec<_>>());
    }

    /// An id column is written as runs exactly when that is shorter, reads
    /// back as written either way, and runs that do not add up to the
    /// block's rows are refused.
    #[test]
    fn id_columns_round_trip_as_runs_or_plain_and_bad_runs_are_refused() {
        let long_runs: Vec<u32> = (0..4096).map(|i| i / 300).collect();
        let no_runs: Vec<u32> = (0..4096).map(|i| i % 7).collect();
        let nulls = vec![UNMAPPED; 4096];
        for (ids, runs) in
            [(&long_runs, true), (&no_runs, false), (&nulls, true), (&vec![5u32], false), (&vec![], false)]
        {
            let mut out = Vec::new();
            put_ids(&mut out, ids);
            assert_eq!(out[0] == 1, runs, "{} ids", ids.len());
            assert!(out.len() <= 1 + 4 * ids.len().max(3));
            let mut r = Reader { buf: &out, at: 0 };
            assert_eq!(&get_ids(&mut r, ids.len()).unwrap(), ids);
            assert_eq!(r.at, out.len());
        }
        let mut out = Vec::new();
        put_ids(&mut out, &long_runs);
        for n in [4095, 4097] {
            let e = get_ids(&mut Reader { buf: &out, at: 0 }, n).unwrap_err();
            assert!(e.contains("runs of"), "{e}");
        }
        out[0] = 2;
        assert!(get_ids(&mut Reader { buf: &out, at: 0 }, 4096).unwrap_err().contains("unknown id column encoding 2"));
        // A block claiming more rows than its bytes can hold is refused
        // before its runs are expanded.
        let mut huge = vec![BLOCK_V2];
        huge.extend_from_slice(&[0; 4 * 5]); // no dims, four empty tables
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.push(1);
        huge.extend_from_slice(&1u32.to_le_bytes());
        huge.extend_from_slice(&0u32.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = RawRows::read_from(&huge).err().unwrap();
        assert!(e.contains("4294967295 rows in"), "{e}");
    }

    /// A block written straight from the rows in sorted order is, byte for
    /// byte, the block of the sorted copy: the spool's format is unchanged.
    #[test]
    fn blocks_written_from_an_order_equal_those_of_the_sorted_copy() {
        let mut scratch = SelectScratch::default();
        for (n, vins, metrics, ndims) in [(5000usize, 40, 12, 3), (300, 300, 2, 0), (1, 1, 1, 2), (0, 1, 1, 1)] {
            let mut r = RawRows::new(ndims);
            let mut x = n as u64 + 3;
            for i in 0..n {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let vin = format!("V{}", (x >> 20) as usize % vins);
                let metric = format!("m{}", (x >> 40) as usize % metrics);
                let source = format!("s{}", (x >> 30) % 97);
                let dims: Vec<Option<String>> = (0..ndims)
                    .map(|d| (!(x >> (10 + d)).is_multiple_of(4)).then(|| format!("d{}", (x >> (20 + d)) % 5)))
                    .collect();
                let dims: Vec<Option<&str>> = dims.iter().map(|d| d.as_deref()).collect();
                let raw = Raw {
                    vin: &vin,
                    ts_ms: (x >> 50) as i64 - 7,
                    seq: (!i.is_multiple_of(3)).then_some(i as i64),
                    metric: &metric,
                    value: i as f64 * 0.5,
                    kind: if i.is_multiple_of(4) { ValueKind::Bool } else { ValueKind::Number },
                    received_ms: i as i64,
                    source: &source,
                };
                r.push(raw, &dims);
            }
            let order = r.sorted_order();
            for chunk in order.chunks(777).chain([&order[..0]]) {
                let (mut want, mut got) = (Vec::new(), Vec::new());
                r.select(chunk).write_to(&mut want);
                r.write_selected_to(chunk, &mut got, &mut scratch);
                assert_eq!(got, want, "{n} rows, a block of {}", chunk.len());
            }
        }
    }
}
