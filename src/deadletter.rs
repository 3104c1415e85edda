//! Dead letters: every input rockfeed refuses, kept with its reason.
//!
//! One JSON object per line, in files `dead-letter-NNNNNN.jsonl` under the
//! configured directory, rotated by size:
//! `{"at_ms":…,"reason":"bad_ts","detail":"…","source":"mqtt:telemetry/V1/speed","payload":"…","payload_encoding":"utf8"}`.
//! Payloads that are not UTF-8 are written base64 (`payload_encoding":"base64"`).
//! Counters per reason are kept for metrics. Disk is bounded by `max_files`
//! (0 = unbounded): the oldest file goes first, and that is counted, never
//! silent.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine;

/// One refused input.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    pub at_ms: i64,
    /// Counter label (`malformed_json`, `bad_ts`, `too_late`, …).
    pub reason: &'a str,
    pub detail: &'a str,
    /// Where it came from: topic, partition/offset, WAL position.
    pub source: &'a str,
    pub payload: &'a [u8],
}

/// What `rockfeed deadletter replay` needs to send a refused Stream Load
/// body again: written as the record's `stream_load` object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoadMeta {
    pub table: String,
    /// The label it was refused under (ABORTED, so it may be used again).
    pub label: String,
    /// The `columns` header: the CSV's column list.
    pub columns: String,
    /// The `column_separator` header (`\x01`).
    pub column_separator: String,
}

#[derive(Debug)]
pub struct DeadLetterWriter {
    dir: PathBuf,
    max_file_bytes: u64,
    max_files: usize,
    seq: u64,
    file: BufWriter<File>,
    written: u64,
    /// Records per reason since start.
    pub counts: BTreeMap<String, u64>,
    /// Files deleted to respect `max_files`.
    pub evicted_files: u64,
    /// Whether refused records are written ([`DeadLetterWriter::write`]).
    records: bool,
    /// Where evictions are counted for `/metrics`
    /// (`rockfeed_dead_letter_files_evicted_total`).
    stats: Option<std::sync::Arc<crate::telemetry::Stats>>,
}

fn name(seq: u64) -> String {
    format!("dead-letter-{seq:06}.jsonl")
}

fn existing(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut seqs: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("dead-letter-")?.strip_suffix(".jsonl")?.parse().ok())
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

impl DeadLetterWriter {
    /// Opens the directory, continuing after the newest existing file.
    pub fn open(dir: &Path, max_file_bytes: u64, max_files: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let seq = existing(dir)?.last().map(|s| s + 1).unwrap_or(0);
        let file = OpenOptions::new().create(true).append(true).open(dir.join(name(seq)))?;
        Ok(DeadLetterWriter {
            dir: dir.to_path_buf(),
            max_file_bytes: max_file_bytes.max(1024),
            max_files,
            seq,
            file: BufWriter::new(file),
            written: 0,
            counts: BTreeMap::new(),
            evicted_files: 0,
            records: true,
            stats: None,
        })
    }

    /// A writer that drops refused records and keeps only refused Stream
    /// Load bodies: for a rebuild of a decided epoch, which re-reads records
    /// the first run already dead-lettered, while a body StarRocks refuses
    /// now is new.
    pub fn without_records(mut self) -> Self {
        self.records = false;
        self
    }

    /// Counts evicted files into `stats` too.
    pub fn with_stats(mut self, stats: std::sync::Arc<crate::telemetry::Stats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Appends one record (buffered; see [`DeadLetterWriter::flush`]).
    pub fn write(&mut self, d: &DeadLetter<'_>) -> std::io::Result<()> {
        if !self.records {
            return Ok(());
        }
        self.write_with(d, None)
    }

    /// Appends a refused Stream Load body (plain CSV) with what replaying
    /// it needs.
    pub fn write_load(&mut self, d: &DeadLetter<'_>, load: &LoadMeta) -> std::io::Result<()> {
        self.write_with(d, Some(serde_json::to_value(load).map_err(std::io::Error::other)?))
    }

    fn write_with(&mut self, d: &DeadLetter<'_>, load: Option<serde_json::Value>) -> std::io::Result<()> {
        let (payload, encoding) = match std::str::from_utf8(d.payload) {
            Ok(s) => (serde_json::Value::String(s.to_string()), "utf8"),
            Err(_) => {
                (serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(d.payload)), "base64")
            }
        };
        let mut rec = serde_json::json!({
            "at_ms": d.at_ms, "reason": d.reason, "detail": d.detail, "source": d.source,
            "payload": payload, "payload_encoding": encoding,
        });
        if let Some(l) = load {
            rec["stream_load"] = l;
        }
        let mut line = serde_json::to_vec(&rec).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.written > 0 && self.written + line.len() as u64 > self.max_file_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.written += line.len() as u64;
        *self.counts.entry(d.reason.to_string()).or_insert(0) += 1;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.seq += 1;
        self.file = BufWriter::new(OpenOptions::new().create(true).append(true).open(self.dir.join(name(self.seq)))?);
        self.written = 0;
        if self.max_files > 0 {
            let seqs = existing(&self.dir)?;
            for old in seqs.iter().take(seqs.len().saturating_sub(self.max_files)) {
                std::fs::remove_file(self.dir.join(name(*old)))?;
                self.evicted_files += 1;
                if let Some(s) = &self.stats {
                    s.dead_letter_files_evicted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                tracing::warn!(
                    file = %name(*old),
                    max_files = self.max_files,
                    "Dead-letter directory full; removed the oldest file and the refused input in it (rockfeed_dead_letter_files_evicted_total; raise dead_letter.max_files, or 0 to keep all)."
                );
            }
        }
        Ok(())
    }

    /// Flushes buffered records to the file (and to disk when `sync`).
    pub fn flush(&mut self, sync: bool) -> std::io::Result<()> {
        self.file.flush()?;
        if sync {
            self.file.get_ref().sync_data()?;
        }
        Ok(())
    }

    /// Total records written since start.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

impl Drop for DeadLetterWriter {
    fn drop(&mut self) {
        let _ = self.file.flush();
    }
}

/// Reads every record back (tests, `rockfeed` tooling).
pub fn read_all(dir: &Path) -> std::io::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for seq in existing(dir)? {
        let text = std::fs::read_to_string(dir.join(name(seq)))?;
        for line in text.lines().filter(|l| !l.is_empty()) {
            out.push(serde_json::from_str(line).map_err(std::io::Error::other)?);
        }
    }
    Ok(out)
}

/// What `replay` did.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Bodies loaded now.
    pub loaded: u64,
    /// Bodies an earlier replay already loaded (their label is FINISHED).
    pub already: u64,
    /// Bodies StarRocks still refuses: (label, reason).
    pub refused: Vec<(String, String)>,
}

