//! Vehicle dimensions: a snapshot joined to every sample by vin, from a CSV
//! file (header `vin,` then the configured dims, e.g. `fleet,model,region`;
//! swapped atomically when the file changes) or from a MySQL-protocol
//! database (`db/`: refreshed, swapped atomically, cached on disk).
//!
//! A reload that fails (unreadable file, missing column, a value with a CSV
//! separator StarRocks would misparse, a duplicate vin) keeps the previous
//! snapshot and says why; the pipeline never runs with half a file. Shard
//! workers take the current snapshot once per batch (an `Arc` clone), never
//! a lock per reading.

pub mod db;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use compact_str::CompactString;

use crate::model::NO_DIMS;
use crate::sink::starrocks::encode::check_field;

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

    /// A snapshot of `rows` (vins unique, values checked).
    pub fn from_rows(dims: &[String], rows: &[db::Row]) -> DimSnapshot {
        let mut snap = DimSnapshot { columns: dims.to_vec(), ..Default::default() };
        for (vin, vals) in rows {
            snap.by_vin.insert(CompactString::from(vin.as_str()), snap.rows.len() as u32);
            snap.rows.push(vals.iter().map(|v| v.as_deref().map(CompactString::from)).collect());
        }
        snap
    }

    /// The rows, as [`DimSnapshot::from_rows`] takes them.
    pub fn to_rows(&self) -> Vec<db::Row> {
        let mut out: Vec<db::Row> = self
            .by_vin
            .iter()
            .map(|(vin, &i)| {
                (vin.to_string(), self.rows[i as usize].iter().map(|v| v.as_ref().map(|x| x.to_string())).collect())
            })
            .collect();
        out.sort();
        out
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

/// Where the dims come from.
#[derive(Debug)]
enum Source {
    File(PathBuf),
    /// Refreshed by its own task (see [`Enrichment::open_database`]).
    Database,
}

/// The current snapshot, swappable while shards read it.
#[derive(Debug)]
pub struct Enrichment {
    source: Source,
    dims: Vec<String>,
    current: RwLock<Arc<DimSnapshot>>,
    stats: Arc<crate::telemetry::Stats>,
}

impl Enrichment {
    /// Dims from a CSV file.
    pub fn open(path: &Path, dims: &[String]) -> Result<Self, EnrichError> {
        Self::open_file(path, dims, Default::default())
    }

    /// Dims from a CSV file, counting into `stats`.
    pub fn open_file(path: &Path, dims: &[String], stats: Arc<crate::telemetry::Stats>) -> Result<Self, EnrichError> {
        let snap = load(path, dims)?;
        stats.enrich.vehicles.store(snap.len() as u64, Ordering::Relaxed);
        Ok(Enrichment {
            source: Source::File(path.into()),
            dims: dims.to_vec(),
            current: RwLock::new(Arc::new(snap)),
            stats,
        })
    }

    /// Dims from a database: a first fetch (bounded by its timeout), else
    /// the cache of the last good one, else none yet; then a task refreshes
    /// every `refresh` for as long as the enrichment lives.
    pub async fn open_database(
        cfg: db::DbConfig,
        cache: PathBuf,
        dims: &[String],
        stats: Arc<crate::telemetry::Stats>,
    ) -> Arc<Enrichment> {
        let e = Arc::new(Enrichment {
            source: Source::Database,
            dims: dims.to_vec(),
            current: RwLock::new(Arc::new(DimSnapshot { columns: dims.to_vec(), ..Default::default() })),
            stats,
        });
        let mut state = Refresh::default();
        if let Err(err) = e.refresh(&cfg, &cache, &mut state).await {
            match load(&cache, dims) {
                Ok(snap) => {
                    tracing::warn!(database = %cfg.shown(), error = %err, cache = %cache.display(), vehicles = snap.len(), "The vehicle database is unreachable; enriching from the cache of its last snapshot until it answers.");
                    e.swap(snap);
                }
                Err(c) => {
                    tracing::error!(database = %cfg.shown(), error = %err, cache = %c, "The vehicle database is unreachable and there is no cached snapshot: every vehicle is unknown (enrich.unknown_vehicle applies) until it answers.");
                }
            }
        }
        let weak = Arc::downgrade(&e);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(cfg.refresh.0).await;
                let Some(e) = weak.upgrade() else { return };
                let _ = e.refresh(&cfg, &cache, &mut state).await;
            }
        });
        e
    }

    /// One refresh: fetch (all, or what changed), swap, cache; counted and
    /// logged once per episode of failures.
    async fn refresh(&self, cfg: &db::DbConfig, cache: &Path, st: &mut Refresh) -> Result<(), String> {
        let full = st.since.is_none() || st.last_full.is_none_or(|t| t.elapsed() >= cfg.full_refresh.0);
        let since = if full { None } else { st.since.clone() };
        let es = &self.stats.enrich;
        let fetched = match db::fetch(cfg, &self.dims, since.as_deref()).await {
            Ok(f) => f,
            Err(e) => {
                es.refresh_failures.fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut st.failing, true) {
                    tracing::error!(database = %cfg.shown(), error = %e, "Vehicle dims refresh failed; keeping the last snapshot and retrying every refresh (rockfeed_enrich_refresh_failures_total counts them).");
                }
                return Err(e);
            }
        };
        if std::mem::replace(&mut st.failing, false) {
            tracing::info!(database = %cfg.shown(), "Vehicle dims refresh works again.");
        }
        // Each bad row is counted and logged once (an incremental fetch
        // sees the rows of its newest `updated_at` again); a full fetch
        // reports them all again.
        if full {
            st.reported.clear();
        }
        let new: Vec<(crate::model::BadRow, String)> =
            fetched.problems.iter().filter(|(_, d)| !st.reported.contains(d)).cloned().collect();
        st.reported.extend(fetched.problems.iter().map(|(_, d)| d.clone()));
        db::report(es, &cfg.shown(), &new);
        let rows = if full {
            fetched.rows
        } else {
            // Changed rows replace their vehicle's; the rest stay.
            let mut by_vin: std::collections::BTreeMap<String, Vec<Option<String>>> =
                self.snapshot().to_rows().into_iter().collect();
            by_vin.extend(fetched.rows);
            by_vin.into_iter().collect()
        };
        if full {
            st.last_full = Some(Instant::now());
        }
        if fetched.newest.is_some() {
            st.since = fetched.newest;
        }
        es.refreshes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = db::write_cache(cache, &self.dims, &rows) {
            tracing::warn!(cache = %cache.display(), error = %e, "Cannot write the vehicle dims cache (a start without the database would have no dims).");
        }
        self.swap(DimSnapshot::from_rows(&self.dims, &rows));
        Ok(())
    }

    fn swap(&self, snap: DimSnapshot) {
        self.stats.enrich.vehicles.store(snap.len() as u64, Ordering::Relaxed);
        if let Ok(mut g) = self.current.write() {
            *g = Arc::new(snap);
        }
    }

    /// The snapshot to use for a batch.
    pub fn snapshot(&self) -> Arc<DimSnapshot> {
        self.current.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// Reloads a file when it changed; `Ok(true)` when a new snapshot is in
    /// place, `Err` (old snapshot kept) when the new file is bad. A
    /// database refreshes on its own.
    pub fn reload_if_changed(&self) -> Result<bool, EnrichError> {
        let Source::File(path) = &self.source else { return Ok(false) };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified == self.snapshot().modified {
            return Ok(false);
        }
        let snap = load(path, &self.dims)?;
        self.swap(snap);
        Ok(true)
    }
}

/// A database source's refresh state.
#[derive(Debug, Default)]
struct Refresh {
    /// The newest `updated_at` seen.
    since: Option<String>,
    last_full: Option<Instant>,
    failing: bool,
    /// Bad rows counted since the last full fetch (by their description).
    reported: std::collections::HashSet<String>,
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
