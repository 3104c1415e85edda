//! The WAL's file I/O: io_uring through tokio-uring, or plain positional
//! writes. Both write a whole buffer at an offset and make it durable
//! (below: how); nothing else of the WAL differs between them.
//!
//! `wal.io = "auto"` probes io_uring at start (a runtime, then a write, a
//! cut and an fdatasync on a probe file in the WAL directory) and falls back to
//! plain files, logging why: container seccomp profiles and
//! `kernel.io_uring_disabled` often forbid it. `"uring"` makes a failing
//! probe an error, `"std"` never tries.
//!
//! **Direct I/O.** Where the filesystem takes it (probed at start: tmpfs
//! before Linux 6.6 and some network or FUSE filesystems do not), segments
//! are opened with `O_DIRECT`: a group commit
//! then goes from its buffer to the device without the page cache, and its
//! fdatasync has no dirty pages to find, only the device's cache to flush.
//! Measured on this VM's ext4 (a ~6 KB commit, pwrite + fdatasync in a
//! loop): about 40 µs of CPU per commit instead of 62-71. Direct writes
//! must be aligned in offset, length and memory ([`ALIGN`]); the log
//! (`segment.rs`) rewrites the last partial block with each commit.
//!
//! **io_uring writes are durable when they complete.** Its segments are
//! opened with `O_DSYNC`, so a group commit is one ring operation: io_uring
//! always hands an fsync operation to an io-wq worker thread, and a write
//! then an fsync were two round trips through the ring and a worker's
//! wake-up on every commit. The kernel flushes the device's cache before the
//! write completes (on this VM, from a kernel worker instead of rockfeed's
//! own io-wq thread). [`SegmentFile::sync_data`] then runs an fsync only
//! after the file's length was cut. Measured at 30k narrow msg/s (per-thread
//! CPU over 10 s, three interleaved pairs): rockfeed 1.34–1.66 s before,
//! 1.06–1.55 s after, kernel threads machine-wide 0.15–0.20 s before,
//! 0.25–0.31 s after; context switches 4,000/s before, 2,000/s after.
//! Plain files gain nothing from `O_DSYNC` (the flush runs in the writing
//! thread either way), so they keep `fdatasync`.
//!
//! The io_uring runtime is not `Send`: a backend lives on the one thread
//! that made it (the WAL's writer thread).

use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::rc::Rc;

/// The alignment of direct writes: offset, length and memory. 4 KiB covers
/// every common device's logical block (512 or 4096 bytes).
pub const ALIGN: usize = 4096;

/// How the WAL writes its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoMode {
    /// io_uring where the kernel allows it, plain files otherwise.
    #[default]
    Auto,
    Uring,
    Std,
}

/// One open segment file.
pub trait SegmentFile {
    /// Writes `buf[range]` at `offset` (under direct I/O, the range's start
    /// in memory, its length and `offset` are multiples of [`ALIGN`]); gives
    /// the buffer back for reuse.
    fn write_all_at(&mut self, buf: Vec<u8>, range: Range<usize>, offset: u64) -> io::Result<Vec<u8>>;
    /// Makes every write and cut so far durable (`fdatasync`, or nothing
    /// where the writes were durable on completion and nothing was cut).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes (made durable by the next sync).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// Opens segment files.
pub trait Backend {
    /// Opens `path` for writing, creating it if missing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// `std` or `io_uring`, with `+direct` under direct I/O.
    fn name(&self) -> &'static str;
}

/// Plain positional writes (`pwrite`, `fdatasync`).
pub struct StdBackend {
    direct: bool,
}

impl StdBackend {
    /// Through the page cache.
    pub fn buffered() -> StdBackend {
        StdBackend { direct: false }
    }

    /// Direct I/O where `dir` takes it (see [`probe_direct`]).
    pub fn probe(dir: &Path) -> StdBackend {
        StdBackend { direct: probe_direct(dir) }
    }
}

struct StdFile(std::fs::File);

impl SegmentFile for StdFile {
    fn write_all_at(&mut self, buf: Vec<u8>, range: Range<usize>, offset: u64) -> io::Result<Vec<u8>> {
        self.0.write_all_at(&buf[range], offset)?;
        Ok(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

fn open_std(path: &Path, direct: bool) -> io::Result<std::fs::File> {
    open_with(path, if direct { libc::O_DIRECT } else { 0 })
}

fn open_with(path: &Path, flags: i32) -> io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true).truncate(false).write(true).custom_flags(flags);
    o.open(path)
}

/// The index in `buf` (cleared, with room for `len` more bytes) from which
/// its bytes are [`ALIGN`]ed in memory; zeros fill the bytes before it.
/// Pushing up to `len` bytes after it does not move the allocation.
pub fn aligned_start(buf: &mut Vec<u8>, len: usize) -> usize {
    buf.clear();
    buf.reserve(len + ALIGN);
    let off = (ALIGN - buf.as_ptr().addr() % ALIGN) % ALIGN;
    buf.resize(off, 0);
    off
}

/// `len` zeros starting at an [`ALIGN`] boundary in memory: the buffer and
/// where in it they are.
pub fn aligned_zeros(len: usize) -> (Vec<u8>, Range<usize>) {
    let mut buf = Vec::new();
    let off = aligned_start(&mut buf, len);
    buf.resize(off + len, 0);
    (buf, off..off + len)
}

/// Whether `dir`'s filesystem takes direct I/O: an aligned block written to
/// a probe file opened with `O_DIRECT`, and synced. Logged when it does not.
pub fn probe_direct(dir: &Path) -> bool {
    let path = dir.join(".direct_probe");
    let r = (|| {
        let f = open_std(&path, true)?;
        let (buf, range) = aligned_zeros(ALIGN);
        f.write_all_at(&buf[range], 0)?;
        f.sync_data()
    })();
    let _ = std::fs::remove_file(&path);
    match r {
        Ok(()) => true,
        Err(e) => {
            tracing::info!(dir = %dir.display(), error = %e, "The WAL's filesystem does not take direct I/O; group commits go through the page cache (more CPU per fdatasync, nothing else).");
            false
        }
    }
}

impl Backend for StdBackend {
    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(StdFile(open_std(path, self.direct)?)))
    }

