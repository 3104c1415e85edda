//! The StarRocks sink: Stream Load over HTTP, exactly as
//! `../shared/starrocks-stream-load.md` describes the protocol.
//!
//! File roles (after Vector's Doris sink): `client/` speaks HTTP (redirects
//! by hand with auth re-applied, `Expect: 100-continue`, failover, TLS;
//! `endpoint.rs`: credentials and endpoints); `response.rs` parses replies
//! leniently; `retry.rs` turns a reply into done / in flight / retry /
//! permanent, and says whether a failure is the data's or the
//! destination's; `label.rs` builds deterministic labels; `encode.rs`
//! builds the CSV bodies and their headers; `service.rs` loads one labelled
//! batch exactly once through label semantics; `txn/` drives one
//! transaction of the 2PC interface (begin → load… → prepare, commit,
//! rollback) with the same retry rules. The destination's health, which
//! the loads report to, is `telemetry::health`.

pub mod client;
pub mod encode;
pub mod label;
pub mod response;
pub mod retry;
pub mod service;
pub mod txn;
