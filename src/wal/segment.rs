//! The log itself: segment files of frames (`record.rs`), named by the
//! logical position of their first byte, `{start:020}.wal`. A position is a
//! byte offset in the log as if it were one file; a record's position is
//! the position just after it (the position to read from next).
//!
//! - **Appends** are buffered (`pending`) until [`Log::commit`], which
//!   writes them and `fdatasync`s every file it touched (io_uring's writes
//!   are durable by themselves: `io.rs`), and the directory when it made
//!   a segment: once it returns, everything appended is
//!   durable. A segment is closed when the next frame would take it past
//!   `segment_bytes` (a frame larger than that gets a segment of its own).
//! - **Zeros ahead.** The active segment is kept written with zeros
//!   [`ZERO_AHEAD`] past its last frame (the zeros go out with a commit's
//!   frames, under the same fdatasync). A commit then overwrites blocks that
//!   already exist and does not change the file's size, so its fdatasync
//!   flushes data only, not the inode: measured on this VM's ext4, about
//!   half the CPU of an fdatasync that grows the file. A closed segment is
//!   cut back to its frames (and synced) before the next one is made, so
//!   every segment but the newest ends exactly where the next begins.
//! - **Whole blocks.** Every write starts and ends at an [`ALIGN`] boundary
//!   of the file, as direct I/O requires (`io.rs`): a commit rewrites the
//!   active segment's last partial block (its bytes kept in memory) ahead
//!   of its frames, and pads its last block with zeros, which is what the
//!   file holds there anyway (zeros ahead). The same writes go through the
//!   page cache where direct I/O is not available.
//! - **Release** deletes segments that lie wholly below a position (the
//!   decided one). The newest segment is never deleted.
//! - **Recovery** ([`Log::open`]): every segment but the newest must end
//!   exactly where the next begins. The first one that does not (a crash
//!   lost part of an unsynced segment, and a newer one was already made)
//!   and the newest one are scanned frame by frame (length, bounds, CRC):
//!   the first invalid frame is the torn tail (zeros ahead read as one: a
//!   zero length is invalid). The file is cut there and every later segment
//!   removed; bytes cut up to the last non-zero one count as torn. Only unsynced, hence unacknowledged,
//!   records can be lost this way.
//! - **Reading** ([`Reader`]) streams frames through a buffered reader from
//!   a position up to a bound, segment after segment; a bad frame below
//!   the durable end is corruption and an error.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::io::{ALIGN, Backend, SegmentFile, aligned_start, aligned_zeros};
use super::record::{self, HEADER, Record};

const SUFFIX: &str = ".wal";

pub fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}{SUFFIX}"))
}

/// Segment starts in `dir`, in order.
pub fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(SUFFIX)?.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// How far past its last frame the active segment is kept zero-filled (at
/// most `segment_bytes`); it is topped up when less than half is left.
pub const ZERO_AHEAD: u64 = 1 << 20;

/// Frames appended for one segment, not yet written.
struct Chunk {
    segment: u64,
    buf: Vec<u8>,
}

/// The writer's view of the log (one owner: the WAL's writer thread).
pub struct Log {
    dir: PathBuf,
    segment_bytes: u64,
    io: Box<dyn Backend>,
    /// Retained segments: start → bytes written.
    segments: BTreeMap<u64, u64>,
    /// The newest segment's file, open for writing.
    active: Option<(u64, Box<dyn SegmentFile>)>,
    /// The active segment's length on disk: its frames, then zeros.
    zeroed: u64,
    /// Everything below is durable.
    end: u64,
    /// End of what was appended (≥ `end`).
    next: u64,
    pending: Vec<Chunk>,
    /// A segment was made since the last sync (the directory needs one).
    made_segment: bool,
    /// The active segment's bytes from its last [`ALIGN`] boundary to the
    /// end of its frames: the next write begins with them.
    block: Vec<u8>,
    /// The write buffer, kept between commits.
    wbuf: Vec<u8>,
    /// Bytes handed to the files since the last [`Log::take_written`]:
    /// frames, each write's rewritten partial block and padding, zeros ahead.
    written: u64,
}

