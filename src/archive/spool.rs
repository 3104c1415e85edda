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

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::RawRows;

/// The epoch of a frame spilled mid-epoch, before its epoch has a number
/// (a shard's raw samples passed `archive.spill_bytes`). The seal numbers
/// it ([`Segment::number_open_frames`]); until then recovery cuts it, and
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
    let mut plain = Vec::new();
    for chunk in order.chunks(BLOCK_ROWS) {
        out.extend_from_slice(&block(&rows.select(chunk), &mut plain));
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

/// One open segment: the spooled frames of one future archive file.
#[derive(Debug)]
pub struct Segment {
    pub path: PathBuf,
    file: File,
    pub hour_ms: i64,
    pub first_epoch: u64,
    pub last_epoch: u64,
    pub rows: u64,
    pub len: u64,
    pub frames: Vec<FrameInfo>,
    dirty: bool,
}

/// A segment that was cut: its file is to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub path: PathBuf,
    pub hour_ms: i64,
    pub first_epoch: u64,
    pub last_epoch: u64,
    pub rows: u64,
    pub len: u64,
    pub frames: Vec<FrameInfo>,
}

fn open_name(hour_ms: i64, first: u64) -> String {
    format!("open-{hour_ms}-{first}.seg")
}

fn sealed_name(hour_ms: i64, first: u64, last: u64) -> String {
    format!("sealed-{hour_ms}-{first}-{last}.seg")
}

/// What a spool file's name says: (sealed, hour, first, last).
pub fn parse_name(name: &str) -> Option<(bool, i64, u64, Option<u64>)> {
    let stem = name.strip_suffix(".seg")?;
    if let Some(rest) = stem.strip_prefix("open-") {
        let (hour, first) = rest.rsplit_once('-')?;
        return Some((false, hour.parse().ok()?, first.parse().ok()?, None));
    }
    let rest = stem.strip_prefix("sealed-")?;
    let (rest, last) = rest.rsplit_once('-')?;
    let (hour, first) = rest.rsplit_once('-')?;
    Some((true, hour.parse().ok()?, first.parse().ok()?, Some(last.parse().ok()?)))
}

impl Segment {
    /// A new, empty segment in `dir` (the directory entry is synced).
    pub fn create(dir: &Path, hour_ms: i64, first_epoch: u64) -> std::io::Result<Segment> {
        let path = dir.join(open_name(hour_ms, first_epoch));
        let file = OpenOptions::new().create_new(true).append(true).open(&path)?;
        sync_dir(dir)?;
        Ok(Segment {
            path,
            file,
            hour_ms,
            first_epoch,
            last_epoch: first_epoch,
            rows: 0,
            len: 0,
            frames: Vec::new(),
            dirty: false,
        })
    }

