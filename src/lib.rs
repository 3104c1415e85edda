//! rockfeed: an edge telemetry appliance for StarRocks. See `README.md`
//! and `../shared/DESIGN.md` for the architecture.
//!
//! The path of a reading, and the module for each step:
//! - [`source`]: MQTT (through the write-ahead log, [`wal`]) and Kafka;
//! - [`decode`]: payloads into samples; [`enrich`]: vehicle dimensions;
//! - [`pipeline`]: routing by StarRocks bucket, event-time windows, the
//!   latest values, the shards, and the epoch protocol
//!   ([`pipeline::epoch`]) that makes loads exactly-once;
//! - [`sink`]: Stream Load and its transaction API; [`archive`]: the raw
//!   Parquet copy; [`deadletter`] and [`reject`]: what cannot be loaded;
//! - [`app`]: the wiring of `rockfeed run`; [`config`]; [`telemetry`]:
//!   `/metrics`, `/health`, the latency report; [`preflight`]:
//!   `rockfeed check --connect`; [`demo`]: `rockfeed demo`.
//!
//! Shared by all: the vocabulary of the stages ([`model`], with the epoch
//! protocol's contract between the coordinator and the sources), the
//! memory bound on what an epoch holds ([`budget`]) and the StarRocks
//! model ([`starrocks`]: types, DDL, the bucket function). Beside the
//! appliance: the protocol-exact StarRocks emulator ([`starrocks_emulator`])
//! that every sink test, the demo and the benchmarks run against, and the
//! crash tests' [`halt`] hook.
//!
//! Where this differs from `shared/STYLE.md`'s layout, and why:
//! - `model`, `source/*`, `app` and others are directories, split to stay
//!   near 300 lines a file.
//! - A few small modules sit at the top level. [`budget`] (the pipeline
//!   counts, telemetry shows), [`httpd`] (`/metrics` and the emulator),
//!   [`reject`] (decode, pipeline, telemetry) and [`util`] are used by
//!   several modules that may not import each other. [`shutdown`] is the
//!   process' stop, which `app` runs. [`deadletter`] is the store of refused
//!   input, which the pipeline writes and `rockfeed deadletter replay` loads again.
//! - The destination's health is `telemetry::health`, not in the sink: the
//!   loaders write it, `/ready` reads it.
//!
//! Top-level modules form layers: `model`, `budget`, `util` and the other
//! leaves import nothing of the crate, `telemetry` imports only those, the
//! stages import downwards, and `app`, `preflight` and `demo` sit on top.
//! `tests/layering.rs` fails on an import cycle.

pub mod app;
pub mod archive;
pub mod budget;
pub mod config;
pub mod deadletter;
pub mod decode;
#[cfg(feature = "demo")]
pub mod demo;
pub mod enrich;
pub mod halt;
pub mod httpd;
pub mod model;
pub mod pipeline;
pub mod preflight;
pub mod reject;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod starrocks;
pub mod starrocks_emulator;
pub mod telemetry;
pub mod util;
pub mod wal;