/// What recovery found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Bytes cut from a torn tail.
    pub torn_bytes: u64,
    /// Segments removed after a gap.
    pub removed_segments: usize,
}

impl Log {
    /// Opens the log in `dir` (created if missing), recovering as the
    /// module doc says. An empty log starts at `floor` (the ledger's decided
    /// position: a log whose segments were all released continues there).
    pub fn open(dir: &Path, segment_bytes: u64, io: Box<dyn Backend>, floor: u64) -> io::Result<(Log, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let starts = list(dir)?;
        let mut rec = Recovered::default();
        let mut segments = BTreeMap::new();
        for (i, &s) in starts.iter().enumerate() {
            let path = segment_path(dir, s);
            let len = std::fs::metadata(&path)?.len();
            let expected = starts.get(i + 1).map(|n| n - s);
            if expected == Some(len) {
                segments.insert(s, len);
                continue;
            }
            if let Some(e) = expected.filter(|&e| len > e && nonzero_end(&path, e).ok() == Some(e)) {
                // Zeros ahead of a segment whose cut was not made durable:
                // padding, not frames.
                let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                f.set_len(e)?;
                f.sync_all()?;
                segments.insert(s, e);
                continue;
            }
            if expected.is_some_and(|e| len > e) {
                return Err(io::Error::other(format!(
                    "WAL segment {} is {len} bytes, past the start of the next segment: the WAL directory is damaged",
                    path.display()
                )));
            }
            let valid = scan_valid(&path)?;
            if valid < len {
                rec.torn_bytes += nonzero_end(&path, valid)? - valid;
                let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                f.set_len(valid)?;
                f.sync_all()?;
            }
            segments.insert(s, valid);
            for &later in &starts[i + 1..] {
                std::fs::remove_file(segment_path(dir, later))?;
                rec.removed_segments += 1;
            }
            break;
        }
        if rec.removed_segments > 0 {
            File::open(dir)?.sync_all()?;
        }
        let end = segments.iter().next_back().map(|(s, l)| s + l).unwrap_or(floor);
        if end < floor {
            return Err(io::Error::other(format!(
                "the WAL in {} ends at position {end}, below the decided position {floor}: segments were removed by hand",
                dir.display()
            )));
        }
        let (active, zeroed, block) = match segments.iter().next_back() {
            Some((&s, &len)) => {
                let from = len - len % ALIGN as u64;
                let mut block = vec![0u8; (len - from) as usize];
                File::open(segment_path(dir, s))?.read_exact_at(&mut block, from)?;
                (Some((s, io.open(&segment_path(dir, s))?)), len, block)
            }
            None => (None, 0, Vec::new()),
        };
        let log = Log {
            dir: dir.into(),
            segment_bytes: segment_bytes.max(1),
            io,
            segments,
            active,
            zeroed,
            end,
            next: end,
            pending: Vec::new(),
            made_segment: false,
            block,
            wbuf: Vec::new(),
            written: 0,
        };
        Ok((log, rec))
    }

    /// Appends a record (buffered until [`Log::commit`]); returns its position
    /// (the position after it).
    pub fn append(&mut self, r: &Record) -> u64 {
        let f = r.frame_len() as u64;
        // The segment being appended to, and the bytes it holds.
        let (segment, used) = match (self.pending.last(), &self.active) {
            (Some(c), _) => (c.segment, self.segments.get(&c.segment).copied().unwrap_or(0) + c.buf.len() as u64),
            (None, Some((s, _))) => (*s, self.segments[s]),
            (None, None) => (self.next, 0),
        };
        let target = if used > 0 && used + f > self.segment_bytes { self.next } else { segment };
        if self.pending.last().is_none_or(|c| c.segment != target) {
            self.pending.push(Chunk { segment: target, buf: Vec::with_capacity(f as usize) });
        }
        let c = self.pending.last_mut().expect("pushed above");
        r.encode(&mut c.buf);
        self.next += f;
        self.next
    }

    /// Writes and fsyncs everything appended; returns the durable end.
    pub fn commit(&mut self) -> io::Result<u64> {
        self.write()?;
        self.sync()
    }

