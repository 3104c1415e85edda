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
use std::collections::hash_map::Entry;
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

/// Identities are keyed digests already: their low 64 bits are as good a
/// hash as any, so the map does not hash them again.
#[derive(Default)]
pub struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed (`write_u128`); anything else folds in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, i: u128) {
        self.0 = i as u64;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Identities of the last `size` messages, each with its sequence number
/// (0: durable before this start).
///
/// One hash probe per message: an identity carries its arrival (how many
/// were remembered before it), and one that arrived more than `size` ago
/// counts as forgotten. Forgotten entries are swept in one pass whenever
/// the map reaches twice `size`, not one random removal per message.
#[derive(Default)]
pub struct Horizon {
    seen: HashMap<u128, Slot, std::hash::BuildHasherDefault<Prehashed>>,
    /// Identities remembered so far: the next one's arrival.
    arrivals: u64,
    size: usize,
}

#[derive(Clone, Copy)]
struct Slot {
    seq: u64,
    arrival: u64,
}

impl Horizon {
    pub fn new(size: usize) -> Horizon {
        Horizon { seen: HashMap::default(), arrivals: 0, size }
    }

    /// Whether an identity that arrived at `arrival` is among the last `size`.
    fn live(arrivals: u64, size: usize, arrival: u64) -> bool {
        arrival + size as u64 >= arrivals
    }

    /// The sequence number of an identity seen within the horizon.
    #[cfg(test)]
    pub fn get(&self, id: u128) -> Option<u64> {
        self.seen.get(&id).filter(|s| Self::live(self.arrivals, self.size, s.arrival)).map(|s| s.seq)
    }

    /// Remembers `id` under `seq`, forgetting the oldest past the horizon's
    /// size. An identity it already holds keeps its first place and
    /// sequence number, which it returns: the message is a redelivery. One
    /// hash probe either way.
    pub fn remember(&mut self, id: u128, seq: u64) -> Option<u64> {
        let (arrivals, size) = (self.arrivals, self.size);
        let slot = Slot { seq, arrival: arrivals };
        match self.seen.entry(id) {
            Entry::Occupied(o) if Self::live(arrivals, size, o.get().arrival) => return Some(o.get().seq),
            Entry::Occupied(mut o) => *o.get_mut() = slot,
            Entry::Vacant(v) => {
                v.insert(slot);
            }
        }
        self.arrivals += 1;
        if self.seen.len() >= 2 * size.max(1) {
            let arrivals = self.arrivals;
            self.seen.retain(|_, s| Self::live(arrivals, size, s.arrival));
        }
        None
    }

    /// The identities of records durable below sequence `durable`, oldest first.
    pub fn durable(&self, durable: u64) -> Vec<u128> {
        let mut ids: Vec<(u64, u128)> = self
            .seen
            .iter()
            .filter(|(_, s)| Self::live(self.arrivals, self.size, s.arrival) && s.seq < durable)
            .map(|(id, s)| (s.arrival, *id))
            .collect();
        ids.sort_unstable_by_key(|(arrival, _)| *arrival);
        ids.into_iter().map(|(_, id)| id).collect()
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
        // Past twice its size the map sweeps what it forgot; what it keeps
        // is exactly the last three, in order.
        for (id, seq) in [(14u128, 5u64), (15, 6), (10, 7)] {
            h.remember(id, seq);
        }
        assert!(h.seen.len() <= 5, "swept: {} entries", h.seen.len());
        assert_eq!(h.durable(u64::MAX), vec![14, 15, 10]);
        assert_eq!(h.get(10), Some(7), "a forgotten identity seen again is a new message");
        assert_eq!(h.get(13), None);
    }
}
