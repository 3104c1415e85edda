//! A shard's spooler thread: epochs' raw samples split by event-time hour,
//! sorted, appended as frames to each hour's open segment and fsynced;
//! decided segments cut (size, age, idleness, a full spool, a stop) and
//! handed to the uploader; recovery back to the last decided epoch.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self as smpsc, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{ArchiveSample, Msg, Shared};
use crate::archive::layout::hour_of;
use crate::archive::roll::Reason;
use crate::archive::spool::segment::{Sealed, Segment};
use crate::archive::spool::{OPEN_EPOCH, frame};
use crate::archive::{RawRows, ValueKind};
use crate::decode::catalog::MetricCatalog;
use crate::halt::Hook;
use crate::util::now_ms;

struct OpenSeg {
    seg: Segment,
    opened_ms: i64,
    last_append_ms: i64,
}

pub(super) struct Spooler {
    k: u32,
    dir: PathBuf,
    shared: Arc<Shared>,
    up: smpsc::Sender<Sealed>,
    open: BTreeMap<i64, OpenSeg>,
    decided: u64,
    /// The last epoch sealed here.
    last_spooled: u64,
    recovered: bool,
    waited: bool,
}

impl Spooler {
    pub(super) fn start(
        k: u32,
        dir: PathBuf,
        shared: Arc<Shared>,
        up: smpsc::Sender<Sealed>,
    ) -> std::io::Result<Spooler> {
        let mut sp = Spooler {
            k,
            dir,
            shared,
            up,
            open: BTreeMap::new(),
            decided: 0,
            last_spooled: 0,
            recovered: false,
            waited: false,
        };
        let mut sealed = Vec::new();
        for e in std::fs::read_dir(&sp.dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if name.ends_with(".tmp") {
                std::fs::remove_file(&path)?;
            } else if name.starts_with("sealed-") {
                match Sealed::recover(&path) {
                    Ok(s) => sealed.push(s),
                    Err(err) => tracing::error!(error = %err, "Archive spool segment unreadable."),
                }
            }
        }
        sealed.sort_by_key(|s| (s.first_epoch, s.hour_ms));
        for s in sealed {
            sp.shared.account(s.len as i64);
            sp.shared.pending.fetch_add(1, Ordering::AcqRel);
            let _ = sp.up.send(s);
        }
        if !sp.shared.settings.exactly_once {
            sp.recover(None)?;
        }
        Ok(sp)
    }

    pub(super) fn run(&mut self, rx: smpsc::Receiver<Msg>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(Msg::Spool { epoch, samples, catalog, reply }) => {
                    let r = self.spool(epoch, samples, &catalog);
                    if let Err(e) = &r {
                        tracing::error!(shard = self.k, epoch, error = %e, "Archive spooling failed.");
                    }
                    let _ = reply.send(r);
                }
                Ok(Msg::Decided(e)) => {
                    self.set_decided(e);
                    self.roll(false);
                }
                Ok(Msg::Recover { decided, reply }) => {
                    let _ = reply.send(self.recover(decided).map_err(|e| format!("archive spool recovery: {e}")));
                }
                Ok(Msg::Flush(reply)) => {
                    self.roll(true);
                    let _ = reply.send(());
                }
                Err(RecvTimeoutError::Timeout) if self.shared.stopping.load(Ordering::Acquire) => return,
                Err(RecvTimeoutError::Timeout) => self.roll(false),
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn set_decided(&mut self, e: u64) {
        self.decided = self.decided.max(e);
    }

    /// Reopens the open segments, keeping frames of epochs up to `keep`
    /// (the coordinator's last decided epoch; `None`: all of them).
    fn recover(&mut self, keep: Option<u64>) -> std::io::Result<()> {
        // Never below what this process has seen decided.
        let keep = keep.map(|k| k.max(self.decided));
        let before: u64 = self.open.values().map(|o| o.seg.len).sum();
        self.open.clear();
        let mut paths = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with("open-") {
                paths.push(e.path());
            }
        }
        paths.sort();
        let now = now_ms();
        let mut after = 0u64;
        self.last_spooled = 0;
        for p in paths {
            if let Some(seg) = Segment::recover(&p, keep)? {
                after += seg.len;
                let opened_ms = std::fs::metadata(&p)
                    .and_then(|m| m.created().or_else(|_| m.modified()))
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(now);
                tracing::info!(shard = self.k, segment = %p.display(), frames = seg.frames.len(), last_epoch = seg.last_epoch, "Archive spool segment recovered.");
                self.last_spooled = self.last_spooled.max(seg.last_epoch);
                self.open.insert(seg.hour_ms, OpenSeg { seg, opened_ms, last_append_ms: now });
            }
        }
        // Accounting: what this spooler had counted for open segments is
        // replaced by what is on disk now.
        let counted = if self.recovered { before } else { 0 };
        self.shared.account(after as i64 - counted as i64);
        if let Some(k) = keep {
            self.set_decided(k);
        }
        self.recovered = true;
        Ok(())
    }

