//! The WAL's file I/O: io_uring through tokio-uring, or plain positional
//! writes. Both write a whole buffer at an offset and `fdatasync`; nothing
//! else of the WAL differs between them.
//!
//! `wal.io = "auto"` probes io_uring at start (a runtime, then a write and
//! an fdatasync on a probe file in the WAL directory) and falls back to
//! plain files, logging why: container seccomp profiles and
//! `kernel.io_uring_disabled` often forbid it. `"uring"` makes a failing
//! probe an error, `"std"` never tries.
//!
//! The io_uring runtime is not `Send`: a backend lives on the one thread
//! that made it (the WAL's writer thread).

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;

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
    /// Writes all of `buf` at `offset`; gives the buffer back for reuse.
    fn write_all_at(&mut self, buf: Vec<u8>, offset: u64) -> io::Result<Vec<u8>>;
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes (made durable by the next sync).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// Opens segment files.
pub trait Backend {
    /// Opens `path` for writing, creating it if missing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    fn name(&self) -> &'static str;
}

/// Plain positional writes (`pwrite`, `fdatasync`).
pub struct StdBackend;

struct StdFile(std::fs::File);

impl SegmentFile for StdFile {
    fn write_all_at(&mut self, buf: Vec<u8>, offset: u64) -> io::Result<Vec<u8>> {
        self.0.write_all_at(&buf, offset)?;
        Ok(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

fn open_std(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)
}

impl Backend for StdBackend {
    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(StdFile(open_std(path)?)))
    }

    fn name(&self) -> &'static str {
        "std"
    }
}

/// io_uring: a tokio-uring runtime on this thread, one operation at a time
/// (a group commit is one write and one fdatasync, so there is nothing to
/// overlap).
pub struct UringBackend {
    rt: Rc<tokio_uring::Runtime>,
}

struct UringFile {
    rt: Rc<tokio_uring::Runtime>,
    file: Option<tokio_uring::fs::File>,
    /// The same file for `set_len`, which io_uring has no operation for.
    plain: std::fs::File,
}

impl SegmentFile for UringFile {
    fn write_all_at(&mut self, buf: Vec<u8>, offset: u64) -> io::Result<Vec<u8>> {
        let f = self.file.as_ref().ok_or_else(|| io::Error::other("closed"))?;
        let (r, buf) = self.rt.block_on(f.write_all_at(buf, offset));
        r.map(|_| buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let f = self.file.as_ref().ok_or_else(|| io::Error::other("closed"))?;
        self.rt.block_on(f.sync_data())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
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
    /// A runtime, and a probe write + fdatasync in `dir`.
    pub fn probe(dir: &Path) -> io::Result<UringBackend> {
        let rt = Rc::new(tokio_uring::Runtime::new(&tokio_uring::builder())?);
        let b = UringBackend { rt };
        let path = dir.join(".io_uring_probe");
        let r = (|| {
            let mut f = b.open(&path)?;
            f.write_all_at(vec![0u8; 4096], 0)?;
            f.sync_data()
        })();
        let _ = std::fs::remove_file(&path);
        r.map(|_| b)
    }
}

impl Backend for UringBackend {
    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let std = open_std(path)?;
        let plain = std.try_clone()?;
        Ok(Box::new(UringFile { rt: self.rt.clone(), file: Some(tokio_uring::fs::File::from_std(std)), plain }))
    }

    fn name(&self) -> &'static str {
        "io_uring"
    }
}

/// The backend for `mode` (see the module doc).
pub fn backend(mode: IoMode, dir: &Path) -> io::Result<Box<dyn Backend>> {
    match mode {
        IoMode::Std => Ok(Box::new(StdBackend)),
        IoMode::Uring => UringBackend::probe(dir)
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(|e| io::Error::new(e.kind(), format!("wal.io = \"uring\", but io_uring is not usable here: {e}"))),
        IoMode::Auto => match UringBackend::probe(dir) {
            Ok(b) => Ok(Box::new(b)),
            Err(e) => {
                tracing::warn!(error = %e, "io_uring is not usable here; the WAL uses plain file I/O.");
                Ok(Box::new(StdBackend))
            }
        },
    }
}
