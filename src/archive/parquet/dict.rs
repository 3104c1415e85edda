//! The archive's string columns (`vin`, `metric`, `value_kind`, `source`
//! and the dimensions), written as Parquet column chunks from the ids the
//! archive has already interned.
//!
//! The parquet crate's writer takes strings: it hashes and interns every
//! row's value again to build its dictionary, and compares every value for
//! the page statistics. Here a chunk of rows arrives as ids into its own
//! string table; each distinct string is looked up once per chunk to find
//! its id in the row group's dictionary, and a row costs an array lookup.
//! Page statistics compare a page's distinct values, not its rows.
//!
//! What a reader finds is what the crate writes for a dictionary column:
//! format v1 data pages (`RLE_DICTIONARY` indices, `RLE` definition levels)
//! after a `PLAIN` dictionary page, each page zstd-compressed; chunk
//! statistics, a column index (page minima and maxima, null counts, boundary
//! order) where statistics are on, an offset index always, and page encoding
//! stats. A dictionary that would outgrow `dict_limit` stops growing, and the
//! chunk's later pages are `PLAIN`, as the crate falls back.

use bytes::Bytes;
use compact_str::CompactString;
use parquet::basic::{BoundaryOrder, Compression, Encoding, EncodingMask, PageType, ZstdLevel};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::ByteArray;
use parquet::file::metadata::{ColumnChunkMetaData, ColumnIndexBuilder, OffsetIndexBuilder, PageEncodingStats};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

use crate::archive::{Interner, UNMAPPED};

/// Rows per data page (the parquet crate's default row limit).
pub const PAGE_ROWS: usize = 20_000;
/// Bytes of `PLAIN` values per data page (the crate's default page size).
const PAGE_BYTES: usize = 1 << 20;
/// The dictionary page's size past which a chunk falls back to `PLAIN`
/// (the crate's default).
pub const DICT_LIMIT: usize = 1 << 20;

/// zstd for pages, one context reused for every page of a file.
pub struct Zstd {
    c: zstd::bulk::Compressor<'static>,
    level: i32,
}

impl Zstd {
    pub fn new(level: i32) -> Result<Zstd, String> {
        ZstdLevel::try_new(level).map_err(|e| e.to_string())?;
        let c = zstd::bulk::Compressor::new(level).map_err(|e| format!("zstd: {e}"))?;
        Ok(Zstd { c, level })
    }

    fn compress(&mut self, buf: &[u8]) -> Result<Bytes, String> {
        self.c.compress(buf).map(Bytes::from).map_err(|e| format!("zstd: {e}"))
    }

    fn codec(&self) -> Compression {
        Compression::ZSTD(ZstdLevel::try_new(self.level).unwrap_or_default())
    }
}

/// The page being filled.
#[derive(Default)]
struct PageBuf {
    rows: usize,
    nulls: usize,
    /// Definition levels (1: a value, 0: NULL), for a nullable column.
    defs: Vec<u8>,
    /// Dictionary ids of the values (dictionary pages).
    ids: Vec<u32>,
    /// The dictionary ids this page uses, once each (for its statistics).
    distinct: Vec<u32>,
    /// `PLAIN` values (after a fallback) and their minimum and maximum.
    plain: Vec<u8>,
    plain_range: Option<(Vec<u8>, Vec<u8>)>,
}

/// One string column chunk of a row group, being written.
pub struct DictColumn {
    descr: ColumnDescPtr,
    nullable: bool,
    stats: bool,
    dict_limit: usize,
    /// The row group's dictionary, ids in first-seen order.
    dict: Interner,
    dict_bytes: usize,
    /// The current chunk's string ids → dictionary ids.
    remap: Vec<u32>,
    /// The last row's (chunk id, dictionary id) on the current page, while
    /// the dictionary is in use: a run of one value (a sorted column's
    /// usual shape) skips the lookups.
    last: (u32, u32),
    /// The dictionary is full: values are written `PLAIN`.
    fallback: bool,
    page: PageBuf,
    /// Per dictionary id, the number of the last page that used it.
    seen: Vec<u32>,
    page_no: u32,
    /// Pages done: (page, rows).
    pages: Vec<(CompressedPage, usize)>,
    rows: u64,
    nulls: u64,
    range: Option<(Vec<u8>, Vec<u8>)>,
    index: ColumnIndexBuilder,
    ascending: bool,
    descending: bool,
    last_range: Option<(Vec<u8>, Vec<u8>)>,
}