    fn spool(
        &mut self,
        epoch: u64,
        samples: Vec<ArchiveSample>,
        catalog: &RwLock<MetricCatalog>,
    ) -> Result<u64, String> {
        if !self.recovered {
            return Err("the archive spool is not recovered yet".into());
        }
        let spill = epoch == OPEN_EPOCH;
        let (hours, n) = hourly_rows(samples, catalog, self.shared.settings.dims.len());
        let frames: Vec<(i64, Vec<u8>, u64)> = hours
            .into_iter()
            .map(|(h, rows)| (h, frame(epoch, &rows, &rows.sorted_order()), rows.len() as u64))
            .collect();
        let size: u64 = frames.iter().map(|f| f.1.len() as u64).sum();
        // A spill never waits for room: its frames cannot be cut before
        // the epoch is sealed and decided, so waiting could never end. The
        // seal waits as before, for the room of what it appends; spills can
        // overshoot the bound by one epoch per shard (`max_epoch_bytes`).
        if !spill {
            self.wait_for_room(size);
        }
        // A segment a spill opens is named after the next epoch it can be
        // (renamed at the seal if the epoch gets another number).
        self.append_frames(epoch, &frames)?;
        self.shared.stats.archive_readings_spooled.fetch_add(n, Ordering::Relaxed);
        if spill {
            self.shared.stats.archive_spills.fetch_add(1, Ordering::Relaxed);
            return Ok(n);
        }
        // The seal: what was spilled this epoch gets its number; every
        // segment written to since the last seal is synced.
        for o in self.open.values_mut() {
            o.seg.number_open_frames(epoch).map_err(|e| e.to_string())?;
            o.seg.sync().map_err(|e| e.to_string())?;
        }
        self.last_spooled = epoch;
        if !self.shared.settings.exactly_once {
            self.set_decided(epoch);
        }
        Ok(n)
    }

    /// Appends each hour's frame to that hour's open segment (opening it
    /// if need be). A segment a spill opens is named after the next epoch
    /// it can be (renamed at the seal if the epoch gets another number).
    fn append_frames(&mut self, epoch: u64, frames: &[(i64, Vec<u8>, u64)]) -> Result<(), String> {
        let spill = epoch == OPEN_EPOCH;
        let first = if spill { self.last_spooled.max(self.decided) + 1 } else { epoch };
        for (hour, bytes, rows) in frames {
            let now = now_ms();
            if !self.open.contains_key(hour) {
                let seg = Segment::create(&self.dir, *hour, first).map_err(|e| e.to_string())?;
                self.open.insert(*hour, OpenSeg { seg, opened_ms: now, last_append_ms: now });
            }
            let o = self.open.get_mut(hour).ok_or("segment vanished")?;
            if !spill && o.seg.holds_epoch_from(epoch) {
                return Err(format!("epoch {epoch} is not after the spooled epoch {}", o.seg.last_epoch));
            }
            if self.shared.hook().hits("archive_mid_frame") {
                let _ = o.seg.append_torn(bytes);
                Hook::halt_blocking("archive_mid_frame");
            }
            o.seg.append(epoch, bytes, *rows).map_err(|e| e.to_string())?;
            o.last_append_ms = now;
            self.shared.account(bytes.len() as i64);
        }
        Ok(())
    }

