//! Reading a local archive back (the demo's self-check): every reading of
//! every file under `{root}/{table}`, with the file it came from.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayAccessor, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// One reading: (vin, ts ms, metric, value).
pub type Reading = (String, i64, String, f64);

/// The Parquet files under `dir`, recursively, sorted.
pub fn files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in rd {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every reading of one file.
pub fn readings(path: &Path) -> Result<Vec<Reading>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let r = ParquetRecordBatchReaderBuilder::try_new(f).and_then(|b| b.build()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for b in r {
        let b = b.map_err(|e| e.to_string())?;
        let col = |name: &str| b.column_by_name(name).ok_or_else(|| format!("{}: no column {name}", path.display()));
        let vin = col("vin")?.as_dictionary::<Int32Type>().downcast_dict::<StringArray>().ok_or("vin type")?;
        let metric = col("metric")?.as_dictionary::<Int32Type>().downcast_dict::<StringArray>().ok_or("metric type")?;
        let ts = col("ts")?.as_primitive::<TimestampMillisecondType>();
        let value = col("value")?.as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            if vin.is_null(i) || metric.is_null(i) {
                return Err(format!("{}: NULL vin or metric", path.display()));
            }
            out.push((vin.value(i).to_string(), ts.value(i), metric.value(i).to_string(), value.value(i)));
        }
    }
    Ok(out)
}
