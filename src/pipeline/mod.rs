//! The pipeline's pure parts: routing by StarRocks bucket and tumbling
//! event-time pre-aggregation. The I/O loops around them come with the
//! sources and the epoch coordinator.

pub mod epoch;
pub mod latest;
pub mod route;
pub mod runner;
pub mod window;