    fn name(&self) -> &'static str {
        if self.direct { "std+direct" } else { "std" }
    }
}

/// io_uring: a tokio-uring runtime on this thread, one operation at a time
/// (a group commit is one `O_DSYNC` write, so there is nothing to overlap).
pub struct UringBackend {
    rt: Rc<tokio_uring::Runtime>,
    direct: bool,
}

struct UringFile {
    rt: Rc<tokio_uring::Runtime>,
    file: Option<tokio_uring::fs::File>,
    /// The same file for `set_len`, which io_uring has no operation for.
    plain: std::fs::File,
    /// Cut since the last fsync: the length is not durable yet (writes
    /// are, through `O_DSYNC`).
    cut: bool,
}

impl SegmentFile for UringFile {
    fn write_all_at(&mut self, buf: Vec<u8>, range: Range<usize>, offset: u64) -> io::Result<Vec<u8>> {
        use tokio_uring::buf::BoundedBuf;
        let f = self.file.as_ref().ok_or_else(|| io::Error::other("closed"))?;
        let (r, buf) = self.rt.block_on(f.write_all_at(buf.slice(range), offset));
        r.map(|_| buf.into_inner())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if !self.cut {
            return Ok(());
        }
        let f = self.file.as_ref().ok_or_else(|| io::Error::other("closed"))?;
        self.rt.block_on(f.sync_data())?;
        self.cut = false;
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.cut = true;
        self.plain.set_len(len)
    }
}

impl Drop for UringFile {
    fn drop(&mut self) {
        if let Some(f) = self.file.take() {
            let _ = self.rt.block_on(f.close());
        }
    }
}

impl UringBackend {
    /// A runtime, and a probe write, cut and fdatasync in `dir` (direct
    /// where `dir` takes it).
    pub fn probe(dir: &Path) -> io::Result<UringBackend> {
        Self::probe_with(dir, probe_direct(dir))
    }

    /// [`UringBackend::probe`], direct or not as told.
    fn probe_with(dir: &Path, direct: bool) -> io::Result<UringBackend> {
        let rt = Rc::new(tokio_uring::Runtime::new(&tokio_uring::builder())?);
        let b = UringBackend { rt, direct };
        let path = dir.join(".io_uring_probe");
        let r = (|| {
            let mut f = b.open(&path)?;
            let (buf, range) = aligned_zeros(ALIGN);
            f.write_all_at(buf, range, 0)?;
            // A cut, so that the fsync operation is tried too.
            f.set_len(ALIGN as u64)?;
            f.sync_data()
        })();
        let _ = std::fs::remove_file(&path);
        r.map(|_| b)
    }
}

impl Backend for UringBackend {
    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let std = open_with(path, libc::O_DSYNC | if self.direct { libc::O_DIRECT } else { 0 })?;
        let plain = std.try_clone()?;
        Ok(Box::new(UringFile {
            rt: self.rt.clone(),
            file: Some(tokio_uring::fs::File::from_std(std)),
            plain,
            cut: false,
        }))
    }

    fn name(&self) -> &'static str {
        if self.direct { "io_uring+direct" } else { "io_uring" }
    }
}

/// The backend for `mode` (see the module doc), direct where `dir` takes it.
pub fn backend(mode: IoMode, dir: &Path) -> io::Result<Box<dyn Backend>> {
    let direct = probe_direct(dir);
    match mode {
        IoMode::Std => Ok(Box::new(StdBackend { direct })),
        IoMode::Uring => UringBackend::probe_with(dir, direct)
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(|e| io::Error::new(e.kind(), format!("wal.io = \"uring\", but io_uring is not usable here: {e}"))),
        IoMode::Auto => match UringBackend::probe_with(dir, direct) {
            Ok(b) => Ok(Box::new(b)),
            Err(e) => {
                tracing::warn!(error = %e, "io_uring is not usable here; the WAL uses plain file I/O.");
                Ok(Box::new(StdBackend { direct }))
            }
        },
    }
}
