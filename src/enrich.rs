//! Vehicle dimensions: a snapshot loaded from a CSV file (header `vin,` then
//! the configured dims, e.g. `fleet,model,region`), joined to every sample by
//! vin, swapped atomically when the file changes.
//!
//! A reload that fails (unreadable file, missing column, a value with a CSV
//! separator StarRocks would misparse, a duplicate vin) keeps the previous
//! snapshot and says why; the pipeline never runs with half a file. Shard
//! workers take the current snapshot once per batch (an `Arc` clone), never
//! a lock per reading.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use compact_str::CompactString;

use crate::pipeline::window::NO_DIMS;
use crate::sink::starrocks::encode::check_field;

/// What to do with a sample whose vin is not in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownVehicle {
    /// Load it with NULL dims.
    Keep,
    /// Refuse it (dead letter, counted).
    DeadLetter,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} line {line}: {msg}")]
    Bad { path: PathBuf, line: usize, msg: String },
}

/// A vehicle's dim values, shared cheaply with the shards.
pub type DimRow = Arc<[Option<CompactString>]>;

/// One immutable version of the dimension table.
#[derive(Debug, Default)]
pub struct DimSnapshot {
    /// The configured dims, in order.
    pub columns: Vec<String>,
    rows: Vec<DimRow>,
    by_vin: HashMap<CompactString, u32>,
    /// When the file was read (for change detection).
    pub modified: Option<SystemTime>,
}

impl DimSnapshot {
    /// Row of a vin, or [`NO_DIMS`].
    pub fn row_of(&self, vin: &str) -> u32 {
        self.by_vin.get(vin).copied().unwrap_or(NO_DIMS)
    }

    /// The shared row of a vin, when known.
    pub fn row(&self, vin: &str) -> Option<DimRow> {
        self.by_vin.get(vin).map(|i| self.rows[*i as usize].clone())
    }

    /// Dim values of a row (all `None` for [`NO_DIMS`]).
    pub fn values(&self, row: u32) -> Vec<Option<&str>> {
        match self.rows.get(row as usize) {
            Some(r) => r.iter().map(|v| v.as_deref()).collect(),
            None => vec![None; self.columns.len()],
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Splits one CSV line (RFC 4180 quoting).
fn split_csv(line: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if cur.is_empty() => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', true) => quoted = false,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote");
    }
    out.push(cur);
    Ok(out)
}

/// Loads a dims file for the configured `dims`.
pub fn load(path: &Path, dims: &[String]) -> Result<DimSnapshot, EnrichError> {
    let text = std::fs::read_to_string(path).map_err(|source| EnrichError::Read { path: path.into(), source })?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let bad = |line: usize, msg: String| EnrichError::Bad { path: path.into(), line, msg };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| bad(1, "empty file".into()))?;
    let header: Vec<String> =
        split_csv(header).map_err(|m| bad(1, m.into()))?.into_iter().map(|h| h.trim().to_ascii_lowercase()).collect();
    let vin_col = header.iter().position(|h| h == "vin").ok_or_else(|| bad(1, "no 'vin' column".into()))?;
    let dim_cols: Vec<usize> = dims
        .iter()
        .map(|d| {
            header.iter().position(|h| h.eq_ignore_ascii_case(d)).ok_or_else(|| bad(1, format!("no '{d}' column")))
        })
        .collect::<Result<_, _>>()?;
    let mut snap = DimSnapshot { columns: dims.to_vec(), modified, ..Default::default() };
    for (i, line) in lines {
        let n = i + 1;
        let f = split_csv(line).map_err(|m| bad(n, m.into()))?;
        if f.len() != header.len() {
            return Err(bad(n, format!("{} fields, the header has {}", f.len(), header.len())));
        }
        let vin = f[vin_col].trim();
        if vin.is_empty() {
            return Err(bad(n, "empty vin".into()));
        }
        let mut row = Vec::with_capacity(dim_cols.len());
        for &c in &dim_cols {
            let v = f[c].trim();
            check_field(v).map_err(|e| bad(n, e.to_string()))?;
            row.push(if v.is_empty() { None } else { Some(CompactString::from(v)) });
        }
        let idx = snap.rows.len() as u32;
        if snap.by_vin.insert(CompactString::from(vin), idx).is_some() {
            return Err(bad(n, format!("duplicate vin {vin}")));
        }
        snap.rows.push(row.into());
    }
    Ok(snap)
}

/// The current snapshot, swappable while shards read it.
#[derive(Debug)]
pub struct Enrichment {
    path: PathBuf,
    dims: Vec<String>,
    current: RwLock<Arc<DimSnapshot>>,
}

impl Enrichment {
    pub fn open(path: &Path, dims: &[String]) -> Result<Self, EnrichError> {
        let snap = load(path, dims)?;
        Ok(Enrichment { path: path.into(), dims: dims.to_vec(), current: RwLock::new(Arc::new(snap)) })
    }

