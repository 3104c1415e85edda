//! Raw readings → one Parquet file.
//!
//! Schema (long format, one row per reading): `vin`, `ts` (timestamp ms,
//! UTC), `seq`, `metric`, `value` (double; booleans 0/1), `value_kind`
//! (`number`/`bool`), `received_at` (timestamp ms, UTC), `source`
//! (topic/partition/offset or WAL position), then one column per enrichment
//! dimension. `vin`, `metric`, `value_kind` and the dims are Arrow
//! dictionaries (Parquet dictionary pages); every column is zstd-compressed.
//! Columns readers filter on (`vin`, `ts`, `metric`, `value`, the dims)
//! carry page statistics; `seq`, `value_kind`, `received_at` and `source`
//! carry none (a min/max per value of a column nobody prunes by cost 14% of
//! the encode in the `archive_encode` bench). Rows are sorted by (vin, metric, ts), and the
//! footer says so (`sorting_columns`), so readers can skip row groups.
//!
//! The string columns (and `source`, dictionary-encoded in Parquet too) are
//! written by [`dict`] from the ids the archive has interned; the numeric
//! ones by the parquet crate, which also writes the footer.

mod dict;

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, TimeUnit};
use bytes::Bytes;
use compact_str::CompactString;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use self::dict::{DICT_LIMIT, DictColumn, Zstd};
use super::{RawRows, ValueKind};

/// Writer settings.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveFormat {
    /// Rows per row group (readers parallelise and skip by row group).
    pub row_group_rows: usize,
    /// zstd level (1–22).
    pub zstd_level: i32,
}

impl Default for ArchiveFormat {
    fn default() -> Self {
        ArchiveFormat { row_group_rows: 1 << 20, zstd_level: 1 }
    }
}

/// The Arrow schema of the archive for a set of dimension columns.
#[derive(Debug, Clone)]
pub struct Schema(pub arrow_schema::SchemaRef);

fn dict(key: DataType) -> DataType {
    DataType::Dictionary(Box::new(key), Box::new(DataType::Utf8))
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

impl Schema {
    pub fn new(dims: &[String]) -> Schema {
        let mut fields = vec![
            Field::new("vin", dict(DataType::Int32), false),
            Field::new("ts", ts(), false),
            Field::new("seq", DataType::Int64, true),
            Field::new("metric", dict(DataType::Int32), false),
            Field::new("value", DataType::Float64, false),
            Field::new("value_kind", dict(DataType::Int8), false),
            Field::new("received_at", ts(), false),
            Field::new("source", DataType::Utf8, false),
        ];
        fields.extend(dims.iter().map(|d| Field::new(d, dict(DataType::Int32), true)));
        Schema(Arc::new(arrow_schema::Schema::new(fields)))
    }
}

fn properties(format: ArchiveFormat) -> Result<WriterProperties, String> {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(format.zstd_level).map_err(|e| e.to_string())?))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page);
    for c in NO_STATS {
        b = b.set_column_statistics_enabled(ColumnPath::from(c), EnabledStatistics::None);
    }
    Ok(b.set_max_row_group_row_count(Some(format.row_group_rows.max(1)))
        .set_sorting_columns(Some(vec![
            SortingColumn { column_idx: 0, descending: false, nulls_first: false },
            SortingColumn { column_idx: 3, descending: false, nulls_first: false },
            SortingColumn { column_idx: 1, descending: false, nulls_first: false },
        ]))
        .set_created_by(format!("rockfeed {}", env!("CARGO_PKG_VERSION")))
        .build())
}

/// Columns without statistics (nobody filters by them), whichever writer
/// writes them.
const NO_STATS: [&str; 4] = ["source", "seq", "received_at", "value_kind"];

/// The columns of the schema, in order: the fixed eight, then the dims.
enum Column {
    /// Written by the parquet crate's Arrow column writer.
    Numeric(Box<ArrowColumnWriter>),
    /// Written from interned ids ([`dict`]).
    Strings(Box<DictColumn>),
}

