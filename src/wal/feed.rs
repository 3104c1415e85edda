//! The feeder: the durable log handed to the pipeline, from disk below the
//! in-memory tail, then from the tail.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::segment::Reader;
use super::{Record, STREAM, Shared};
use crate::model::RawMessage;

/// The message a record at `pos` (the position after it) feeds.
pub(super) fn message(stream: &Arc<str>, r: Record, pos: u64) -> RawMessage {
    let mut m = RawMessage::new(r.topic, r.payload, r.received_ms);
    // The decoder notes `offset + 1` as the position to resume from.
    m.position = Some(crate::model::Position { stream: stream.clone(), partition: 0, offset: pos as i64 - 1 });
    m
}

/// Records read from disk per blocking call of the feeder.
const DISK_BATCH: usize = 4096;

/// The feeder: disk below the tail's start (read on the blocking pool, a
/// batch at a time), then the tail. It runs on the runtime, so handing a
/// message to the decoder wakes it cheaply, not across threads.
pub(super) async fn feed_loop(sh: &Arc<Shared>, mut next: u64, tx: &mpsc::Sender<RawMessage>) -> std::io::Result<()> {
    let stream: Arc<str> = Arc::from(STREAM);
    let message = |r: Record, pos: u64| message(&stream, r, pos);
    let mut taken = Vec::new();
    loop {
        let behind = {
            let mut t = sh.tail.lock().unwrap_or_else(|p| p.into_inner());
            if next < t.start {
                Some(t.start)
            } else {
                taken.extend(t.queue.drain(..));
                t.bytes = 0;
                t.start = taken.last().map(|(_, p)| *p).unwrap_or(t.start);
                None
            }
        };
        if let Some(until) = behind {
            let mut rd = Reader::new(&sh.cfg.dir, next, until);
            loop {
                let (back, batch) = tokio::task::spawn_blocking(move || {
                    let mut batch = Vec::new();
                    while batch.len() < DISK_BATCH {
                        match rd.next_record() {
                            Ok(Some(x)) => batch.push(x),
                            Ok(None) => break,
                            Err(e) => return (rd, Err(e)),
                        }
                    }
                    (rd, Ok(batch))
                })
                .await
                .map_err(std::io::Error::other)?;
                rd = back;
                let batch = batch?;
                if batch.is_empty() {
                    break;
                }
                for (r, pos) in batch {
                    if tx.send(message(r, pos)).await.is_err() {
                        return Ok(());
                    }
                    next = pos;
                }
            }
            continue;
        }
        if taken.is_empty() {
            if sh.stop.load(Ordering::Relaxed) || tx.is_closed() {
                return Ok(());
            }
            tokio::select! {
                _ = sh.tail_notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = tx.closed() => return Ok(()),
            }
            continue;
        }
        for (r, pos) in taken.drain(..) {
            if pos <= next {
                continue;
            }
            if tx.send(message(r, pos)).await.is_err() {
                return Ok(());
            }
            next = pos;
        }
    }
}
