//! The pipeline between a source and the sink:
//! - pure cores: [`route`] (the StarRocks bucket of a vehicle), [`window`]
//!   (tumbling event-time pre-aggregation), [`latest`] (the newest value of
//!   each metric), [`pace`] (epoch length from StarRocks' pressure), and
//!   [`epoch::plan`] (recovery's decisions);
//! - stages: [`decoder`] (payloads to routed samples, one task) and
//!   [`shard`] (aggregate and load, one task per shard), wired by
//!   [`runner`] under the [`epoch`] coordinator.

pub mod decoder;
pub mod epoch;
pub mod latest;
pub mod pace;
pub mod route;
pub mod runner;
pub mod shard;
pub mod window;
