//! CSV bodies for Stream Load and their headers: `\x01` between fields,
//! `\n` between rows, `\N` for NULL, and an explicit `columns` header so
//! schema-order drift cannot misplace a value (`starrocks-stream-load.md`
//! §2). Two tables: the telemetry table ([`TelemetryCsv`], from the
//! aggregator's partial rows) and the latest table ([`LatestCsv`], loaded
//! with `merge_condition`).
//!
//! Text fields must not contain the separator or the delimiter; rockfeed
//! validates vins, metric names and dims where they enter (decode, catalog,
//! enrichment), and the encoder refuses them again rather than emit a row
//! StarRocks would misparse. Floats are written shortest-round-trip (ryu),
//! so `total` survives the trip bit for bit.

use http::{HeaderMap, HeaderValue};

use crate::model::MetricId;
use crate::model::PartialGroup;
use crate::starrocks::text::write_datetime;

pub const SEPARATOR: u8 = 0x01;
/// The `column_separator` header value for [`SEPARATOR`].
pub const SEPARATOR_HEADER: &str = "\\x01";

/// Optional compression of CSV bodies, sent as `format: gzip|lz4|zstd`
/// (compressed CSV, understood by every StarRocks version with Stream Load;
/// the newer `compression` header needs 3.2.7+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Lz4,
    Zstd,
}

impl Compression {
    /// The `format` header value.
    pub fn format(&self) -> &'static str {
        match self {
            Compression::None => "csv",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Compresses a body (a copy for `None`).
    pub fn apply(&self, body: &[u8]) -> std::io::Result<Vec<u8>> {
        use std::io::Write;
        Ok(match self {
            Compression::None => body.to_vec(),
            Compression::Gzip => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
                e.write_all(body)?;
                e.finish()?
            }
            Compression::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(body.len() / 3));
                e.write_all(body)?;
                e.finish().map_err(std::io::Error::other)?
            }
            Compression::Zstd => zstd::encode_all(body, 3)?,
        })
    }

    /// Undoes the compression a `format` header names (`csv`: a copy).
    pub fn undo(format: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::with_capacity(body.len() * 3);
        match format.to_ascii_lowercase().as_str() {
            "gzip" => {
                flate2::read::GzDecoder::new(body).read_to_end(&mut out)?;
            }
            "lz4" => {
                lz4_flex::frame::FrameDecoder::new(body).read_to_end(&mut out)?;
            }
            "zstd" => out = zstd::decode_all(body)?,
            _ => out.extend_from_slice(body),
        }
        Ok(out)
    }
}

/// A text field unfit for the CSV body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field '{0}' contains a separator, newline or NUL")]
pub struct UnsafeField(pub String);

/// Checks a text field before it is encoded.
pub fn check_field(s: &str) -> Result<(), UnsafeField> {
    if s.bytes().any(|b| b == SEPARATOR || b == b'\n' || b == b'\r' || b == 0) || s == "\\N" {
        return Err(UnsafeField(s.chars().take(64).collect()));
    }
    Ok(())
}

/// Builds a `telemetry_1m` body: vehicle_id, window_start, metric, dims…,
/// cnt, total, min, max.
#[derive(Debug, Default)]
pub struct TelemetryCsv {
    pub buf: Vec<u8>,
    pub rows: u64,
}

fn push_f64(buf: &mut Vec<u8>, v: f64) {
    // Integral values (counters, flags) print exactly as integers.
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        buf.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
        return;
    }
    let mut b = ryu::Buffer::new();
    buf.extend_from_slice(b.format_finite(v).as_bytes());
}