    /// The snapshot to use for a batch.
    pub fn snapshot(&self) -> Arc<DimSnapshot> {
        self.current.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// Reloads when the file changed; `Ok(true)` when a new snapshot is in
    /// place, `Err` (old snapshot kept) when the new file is bad.
    pub fn reload_if_changed(&self) -> Result<bool, EnrichError> {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified == self.snapshot().modified {
            return Ok(false);
        }
        let snap = load(&self.path, &self.dims)?;
        if let Ok(mut g) = self.current.write() {
            *g = Arc::new(snap);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims() -> Vec<String> {
        vec!["fleet".into(), "model".into(), "region".into()]
    }

    #[test]
    fn loads_rows_by_vin_with_empty_as_null() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.csv");
        std::fs::write(&p, "vin,region,fleet,model,extra\nV1,eu,\"fleet, one\",m1,x\nV2,,f2,m2,y\n").unwrap();
        let s = load(&p, &dims()).unwrap();
        assert_eq!(s.values(s.row_of("V1")), vec![Some("fleet, one"), Some("m1"), Some("eu")]);
        assert_eq!(s.values(s.row_of("V2")), vec![Some("f2"), Some("m2"), None]);
        assert_eq!(s.row_of("V9"), NO_DIMS);
        assert_eq!(s.values(NO_DIMS), vec![None, None, None]);
    }

    #[test]
    fn bad_files_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.csv");
        for (text, needle) in [
            ("vin,fleet,model\nV1,a,b\n", "no 'region' column"),
            ("vin,fleet,model,region\nV1,a,b\n", "line 2"),
            ("vin,fleet,model,region\nV1,a,b,c\nV1,a,b,c\n", "duplicate vin"),
            ("vin,fleet,model,region\nV1,\"a\x01\",b,c\n", "separator"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = load(&p, &dims()).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn reload_swaps_good_files_and_keeps_the_old_snapshot_on_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.csv");
        std::fs::write(&p, "vin,fleet,model,region\nV1,a,b,c\n").unwrap();
        let e = Enrichment::open(&p, &dims()).unwrap();
        let before = e.snapshot();
        assert!(!e.reload_if_changed().unwrap(), "unchanged file");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&p, "vin,fleet,model,region\nV1,z,b,c\nV2,y,b,c\n").unwrap();
        let t = SystemTime::now() + std::time::Duration::from_secs(1);
        std::fs::File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
        assert!(e.reload_if_changed().unwrap());
        assert_eq!(e.snapshot().len(), 2);
        assert_eq!(before.len(), 1, "readers keep the snapshot they took");
        std::fs::write(&p, "broken").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t + std::time::Duration::from_secs(1))
            .unwrap();
        assert!(e.reload_if_changed().is_err());
        assert_eq!(e.snapshot().len(), 2, "the good snapshot stays");
    }
}
