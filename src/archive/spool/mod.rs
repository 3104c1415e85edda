//! The archive spool: raw readings on local disk until their Parquet file is
//! cut, so memory stays bounded however long a file stays open.
//!
//! One **segment** file per open archive file (shard, event-time hour,
//! first epoch), append-only. Every sealed epoch appends one **frame**: the
//! epoch's readings of that hour, sorted by (vin, metric, ts), in blocks of
//! at most [`BLOCK_ROWS`] rows (each a [`RawRows`] in binary form, LZ4
//! compressed, with its CRC-32). A frame is therefore a sorted run, and
//! cutting a file is a bounded-memory merge of its runs (`merge.rs`).
//!
//! Frame: `RFSP`, epoch u64, blocks u32, rows u64, payload bytes u64, CRC-32
//! of those 32 bytes; then each block: length u32, CRC-32 u32, bytes. The
//! epoch in every frame header is the cut point: recovery keeps the frames
//! of decided epochs and truncates the file after the last of them, which
//! also drops a frame torn by a crash (its length or a CRC does not match).
//!
//! An epoch may have several frames: a shard whose raw samples pass
//! `archive.spill_bytes` spills them mid-epoch as a frame of
//! [`OPEN_EPOCH`], numbered when the epoch is sealed. Each frame is a
//! sorted run of its own.
//!
//! Names: `open-{hour_ms}-{first_epoch}.seg` while appended, renamed (and
//! the directory synced) to `sealed-{hour_ms}-{first}-{last}.seg` when the
//! file is cut, before anything is uploaded; a sealed segment is deleted
//! once its file is published.
//!
//! This file holds the frame format and its readers; `segment.rs` the
//! segment files.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::{RawRows, SelectScratch};

pub mod segment;

/// The epoch of a frame spilled mid-epoch, before its epoch has a number
/// (a shard's raw samples passed `archive.spill_bytes`). The seal numbers
/// it ([`Segment::number_open_frames`](segment::Segment::number_open_frames)); until then recovery cuts it, and
/// everything after it, like any frame of an undecided epoch.
pub const OPEN_EPOCH: u64 = u64::MAX;

/// Rows per block: the unit a merge holds in memory per run (a decoded
/// block of 4,096 rows is about 0.3 MiB; a merge holds up to `fan_in`).
/// Readers take blocks of any size: the frame counts them, each carries
/// its length.
pub const BLOCK_ROWS: usize = 4096;
const MAGIC: &[u8; 4] = b"RFSP";
/// Bytes of a frame header.
pub const FRAME_HEADER: u64 = 36;

/// Where a frame's blocks start, and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Offset of the first block.
    pub offset: u64,
    pub epoch: u64,
    pub blocks: u32,
    pub rows: u64,
    pub payload: u64,
}

/// Encodes one frame: `rows` must already be sorted.
pub fn frame(epoch: u64, rows: &RawRows, order: &[u32]) -> Vec<u8> {
    // The header goes in front once the blocks are written.
    let head = FRAME_HEADER as usize;
    let mut out = Vec::with_capacity(head + order.len() * 8);
    out.resize(head, 0);
    let mut blocks = 0u32;
    let (mut plain, mut scratch) = (Vec::new(), SelectScratch::default());
    for chunk in order.chunks(BLOCK_ROWS) {
        plain.clear();
        rows.write_selected_to(chunk, &mut plain, &mut scratch);
        out.extend_from_slice(&packed_block(&plain));
        blocks += 1;
    }
    let payload = (out.len() - head) as u64;
    out[..head].copy_from_slice(&frame_header(epoch, blocks, order.len() as u64, payload));
    out
}

/// A frame header: magic, epoch, blocks, rows, payload bytes, CRC-32.
pub fn frame_header(epoch: u64, blocks: u32, rows: u64, payload: u64) -> [u8; FRAME_HEADER as usize] {
    let mut h = [0u8; FRAME_HEADER as usize];
    h[0..4].copy_from_slice(MAGIC);
    h[4..12].copy_from_slice(&epoch.to_le_bytes());
    h[12..16].copy_from_slice(&blocks.to_le_bytes());
    h[16..24].copy_from_slice(&rows.to_le_bytes());
    h[24..32].copy_from_slice(&payload.to_le_bytes());
    let crc = crc32fast::hash(&h[..32]);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    h
}

/// One block: length, CRC-32, then `rows` in binary form, LZ4 compressed
/// (`plain` is scratch space).
pub fn block(rows: &RawRows, plain: &mut Vec<u8>) -> Vec<u8> {
    plain.clear();
    rows.write_to(plain);
    packed_block(plain)
}