impl<'a> TelemetryCsv {
    /// The `columns` header for these dims (backquoted, as the Flink
    /// connector writes it, so `min`/`max` are never read as keywords).
    pub fn columns(dims: &[String]) -> String {
        let mut c = vec!["vehicle_id".to_string(), "window_start".into(), "metric".into()];
        c.extend(dims.iter().cloned());
        c.extend(["cnt".into(), "total".into(), "min".into(), "max".into()]);
        c.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(",")
    }

    /// The format headers of a telemetry load: separator, columns, and the
    /// (compressed) CSV format. Dims are plain identifiers (config checks).
    pub fn headers(dims: &[String], compression: Compression) -> Result<HeaderMap, http::header::InvalidHeaderValue> {
        let mut h = HeaderMap::new();
        h.insert("column_separator", HeaderValue::from_static(SEPARATOR_HEADER));
        h.insert("columns", HeaderValue::from_str(&Self::columns(dims))?);
        h.insert("format", HeaderValue::from_static(compression.format()));
        Ok(h)
    }

    /// Appends a group's partial rows; `dims` are the vehicle's dim values
    /// (`None` per unknown dim), `name` maps a metric id to its name (names
    /// were checked when the catalog admitted them). Nothing is written when
    /// a field is unsafe.
    pub fn push_group(
        &mut self,
        g: &PartialGroup<'_>,
        dims: &[Option<&str>],
        name: impl Fn(MetricId) -> &'a str,
    ) -> Result<(), UnsafeField>
    where
        Self: 'a,
    {
        check_field(g.vin)?;
        for d in dims.iter().flatten() {
            check_field(d)?;
        }
        let mut t = [0u8; 26];
        let n = write_datetime(&mut t, g.window_start_ms * 1000);
        let b = &mut self.buf;
        for (m, agg) in g.metrics.iter().zip(g.aggs) {
            b.extend_from_slice(g.vin.as_bytes());
            b.push(SEPARATOR);
            b.extend_from_slice(&t[..n]);
            b.push(SEPARATOR);
            b.extend_from_slice(name(*m).as_bytes());
            for d in dims {
                b.push(SEPARATOR);
                match d {
                    Some(v) => b.extend_from_slice(v.as_bytes()),
                    None => b.extend_from_slice(b"\\N"),
                }
            }
            b.push(SEPARATOR);
            b.extend_from_slice(itoa::Buffer::new().format(agg.cnt).as_bytes());
            if agg.cnt == 1 {
                // One reading in this partial row (the common case with
                // short epochs): sum = min = max, formatted once.
                let start = b.len() + 1;
                b.push(SEPARATOR);
                push_f64(b, agg.sum);
                let end = b.len();
                b.extend_from_within(start - 1..end);
                b.extend_from_within(start - 1..end);
            } else {
                for v in [agg.sum, agg.min, agg.max] {
                    b.push(SEPARATOR);
                    push_f64(b, v);
                }
            }
            b.push(b'\n');
        }
        self.rows += g.aggs.len() as u64;
        Ok(())
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.rows = 0;
    }
}

/// The latest table's columns, in CSV order.
pub const LATEST_COLUMNS: &str = "`vehicle_id`,`metric`,`ts`,`seq`,`event_order`,`value`";

/// The latest table's merge condition column: StarRocks keeps a stored
/// value whose event order is newer.
pub const EVENT_ORDER: &str = "event_order";

/// One row of the latest table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatestRow<'a> {
    pub vin: &'a str,
    /// Empty: the vehicle's newest sample of any metric.
    pub metric: &'a str,
    pub ts_ms: i64,
    pub seq: Option<u64>,
    /// `ts_ms × 2⁶⁴ + seq`.
    pub event_order: i128,
    pub value: Option<f64>,
}

/// Builds a latest-table body ([`LATEST_COLUMNS`]).
#[derive(Debug, Default)]
pub struct LatestCsv {
    pub buf: Vec<u8>,
    pub rows: u64,
}

impl LatestCsv {
    /// The headers of a latest-table load: `base` (the separator) with
    /// plain CSV, its columns and the merge condition.
    pub fn headers(base: &HeaderMap) -> HeaderMap {
        let mut h = base.clone();
        h.insert("format", HeaderValue::from_static("csv"));
        h.insert("columns", HeaderValue::from_static(LATEST_COLUMNS));
        h.insert("merge_condition", HeaderValue::from_static(EVENT_ORDER));
        h
    }

