//! The dedup horizon: identities of the last `wal.dedup_horizon` messages,
//! so a broker's redelivery of one already in the WAL is not appended again.
//!
//! - **Identity**: a 128-bit digest of a message's topic and payload: two
//!   SipHash-2-4 runs under secret keys. The keys are random per WAL
//!   (nobody can forge a collision that would drop another vehicle's
//!   message) and kept in the horizon file, so identities stay comparable
//!   across restarts. SipHash is a fixed algorithm: an upgrade of rockfeed
//!   or another CPU computes the same digests.
//! - **Persistence**: the records of the retained segments are re-read at
//!   open. Before segments are deleted, the writer saves the identities of
//!   every *durable* record of the horizon to `horizon`:
//!
//!   ```text
//!   "RFWH" version:u8=1 keys:4×u64le count:u64le id:16 bytes × count crc32:u32le
//!   ```
//!
//!   written to `horizon.tmp`, fsynced, renamed, directory fsynced. Only
//!   durable records: a record lost in a crash is redelivered, and must
//!   then be taken, not dropped.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

const MAGIC: &[u8; 4] = b"RFWH";
const NAME: &str = "horizon";

/// The digest keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity([u64; 4]);

impl Identity {
    pub fn random() -> Identity {
        Identity(rand::random())
    }

    /// The identity of a message.
    #[allow(deprecated)] // std's SipHasher: SipHash-2-4, a fixed algorithm, keyed.
    pub fn of(&self, topic: &str, payload: &[u8]) -> u128 {
        use std::hash::Hasher;
        let run = |k0, k1| {
            let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
            h.write_usize(topic.len());
            h.write(topic.as_bytes());
            h.write(payload);
            h.finish()
        };
        (run(self.0[0], self.0[1]) as u128) << 64 | run(self.0[2], self.0[3]) as u128
    }
}

/// Entries per line of the table: seven tags and seven stamps, the line's
/// spill stamp and padding fill one 64-byte cache line.
const WAYS: usize = 7;

/// One cache line of the table: up to [`WAYS`] identities whose low bits
/// pick this line, each as a 32-bit tag (bits 64..96 of the identity) and
/// a stamp (its arrival + 1, truncated to 32 bits; 0: empty).
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line {
    tags: [u32; WAYS],
    stamps: [u32; WAYS],
    /// The stamp of the last identity of this line that went to the
    /// spill map because every entry was live (0: none).
    spilled: u32,
    _pad: u32,
}

/// Identities of the last `size` messages, each with its sequence number
/// (0: durable before this start).
///
/// Built so that a new message, nearly every message, costs one cache
/// line of a random access (a general hash map costs two: its control
/// bytes and its bucket, on a table several MiB large):
/// - **The ring** holds the last `size` identities and their sequence
///   numbers in arrival order (slot `arrival % size`): written
///   sequentially, read only to confirm a match, and the source of the
///   durable identities saved before a release.
/// - **The table** maps an identity to its arrival: lines of [`WAYS`]
///   entries, one line per identity (its low bits), about 1.5 live
///   identities per line at the default size. An entry is live while its
///   arrival is among the last `size`; older ones are free to overwrite,
///   so nothing is ever swept or deleted. A tag match is confirmed against
///   the ring's full 128 bits.
/// - **The spill map** takes an identity whose line has no free entry
///   (0.1% of them at the default size); a line remembers when it last
///   spilled, so only its identities look there, and the map drops
///   forgotten entries when it reaches twice `size`.
///
/// Arrivals are counted in 64 bits; stamps keep 32 (ages are what
/// matters, and the ring confirms). The arrival whose stamp would be 0 is
/// skipped, once in 2^32.
pub struct Horizon {
    lines: Vec<Line>,
    /// `lines.len() - 1` (a power of two).
    mask: usize,
    ring: Vec<(u128, u64)>,
    spill: HashMap<u128, (u64, u64)>,
    /// Identities remembered so far: the next one's arrival.
    arrivals: u64,
    size: usize,
}

impl Horizon {
    pub fn new(size: usize) -> Horizon {
        let size = size.max(1);
        Horizon::with_lines(size, (size.next_power_of_two() / 2).max(1))
    }

    fn with_lines(size: usize, lines: usize) -> Horizon {
        Horizon {
            lines: vec![Line::default(); lines],
            mask: lines - 1,
            ring: vec![(0, u64::MAX); size],
            spill: HashMap::new(),
            arrivals: 0,
            size,
        }
    }

    /// The line of `id` (its low bits) and its tag there (bits 64..96).
    fn place(&self, id: u128) -> (usize, u32) {
        (id as usize & self.mask, (id >> 64) as u32)
    }

