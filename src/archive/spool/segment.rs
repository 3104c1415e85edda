//! Segment files: one per open archive file (shard, event-time hour,
//! first epoch), appended frame by frame, recovered to the last decided
//! epoch after a crash, and sealed (renamed, the directory synced) when the
//! file is cut. The frame format and the names are in the module above.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{FRAME_HEADER, FrameInfo, OPEN_EPOCH, frame_header, scan, sync_dir};

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