    pub fn push(&mut self, r: &LatestRow<'_>) {
        let b = &mut self.buf;
        self.rows += 1;
        b.extend_from_slice(r.vin.as_bytes());
        b.push(SEPARATOR);
        b.extend_from_slice(r.metric.as_bytes());
        b.push(SEPARATOR);
        let mut t = [0u8; 26];
        let len = write_datetime(&mut t, r.ts_ms * 1000);
        b.extend_from_slice(&t[..len]);
        b.push(SEPARATOR);
        match r.seq {
            Some(q) => b.extend_from_slice(itoa::Buffer::new().format(q).as_bytes()),
            None => b.extend_from_slice(b"\\N"),
        }
        b.push(SEPARATOR);
        b.extend_from_slice(itoa::Buffer::new().format(r.event_order).as_bytes());
        b.push(SEPARATOR);
        match r.value {
            Some(x) => b.extend_from_slice(ryu::Buffer::new().format_finite(x).as_bytes()),
            None => b.extend_from_slice(b"\\N"),
        }
        b.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Agg;

    #[test]
    fn every_compression_is_undone_by_its_format_header() {
        let body = b"VIN1\x01a\x01b\n".repeat(100);
        for c in [Compression::None, Compression::Gzip, Compression::Lz4, Compression::Zstd] {
            let sent = c.apply(&body).unwrap();
            assert_eq!(Compression::undo(c.format(), &sent).unwrap(), body, "{}", c.format());
        }
    }

    #[test]
    fn rows_encode_with_separator_null_and_round_trip_floats() {
        let mut c = TelemetryCsv::default();
        let aggs =
            [Agg { cnt: 3, sum: 0.1 + 0.2, min: -1.5, max: 1e300 }, Agg { cnt: 1, sum: 2.0, min: 2.0, max: 2.0 }];
        let metrics = [MetricId(0), MetricId(1)];
        let g =
            PartialGroup { vin: "VIN1", window_start_ms: 1_714_979_280_000, dims: 0, metrics: &metrics, aggs: &aggs };
        c.push_group(&g, &[Some("f1"), None], |m| if m.0 == 0 { "speed" } else { "rpm" }).unwrap();
        let text = String::from_utf8(c.buf.clone()).unwrap();
        assert_eq!(
            text,
            "VIN1\x012024-05-06 07:08:00\x01speed\x01f1\x01\\N\x013\x010.30000000000000004\x01-1.5\x011e300\n\
             VIN1\x012024-05-06 07:08:00\x01rpm\x01f1\x01\\N\x011\x012\x012\x012\n"
        );
        assert_eq!(c.rows, 2);
        let total: f64 = text.split('\x01').nth(6).unwrap().parse().unwrap();
        assert_eq!(total, 0.1 + 0.2);
        assert_eq!(
            TelemetryCsv::columns(&["fleet".into(), "region".into()]),
            "`vehicle_id`,`window_start`,`metric`,`fleet`,`region`,`cnt`,`total`,`min`,`max`"
        );
    }

    #[test]
    fn unsafe_fields_are_refused() {
        let mut c = TelemetryCsv::default();
        let aggs = [Agg { cnt: 1, sum: 1.0, min: 1.0, max: 1.0 }];
        let g = PartialGroup { vin: "V\x01X", window_start_ms: 0, dims: 0, metrics: &[MetricId(0)], aggs: &aggs };
        assert!(c.push_group(&g, &[], |_| "m").is_err());
        let g = PartialGroup { vin: "V", window_start_ms: 0, dims: 0, metrics: &[MetricId(0)], aggs: &aggs };
        assert!(c.push_group(&g, &[Some("bad\ndim")], |_| "m").is_err());
        assert!(check_field("\\N").is_err());
        assert!(c.buf.is_empty(), "nothing half-written");
    }
}