impl DictColumn {
    /// A chunk of column `descr`; `stats`: chunk statistics and a column
    /// index.
    pub fn new(descr: ColumnDescPtr, stats: bool, dict_limit: usize) -> DictColumn {
        DictColumn {
            nullable: descr.max_def_level() > 0,
            index: ColumnIndexBuilder::new(descr.physical_type()),
            descr,
            stats,
            dict_limit,
            dict: Interner::default(),
            dict_bytes: 0,
            remap: Vec::new(),
            last: (UNMAPPED, UNMAPPED),
            fallback: false,
            page: PageBuf::default(),
            seen: Vec::new(),
            page_no: 1,
            pages: Vec::new(),
            rows: 0,
            nulls: 0,
            range: None,
            ascending: true,
            descending: true,
            last_range: None,
        }
    }

    /// Appends rows whose values are ids into `values` (`None`: NULL).
    pub fn write(
        &mut self,
        ids: impl Iterator<Item = Option<u32>>,
        values: &[CompactString],
        z: &mut Zstd,
    ) -> Result<(), String> {
        self.remap.clear();
        self.remap.resize(values.len(), UNMAPPED);
        self.last = (UNMAPPED, UNMAPPED);
        for id in ids {
            match id {
                None if self.nullable => {
                    self.page.defs.push(0);
                    self.page.nulls += 1;
                }
                None => return Err(format!("NULL in the required column {}", self.descr.name())),
                Some(id) => {
                    let s = values.get(id as usize).ok_or("string id out of range")?;
                    self.value(id, s, z)?;
                }
            }
            self.page.rows += 1;
            if self.page.rows >= PAGE_ROWS || self.page.plain.len() >= PAGE_BYTES {
                self.flush_page(z)?;
            }
        }
        Ok(())
    }

    fn value(&mut self, id: u32, s: &CompactString, z: &mut Zstd) -> Result<(), String> {
        if id == self.last.0 {
            if self.nullable {
                self.page.defs.push(1);
            }
            self.page.ids.push(self.last.1);
            return Ok(());
        }
        if !self.fallback {
            let mut d = self.remap[id as usize];
            if d == UNMAPPED {
                match self.intern(s) {
                    Some(x) => {
                        self.remap[id as usize] = x;
                        d = x;
                    }
                    None => {
                        // The dictionary is full: the page so far keeps it,
                        // later ones are PLAIN.
                        self.flush_page(z)?;
                        self.fallback = true;
                    }
                }
            }
            if !self.fallback {
                if self.nullable {
                    self.page.defs.push(1);
                }
                self.page.ids.push(d);
                if self.stats && self.seen[d as usize] != self.page_no {
                    self.seen[d as usize] = self.page_no;
                    self.page.distinct.push(d);
                }
                self.last = (id, d);
                return Ok(());
            }
        }
        if self.nullable {
            self.page.defs.push(1);
        }
        let b = s.as_bytes();
        self.page.plain.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.page.plain.extend_from_slice(b);
        if self.stats {
            widen(&mut self.page.plain_range, b, b);
        }
        Ok(())
    }

    /// The dictionary id of `s`; `None` once the dictionary is full.
    fn intern(&mut self, s: &str) -> Option<u32> {
        if let Some(i) = self.dict.find(s) {
            return Some(i);
        }
        let bytes = 4 + s.len();
        if !self.dict.is_empty() && self.dict_bytes + bytes > self.dict_limit {
            return None;
        }
        self.dict_bytes += bytes;
        self.seen.push(0);
        Some(self.dict.id(s))
    }