    /// The ring's slot of an arrival.
    fn slot(&self, arrival: u64) -> usize {
        (arrival % self.size as u64) as usize
    }

    /// Whether an arrival is among the last `size`.
    fn live_arrival(arrivals: u64, size: usize, arrival: u64) -> bool {
        arrival + size as u64 >= arrivals
    }

    /// The arrival of a live stamp (among the last `size`), else `None`.
    fn live(&self, stamp: u32) -> Option<u64> {
        if stamp == 0 {
            return None;
        }
        let age = (self.arrivals as u32).wrapping_sub(stamp.wrapping_sub(1)) as u64;
        (age <= self.size as u64 && age <= self.arrivals).then(|| self.arrivals - age)
    }

    /// The sequence number of a live `id`, and the line's first free entry.
    fn find(&self, id: u128) -> (Option<u64>, Option<usize>) {
        let (at, tag) = self.place(id);
        let line = &self.lines[at];
        let mut free = None;
        for w in 0..WAYS {
            match self.live(line.stamps[w]) {
                Some(arrival) => {
                    if line.tags[w] == tag {
                        let (rid, seq) = self.ring[self.slot(arrival)];
                        if rid == id {
                            return (Some(seq), None);
                        }
                    }
                }
                None => {
                    free.get_or_insert(w);
                }
            }
        }
        if self.live(line.spilled).is_some()
            && let Some(&(arrival, seq)) = self.spill.get(&id)
            && Self::live_arrival(self.arrivals, self.size, arrival)
        {
            return (Some(seq), None);
        }
        (None, free)
    }

    /// Reads the lines of `ids` ahead of remembering them, so that their
    /// cache misses overlap (the loads are independent) instead of coming
    /// one after another.
    pub fn warm(&self, ids: &[u128]) {
        let mut x = 0u32;
        for &id in ids {
            x = x.wrapping_add(self.lines[self.place(id).0].stamps[0]);
        }
        std::hint::black_box(x);
    }

    /// The sequence number of an identity seen within the horizon.
    #[cfg(test)]
    pub fn get(&self, id: u128) -> Option<u64> {
        self.find(id).0
    }

    /// Remembers `id` under `seq`, forgetting the oldest past the horizon's
    /// size. An identity it already holds keeps its first place and
    /// sequence number, which it returns: the message is a redelivery.
    pub fn remember(&mut self, id: u128, seq: u64) -> Option<u64> {
        let (found, free) = self.find(id);
        if found.is_some() {
            return found;
        }
        if (self.arrivals + 1) as u32 == 0 {
            // Its stamp would read as empty: this arrival stays unused.
            let skipped = self.slot(self.arrivals);
            self.ring[skipped] = (0, u64::MAX);
            self.arrivals += 1;
        }
        let arrival = self.arrivals;
        let stamp = (arrival + 1) as u32;
        let (slot, (at, tag)) = (self.slot(arrival), self.place(id));
        self.ring[slot] = (id, seq);
        let line = &mut self.lines[at];
        match free {
            Some(w) => {
                line.tags[w] = tag;
                line.stamps[w] = stamp;
            }
            None => {
                line.spilled = stamp;
                self.spill.insert(id, (arrival, seq));
            }
        }
        self.arrivals += 1;
        if self.spill.len() >= 2 * self.size {
            let (arrivals, size) = (self.arrivals, self.size);
            self.spill.retain(|_, (a, _)| Self::live_arrival(arrivals, size, *a));
        }
        None
    }

    /// The identities of records durable below sequence `durable`, oldest first.
    pub fn durable(&self, durable: u64) -> Vec<u128> {
        let from = self.arrivals.saturating_sub(self.size as u64);
        (from..self.arrivals)
            .map(|a| self.ring[self.slot(a)])
            .filter(|&(_, seq)| seq < durable)
            .map(|(id, _)| id)
            .collect()
    }
}