/// One block of rows already in binary form.
fn packed_block(plain: &[u8]) -> Vec<u8> {
    let packed = lz4_flex::block::compress_prepend_size(plain);
    let mut out = Vec::with_capacity(8 + packed.len());
    out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&packed).to_le_bytes());
    out.extend_from_slice(&packed);
    out
}

/// Reads the frames of a spool file in order and checks every CRC. Returns
/// the valid frames and the length they cover: anything after it is a torn
/// or damaged tail.
pub fn scan(path: &Path) -> std::io::Result<(Vec<FrameInfo>, u64)> {
    let mut r = BufReader::with_capacity(1 << 16, File::open(path)?);
    let mut frames = Vec::new();
    let mut at = 0u64;
    let mut block = Vec::new();
    'frames: loop {
        let mut h = [0u8; FRAME_HEADER as usize];
        if read_full(&mut r, &mut h)? < h.len() || &h[0..4] != MAGIC {
            break;
        }
        let le8 = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or([0; 8]));
        let crc = u32::from_le_bytes(h[32..36].try_into().unwrap_or([0; 4]));
        if crc32fast::hash(&h[..32]) != crc {
            break;
        }
        let f = FrameInfo {
            offset: at + FRAME_HEADER,
            epoch: le8(4),
            blocks: u32::from_le_bytes(h[12..16].try_into().unwrap_or([0; 4])),
            rows: le8(16),
            payload: le8(24),
        };
        let mut seen = 0u64;
        for _ in 0..f.blocks {
            let mut bh = [0u8; 8];
            if read_full(&mut r, &mut bh)? < 8 {
                break 'frames;
            }
            let len = u32::from_le_bytes([bh[0], bh[1], bh[2], bh[3]]) as usize;
            let crc = u32::from_le_bytes([bh[4], bh[5], bh[6], bh[7]]);
            if seen + 8 + len as u64 > f.payload {
                break 'frames;
            }
            block.resize(len, 0);
            if read_full(&mut r, &mut block)? < len || crc32fast::hash(&block) != crc {
                break 'frames;
            }
            seen += 8 + len as u64;
        }
        if seen != f.payload {
            break;
        }
        at = f.offset + f.payload;
        frames.push(f);
    }
    Ok((frames, at))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads one frame's blocks in order (one block in memory at a time).
pub struct RunReader {
    r: BufReader<File>,
    left: u32,
}

impl RunReader {
    pub fn open(path: &Path, f: &FrameInfo) -> std::io::Result<RunReader> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(f.offset))?;
        Ok(RunReader { r: BufReader::with_capacity(1 << 16, file), left: f.blocks })
    }

    /// The next block, `None` after the last.
    pub fn next_block(&mut self) -> std::io::Result<Option<RawRows>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let mut bh = [0u8; 8];
        self.r.read_exact(&mut bh)?;
        let len = u32::from_le_bytes([bh[0], bh[1], bh[2], bh[3]]) as usize;
        let crc = u32::from_le_bytes([bh[4], bh[5], bh[6], bh[7]]);
        let mut packed = vec![0u8; len];
        self.r.read_exact(&mut packed)?;
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        if crc32fast::hash(&packed) != crc {
            return Err(bad("spool block CRC mismatch".into()));
        }
        let plain = lz4_flex::block::decompress_size_prepended(&packed).map_err(|e| bad(e.to_string()))?;
        RawRows::read_from(&plain).map(Some).map_err(bad)
    }
}