/// A Parquet file written chunk by chunk from rows already in (vin, metric,
/// ts) order: memory holds one row group's encoded pages, not the file.
///
/// The numeric columns go through the parquet crate's Arrow column writers;
/// the string columns are written from the rows' interned ids by [`dict`],
/// which hashes a distinct string once per chunk instead of every row. The
/// file is the crate's: its footer, the Arrow schema in the metadata, the
/// page index and the sort order.
pub struct ParquetWriter<W: std::io::Write + Send> {
    file: SerializedFileWriter<W>,
    factory: ArrowRowGroupWriterFactory,
    schema: Schema,
    format: ArchiveFormat,
    zstd: Zstd,
    /// The row group being written, and its rows so far.
    group: Option<(Vec<Column>, usize)>,
    groups: usize,
    kinds: [CompactString; 2],
    pub rows: u64,
}

impl<W: std::io::Write + Send> ParquetWriter<W> {
    pub fn new(out: W, schema: &Schema, format: ArchiveFormat) -> Result<Self, String> {
        let w = ArrowWriter::try_new(out, schema.0.clone(), Some(properties(format)?)).map_err(|e| e.to_string())?;
        let (file, factory) = w.into_serialized_writer().map_err(|e| e.to_string())?;
        Ok(ParquetWriter {
            file,
            factory,
            schema: schema.clone(),
            format,
            zstd: Zstd::new(format.zstd_level)?,
            group: None,
            groups: 0,
            kinds: [ValueKind::Number.as_str().into(), ValueKind::Bool.as_str().into()],
            rows: 0,
        })
    }

    fn open_group(&mut self) -> Result<(Vec<Column>, usize), String> {
        let writers = self.factory.create_column_writers(self.groups).map_err(|e| e.to_string())?;
        let descr = self.file.schema_descr();
        let columns = writers
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                let field = self.schema.0.field(i);
                if matches!(field.data_type(), DataType::Dictionary(..) | DataType::Utf8) {
                    let stats = !NO_STATS.contains(&field.name().as_str());
                    Column::Strings(Box::new(DictColumn::new(descr.column(i), stats, DICT_LIMIT)))
                } else {
                    Column::Numeric(Box::new(w))
                }
            })
            .collect();
        Ok((columns, 0))
    }

    pub fn write(&mut self, mut rows: RawRows) -> Result<(), String> {
        let n = rows.len();
        if n == 0 {
            return Ok(());
        }
        if rows.dims.len() + 8 < self.schema.0.fields().len() {
            return Err("rows have fewer dimension columns than the schema".into());
        }
        let per_group = self.format.row_group_rows.max(1);
        let numeric = Numeric::take(&mut rows);
        let mut at = 0;
        while at < n {
            if self.group.is_none() {
                self.group = Some(self.open_group()?);
            }
            let Some((columns, in_group)) = self.group.as_mut() else { break };
            let take = (n - at).min(per_group - *in_group);
            write_range(columns, &rows, &numeric, at..at + take, &self.schema, &self.kinds, &mut self.zstd)?;
            *in_group += take;
            at += take;
            if *in_group >= per_group {
                self.close_group()?;
            }
        }
        self.rows += n as u64;
        Ok(())
    }

    fn close_group(&mut self) -> Result<(), String> {
        let Some((columns, _)) = self.group.take() else { return Ok(()) };
        let err = |e: parquet::errors::ParquetError| e.to_string();
        let mut rg = self.file.next_row_group().map_err(err)?;
        for c in columns {
            match c {
                Column::Numeric(w) => w.close().map_err(err)?.append_to_row_group(&mut rg).map_err(err)?,
                Column::Strings(d) => {
                    let (bytes, close) = d.finish(&mut self.zstd)?;
                    rg.append_column(&bytes, close).map_err(err)?;
                }
            }
        }
        rg.close().map_err(err)?;
        self.groups += 1;
        Ok(())
    }

    /// Writes the last row group and the footer; returns the sink.
    pub fn finish(mut self) -> Result<W, String> {
        self.close_group()?;
        self.file.into_inner().map_err(|e| e.to_string())
    }
}

