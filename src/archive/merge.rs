//! Cutting a file: the k-way merge of a segment's sorted runs (one per
//! epoch) into rows in (vin, metric, ts) order, in bounded memory.
//!
//! At most `fan_in` runs are open at once, each holding one decoded block
//! ([`BLOCK_ROWS`] rows) and its rows' keys. A tournament tree over the
//! runs' head keys picks each next row, and only its place (block, row) is
//! noted; a full chunk of places is then gathered column by column, so each
//! column of each block is read in turn instead of every column of some
//! block per row. With more runs than `fan_in`, contiguous groups of at
//! most `fan_in` are first merged into temporary runs (files in `tmp`,
//! deleted afterwards), just enough of them to leave `fan_in` runs, as
//! often as needed: memory is `fan_in` blocks, the blocks finished since
//! the last chunk (at most a chunk's rows plus a block per run) and one
//! output chunk, however many epochs the file spans. Equal keys keep run order (earlier epochs
//! first), so the output, and the file encoded from it, is the same every
//! time the same segment is cut.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use super::spool::{BLOCK_ROWS, FRAME_HEADER, FrameInfo, RunReader, block, frame_header};
use compact_str::CompactString;

use super::{Interner, RawRows};

/// One sorted run: a frame of a spool file.
#[derive(Debug, Clone)]
pub struct Run {
    pub path: PathBuf,
    pub frame: FrameInfo,
}

/// Default number of runs merged at once.
pub const FAN_IN: usize = 64;

/// The merge's own ids for vins and metrics. A block's strings are looked
/// up once when it is read, so comparing two runs' keys compares integers:
/// ids where the strings are equal (the runs' heads in the same (vin,
/// metric) group), and ranks in the strings' order where they differ.
#[derive(Default)]
struct Keys {
    vins: Ranked,
    metrics: Ranked,
}

/// Merge-wide ids of one key column, each with a rank that follows the
/// strings' order. Names are met in almost sorted order (every run is
/// sorted, and the runs advance together), so a new name usually ranks
/// after every known one; one met out of order takes the midpoint of its
/// neighbours' ranks. Should no midpoint be left, ranks are given up and
/// comparisons read the strings, as they always may.
#[derive(Default)]
struct Ranked {
    names: Interner,
    rank: Vec<u64>,
    order: BTreeMap<CompactString, u64>,
    strings_only: bool,
}

impl Ranked {
    /// Room left between two names appended one after the other.
    const GAP: u64 = 1 << 32;

    fn id(&mut self, s: &str) -> u32 {
        let id = self.names.id(s);
        if id as usize == self.rank.len() {
            let r = if self.strings_only { 0 } else { self.rank_for(s) };
            self.rank.push(r);
        }
        id
    }

    fn rank_for(&mut self, s: &str) -> u64 {
        let below = self.order.range::<str, _>((Bound::Unbounded, Bound::Excluded(s))).next_back().map(|(_, r)| *r);
        let above = self.order.range::<str, _>((Bound::Excluded(s), Bound::Unbounded)).next().map(|(_, r)| *r);
        let r = match (below, above) {
            (None, None) => Some(u64::MAX / 2),
            (Some(b), None) => b.checked_add(Self::GAP),
            (None, Some(a)) => a.checked_sub(Self::GAP),
            (Some(b), Some(a)) => (a - b > 1).then(|| b + (a - b) / 2),
        };
        match r {
            Some(r) => {
                self.order.insert(s.into(), r);
                r
            }
            None => {
                self.strings_only = true;
                self.order.clear();
                0
            }
        }
    }

    fn get(&self, id: u32) -> &str {
        self.names.get(id)
    }

    /// Whether name `a` sorts before name `b`, each an id with its rank
    /// (as [`Ranked::rank`] gave it: a rank never changes once given).
    fn less(&self, (a, ra): (u32, u64), (b, rb): (u32, u64)) -> bool {
        if self.strings_only { self.get(a) < self.get(b) } else { ra < rb }
    }

    fn rank(&self, id: u32) -> u64 {
        self.rank[id as usize]
    }
}

/// A row's merge key: [`Keys`] ids of its vin and metric, and its time.
#[derive(Clone, Copy)]
struct Key {
    vin: u32,
    metric: u32,
    ts: i64,
}

