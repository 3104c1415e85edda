//! A shard's uploader thread: a sealed segment merged into one Parquet file
//! on the encoder thread, published under its deterministic name, then
//! deleted; failures retried with back-off, the store refusing rockfeed
//! logged once per episode.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc as smpsc;
use std::time::{Duration, Instant};

use super::{EncodeJob, Shared};
use crate::archive::layout::file_path;
use crate::archive::merge::{Run, merge};
use crate::archive::parquet::ParquetWriter;
use crate::archive::spool::segment::Sealed;
use crate::archive::spool::sync_dir;
use crate::archive::store::PublishError;
use crate::archive::{ArchiveFormat, Schema};
use crate::telemetry::Stage;

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(8)).min(60_000))
}

pub(super) fn uploader(k: u32, dir: PathBuf, shared: Arc<Shared>, rx: smpsc::Receiver<Sealed>) {
    // What a crash left half-uploaded, before this shard stages anything.
    shared.rt.block_on(shared.store.clean_staging(&format!("{}-{k}", shared.settings.writer)));
    while let Ok(sealed) = rx.recv() {
        let mut attempt = 0u32;
        loop {
            match publish(k, &dir, &shared, &sealed) {
                Ok(()) => {
                    if shared.store_refuses.swap(false, Ordering::Relaxed) {
                        tracing::info!(shard = k, "The archive store takes rockfeed's uploads again.");
                    }
                    break;
                }
                Err(e) => {
                    attempt += 1;
                    shared.stats.archive_upload_failures.fetch_add(1, Ordering::Relaxed);
                    match &e {
                        UploadError::Publish(PublishError::Conflict { .. }) => {
                            shared.stats.archive_conflicts.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(shard = k, error = %e, "Archive file conflicts with a published one; kept in the spool.");
                        }
                        UploadError::Publish(PublishError::Destination(_)) => {
                            if !shared.store_refuses.swap(true, Ordering::Relaxed) {
                                tracing::error!(shard = k, error = %e, "The archive store refuses rockfeed (credentials, permissions, bucket or disk): files wait in the spool and uploads are retried until it is fixed; nothing is dead-lettered.");
                            } else {
                                tracing::debug!(shard = k, attempt, error = %e, "The archive store still refuses rockfeed.");
                            }
                        }
                        _ => tracing::warn!(shard = k, attempt, error = %e, "Archive upload failed; retrying."),
                    }
                    let until = Instant::now() + backoff(attempt);
                    while Instant::now() < until {
                        if shared.stopping.load(Ordering::Acquire) {
                            shared.pending.fetch_sub(1, Ordering::AcqRel);
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }
        shared.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error("{0}")]
    Local(String),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Merges `runs` into the Parquet file `tmp` (on the encoder thread);
/// returns the rows written.
fn encode_file(
    runs: Vec<Run>,
    ndims: usize,
    fan_in: usize,
    dir: &Path,
    tmp: &Path,
    schema: &Schema,
    format: ArchiveFormat,
) -> Result<u64, String> {
    use std::io::Write;
    let file = std::fs::File::create(tmp).map_err(|e| e.to_string())?;
    let mut w = ParquetWriter::new(std::io::BufWriter::with_capacity(1 << 20, file), schema, format)?;
    let rows = merge(runs, ndims, fan_in, 65_536, dir, &mut |chunk| w.write(chunk).map_err(std::io::Error::other))
        .map_err(|e| e.to_string())?;
    w.finish()?.flush().map_err(|e| e.to_string())?;
    Ok(rows)
}

/// Encodes one sealed segment, publishes it, then deletes the segment.
fn publish(k: u32, dir: &Path, shared: &Shared, s: &Sealed) -> Result<(), UploadError> {
    let set = &shared.settings;
    let shard = format!("{}-{k}", set.writer);
    let rel = file_path(&set.table, s.hour_ms, &shard, s.first_epoch, s.last_epoch);
    let tmp = dir.join(format!("upload-{}-{}.tmp", s.first_epoch, s.last_epoch));
    let l = |e: String| UploadError::Local(format!("{}: {e}", tmp.display()));
    let started = Instant::now();
    let (tx, rx) = smpsc::channel();
    let runs: Vec<Run> = s.frames.iter().map(|f| Run { path: s.path.clone(), frame: *f }).collect();
    let (schema, format, ndims, fan_in) = (shared.schema.clone(), set.format, set.dims.len(), set.fan_in);
    let (dir_, tmp_) = (dir.to_path_buf(), tmp.clone());
    let job: EncodeJob = Box::new(move || {
        let _ = tx.send(encode_file(runs, ndims, fan_in, &dir_, &tmp_, &schema, format));
    });
    shared.encoder.send(job).map_err(|_| l("the archive encoder stopped".into()))?;
    let rows = rx.recv().map_err(|_| l("the archive encoder stopped".into()))?.map_err(l)?;
    if rows != s.rows {
        let _ = std::fs::remove_file(&tmp);
        return Err(l(format!("merged {rows} rows of {}", s.rows)));
    }
    shared.hook().reach_blocking("archive_mid_upload");
    let p = shared.rt.block_on(shared.store.publish(&rel, &tmp, rows, &shard));
    let _ = std::fs::remove_file(&tmp);
    let p = p?;
    shared.hook().reach_blocking("archive_after_publish");
    std::fs::remove_file(&s.path).map_err(|e| UploadError::Local(format!("{}: {e}", s.path.display())))?;
    let _ = sync_dir(dir);
    shared.account(-(s.len as i64));
    let st = &shared.stats;
    st.record_load_ms(Stage::ArchiveUpload, started.elapsed().as_millis() as u64);
    st.archive_files_published.fetch_add(1, Ordering::Relaxed);
    st.archive_bytes_published.fetch_add(p.bytes, Ordering::Relaxed);
    st.archive_readings_published.fetch_add(rows, Ordering::Relaxed);
    st.archive_file(crate::telemetry::ArchivedFile {
        path: rel.clone(),
        rows,
        bytes: p.bytes,
        first_epoch: s.first_epoch,
        last_epoch: s.last_epoch,
    });
    if s.len > 0 && !p.already {
        *shared.ratio.lock().unwrap_or_else(|p| p.into_inner()) = (p.bytes as f64 / s.len as f64).clamp(0.01, 4.0);
    }
    if p.already {
        tracing::info!(file = %rel, rows, "Archive file was already published before a restart; accepted as is.");
    } else {
        tracing::info!(file = %rel, rows, bytes = p.bytes, "Archive file published.");
    }
    Ok(())
}