/// A chunk's numeric columns as Arrow arrays (sliced per row group).
struct Numeric {
    ts: ArrayRef,
    seq: ArrayRef,
    value: ArrayRef,
    received: ArrayRef,
}

impl Numeric {
    /// Moves the columns out of `rows` (the string columns stay).
    fn take(rows: &mut RawRows) -> Numeric {
        Numeric {
            ts: Arc::new(TimestampMillisecondArray::from(std::mem::take(&mut rows.ts_ms)).with_timezone("UTC")),
            seq: Arc::new(Int64Array::from(std::mem::take(&mut rows.seq))),
            value: Arc::new(Float64Array::from(std::mem::take(&mut rows.value))),
            received: Arc::new(
                TimestampMillisecondArray::from(std::mem::take(&mut rows.received_ms)).with_timezone("UTC"),
            ),
        }
    }
}

/// Writes rows `range` of a chunk to every column of a row group.
fn write_range(
    columns: &mut [Column],
    rows: &RawRows,
    numeric: &Numeric,
    range: std::ops::Range<usize>,
    schema: &Schema,
    kinds: &[CompactString; 2],
    z: &mut Zstd,
) -> Result<(), String> {
    let (at, len) = (range.start, range.len());
    for (i, c) in columns.iter_mut().enumerate() {
        match c {
            Column::Numeric(w) => {
                let array = match i {
                    1 => &numeric.ts,
                    2 => &numeric.seq,
                    4 => &numeric.value,
                    6 => &numeric.received,
                    _ => return Err(format!("column {i} is not numeric")),
                };
                for leaf in compute_leaves(schema.0.field(i), &array.slice(at, len)).map_err(|e| e.to_string())? {
                    w.write(&leaf).map_err(|e| e.to_string())?;
                }
            }
            Column::Strings(d) => match i {
                0 => d.write(rows.vin[range.clone()].iter().map(|v| Some(*v)), &rows.vins.values, z)?,
                3 => d.write(rows.metric[range.clone()].iter().map(|v| Some(*v)), &rows.metrics.values, z)?,
                5 => {
                    d.write(rows.kind[range.clone()].iter().map(|k| Some((*k == ValueKind::Bool) as u32)), kinds, z)?
                }
                7 => d.write(rows.source[range.clone()].iter().map(|v| Some(*v)), &rows.sources.values, z)?,
                _ => {
                    let col = rows.dims.get(i - 8).ok_or("rows have fewer dimension columns than the schema")?;
                    d.write(col[range.clone()].iter().copied(), &rows.dim_values.values, z)?
                }
            },
        }
    }
    Ok(())
}