/// Syncs a directory, so a create, rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::segment::{Sealed, Segment, parse_name};
    use super::*;
    use crate::archive::{Raw, ValueKind};

    fn rows(epoch: u64, n: usize) -> RawRows {
        let mut r = RawRows::new(2);
        for i in 0..n {
            let vin = format!("V{:03}", (i * 31) % 50);
            let metric = format!("m{}", i % 7);
            let d0 = (i % 5 != 0).then(|| format!("f{}", i % 3));
            r.push(
                Raw {
                    vin: &vin,
                    ts_ms: epoch as i64 * 1000 + i as i64,
                    seq: (i % 4 != 0).then_some(i as i64),
                    metric: &metric,
                    value: i as f64 * 0.5,
                    kind: if i % 9 == 0 { ValueKind::Bool } else { ValueKind::Number },
                    received_ms: 7 + i as i64,
                    source: &format!("kafka:t/0@{i}"),
                },
                &[d0.as_deref(), Some("x")],
            );
        }
        r
    }

    fn read_all(path: &Path, f: &FrameInfo) -> Vec<(String, String, i64, Option<i64>, f64)> {
        let mut rr = RunReader::open(path, f).unwrap();
        let mut out = Vec::new();
        while let Some(b) = rr.next_block().unwrap() {
            for i in 0..b.len() {
                let (v, m, ts) = b.key(i);
                out.push((v.to_string(), m.to_string(), ts, b.seq[i], b.value[i]));
            }
        }
        out
    }

    #[test]
    fn blocks_round_trip_every_column() {
        let r = rows(3, 1000);
        let mut buf = Vec::new();
        r.write_to(&mut buf);
        let back = RawRows::read_from(&buf).unwrap();
        assert_eq!(back.len(), 1000);
        for i in 0..1000 {
            assert_eq!(back.key(i), r.key(i));
            assert_eq!((back.seq[i], back.value[i], back.kind[i]), (r.seq[i], r.value[i], r.kind[i]));
            assert_eq!(back.sources.get(back.source[i]), r.sources.get(r.source[i]));
            for d in 0..2 {
                let get = |x: &RawRows| x.dims[d][i].map(|id| x.dim_values.get(id).to_string());
                assert_eq!(get(&back), get(&r));
            }
        }
        // Damage is refused, never read as other rows.
        assert!(RawRows::read_from(&buf[..buf.len() - 1]).is_err());
        let mut bad = buf.clone();
        let at = buf.len() - 4 * 1000 * 2 - 2; // inside the source ids
        bad[at] = 0xff;
        bad[at + 1] = 0xff;
        assert!(RawRows::read_from(&bad).is_err());
    }

    #[test]
    fn frames_are_sorted_runs_and_recovery_cuts_back_to_the_decided_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 3_600_000, 5).unwrap();
        for e in 5..=8u64 {
            let r = rows(e, 20_000);
            let order = r.sorted_order();
            seg.append(e, &frame(e, &r, &order), r.len() as u64).unwrap();
        }
        seg.sync().unwrap();
        assert_eq!(seg.frames[0].blocks as usize, 20_000usize.div_ceil(BLOCK_ROWS), "blocks of {BLOCK_ROWS}");
        // Each frame reads back sorted, every row once.
        let got = read_all(&seg.path, &seg.frames[1]);
        assert_eq!(got.len(), 20_000);
        assert!(got.windows(2).all(|w| (&w[0].0, &w[0].1, w[0].2) <= (&w[1].0, &w[1].1, w[1].2)));
        let path = seg.path.clone();
        let full = seg.len;
        drop(seg);

        // A torn tail: half of a fifth frame.
        let r = rows(9, 100);
        let f = frame(9, &r, &r.sorted_order());
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&f[..f.len() / 2]).unwrap();
        drop(file);
        let (frames, valid) = scan(&path).unwrap();
        assert_eq!((frames.len(), valid), (4, full));

        // Decided through 6: epochs 7 and 8 and the torn tail go.
        let seg = Segment::recover(&path, Some(6)).unwrap().unwrap();
        assert_eq!((seg.first_epoch, seg.last_epoch, seg.rows, seg.frames.len()), (5, 6, 40_000, 2));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), seg.len);
        // Appending goes on after the cut, and sealing renames.
        let mut seg = seg;
        let r = rows(7, 10);
        seg.append(7, &frame(7, &r, &r.sorted_order()), 10).unwrap();
        let sealed = seg.seal().unwrap();
        assert!(sealed.path.ends_with("sealed-3600000-5-7.seg"));
        assert_eq!(Sealed::recover(&sealed.path).unwrap(), sealed);
        // Decided before the first epoch: nothing is kept.
        let seg = Segment::create(dir.path(), 0, 12).unwrap();
        let p = seg.path.clone();
        let mut seg = seg;
        seg.append(12, &frame(12, &r, &r.sorted_order()), 10).unwrap();
        drop(seg);
        assert!(Segment::recover(&p, Some(11)).unwrap().is_none());
        assert!(!p.exists());
    }

    #[test]
    fn names_parse_back() {
        assert_eq!(parse_name("open-3600000-5.seg"), Some((false, 3_600_000, 5, None)));
        assert_eq!(parse_name("open--3600000-5.seg"), Some((false, -3_600_000, 5, None)));
        assert_eq!(parse_name("sealed-0-5-9.seg"), Some((true, 0, 5, Some(9))));
        assert_eq!(parse_name("sealed-0-5.seg"), None);
        assert_eq!(parse_name("merge-1.tmp"), None);
    }
}
