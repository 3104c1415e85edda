//! Sinks: where aggregated rows go, StarRocks through Stream Load and its
//! transaction API ([`starrocks`]). The raw copy of every reading is not a
//! sink of aggregated rows and lives in `crate::archive`.

pub mod starrocks;