    /// The first half of a commit: writes what was appended (a segment
    /// closed on the way is synced); nothing new is durable yet.
    pub fn write(&mut self) -> io::Result<()> {
        for c in std::mem::take(&mut self.pending) {
            if self.active.as_ref().is_none_or(|(s, _)| *s != c.segment) {
                if let Some((s, f)) = self.active.as_mut() {
                    // Closed: cut back to its frames, durably, before the
                    // next segment exists.
                    let frames = self.segments[s];
                    if self.zeroed > frames {
                        f.set_len(frames)?;
                    }
                    f.sync_data()?;
                }
                let file = self.io.open(&segment_path(&self.dir, c.segment))?;
                self.active = Some((c.segment, file));
                self.zeroed = 0;
                self.block.clear();
                self.segments.entry(c.segment).or_insert(0);
                self.made_segment = true;
            }
            let (_, f) = self.active.as_mut().expect("set above");
            let at = self.segments[&c.segment];
            let end = at + c.buf.len() as u64;
            // From the block holding `at` (its bytes before `at` kept in
            // `block`) to the block boundary after the frames (zeros).
            let base = at - self.block.len() as u64;
            let len = self.block.len() + c.buf.len();
            let padded = len.next_multiple_of(ALIGN);
            let mut w = std::mem::take(&mut self.wbuf);
            let off = aligned_start(&mut w, padded);
            w.extend_from_slice(&self.block);
            w.extend_from_slice(&c.buf);
            w.resize(off + padded, 0);
            let w = f.write_all_at(w, off..off + padded, base)?;
            self.written += padded as u64;
            let last_block = end - end % ALIGN as u64;
            self.block.clear();
            self.block.extend_from_slice(&w[off + (last_block - base) as usize..off + len]);
            self.wbuf = w;
            *self.segments.get_mut(&c.segment).expect("inserted above") = end;
            self.zeroed = self.zeroed.max(base + padded as u64);
            let ahead = ZERO_AHEAD.min(self.segment_bytes);
            if self.zeroed - end < ahead / 2 {
                let from = self.zeroed;
                debug_assert_eq!(from % ALIGN as u64, 0);
                let to = (end + ahead).next_multiple_of(ALIGN as u64);
                let (zeros, range) = aligned_zeros((to - from) as usize);
                let _ = f.write_all_at(zeros, range, from)?;
                self.written += to - from;
                self.zeroed = to;
            }
        }
        Ok(())
    }

    /// The second half: fdatasync (and the directory's fsync when a segment
    /// was made); returns the durable end.
    pub fn sync(&mut self) -> io::Result<u64> {
        if self.end == self.next {
            return Ok(self.end);
        }
        if let Some((_, f)) = self.active.as_mut() {
            f.sync_data()?;
        }
        if self.made_segment {
            File::open(&self.dir)?.sync_all()?;
            self.made_segment = false;
        }
        self.end = self.next;
        Ok(self.end)
    }

    /// Bytes handed to the segment files since the last call (see `written`).
    pub fn take_written(&mut self) -> u64 {
        std::mem::take(&mut self.written)
    }

    /// The first retained position.
    pub fn start(&self) -> u64 {
        self.segments.keys().next().copied().unwrap_or(self.end)
    }

    /// How many segments [`Log::release`] would delete.
    pub fn releasable(&self, pos: u64) -> usize {
        let starts: Vec<u64> = self.segments.keys().copied().collect();
        starts.windows(2).take_while(|w| w[1] <= pos).count()
    }

    /// Deletes segments that end at or below `pos` (never the newest).
    pub fn release(&mut self, pos: u64) -> io::Result<usize> {
        let starts: Vec<u64> = self.segments.keys().copied().collect();
        let mut n = 0;
        for w in starts.windows(2) {
            let (s, next) = (w[0], w[1]);
            if next > pos {
                break;
            }
            std::fs::remove_file(segment_path(&self.dir, s))?;
            self.segments.remove(&s);
            n += 1;
        }
        Ok(n)
    }

    /// The durable end.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes the retained segments hold (durable and pending).
    pub fn retained(&self) -> u64 {
        self.next - self.segments.keys().next().copied().unwrap_or(self.end)
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn io_name(&self) -> &'static str {
        self.io.name()
    }