    fn flush_page(&mut self, z: &mut Zstd) -> Result<(), String> {
        self.last = (UNMAPPED, UNMAPPED);
        let p = std::mem::take(&mut self.page);
        if p.rows == 0 {
            self.page = p;
            return Ok(());
        }
        let mut buf = Vec::with_capacity(p.plain.len() + p.ids.len() / 2 + p.defs.len() / 8 + 16);
        if self.nullable {
            let mut levels = Vec::with_capacity(p.defs.len() / 8 + 8);
            hybrid(&p.defs, 1, &mut levels);
            buf.extend_from_slice(&(levels.len() as u32).to_le_bytes());
            buf.extend_from_slice(&levels);
        }
        // A page before any value (all NULL so far) has no dictionary to
        // point into: it is PLAIN, with no values.
        let encoding = if self.fallback || self.dict.is_empty() {
            buf.extend_from_slice(&p.plain);
            Encoding::PLAIN
        } else {
            let bw = bit_width(self.dict.len());
            buf.push(bw);
            hybrid(&p.ids, bw, &mut buf);
            Encoding::RLE_DICTIONARY
        };
        if self.stats {
            let range = if self.fallback || self.dict.is_empty() {
                p.plain_range.clone()
            } else {
                let mut r = None;
                for d in &p.distinct {
                    let b = self.dict.get(*d).as_bytes();
                    widen(&mut r, b, b);
                }
                r
            };
            match range {
                None => self.index.append(true, Vec::new(), Vec::new(), p.nulls as i64, None),
                Some((min, max)) => {
                    if let Some((lmin, lmax)) = &self.last_range {
                        self.ascending &= lmin <= &min && lmax <= &max;
                        self.descending &= lmin >= &min && lmax >= &max;
                    }
                    self.index.append(false, min.clone(), max.clone(), p.nulls as i64, None);
                    widen(&mut self.range, &min, &max);
                    self.last_range = Some((min, max));
                }
            }
        }
        let compressed = z.compress(&buf)?;
        let page = Page::DataPage {
            buf: compressed,
            num_values: p.rows as u32,
            encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        self.pages.push((CompressedPage::new(page, buf.len()), p.rows));
        self.rows += p.rows as u64;
        self.nulls += p.nulls as u64;
        self.page_no += 1;
        // Keep the buffers' room for the next page.
        let mut next = p;
        next.rows = 0;
        next.nulls = 0;
        next.defs.clear();
        next.ids.clear();
        next.distinct.clear();
        next.plain.clear();
        next.plain_range = None;
        self.page = next;
        Ok(())
    }

    /// The chunk's bytes (offsets from 0) and what the row group writer
    /// needs to splice them in.
    pub fn finish(mut self, z: &mut Zstd) -> Result<(Bytes, ColumnCloseResult), String> {
        self.flush_page(z)?;
        let err = |e: parquet::errors::ParquetError| e.to_string();
        let mut sink = TrackedWrite::new(Vec::new());
        let mut w = SerializedPageWriter::new(&mut sink);
        let (mut compressed, mut uncompressed, mut written) = (0u64, 0u64, 0u64);
        let mut encodings = vec![Encoding::RLE];
        let mut enc_stats: Vec<PageEncodingStats> = Vec::new();
        let mut dictionary_offset = None;
        let has_dict = self.pages.iter().any(|(p, _)| p.encoding() == Encoding::RLE_DICTIONARY);
        if has_dict {
            let mut buf = Vec::with_capacity(self.dict_bytes);
            for v in &self.dict.values {
                buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
                buf.extend_from_slice(v.as_bytes());
            }
            let page = Page::DictionaryPage {
                buf: z.compress(&buf)?,
                num_values: self.dict.len() as u32,
                encoding: Encoding::PLAIN,
                is_sorted: false,
            };
            let spec = w.write_page(CompressedPage::new(page, buf.len())).map_err(err)?;
            dictionary_offset = Some(spec.offset as i64);
            (compressed, uncompressed, written) =
                (spec.compressed_size as u64, spec.uncompressed_size as u64, spec.bytes_written);
            encodings.push(Encoding::PLAIN);
            enc_stats.push(PageEncodingStats {
                page_type: PageType::DICTIONARY_PAGE,
                encoding: Encoding::PLAIN,
                count: 1,
            });
        }
        let mut offsets = OffsetIndexBuilder::new();
        let mut data_offset = None;
        for (page, rows) in std::mem::take(&mut self.pages) {
            let encoding = page.encoding();
            if !encodings.contains(&encoding) {
                encodings.push(encoding);
            }
            match enc_stats.last_mut() {
                Some(s) if s.page_type == PageType::DATA_PAGE && s.encoding == encoding => s.count += 1,
                _ => enc_stats.push(PageEncodingStats { page_type: PageType::DATA_PAGE, encoding, count: 1 }),
            }
            let spec = w.write_page(page).map_err(err)?;
            data_offset.get_or_insert(spec.offset as i64);
            offsets.append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
            offsets.append_row_count(rows as i64);
            compressed += spec.compressed_size as u64;
            uncompressed += spec.uncompressed_size as u64;
            written += spec.bytes_written;
        }
        w.close().map_err(err)?;
        let bytes = Bytes::from(sink.into_inner().map_err(err)?);
        let mut meta = ColumnChunkMetaData::builder(self.descr.clone())
            .set_compression(z.codec())
            .set_encodings_mask(EncodingMask::new_from_encodings(encodings.iter()))
            .set_page_encoding_stats(enc_stats)
            .set_total_compressed_size(compressed as i64)
            .set_total_uncompressed_size(uncompressed as i64)
            .set_num_values(self.rows as i64)
            .set_data_page_offset(data_offset.unwrap_or(0))
            .set_dictionary_page_offset(dictionary_offset);
        let mut column_index = None;
        if self.stats {
            let (min, max) = match self.range.take() {
                Some((min, max)) => (Some(ByteArray::from(min)), Some(ByteArray::from(max))),
                None => (None, None),
            };
            let s = ValueStatistics::new(min, max, None, Some(self.nulls), false);
            meta = meta.set_statistics(Statistics::from(s));
            self.index.set_boundary_order(match (self.ascending, self.descending) {
                (true, _) => BoundaryOrder::ASCENDING,
                (false, true) => BoundaryOrder::DESCENDING,
                (false, false) => BoundaryOrder::UNORDERED,
            });
            column_index = Some(self.index.build().map_err(err)?);
        }
        let close = ColumnCloseResult {
            bytes_written: written,
            rows_written: self.rows,
            metadata: meta.build().map_err(err)?,
            bloom_filter: None,
            column_index,
            offset_index: Some(offsets.build()),
        };
        Ok((bytes, close))
    }
}

/// Widens `range` (min, max) to take in `[min, max]`.
fn widen(range: &mut Option<(Vec<u8>, Vec<u8>)>, min: &[u8], max: &[u8]) {
    match range {
        None => *range = Some((min.to_vec(), max.to_vec())),
        Some((lo, hi)) => {
            if min < lo.as_slice() {
                *lo = min.to_vec();
            }
            if max > hi.as_slice() {
                *hi = max.to_vec();
            }
        }
    }
}

/// Bits per index for a dictionary of `len` values (at least 1).
fn bit_width(len: usize) -> u8 {
    (usize::BITS - len.saturating_sub(1).leading_zeros()).max(1) as u8
}

/// Appends `values` (each below 2^`bw`) in Parquet's RLE/bit-packing
/// hybrid encoding: a repeat of at least 8 values becomes an RLE run, the
/// values between are bit-packed in groups of 8 (the literals are padded
/// with the repeat's first values to whole groups; the last group of the
/// stream with zeros).
fn hybrid<T: Copy + PartialEq + Into<u64>>(values: &[T], bw: u8, out: &mut Vec<u8>) {
    let n = values.len();
    let (mut literal, mut i) = (0, 0);
    while i < n {
        let v = values[i];
        let mut j = i + 1;
        while j < n && values[j] == v {
            j += 1;
        }
        let pad = (8 - (i - literal) % 8) % 8;
        if j - i >= pad + 8 {
            bit_packed(&values[literal..i + pad], bw, out);
            rle_run(v.into(), j - i - pad, bw, out);
            literal = j;
        }
        i = j;
    }
    bit_packed(&values[literal..], bw, out);
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn rle_run(v: u64, count: usize, bw: u8, out: &mut Vec<u8>) {
    varint((count as u64) << 1, out);
    out.extend_from_slice(&v.to_le_bytes()[..(bw as usize).div_ceil(8)]);
}

/// Bit-packed runs of at most 63 groups of 8 values (as the parquet crate
/// and parquet-mr write them), least significant bit first.
fn bit_packed<T: Copy + Into<u64>>(values: &[T], bw: u8, out: &mut Vec<u8>) {
    for run in values.chunks(63 * 8) {
        let groups = run.len().div_ceil(8);
        varint((groups as u64) << 1 | 1, out);
        let (mut acc, mut bits) = (0u64, 0u32);
        for k in 0..groups * 8 {
            acc |= run.get(k).map_or(0, |v| (*v).into()) << bits;
            bits += u32::from(bw);
            while bits >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                bits -= 8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes the hybrid encoding (as the Parquet spec defines it) back to
    /// `n` values.
    fn decode(mut b: &[u8], bw: u8, n: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let bytes = (bw as usize).div_ceil(8);
        while out.len() < n {
            let (mut h, mut shift) = (0u64, 0);
            loop {
                let x = b[0];
                b = &b[1..];
                h |= u64::from(x & 0x7f) << shift;
                shift += 7;
                if x < 0x80 {
                    break;
                }
            }
            if h & 1 == 1 {
                let count = (h >> 1) as usize * 8;
                let (mut acc, mut bits, mut at) = (0u64, 0u32, 0);
                for _ in 0..count {
                    while bits < u32::from(bw) {
                        acc |= u64::from(b[at]) << bits;
                        at += 1;
                        bits += 8;
                    }
                    out.push(acc & ((1u64 << bw) - 1));
                    acc >>= bw;
                    bits -= u32::from(bw);
                }
                b = &b[at..];
            } else {
                let mut v = [0u8; 8];
                v[..bytes].copy_from_slice(&b[..bytes]);
                b = &b[bytes..];
                out.extend(std::iter::repeat_n(u64::from_le_bytes(v), (h >> 1) as usize));
            }
        }
        assert!(b.is_empty(), "{} bytes left over", b.len());
        out.truncate(n);
        out
    }

    #[test]
    fn hybrid_encoding_round_trips_runs_literals_and_padding() {
        let mut x = 7u64;
        let mut rnd = move || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x >> 33
        };
        for bw in [1u8, 3, 8, 9, 17, 32] {
            let max = if bw == 32 { u32::MAX as u64 } else { (1 << bw) - 1 };
            for case in 0..40 {
                // Runs of random lengths (1 to 40) of random values.
                let mut v: Vec<u32> = Vec::new();
                while v.len() < case * 37 {
                    let (val, len) = ((rnd() % (max + 1)) as u32, 1 + rnd() as usize % 40);
                    v.extend(std::iter::repeat_n(val, len));
                }
                let mut out = Vec::new();
                hybrid(&v, bw, &mut out);
                let want: Vec<u64> = v.iter().map(|x| u64::from(*x)).collect();
                assert_eq!(decode(&out, bw, v.len()), want, "bw {bw}, case {case}");
            }
        }
        // A long repeat is one RLE run: 2 bytes of header, 1 of value.
        let mut out = Vec::new();
        hybrid(&[5u32; 1000], 3, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(bit_width(1), 1);
        assert_eq!(bit_width(2), 1);
        assert_eq!(bit_width(3), 2);
        assert_eq!(bit_width(256), 8);
        assert_eq!(bit_width(257), 9);
    }
}
