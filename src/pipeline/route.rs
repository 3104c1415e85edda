//! Routing: which shard owns a vehicle.
//!
//! shard = bucket mod shards, where bucket is StarRocks' own bucket of the
//! colocation key (`crc32(vin) % buckets`, the §7.3 function for a single
//! VARCHAR distribution column). Shard k therefore only ever writes buckets
//! b with b mod S == k: each Stream Load touches buckets/S tablets per
//! partition instead of all of them, S times fewer tablet versions.

use crate::starrocks::bucket::bucket_of_str;

/// Shard of a colocation key.
pub fn shard_of(key: &[u8], buckets: u32, shards: u32) -> u32 {
    bucket_of_str(key, buckets) % shards.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::starrocks::bucket::bucket_of;
    use crate::starrocks::types::{ColType, Value};

    #[test]
    fn shards_own_disjoint_bucket_residues_matching_starrocks() {
        let (buckets, shards) = (16, 4);
        for i in 0..2000 {
            let vin = format!("RFVIN{i:012}");
            let b = bucket_of([(&ColType::Varchar(32), &Value::Str(vin.as_str().into()))], buckets);
            assert_eq!(b, bucket_of_str(vin.as_bytes(), buckets), "same function as the emulator's");
            assert_eq!(shard_of(vin.as_bytes(), buckets, shards), b % shards);
        }
    }
}
