//! Sinks: where aggregated rows go. Today: StarRocks through Stream Load.

pub mod starrocks;
