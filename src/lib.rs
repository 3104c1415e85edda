//! rockfeed: an edge telemetry appliance for StarRocks.
//!
//! See `README.md` and `../shared/DESIGN.md` for the architecture. This crate
//! currently holds the StarRocks model shared by every part ([`starrocks`])
//! and the protocol-exact StarRocks emulator ([`starrocks_emulator`]) that
//! every sink test, the demo and the benchmarks run against.

pub mod app;
pub mod archive;
pub mod config;
pub mod deadletter;
pub mod decode;
pub mod demo;
pub mod enrich;
pub mod halt;
pub mod pipeline;
pub mod preflight;
pub mod reject;
pub mod sink;
pub mod source;
pub mod starrocks;
pub mod starrocks_emulator;
pub mod telemetry;
pub mod util;
pub mod wal;