    /// Reopens an open segment after a restart: keeps the frames of epochs
    /// `<= keep_through` (all numbered ones when `None`) and truncates the
    /// rest, torn frames included. `None` (and the file deleted) when nothing is
    /// left.
    pub fn recover(path: &Path, keep_through: Option<u64>) -> std::io::Result<Option<Segment>> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Some((false, hour_ms, first_epoch, None)) = parse_name(name) else {
            return Err(std::io::Error::other(format!("{} is not an open spool segment", path.display())));
        };
        let (mut frames, mut valid) = scan(path)?;
        // Spilled frames never numbered belong to an epoch never sealed.
        let k = keep_through.unwrap_or(OPEN_EPOCH - 1);
        if let Some(cut) = frames.iter().position(|f| f.epoch > k) {
            valid = frames[cut].offset - FRAME_HEADER;
            frames.truncate(cut);
        }
        if frames.is_empty() {
            std::fs::remove_file(path)?;
            if let Some(d) = path.parent() {
                sync_dir(d)?;
            }
            return Ok(None);
        }
        let file = OpenOptions::new().append(true).open(path)?;
        if file.metadata()?.len() != valid {
            file.set_len(valid)?;
            file.sync_all()?;
        }
        Ok(Some(Segment {
            path: path.to_path_buf(),
            file,
            hour_ms,
            first_epoch,
            last_epoch: frames.last().map(|f| f.epoch).unwrap_or(first_epoch),
            rows: frames.iter().map(|f| f.rows).sum(),
            len: valid,
            frames,
            dirty: false,
        }))
    }

    /// Appends one epoch's frame (not yet synced: see [`Segment::sync`]).
    pub fn append(&mut self, epoch: u64, bytes: &[u8], rows: u64) -> std::io::Result<()> {
        if bytes.len() < FRAME_HEADER as usize {
            return Err(std::io::Error::other("spool frame too short"));
        }
        let blocks = u32::from_le_bytes(bytes[12..16].try_into().unwrap_or([0; 4]));
        if let Err(e) = self.file.write_all(bytes) {
            // A partial frame would be cut at recovery, but later frames
            // must not follow it: put the length back.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.frames.push(FrameInfo {
            offset: self.len + FRAME_HEADER,
            epoch,
            blocks,
            rows,
            payload: bytes.len() as u64 - FRAME_HEADER,
        });
        self.len += bytes.len() as u64;
        self.rows += rows;
        if epoch != OPEN_EPOCH {
            self.last_epoch = self.last_epoch.max(epoch);
        }
        self.dirty = true;
        Ok(())
    }

    /// Frames spilled mid-epoch and not numbered yet: the segment may not
    /// be cut.
    pub fn has_open_frames(&self) -> bool {
        self.frames.iter().any(|f| f.epoch == OPEN_EPOCH)
    }

    /// A numbered frame of `epoch` or later is here already.
    pub fn holds_epoch_from(&self, epoch: u64) -> bool {
        self.frames.iter().any(|f| f.epoch != OPEN_EPOCH && f.epoch >= epoch)
    }

    /// The seal of `epoch`: its spilled frames get its number (their
    /// headers rewritten in place), and a segment that a spill opened takes
    /// `epoch` as its first epoch (renamed, directory synced). Not synced
    /// here: the seal syncs every segment it touched ([`Segment::sync`]).
    pub fn number_open_frames(&mut self, epoch: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if !self.has_open_frames() {
            return Ok(());
        }
        // Positioned writes: the append handle ignores offsets.
        let w = OpenOptions::new().write(true).open(&self.path)?;
        let opened_by_spill = self.frames.first().is_some_and(|f| f.epoch == OPEN_EPOCH);
        for f in self.frames.iter_mut().filter(|f| f.epoch == OPEN_EPOCH) {
            w.write_all_at(&frame_header(epoch, f.blocks, f.rows, f.payload), f.offset - FRAME_HEADER)?;
            f.epoch = epoch;
        }
        self.last_epoch = self.last_epoch.max(epoch);
        self.dirty = true;
        if opened_by_spill && self.first_epoch != epoch {
            w.sync_data()?;
            let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
            let to = dir.join(open_name(self.hour_ms, epoch));
            std::fs::rename(&self.path, &to)?;
            sync_dir(&dir)?;
            self.path = to;
            self.first_epoch = epoch;
            self.last_epoch = epoch;
        }
        Ok(())
    }

    /// Test hook only: writes the first half of a frame, as a crash in the
    /// middle of an append leaves it.
    pub fn append_torn(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(&bytes[..bytes.len() / 2])?;
        self.file.sync_data()
    }

    /// Makes the appended frames durable.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Cuts the segment: synced, renamed to its sealed name, directory
    /// synced. From here on its content and name are fixed.
    pub fn seal(mut self) -> std::io::Result<Sealed> {
        self.sync()?;
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let to = dir.join(sealed_name(self.hour_ms, self.first_epoch, self.last_epoch));
        std::fs::rename(&self.path, &to)?;
        sync_dir(&dir)?;
        Ok(Sealed {
            path: to,
            hour_ms: self.hour_ms,
            first_epoch: self.first_epoch,
            last_epoch: self.last_epoch,
            rows: self.rows,
            len: self.len,
            frames: self.frames,
        })
    }
}

impl Sealed {
    /// Reopens a sealed segment after a restart (all of it was decided
    /// before it was sealed).
    pub fn recover(path: &Path) -> std::io::Result<Sealed> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Some((true, hour_ms, first_epoch, Some(last_epoch))) = parse_name(name) else {
            return Err(std::io::Error::other(format!("{} is not a sealed spool segment", path.display())));
        };
        let (frames, len) = scan(path)?;
        let on_disk = std::fs::metadata(path)?.len();
        if len != on_disk || frames.last().map(|f| f.epoch) != Some(last_epoch) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "sealed spool segment {} is damaged ({len} of {on_disk} bytes readable); it is kept for inspection",
                    path.display()
                ),
            ));
        }
        Ok(Sealed {
            path: path.to_path_buf(),
            hour_ms,
            first_epoch,
            last_epoch,
            rows: frames.iter().map(|f| f.rows).sum(),
            len,
            frames,
        })
    }
}

#[cfg(test)]
mod tests {
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
