//! The Hive layout: `{table}/dt=YYYY-MM-DD/hour=HH/part-{shard}-{first}-{last}.parquet`,
//! partitioned by the readings' event time (UTC). A file's name comes from
//! its content's epoch range, so writing the same content again after a
//! crash names the same file.

use crate::starrocks::text::civil_from_days;

/// (date `YYYY-MM-DD`, hour `HH`) of an event time in ms, UTC.
pub fn partition_of(ts_ms: i64) -> (String, String) {
    let secs = ts_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Decoding bounds event times (`ts_out_of_range`); the clamp only keeps
    // the conversion total.
    let (y, m, d) = civil_from_days(days.clamp(-100_000_000, 100_000_000) as i32);
    (format!("{y:04}-{m:02}-{d:02}"), format!("{:02}", rem / 3600))
}

/// The hour (ms since the epoch, floored) an event time belongs to.
pub fn hour_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(3_600_000) * 3_600_000
}

/// The object path of one file, relative to the archive root. `shard`
/// names the writer: `{label_prefix}-{k}`, so instances that share a root
/// never write the same name.
pub fn file_path(table: &str, hour_ms: i64, shard: &str, first_epoch: u64, last_epoch: u64) -> String {
    let (dt, hour) = partition_of(hour_ms);
    format!("{table}/dt={dt}/hour={hour}/part-{shard}-{first_epoch}-{last_epoch}.parquet")
}

/// What a file name says: (shard, first epoch, last epoch).
pub fn parse_file_name(name: &str) -> Option<(&str, u64, u64)> {
    let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (rest, last) = stem.rsplit_once('-')?;
    let (shard, first) = rest.rsplit_once('-')?;
    Some((shard, first.parse().ok()?, last.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_utc_event_time() {
        assert_eq!(partition_of(0), ("1970-01-01".into(), "00".into()));
        // 2026-11-24T10:59:59.999Z and the next millisecond.
        let t = 1_795_517_999_999;
        assert_eq!(partition_of(t), ("2026-11-24".into(), "10".into()));
        assert_eq!(partition_of(t + 1), ("2026-11-24".into(), "11".into()));
        // Leap day, and before 1970.
        assert_eq!(partition_of(951_782_400_000).0, "2000-02-29");
        assert_eq!(partition_of(-1), ("1969-12-31".into(), "23".into()));
        assert_eq!(hour_of(t), 1_795_514_400_000);
    }

    #[test]
    fn file_names_come_from_the_epoch_range() {
        assert_eq!(
            file_path("telemetry", 1_795_514_400_000, "edge_a-3", 17, 42),
            "telemetry/dt=2026-11-24/hour=10/part-edge_a-3-17-42.parquet"
        );
    }
}
