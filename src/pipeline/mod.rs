//! The pipeline: the pure parts (routing by StarRocks bucket, tumbling
//! event-time pre-aggregation, latest values, epoch pacing) and the stages around them
//! (decoder, shards), wired by `runner` under the epoch coordinator.

pub mod budget;
pub mod decoder;
pub mod epoch;
pub mod latest;
pub mod pace;
pub mod route;
pub mod runner;
pub mod shard;
pub mod window;