/// Sorts `rows` by (vin, metric, ts) and writes them as one Parquet file.
pub fn encode(rows: &RawRows, schema: &Schema, format: ArchiveFormat) -> Result<Bytes, String> {
    let sorted = rows.select(&rows.sorted_order());
    let mut w = ParquetWriter::new(Vec::with_capacity(rows.len() * 8 + 4096), schema, format)?;
    w.write(sorted)?;
    Ok(Bytes::from(w.finish()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Raw;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int8Type, Int32Type};
    use arrow_array::{Array, ArrayAccessor, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// Column `c` of `b`, a dictionary of strings, as its strings.
    fn strings(
        b: &arrow_array::RecordBatch,
        c: usize,
    ) -> arrow_array::TypedDictionaryArray<'_, Int32Type, StringArray> {
        arrow_array::cast::as_dictionary_array::<Int32Type>(b.column(c)).downcast_dict::<StringArray>().unwrap()
    }

    /// `n` readings of 7 vehicles × 5 metrics in a scrambled order.
    fn rows(n: usize) -> RawRows {
        let mut r = RawRows::new(1);
        for i in 0..n {
            let j = (i * 7919) % n; // a permutation when n is not a multiple of 7919
            let vin = format!("VIN{:02}", j % 7);
            let metric = format!("m{}", (j / 7) % 5);
            let dims = [if j % 7 == 3 { None } else { Some("fleet-a") }];
            r.push(
                Raw {
                    vin: &vin,
                    ts_ms: 1_795_514_400_000 + j as i64,
                    seq: (!j.is_multiple_of(11)).then_some(j as i64),
                    metric: &metric,
                    value: if j % 5 == 4 { (j % 2) as f64 } else { j as f64 * 0.125 },
                    kind: if j % 5 == 4 { ValueKind::Bool } else { ValueKind::Number },
                    received_ms: 1_795_514_400_500 + j as i64,
                    source: &format!("kafka:telemetry/{}@{j}", j % 3),
                },
                &dims,
            );
        }
        r
    }

    #[test]
    fn readings_round_trip_sorted_with_dictionaries_statistics_and_row_groups() {
        let dims = vec!["fleet".to_string()];
        let schema = Schema::new(&dims);
        let n = 10_000;
        let bytes = encode(&rows(n), &schema, ArchiveFormat { row_group_rows: 4096, zstd_level: 3 }).unwrap();

        // Footer: three row groups, zstd, statistics, dictionary pages, sort order.
        let file = SerializedFileReader::new(bytes.clone()).unwrap();
        let md = file.metadata();
        assert_eq!(md.num_row_groups(), 3);
        assert_eq!(md.file_metadata().num_rows(), n as i64);
        let rg = md.row_group(0);
        assert_eq!(rg.sorting_columns().map(|s| s.len()), Some(3));
        for c in rg.columns() {
            assert!(matches!(c.compression(), Compression::ZSTD(_)), "{:?}", c.column_path());
            // Statistics where readers filter; none where they never do.
            let name = c.column_path().string();
            let filtered = !["seq", "value_kind", "received_at", "source"].contains(&name.as_str());
            assert_eq!(c.statistics().is_some(), filtered, "{name}");
        }
        assert!(rg.column(0).dictionary_page_offset().is_some(), "vin is dictionary-encoded");
        assert!(rg.column(3).dictionary_page_offset().is_some(), "metric is dictionary-encoded");

        // Rows: every reading once, sorted by (vin, metric, ts).
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
        let mut seen = vec![false; n];
        let mut last: Option<(String, String, i64)> = None;
        let mut nulls = (0, 0);
        for b in reader {
            let b = b.unwrap();
            let (vin, metric) = (strings(&b, 0), strings(&b, 3));
            let ts = b.column(1).as_primitive::<arrow_array::types::TimestampMillisecondType>();
            let seq = b.column(2).as_primitive::<arrow_array::types::Int64Type>();
            let value = b.column(4).as_primitive::<arrow_array::types::Float64Type>();
            let kind = arrow_array::cast::as_dictionary_array::<Int8Type>(b.column(5));
            let kind = kind.downcast_dict::<StringArray>().unwrap();
            let fleet = strings(&b, 8);
            for i in 0..b.num_rows() {
                let j = (ts.value(i) - 1_795_514_400_000) as usize;
                assert!(!seen[j], "reading {j} twice");
                seen[j] = true;
                assert_eq!(vin.value(i), format!("VIN{:02}", j % 7));
                assert_eq!(metric.value(i), format!("m{}", (j / 7) % 5));
                assert_eq!(seq.is_null(i), j.is_multiple_of(11));
                let is_bool = j % 5 == 4;
                assert_eq!(kind.value(i), if is_bool { "bool" } else { "number" });
                assert_eq!(value.value(i), if is_bool { (j % 2) as f64 } else { j as f64 * 0.125 });
                nulls.0 += fleet.is_null(i) as usize;
                nulls.1 += (j % 7 == 3) as usize;
                let key = (vin.value(i).to_string(), metric.value(i).to_string(), ts.value(i));
                assert!(last.as_ref().is_none_or(|l| *l <= key), "{last:?} then {key:?}");
                last = Some(key);
            }
            assert_eq!(b.schema().field(1).data_type(), &super::ts());
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(nulls.0, nulls.1, "NULL dims stay NULL");
    }

    /// The page index of the string columns: per page the minimum, maximum
    /// and NULL count of the rows it holds, the boundary order, and where
    /// each page starts; none for columns without statistics.
    #[test]
    fn string_columns_carry_a_true_page_index() {
        use parquet::file::page_index::column_index::ColumnIndexMetaData;
        use parquet::file::serialized_reader::ReadOptionsBuilder;
        let schema = Schema::new(&["fleet".to_string()]);
        let n = 45_000;
        let bytes = encode(&rows(n), &schema, ArchiveFormat { row_group_rows: 50_000, zstd_level: 1 }).unwrap();
        // The rows as written (one row group).
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap().build().unwrap();
        let (mut vins, mut fleets) = (Vec::new(), Vec::new());
        for b in reader {
            let b = b.unwrap();
            let (vin, fleet) = (strings(&b, 0), strings(&b, 8));
            for i in 0..b.num_rows() {
                vins.push(vin.value(i).to_string());
                fleets.push((!fleet.is_null(i)).then(|| fleet.value(i).to_string()));
            }
        }
        let fleet_nulls = fleets.iter().filter(|f| f.is_none()).count() as u64;
        let opts = ReadOptionsBuilder::new().with_page_index().build();
        let file = SerializedFileReader::new_with_options(bytes, opts).unwrap();
        let md = file.metadata();
        let index = md.page_index_for_row_group(0);
        let ci = |c: usize| index.column_index(c);
        let oi = |c: usize| index.offset_index(c).unwrap();
        let pages = n.div_ceil(20_000);
        for col in [0, 3, 5, 8] {
            let first: Vec<i64> = oi(col).page_locations().iter().map(|p| p.first_row_index).collect();
            assert_eq!(first, (0..pages as i64).map(|p| p * 20_000).collect::<Vec<_>>(), "column {col}");
        }
        // `source` (45,000 distinct values, over 1 MiB) ends its dictionary
        // page where the dictionary fills, and goes on PLAIN.
        let first: Vec<i64> = oi(7).page_locations().iter().map(|p| p.first_row_index).collect();
        assert_eq!(first, [0, 20_000, 39_200, 59_200].into_iter().filter(|r| *r < n as i64).collect::<Vec<_>>());
        assert!(md.row_group(0).column(7).encodings().any(|e| e == parquet::basic::Encoding::PLAIN));
        assert!(ci(7).is_none(), "source has no statistics");
        assert!(ci(5).is_none(), "value_kind has no statistics");
        for (col, values) in [(0, vins.iter().map(|v| Some(v.clone())).collect::<Vec<_>>()), (8, fleets)] {
            let Some(ColumnIndexMetaData::BYTE_ARRAY(ix)) = ci(col) else { panic!("column {col}: {:?}", ci(col)) };
            assert_eq!(ix.num_pages(), pages as u64);
            for p in 0..pages {
                let rows = &values[p * 20_000..((p + 1) * 20_000).min(n)];
                let present: Vec<&String> = rows.iter().flatten().collect();
                let nulls = (rows.len() - present.len()) as i64;
                assert_eq!(ix.null_count(p), Some(nulls), "column {col} page {p}");
                let min = present.iter().min().map(|s| s.as_bytes());
                let max = present.iter().max().map(|s| s.as_bytes());
                assert_eq!((ix.min_value(p), ix.max_value(p)), (min, max), "column {col} page {p}");
            }
        }
        let vin = ci(0).unwrap();
        assert_eq!(vin.get_boundary_order(), Some(parquet::basic::BoundaryOrder::ASCENDING), "vins are sorted");
        // Chunk statistics agree.
        let st = md.row_group(0).column(0).statistics().unwrap();
        assert_eq!(st.min_bytes_opt(), vins.iter().min().map(|s| s.as_bytes()));
        assert_eq!(st.max_bytes_opt(), vins.iter().max().map(|s| s.as_bytes()));
        let nulls = md.row_group(0).column(8).statistics().unwrap().null_count_opt();
        assert_eq!(nulls, Some(fleet_nulls));
    }
}
