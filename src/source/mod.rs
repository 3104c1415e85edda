//! Sources: MQTT ([`mqtt`], which appends every message to the WAL before
//! it acknowledges it; the pipeline reads the WAL) and Kafka ([`kafka`], a
//! consumer group). What a source hands the pipeline is a
//! `model::RawMessage`, and what it does for the epoch protocol is
//! `model::epoch::EpochSource` (Kafka here, MQTT's in `wal::source`).

pub mod kafka;
pub mod mqtt;