struct Cursor {
    reader: RunReader,
    /// The current block's slot in the chunk's [`Blocks`].
    slot: usize,
    at: usize,
    /// The current block's keys, one per row, computed when it is read: the
    /// merge compares these, not the block's columns.
    keys: Vec<Key>,
    done: bool,
}

impl Cursor {
    fn open(run: &Run, keys: &mut Keys, blocks: &mut Blocks) -> std::io::Result<Option<Cursor>> {
        let mut c =
            Cursor { reader: RunReader::open(&run.path, &run.frame)?, slot: 0, at: 0, keys: Vec::new(), done: false };
        Ok(c.next_block(keys, blocks)?.then_some(c))
    }

    /// Reads the next non-empty block into a new slot; false at the run's end.
    fn next_block(&mut self, keys: &mut Keys, blocks: &mut Blocks) -> std::io::Result<bool> {
        loop {
            match self.reader.next_block()? {
                None => return Ok(false),
                Some(b) if b.is_empty() => continue,
                Some(b) => {
                    let vin: Vec<u32> = b.vins.values.iter().map(|v| keys.vins.id(v)).collect();
                    let metric: Vec<u32> = b.metrics.values.iter().map(|m| keys.metrics.id(m)).collect();
                    self.keys.clear();
                    self.keys.extend(b.vin.iter().zip(&b.metric).zip(&b.ts_ms).map(|((&v, &m), &ts)| Key {
                        vin: vin[v as usize],
                        metric: metric[m as usize],
                        ts,
                    }));
                    self.slot = blocks.rows.len();
                    blocks.rows.push(b);
                    self.at = 0;
                    return Ok(true);
                }
            }
        }
    }

    /// Moves to the next row; marks the cursor done at the run's end.
    fn advance(&mut self, keys: &mut Keys, blocks: &mut Blocks) -> std::io::Result<()> {
        self.at += 1;
        if self.at >= self.keys.len() && !self.next_block(keys, blocks)? {
            self.done = true;
        }
        Ok(())
    }
}

/// The blocks the rows of the chunk being merged come from: every cursor's
/// current block, and the blocks finished since the last chunk. A chunk is
/// built column by column from these (see [`Blocks::gather`]), which reads
/// each column of each block in turn rather than every column of a block
/// per row.
#[derive(Default)]
struct Blocks {
    rows: Vec<RawRows>,
}

impl Blocks {
    /// The rows at `order` ((slot, row) pairs), in that order.
    fn gather(&self, order: &[(u32, u32)], ndims: usize) -> RawRows {
        RawRows::gather(&self.rows, order, ndims)
    }

    /// Keeps only the open cursors' current blocks, renumbering their slots.
    fn retain_current(&mut self, cs: &mut [Cursor]) {
        let mut old = std::mem::take(&mut self.rows);
        for c in cs.iter_mut().filter(|c| !c.done) {
            self.rows.push(std::mem::take(&mut old[c.slot]));
            c.slot = self.rows.len() - 1;
        }
    }
}

/// A cursor's head row as the tree compares it: its key, copied out of the
/// block's keys so a comparison reads no cursor.
#[derive(Clone, Copy)]
struct Head {
    key: Key,
    cursor: usize,
    done: bool,
}

impl Cursor {
    /// This cursor's head, as cursor `cursor`.
    fn head(&self, cursor: usize) -> Head {
        let key = if self.done { Key { vin: 0, metric: 0, ts: 0 } } else { self.keys[self.at] };
        Head { key, cursor, done: self.done }
    }
}

/// A tournament (loser) tree over the cursors: node `n` of `1..k` holds the
/// head that lost the match below it, `winner` the head that comes first.
/// A new head of the winner's cursor replays one leaf-to-root path: log2(k)
/// comparisons per row, each against a head held in the tree.
struct Tree {
    losers: Vec<Head>,
    winner: Head,
}