    /// Waits while the spool is over its bound, cutting what may be cut so
    /// the uploaders can drain it.
    fn wait_for_room(&mut self, size: u64) {
        let max = self.shared.settings.spool_max_bytes;
        let mut waiting = false;
        while self.shared.spool_bytes.load(Ordering::Acquire) + size > max
            && !self.shared.stopping.load(Ordering::Acquire)
        {
            if !waiting {
                waiting = true;
                self.shared.stats.archive_spool_full.fetch_add(1, Ordering::Relaxed);
                if !self.waited {
                    tracing::warn!(
                        shard = self.k,
                        spool_bytes = self.shared.spool_bytes.load(Ordering::Acquire),
                        max,
                        "Archive spool full: uploads are behind; holding the pipeline until they catch up."
                    );
                    self.waited = true;
                }
                self.cut_where(|_| Some(Reason::SpoolFull));
            }
            if self.shared.pending.load(Ordering::Acquire) == 0 && self.open.values().any(|o| o.seg.has_open_frames()) {
                // Nothing is uploading and what is left cannot be cut: it
                // holds this epoch's own spills. Waiting would never end;
                // the seal goes on, and the file is cut once it is decided.
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !waiting {
            self.waited = false;
        }
    }

    /// Cuts the decided segments that are due (`force`: all of them).
    fn roll(&mut self, force: bool) {
        let now = now_ms();
        let policy = self.shared.settings.roll;
        let ratio = *self.shared.ratio.lock().unwrap_or_else(|p| p.into_inner());
        self.cut_where(|o| {
            if force {
                return Some(Reason::Flush);
            }
            let est = (o.seg.len as f64 * ratio) as u64;
            policy.reason(est, o.opened_ms, o.last_append_ms, now)
        });
    }

    fn cut_where(&mut self, mut due: impl FnMut(&OpenSeg) -> Option<Reason>) {
        let decided = self.decided;
        let hours: Vec<(i64, Reason)> = self
            .open
            .iter()
            .filter(|(_, o)| o.seg.last_epoch <= decided && !o.seg.frames.is_empty() && !o.seg.has_open_frames())
            .filter_map(|(h, o)| due(o).map(|r| (*h, r)))
            .collect();
        for (h, reason) in hours {
            let Some(o) = self.open.remove(&h) else { continue };
            let (first, last, rows) = (o.seg.first_epoch, o.seg.last_epoch, o.seg.rows);
            match o.seg.seal() {
                Ok(s) => {
                    tracing::info!(
                        shard = self.k,
                        hour_ms = h,
                        first,
                        last,
                        rows,
                        reason = reason.as_str(),
                        "Archive file cut."
                    );
                    self.shared.hook().reach_blocking("archive_after_seal");
                    self.shared.pending.fetch_add(1, Ordering::AcqRel);
                    if self.up.send(s).is_err() {
                        self.shared.pending.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                Err(e) => {
                    tracing::error!(shard = self.k, error = %e, "Cutting an archive file failed; it stays in the spool.")
                }
            }
        }
    }
}

/// An epoch's samples as rows per event-time hour, and the readings among
/// them. The catalog's metric ids become each hour's own ids (strings are
/// interned once per sample, metrics once per id, never hashed per
/// reading); each hour's rows are sized once (a backlog spread over many
/// hours must not reserve the whole epoch per hour). The samples are taken
/// by value: each one's memory goes as soon as its rows are in, so the
/// epoch is never held twice over.
fn hourly_rows(
    samples: Vec<ArchiveSample>,
    catalog: &RwLock<MetricCatalog>,
    ndims: usize,
) -> (BTreeMap<i64, RawRows>, u64) {
    let mut per_hour: BTreeMap<i64, usize> = BTreeMap::new();
    for a in &samples {
        *per_hour.entry(hour_of(a.sample.ts_ms)).or_default() += a.sample.readings.len();
    }
    let mut hours: BTreeMap<i64, (RawRows, Vec<u32>)> = BTreeMap::new();
    let mut n = 0u64;
    let cat = catalog.read().unwrap_or_else(|p| p.into_inner());
    let mut dims: Vec<Option<u32>> = Vec::with_capacity(ndims);
    for a in samples {
        let hour = hour_of(a.sample.ts_ms);
        let (rows, metric_ids) = hours.entry(hour).or_insert_with(|| {
            let mut r = RawRows::new(ndims);
            r.reserve(per_hour.get(&hour).copied().unwrap_or(0));
            (r, Vec::new())
        });
        let vin = rows.vins.id(&a.sample.vin);
        let source = rows.sources.id(&a.source);
        dims.clear();
        for d in 0..ndims {
            let v = a.dims.as_ref().and_then(|r| r.get(d)).and_then(|v| v.as_deref());
            dims.push(v.map(|v| rows.dim_values.id(v)));
        }
        let seq = a.sample.seq.map(|s| s.min(i64::MAX as u64) as i64);
        for r in &a.sample.readings {
            let m = r.metric.0 as usize;
            if metric_ids.len() <= m {
                metric_ids.resize(m + 1, u32::MAX);
            }
            if metric_ids[m] == u32::MAX {
                metric_ids[m] = rows.metrics.id(cat.name(r.metric));
            }
            let kind = if r.is_bool { ValueKind::Bool } else { ValueKind::Number };
            rows.push_ids(vin, a.sample.ts_ms, seq, metric_ids[m], r.value, kind, a.received_ms, source, &dims);
            n += 1;
        }
    }
    (hours.into_iter().map(|(h, (rows, _))| (h, rows)).collect(), n)
}
