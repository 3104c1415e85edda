//! Deterministic Stream Load labels.
//!
//! A label names a batch by the data's identity, never by the time of the
//! attempt (Vector's Doris sink uses `now + uuid` per attempt, so a retry can
//! never be deduplicated). Format: `{prefix}-{table}-{shard}-{seq}` where
//! `seq` is the epoch or batch sequence, as the Flink connector's
//! exactly-once labels. StarRocks allows 1–128 characters of
//! `[-_A-Za-z0-9:]`; those characters are kept as written, anything else in
//! the parts is replaced by `_`, and the whole is checked.

/// Builds the label of batch `seq` of `table` from `shard`.
pub fn label(prefix: &str, table: &str, shard: u32, seq: u64) -> Result<String, String> {
    let clean = |s: &str| {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':') { c } else { '_' })
            .collect::<String>()
    };
    let l = format!("{}-{}-{shard}-{seq}", clean(prefix), clean(table));
    if l.len() > 128 {
        return Err(format!("label '{l}' is longer than StarRocks' 128 characters; shorten label_prefix"));
    }
    Ok(l)
}

/// Parses `seq` back out of a label built by [`label`] for this prefix,
/// table and shard (recovery probes labels upward from a known sequence).
pub fn seq_of(l: &str, prefix: &str, table: &str, shard: u32) -> Option<u64> {
    let head = label(prefix, table, shard, 0).ok()?;
    let head = head.strip_suffix('0')?;
    l.strip_prefix(head)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_deterministic_and_valid() {
        let l = label("rockfeed", "telemetry_1m", 3, 42).unwrap();
        assert_eq!(l, "rockfeed-telemetry_1m-3-42");
        assert_eq!(l, label("rockfeed", "telemetry_1m", 3, 42).unwrap());
        assert!(crate::starrocks_emulator::load::check_label(&l).is_ok());
        assert_eq!(label("rf.prod", "a b", 0, 1).unwrap(), "rf_prod-a_b-0-1");
        // What StarRocks allows is kept as written (the README's `{prefix}-…`).
        assert_eq!(label("rt-edge-1", "telemetry_1m", 0, 7).unwrap(), "rt-edge-1-telemetry_1m-0-7");
        assert_eq!(seq_of("rt-edge-1-telemetry_1m-0-7", "rt-edge-1", "telemetry_1m", 0), Some(7));
        assert!(label(&"x".repeat(130), "t", 0, 0).is_err());
    }

    #[test]
    fn sequence_round_trips() {
        let l = label("p", "t", 7, 123_456).unwrap();
        assert_eq!(seq_of(&l, "p", "t", 7), Some(123_456));
        assert_eq!(seq_of(&l, "p", "t", 8), None);
    }
}