impl Tree {
    /// Whether head `a` comes before head `b`: a done cursor's never does;
    /// equal keys go to the lower cursor (the earlier run).
    fn before(keys: &Keys, a: &Head, b: &Head) -> bool {
        if a.done || b.done {
            return !a.done && b.done;
        }
        let (x, y) = (&a.key, &b.key);
        if x.vin != y.vin {
            return keys.vins.less((x.vin, keys.vins.rank(x.vin)), (y.vin, keys.vins.rank(y.vin)));
        }
        if x.metric != y.metric {
            return keys.metrics.less((x.metric, keys.metrics.rank(x.metric)), (y.metric, keys.metrics.rank(y.metric)));
        }
        (x.ts, a.cursor) < (y.ts, b.cursor)
    }

    fn new(keys: &Keys, cs: &[Cursor]) -> Tree {
        let k = cs.len();
        let heads: Vec<Head> = cs.iter().enumerate().map(|(i, c)| c.head(i)).collect();
        // winners[n]: the winner below node n of 1..k (filled below); the
        // leaves are k..2k.
        let mut winners = [heads.clone(), heads].concat();
        let mut losers = winners[..k.max(1)].to_vec();
        for n in (1..k).rev() {
            let (l, r) = (winners[2 * n], winners[2 * n + 1]);
            let (w, lose) = if Self::before(keys, &r, &l) { (r, l) } else { (l, r) };
            winners[n] = w;
            losers[n] = lose;
        }
        Tree { losers, winner: if k > 1 { winners[1] } else { winners[0] } }
    }

    /// The winner's cursor has a new head `h` (or is done): replays its path.
    fn replay(&mut self, keys: &Keys, mut h: Head) {
        let mut n = (self.losers.len() + h.cursor) / 2;
        while n >= 1 {
            let l = &mut self.losers[n];
            if Self::before(keys, l, &h) {
                std::mem::swap(l, &mut h);
            }
            n /= 2;
        }
        self.winner = h;
    }
}

/// Merges `runs` into sorted chunks of at most `chunk_rows` rows handed to
/// `sink`; returns the number of rows.
fn merge_into(
    runs: &[Run],
    chunk_rows: usize,
    ndims: usize,
    sink: &mut dyn FnMut(RawRows) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let mut keys = Keys::default();
    let mut blocks = Blocks::default();
    let mut cs = Vec::with_capacity(runs.len());
    for r in runs {
        if let Some(c) = Cursor::open(r, &mut keys, &mut blocks)? {
            cs.push(c);
        }
    }
    if cs.is_empty() {
        return Ok(0);
    }
    let mut tree = Tree::new(&keys, &cs);
    let mut order: Vec<(u32, u32)> = Vec::with_capacity(chunk_rows);
    let mut total = 0u64;
    while !tree.winner.done {
        let w = tree.winner.cursor;
        let c = &mut cs[w];
        order.push((c.slot as u32, c.at as u32));
        c.advance(&mut keys, &mut blocks)?;
        tree.replay(&keys, c.head(w));
        if order.len() >= chunk_rows {
            total += order.len() as u64;
            sink(blocks.gather(&order, ndims))?;
            order.clear();
            blocks.retain_current(&mut cs);
        }
    }
    if !order.is_empty() {
        total += order.len() as u64;
        sink(blocks.gather(&order, ndims))?;
    }
    Ok(total)
}

/// Writes a temporary run: one frame, blocks written as they come.
struct RunWriter {
    file: BufWriter<File>,
    path: PathBuf,
    blocks: u32,
    rows: u64,
    payload: u64,
    plain: Vec<u8>,
}

impl RunWriter {
    fn create(path: PathBuf) -> std::io::Result<RunWriter> {
        let mut file = BufWriter::with_capacity(
            1 << 16,
            OpenOptions::new().create(true).truncate(true).write(true).read(true).open(&path)?,
        );
        file.write_all(&[0u8; FRAME_HEADER as usize])?;
        Ok(RunWriter { file, path, blocks: 0, rows: 0, payload: 0, plain: Vec::new() })
    }

    fn push(&mut self, rows: RawRows) -> std::io::Result<()> {
        let b = block(&rows, &mut self.plain);
        self.file.write_all(&b)?;
        self.blocks += 1;
        self.rows += rows.len() as u64;
        self.payload += b.len() as u64;
        Ok(())
    }

