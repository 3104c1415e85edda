//! The StarRocks sink: Stream Load over HTTP, exactly as
//! `../shared/starrocks-stream-load.md` describes the protocol.
//!
//! File roles (after Vector's Doris sink): `client.rs` speaks HTTP (redirects
//! by hand with auth re-applied, `Expect: 100-continue`, failover, TLS);
//! `response.rs` parses replies leniently; `retry.rs` turns a reply into
//! done / in flight / retry / permanent; `label.rs` builds deterministic
//! labels; `service.rs` loads one labelled batch exactly once through label
//! semantics; `txn.rs` drives one transaction of the 2PC interface
//! (begin → load… → prepare, commit, rollback) with the same retry rules.

pub mod client;
pub mod encode;
pub mod label;
pub mod response;
pub mod retry;
pub mod service;
pub mod txn;
