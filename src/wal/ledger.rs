//! The WAL's ledger: where MQTT epochs are decided (DESIGN.md §3, step 2).
//!
//! An append-only file `ledger` beside the segments, one frame per decision:
//!
//! ```text
//! frame := len:u32le crc:u32le position:u64le decision[len - 8]
//! ```
//!
//! `decision` is the epoch decision's text (`rockfeed/1 <prefix> <epoch>
//! <shards> <tables>`, as Kafka keeps it in offset metadata) and `position`
//! the WAL position after the epoch's last message. [`Ledger::record`]
//! returns once the frame is fdatasynced: that is the decision. Opening
//! keeps the last valid frame and cuts a torn one. The file is rewritten
//! (temporary file, fsync, rename, directory fsync) once it passes 1 MiB, so
//! it stays small.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const NAME: &str = "ledger";
const COMPACT_AT: u64 = 1 << 20;

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub position: u64,
    pub decision: String,
}

pub struct Ledger {
    path: PathBuf,
    file: File,
    len: u64,
    last: Option<Entry>,
}

fn frame(e: &Entry) -> Vec<u8> {
    let mut body = e.position.to_le_bytes().to_vec();
    body.extend_from_slice(e.decision.as_bytes());
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir`.
    pub fn open(dir: &Path) -> io::Result<Ledger> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(NAME);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (mut at, mut last) = (0usize, None);
        while let Some(h) = bytes.get(at..at + 8) {
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            let Some(body) = bytes.get(at + 8..at + 8 + len) else { break };
            if len < 8 || crc32fast::hash(body) != crc {
                break;
            }
            let position = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
            last = Some(Entry { position, decision: String::from_utf8_lossy(&body[8..]).into_owned() });
            at += 8 + len;
        }
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        if (at as u64) < bytes.len() as u64 {
            tracing::warn!(path = %path.display(), cut = bytes.len() - at, "Cut a torn tail from the WAL ledger.");
            file.set_len(at as u64)?;
            file.sync_all()?;
        }
        Ok(Ledger { path, file, len: at as u64, last })
    }

    /// The last decision.
    pub fn last(&self) -> Option<&Entry> {
        self.last.as_ref()
    }

    /// Makes `e` durable.
    pub fn record(&mut self, e: Entry) -> io::Result<()> {
        let f = frame(&e);
        if self.len + f.len() as u64 > COMPACT_AT {
            let tmp = self.path.with_extension("tmp");
            let mut t = File::create(&tmp)?;
            t.write_all(&f)?;
            t.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(d) = self.path.parent() {
                File::open(d)?.sync_all()?;
            }
            self.file = OpenOptions::new().write(true).open(&self.path)?;
            self.len = f.len() as u64;
        } else {
            use std::os::unix::fs::FileExt;
            self.file.write_all_at(&f, self.len)?;
            self.file.sync_data()?;
            self.len += f.len() as u64;
        }
        self.last = Some(e);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_decision_survives_reopening_a_torn_tail_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.last(), None);
        for i in 1..=3 {
            l.record(Entry { position: i * 100, decision: format!("rockfeed/1 p {i} 2 t") }).unwrap();
        }
        drop(l);
        // A torn frame after the third decision.
        let path = dir.path().join(NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let good = bytes.len();
        bytes.extend_from_slice(&frame(&Entry { position: 400, decision: "rockfeed/1 p 4 2 t".into() })[..10]);
        std::fs::write(&path, &bytes).unwrap();
        let mut l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.last().unwrap().position, 300);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good as u64);
        // Enough decisions to compact several times.
        let long = "x".repeat(4000);
        for i in 0..600u64 {
            l.record(Entry { position: 1000 + i, decision: long.clone() }).unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= COMPACT_AT);
        drop(l);
        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.last(), Some(&Entry { position: 1599, decision: long }));
    }
}