/// Sends every refused Stream Load body in `dir` (records with a
/// `stream_load` object) again, as plain CSV under its own label: a label
/// StarRocks refused is ABORTED and may be used again, and a second replay
/// finds it FINISHED and loads nothing twice. Stops at the first error about
/// the destination (nothing would load).
pub async fn replay(dir: &Path, loader: &crate::sink::starrocks::service::StreamLoader) -> Result<Replayed, String> {
    use crate::sink::starrocks::service::LoadError;
    let records = read_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = Replayed::default();
    for r in records {
        let Some(meta) = r.get("stream_load") else { continue };
        let meta: LoadMeta = serde_json::from_value(meta.clone()).map_err(|e| format!("a stream_load record: {e}"))?;
        let payload = r["payload"].as_str().unwrap_or_default();
        let body = match r["payload_encoding"].as_str() {
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(payload)
                .map_err(|e| format!("{}: payload is not base64: {e}", meta.label))?,
            _ => payload.as_bytes().to_vec(),
        };
        let mut h = http::HeaderMap::new();
        let v =
            |s: &str| http::HeaderValue::from_str(s).map_err(|_| format!("{}: a bad header value {s:?}", meta.label));
        h.insert("format", http::HeaderValue::from_static("csv"));
        h.insert("column_separator", v(&meta.column_separator)?);
        h.insert("columns", v(&meta.columns)?);
        match loader.load(&meta.table, &meta.label, &h, bytes::Bytes::from(body)).await {
            Ok(rep) if rep.already_loaded => out.already += 1,
            Ok(_) => out.loaded += 1,
            Err(LoadError::Rejected { reason, .. }) => out.refused.push((meta.label, reason)),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dl<'a>(reason: &'a str, payload: &'a [u8]) -> DeadLetter<'a> {
        DeadLetter { at_ms: 1, reason, detail: "d", source: "mqtt:t", payload }
    }

    #[test]
    fn records_round_trip_with_reason_source_and_payload() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DeadLetterWriter::open(dir.path(), 1 << 20, 0).unwrap();
        w.write(&dl("bad_ts", br#"{"ts":"soon"}"#)).unwrap();
        w.write(&dl("malformed_json", b"\xff\x00")).unwrap();
        w.flush(true).unwrap();
        let recs = read_all(dir.path()).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0]["reason"], "bad_ts");
        assert_eq!(recs[0]["payload"], r#"{"ts":"soon"}"#);
        assert_eq!(recs[1]["payload_encoding"], "base64");
        assert_eq!(recs[1]["payload"], "/wA=");
        assert_eq!(w.counts["bad_ts"], 1);
    }

    #[test]
    fn rotates_by_size_and_bounds_the_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![b'x'; 600];
        let stats = std::sync::Arc::new(crate::telemetry::Stats::default());
        {
            let mut w = DeadLetterWriter::open(dir.path(), 1024, 3).unwrap().with_stats(stats.clone());
            for _ in 0..10 {
                w.write(&dl("oversize", &big)).unwrap();
            }
            assert_eq!(w.total(), 10);
            assert_eq!(w.evicted_files, 7);
            // Counted where /metrics reads it, not only logged.
            assert_eq!(stats.dead_letter_files_evicted.load(std::sync::atomic::Ordering::Relaxed), 7);
        }
        assert_eq!(existing(dir.path()).unwrap().len(), 3);
        // Reopening continues after the newest file.
        let w = DeadLetterWriter::open(dir.path(), 1024, 3).unwrap();
        assert_eq!(w.seq, 10);
    }
}