    /// Test only: a crash after the first `written` bytes of what was
    /// appended reached the files (in log order), with no fsync.
    #[cfg(test)]
    pub fn crash(mut self, mut written: usize) -> io::Result<()> {
        for c in std::mem::take(&mut self.pending) {
            if written == 0 {
                break;
            }
            let take = written.min(c.buf.len());
            written -= take;
            let path = segment_path(&self.dir, c.segment);
            let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
            f.write_all_at(&c.buf[..take], self.segments.get(&c.segment).copied().unwrap_or(0))?;
        }
        Ok(())
    }
}

/// Where the last non-zero byte at or after `from` in `path` ends (`from`
/// when there is none): the end of a torn tail, zeros ahead excluded.
fn nonzero_end(path: &Path, from: u64) -> io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let (mut pos, mut last) = (from, from);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(last);
        }
        if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
            last = pos + i as u64 + 1;
        }
        pos += n as u64;
    }
}

/// The length of the valid frames at the start of `path`.
fn scan_valid(path: &Path) -> io::Result<u64> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut valid = 0u64;
    let mut body = Vec::new();
    loop {
        match read_frame(&mut r, &mut body)? {
            Frame::Ok(n) => valid += n as u64,
            Frame::End | Frame::Bad => return Ok(valid),
        }
    }
}

enum Frame {
    /// A valid frame of this many bytes; its body is in the buffer.
    Ok(usize),
    /// Clean end of the file.
    End,
    /// A short, implausible or CRC-failing frame.
    Bad,
}

fn read_frame(r: &mut impl Read, body: &mut Vec<u8>) -> io::Result<Frame> {
    let mut h = [0u8; HEADER];
    match read_full(r, &mut h)? {
        0 => return Ok(Frame::End),
        n if n < HEADER => return Ok(Frame::Bad),
        _ => {}
    }
    let Some((len, crc)) = record::header(&h) else { return Ok(Frame::Bad) };
    body.resize(len, 0);
    if read_full(r, body)? < len || crc32fast::hash(body) != crc {
        return Ok(Frame::Bad);
    }
    Ok(Frame::Ok(HEADER + len))
}

/// Reads until `buf` is full or the end; the count read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Streams records from `pos` up to `until` (both record boundaries below
/// the durable end), one buffered segment at a time.
pub struct Reader {
    dir: PathBuf,
    pos: u64,
    until: u64,
    file: Option<BufReader<File>>,
    body: Vec<u8>,
}

impl Reader {
    pub fn new(dir: &Path, pos: u64, until: u64) -> Reader {
        Reader { dir: dir.into(), pos, until, file: None, body: Vec::new() }
    }

    /// The next record and its position, `None` at `until`.
    pub fn next_record(&mut self) -> io::Result<Option<(Record, u64)>> {
        if self.pos >= self.until {
            return Ok(None);
        }
        loop {
            if self.file.is_none() {
                let starts = list(&self.dir)?;
                let Some(&s) = starts.iter().rev().find(|&&s| s <= self.pos) else {
                    return Err(self.corrupt("no segment holds it"));
                };
                let mut f = File::open(segment_path(&self.dir, s))?;
                f.seek(SeekFrom::Start(self.pos - s))?;
                self.file = Some(BufReader::with_capacity(1 << 20, f));
            }
            let r = self.file.as_mut().expect("opened above");
            match read_frame(r, &mut self.body)? {
                Frame::Ok(n) => {
                    self.pos += n as u64;
                    let rec = Record::decode_body(&self.body).ok_or_else(|| self.corrupt("undecodable record"))?;
                    return Ok(Some((rec, self.pos)));
                }
                // This segment ends here; the next one starts at `pos`.
                Frame::End => {
                    self.file = None;
                    if !segment_path(&self.dir, self.pos).exists() {
                        return Err(self.corrupt("the segment ends early"));
                    }
                }
                Frame::Bad => return Err(self.corrupt("a frame fails its length or CRC check")),
            }
        }
    }

    fn corrupt(&self, why: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WAL in {} is corrupt at position {}: {why}", self.dir.display(), self.pos),
        )
    }
}