    fn finish(self) -> std::io::Result<Run> {
        let h = frame_header(0, self.blocks, self.rows, self.payload);
        let mut file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&h)?;
        Ok(Run {
            path: self.path,
            frame: FrameInfo {
                offset: FRAME_HEADER,
                epoch: 0,
                blocks: self.blocks,
                rows: self.rows,
                payload: self.payload,
            },
        })
    }
}

/// Merges `runs` into `sink` (chunks of at most `chunk_rows` rows) with at
/// most `fan_in` runs open, using `tmp` for intermediate runs. Returns the
/// number of rows.
pub fn merge(
    runs: Vec<Run>,
    ndims: usize,
    fan_in: usize,
    chunk_rows: usize,
    tmp: &Path,
    sink: &mut dyn FnMut(RawRows) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let fan_in = fan_in.max(2);
    let mut runs = runs;
    let mut temps: Vec<PathBuf> = Vec::new();
    let result = (|| {
        let mut n = 0usize;
        while runs.len() > fan_in {
            // Merge only as many runs as it takes to bring the count down
            // to `fan_in` (contiguous groups, so equal keys keep run order);
            // the others are read once, by the final merge.
            let mut need = runs.len() - fan_in;
            let mut next = Vec::with_capacity(fan_in);
            let mut rest = runs.into_iter();
            while need > 0 {
                let group: Vec<Run> = rest.by_ref().take(fan_in.min(need + 1)).collect();
                if group.len() < 2 {
                    // Over fan_in² runs: this pass is done, another follows.
                    next.extend(group);
                    break;
                }
                need -= group.len() - 1;
                let path = tmp.join(format!("merge-{}-{n}.tmp", std::process::id()));
                n += 1;
                temps.push(path.clone());
                let mut w = RunWriter::create(path)?;
                merge_into(&group, BLOCK_ROWS, ndims, &mut |rows| w.push(rows))?;
                next.push(w.finish()?);
            }
            next.extend(rest);
            runs = next;
        }
        merge_into(&runs, chunk_rows, ndims, sink)
    })();
    for t in temps {
        let _ = std::fs::remove_file(t);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::spool::frame;
    use crate::archive::spool::segment::Segment;
    use crate::archive::{Raw, ValueKind};

    /// Every pair of names compares as their strings do.
    fn ranks_follow_the_strings(r: &Ranked) -> Result<(), String> {
        for a in 0..r.names.len() as u32 {
            for b in 0..r.names.len() as u32 {
                if r.less((a, r.rank(a)), (b, r.rank(b))) != (r.get(a) < r.get(b)) {
                    return Err(format!("{} vs {}", r.get(a), r.get(b)));
                }
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn ranks_follow_the_names_in_whatever_order_they_are_met(
            names in proptest::collection::vec("[A-Z]{1,3}[0-9]{0,3}", 1..80),
        ) {
            let mut r = Ranked::default();
            for n in &names {
                r.id(n);
            }
            proptest::prop_assert!(!r.strings_only, "80 names never use up the gaps");
            proptest::prop_assert_eq!(ranks_follow_the_strings(&r), Ok(()));
        }
    }

    #[test]
    fn names_met_out_of_order_until_no_midpoint_is_left_fall_back_to_the_strings() {
        let mut r = Ranked::default();
        r.id("b");
        r.id("a");
        // Each new name lands between the last two: the gap halves every time.
        let mut names: Vec<String> = Vec::new();
        for i in 0..40 {
            let n = format!("a{}", "z".repeat(i));
            r.id(&n);
            names.push(n);
        }
        assert!(r.strings_only, "40 halvings of a 2^32 gap leave no midpoint");
        assert_eq!(ranks_follow_the_strings(&r), Ok(()));
        let mut in_order = Ranked::default();
        for n in ["V001", "V002", "V003", "V000", "V0025"] {
            in_order.id(n);
        }
        assert!(!in_order.strings_only);
        assert_eq!(ranks_follow_the_strings(&in_order), Ok(()));
    }

    /// Epoch `e`'s readings: 40 vehicles × 6 metrics, timestamps growing
    /// with the epoch, and a few late ones from earlier epochs.
    fn epoch_rows(e: u64, n: usize, seed: u64) -> RawRows {
        let mut r = RawRows::new(1);
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(e);
        for i in 0..n {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let vin = format!("VIN{:02}", (x >> 33) % 40);
            let metric = format!("sig_{}", (x >> 40) % 6);
            let late = (x >> 50).is_multiple_of(10);
            let ts = e as i64 * 1000 - if late { 1500 } else { 0 } + (i % 1000) as i64;
            r.push(
                Raw {
                    vin: &vin,
                    ts_ms: ts,
                    seq: Some(i as i64),
                    metric: &metric,
                    value: (e * 100_000 + i as u64) as f64,
                    kind: ValueKind::Number,
                    received_ms: ts + 3,
                    source: &format!("k/{}@{i}", e % 3),
                },
                &[Some(["a", "b"][i % 2])],
            );
        }
        r
    }

    /// One run merges to itself (a tree of one leaf), none to nothing.
    #[test]
    fn one_run_merges_to_its_rows_and_none_to_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0, 1).unwrap();
        let r = epoch_rows(4, 9_000, 3);
        let order = r.sorted_order();
        seg.append(4, &frame(4, &r, &order), r.len() as u64).unwrap();
        seg.sync().unwrap();
        let runs: Vec<Run> = seg.frames.iter().map(|f| Run { path: seg.path.clone(), frame: *f }).collect();
        let want: Vec<(String, String, i64, f64)> = order
            .iter()
            .map(|&i| {
                let (v, m, t) = r.key(i as usize);
                (v.to_string(), m.to_string(), t, r.value[i as usize])
            })
            .collect();
        let mut got = Vec::new();
        let n = merge(runs, 1, 64, 2_000, dir.path(), &mut |rows| {
            for i in 0..rows.len() {
                let (v, m, t) = rows.key(i);
                got.push((v.to_string(), m.to_string(), t, rows.value[i]));
            }
            Ok(())
        })
        .unwrap();
        assert_eq!((n as usize, &got), (want.len(), &want));
        let mut called = false;
        assert_eq!(
            merge(Vec::new(), 1, 64, 2_000, dir.path(), &mut |_| {
                called = true;
                Ok(())
            })
            .unwrap(),
            0
        );
        assert!(!called);
    }

    #[test]
    fn merging_many_runs_in_several_passes_equals_one_sort() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0, 1).unwrap();
        let (mut epochs, mut places) = (Vec::new(), Vec::new());
        for e in 1..=37u64 {
            let r = epoch_rows(e, 3000 + (e as usize * 97) % 5000, 9);
            let order = r.sorted_order();
            seg.append(e, &frame(e, &r, &order), r.len() as u64).unwrap();
            places.extend(order.iter().map(|&i| (epochs.len() as u32, i)));
            epochs.push(r);
        }
        let all = RawRows::gather(&epochs, &places, 1);
        seg.sync().unwrap();
        let runs: Vec<Run> = seg.frames.iter().map(|f| Run { path: seg.path.clone(), frame: *f }).collect();

        // The reference: every row, sorted by (vin, metric, ts) stably in
        // epoch order.
        let want: Vec<(String, String, i64, f64)> = all
            .sorted_order()
            .into_iter()
            .map(|i| {
                let (v, m, t) = all.key(i as usize);
                (v.to_string(), m.to_string(), t, all.value[i as usize])
            })
            .collect();

        for (fan_in, chunk) in [(64, 100_000), (4, 7_000), (2, 1_000)] {
            let tmp = tempfile::tempdir().unwrap();
            let mut got = Vec::new();
            let mut chunks = 0;
            let n = merge(runs.clone(), 1, fan_in, chunk, tmp.path(), &mut |rows| {
                assert!(rows.len() <= chunk);
                chunks += 1;
                for i in 0..rows.len() {
                    let (v, m, t) = rows.key(i);
                    got.push((v.to_string(), m.to_string(), t, rows.value[i]));
                    assert!(rows.dims[0][i].is_some());
                }
                Ok(())
            })
            .unwrap();
            assert_eq!(n as usize, want.len());
            assert_eq!(got, want, "fan-in {fan_in}");
            assert!(chunks >= want.len() / chunk);
            assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "temporary runs are removed");
        }
    }
}
