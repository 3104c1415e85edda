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

    proptest::proptest! {
        /// Any VIN, any bucket count, any shard count: the shard's bucket is
        /// the tablet the emulator (StarRocks' function) puts the row in.
        #[test]
        fn a_vehicles_shard_owns_the_bucket_the_emulator_stores_its_rows_in(
            vin in "\\PC{1,40}",
            buckets in 1u32..=1024,
            shards in 1u32..=64,
        ) {
            let shards = shards.min(buckets);
            let def = crate::starrocks::ddl::parse_table(
                "d",
                &format!("CREATE TABLE t (vehicle_id VARCHAR(255) NOT NULL, v BIGINT SUM) AGGREGATE KEY(vehicle_id) DISTRIBUTED BY HASH(vehicle_id) BUCKETS {buckets}"),
            )
            .unwrap();
            let row = [Value::Str(vin.as_str().into()), Value::Int(1)];
            let stored = crate::starrocks::bucket::row_bucket(&def, &row);
            proptest::prop_assert_eq!(shard_of(vin.as_bytes(), buckets, shards), stored % shards);
            proptest::prop_assert_eq!(bucket_of_str(vin.as_bytes(), buckets), stored);
        }
    }
}