/// Loads the keys and saved identities; `None` without a file.
pub fn load(dir: &Path) -> io::Result<Option<(Identity, Vec<u128>)>> {
    let bytes = match std::fs::read(dir.join(NAME)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = || {
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: not a valid horizon file", dir.join(NAME).display()))
    };
    if bytes.len() < 4 + 1 + 32 + 8 + 4 || &bytes[..4] != MAGIC || bytes[4] != 1 {
        return Err(bad());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(bad());
    }
    let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
    let keys = Identity([u64_at(5), u64_at(13), u64_at(21), u64_at(29)]);
    let n = u64_at(37) as usize;
    let ids = &body[45..];
    if ids.len() != n * 16 {
        return Err(bad());
    }
    Ok(Some((keys, ids.chunks_exact(16).map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes"))).collect())))
}

/// Saves the keys and `ids` (see the module doc for the atomic write).
pub fn save(dir: &Path, keys: Identity, ids: &[u128]) -> io::Result<()> {
    let mut out = Vec::with_capacity(49 + ids.len() * 16);
    out.extend_from_slice(MAGIC);
    out.push(1);
    for k in keys.0 {
        out.extend_from_slice(&k.to_le_bytes());
    }
    out.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(format!("{NAME}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&out)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(NAME))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_stable_under_the_same_keys_and_differ_under_others() {
        let k = Identity([1, 2, 3, 4]);
        assert_eq!(k.of("t/a", b"x"), Identity([1, 2, 3, 4]).of("t/a", b"x"));
        assert_ne!(k.of("t/a", b"x"), k.of("t/a", b"y"));
        // The topic's length is part of it: moving a byte across is another message.
        assert_ne!(k.of("t/ab", b"x"), k.of("t/a", b"bx"));
        assert_ne!(k.of("t/a", b"x"), Identity([5, 2, 3, 4]).of("t/a", b"x"));
    }

    #[test]
    fn the_horizon_forgets_the_oldest_and_saves_only_durable_records() {
        let mut h = Horizon::new(3);
        for (id, seq) in [(10u128, 1u64), (11, 2), (12, 3), (13, 4)] {
            h.remember(id, seq);
        }
        assert_eq!(h.get(10), None);
        assert_eq!(h.get(11), Some(2));
        assert_eq!(h.remember(11, 9), Some(2), "a redelivery is told by its first sequence number");
        assert_eq!(h.get(11), Some(2), "a known identity keeps its first sequence number");
        assert_eq!(h.durable(4), vec![11, 12], "sequence 4 is not durable yet");
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let keys = Identity([7, 8, 9, 10]);
        save(dir.path(), keys, &h.durable(4)).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some((keys, vec![11, 12])));
        let path = dir.path().join(NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[50] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(load(dir.path()).is_err(), "a damaged file is refused, not half read");
        // What it keeps is exactly the last three, in order, in memory
        // that does not grow.
        for (id, seq) in [(14u128, 5u64), (15, 6), (10, 7)] {
            h.remember(id, seq);
        }
        assert_eq!((h.ring.len(), h.lines.len(), h.spill.len()), (3, 2, 0));
        assert_eq!(h.durable(u64::MAX), vec![14, 15, 10]);
        assert_eq!(h.get(10), Some(7), "a forgotten identity seen again is a new message");
        assert_eq!(h.get(13), None);
    }

    /// The rule, in the simplest form: the last `size` identities remembered
    /// as new, each with its first sequence number.
    struct Model {
        size: usize,
        last: std::collections::VecDeque<Option<(u128, u64)>>,
    }

    impl Model {
        fn remember(&mut self, id: u128, seq: u64, skips: bool) -> Option<u64> {
            if let Some(s) = self.last.iter().flatten().find(|(i, _)| *i == id).map(|(_, s)| *s) {
                return Some(s);
            }
            if skips {
                self.last.push_back(None);
            }
            self.last.push_back(Some((id, seq)));
            while self.last.len() > self.size {
                self.last.pop_front();
            }
            None
        }
    }

    proptest::proptest! {
        /// Against the model, with few lines (so lines fill and spill),
        /// identities that share lines and tags (so the ring's full
        /// comparison decides), and arrival counts that cross the 32-bit
        /// stamps' wrap.
        #[test]
        fn the_horizon_answers_as_the_last_size_identities_would(
            size in 1usize..40,
            lines in proptest::sample::select(vec![1usize, 2, 8]),
            near_wrap in proptest::bool::ANY,
            ops in proptest::collection::vec((0u8..60, 0u8..3), 1..400),
        ) {
            let mut h = Horizon::with_lines(size, lines);
            let mut m = Model { size, last: Default::default() };
            if near_wrap {
                h.arrivals = u32::MAX as u64 - 100;
            }
            for (seq, (n, hi)) in ops.into_iter().enumerate() {
                // The low bits pick the line; `hi` varies the tag or only
                // the bits above it.
                let id = (n as u128 % 4) | (n as u128) << 8 | ((hi as u128) << 96) | (7u128 << 64);
                let skips = (h.arrivals + 1) as u32 == 0;
                let want = m.remember(id, seq as u64, skips);
                proptest::prop_assert_eq!(h.remember(id, seq as u64), want, "id {:x}", id);
                proptest::prop_assert!(h.spill.len() <= 2 * size);
            }
            let model_ids: Vec<u128> = m.last.iter().flatten().map(|(i, _)| *i).collect();
            proptest::prop_assert_eq!(h.durable(u64::MAX - 1), model_ids);
        }
    }
}
