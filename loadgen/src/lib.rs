//! loadgen: drives rockfeed with vehicle telemetry and checks what landed.
//!
//! - [`fleet`]: N vehicles × M metrics from a catalogue of gauges, counters,
//!   booleans and sparse signals; exact (dyadic) values;
//! - [`payload`]: the wide, narrow and batched profiles in rockfeed's decode
//!   formats, every reading recorded in the [`ledger`];
//! - [`rate`]: the open-loop schedule (lag is reported, never hidden);
//! - [`mqtt`]: the MQTT target (several connections, QoS 0/1, v3.1.1/v5, TLS);
//! - [`kafka`]: the Kafka target (rdkafka producer keyed by VIN, any
//!   librdkafka property passed through) and librdkafka's mock cluster;
//! - [`run`]: pacing, progress and the run summary;
//! - [`ledger`] and [`audit`]: the sent file and its comparison with the
//!   StarRocks emulator's tables (missing / duplicated / changed per key);
//! - [`report`]: latency reports (table, JSON, `.hgrm`, SVG) shared with
//!   rockfeed's own end-of-run report;
//! - [`bench`]: the end-to-end benchmark ladder.
//!
//! rockfeed depends on this crate (its demo uses the generator, the audit
//! and the report), never the other way round: the load generator and the
//! audit stay independent of the code they measure.

pub mod audit;
pub mod bench;
pub mod consume;
pub mod fleet;
pub mod http;
pub mod kafka;
pub mod ledger;
pub mod mqtt;
pub mod payload;
pub mod rate;
pub mod report;
pub mod run;
