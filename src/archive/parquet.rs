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

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::types::{Int8Type, Int32Type};
use arrow_array::{
    ArrayRef, DictionaryArray, Float64Array, Int8Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

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

fn dictionary(keys: Int32Array, values: &[&str]) -> Result<ArrayRef, String> {
    let values = Arc::new(StringArray::from_iter_values(values.iter()));
    Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values).map_err(|e| e.to_string())?))
}

/// The Arrow batch of `rows`, in their order (dictionaries in interner
/// order). Takes the rows: the numeric columns move into Arrow as they are.
pub fn batch(rows: RawRows, schema: &Schema) -> Result<RecordBatch, String> {
    let RawRows { vin, ts_ms, seq, metric, value, kind, received_ms, source, dims, vins, metrics, sources, dim_values } =
        rows;
    let n = ts_ms.len();
    fn strs(t: &super::Interner) -> Vec<&str> {
        t.values.iter().map(|v| v.as_str()).collect()
    }
    let keys = |ids: &[u32]| Int32Array::from_iter_values(ids.iter().map(|i| *i as i32));
    let vin = dictionary(keys(&vin), &strs(&vins))?;
    let ts_col = TimestampMillisecondArray::from(ts_ms).with_timezone("UTC");
    let seq = Int64Array::from(seq);
    let metric = dictionary(keys(&metric), &strs(&metrics))?;
    let value = Float64Array::from(value);
    let kinds = Arc::new(StringArray::from_iter_values([ValueKind::Number.as_str(), ValueKind::Bool.as_str()]));
    let kind_keys = Int8Array::from_iter_values(kind.iter().map(|k| (*k == ValueKind::Bool) as i8));
    let kind = DictionaryArray::<Int8Type>::try_new(kind_keys, kinds).map_err(|e| e.to_string())?;
    let received = TimestampMillisecondArray::from(received_ms).with_timezone("UTC");
    let mut source_col = StringBuilder::with_capacity(n, n * 16);
    for id in &source {
        source_col.append_value(sources.get(*id));
    }
    let mut columns: Vec<ArrayRef> = vec![
        vin,
        Arc::new(ts_col),
        Arc::new(seq),
        metric,
        Arc::new(value),
        Arc::new(kind),
        Arc::new(received),
        Arc::new(source_col.finish()),
    ];
    // The schema's dimension columns follow the eight fixed ones.
    let ndims = schema.0.fields().len() - columns.len();
    if dims.len() < ndims {
        return Err("rows have fewer dimension columns than the schema".into());
    }
    let all_dims = strs(&dim_values);
    for col in dims.iter().take(ndims) {
        let keys = Int32Array::from_iter(col.iter().map(|id| id.map(|id| id as i32)));
        columns.push(dictionary(keys, &all_dims)?);
    }
    RecordBatch::try_new(schema.0.clone(), columns).map_err(|e| e.to_string())
}

fn properties(format: ArchiveFormat) -> Result<WriterProperties, String> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(format.zstd_level).map_err(|e| e.to_string())?))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_statistics_enabled(ColumnPath::from("source"), EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("seq"), EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("received_at"), EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("value_kind"), EnabledStatistics::None)
        .set_max_row_group_row_count(Some(format.row_group_rows.max(1)))
        .set_sorting_columns(Some(vec![
            SortingColumn { column_idx: 0, descending: false, nulls_first: false },
            SortingColumn { column_idx: 3, descending: false, nulls_first: false },
            SortingColumn { column_idx: 1, descending: false, nulls_first: false },
        ]))
        .set_created_by(format!("rockfeed {}", env!("CARGO_PKG_VERSION")))
        .build())
}

/// A Parquet file written batch by batch from rows already in (vin, metric,
/// ts) order: memory holds one row group, not the file.
pub struct ParquetWriter<W: std::io::Write + Send> {
    w: ArrowWriter<W>,
    schema: Schema,
    pub rows: u64,
}

impl<W: std::io::Write + Send> ParquetWriter<W> {
    pub fn new(out: W, schema: &Schema, format: ArchiveFormat) -> Result<Self, String> {
        let w = ArrowWriter::try_new(out, schema.0.clone(), Some(properties(format)?)).map_err(|e| e.to_string())?;
        Ok(ParquetWriter { w, schema: schema.clone(), rows: 0 })
    }

    pub fn write(&mut self, rows: RawRows) -> Result<(), String> {
        let n = rows.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let b = batch(rows, &self.schema)?;
        self.w.write(&b).map_err(|e| e.to_string())?;
        self.rows += n;
        Ok(())
    }

    /// Writes the footer; returns the sink.
    pub fn finish(self) -> Result<W, String> {
        self.w.into_inner().map_err(|e| e.to_string())
    }
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
    use arrow_array::{Array, ArrayAccessor};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};

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
            let vin = arrow_array::cast::as_dictionary_array::<Int32Type>(b.column(0));
            let vin = vin.downcast_dict::<StringArray>().unwrap();
            let metric = arrow_array::cast::as_dictionary_array::<Int32Type>(b.column(3));
            let metric = metric.downcast_dict::<StringArray>().unwrap();
            let ts = b.column(1).as_primitive::<arrow_array::types::TimestampMillisecondType>();
            let seq = b.column(2).as_primitive::<arrow_array::types::Int64Type>();
            let value = b.column(4).as_primitive::<arrow_array::types::Float64Type>();
            let kind = arrow_array::cast::as_dictionary_array::<Int8Type>(b.column(5));
            let kind = kind.downcast_dict::<StringArray>().unwrap();
            let fleet = arrow_array::cast::as_dictionary_array::<Int32Type>(b.column(8));
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
}
