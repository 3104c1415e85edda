//! The epoch coordinator (DESIGN.md §3): cuts the stream into epochs and
//! runs each one through seal → decide → commit.
//!
//! 1. **Seal** epoch e: the decoder hands every shard a seal after exactly
//!    the samples it routed before it, and reports the source positions
//!    after the last message it took. Each shard with rows for a table runs
//!    begin → load → prepare under `{prefix}-{table}-{shard}-{e}` (in
//!    at-least-once mode: a plain labelled Stream Load).
//! 2. **Decide**: once every shard has prepared, the source makes "epoch e
//!    committed at positions P_e" durable ([`EpochSource::decide`]; Kafka:
//!    the group's offset commit with the epoch in the offset metadata). An
//!    ambiguous decide (error or timeout) is resolved by reading the
//!    decision back ([`EpochSource::decided`]), never guessed.
//! 3. **Commit** every prepared transaction of e (idempotent on the FE).
//!    A transaction that ends ABORTED after the decision is loaded again
//!    from memory under the same label (an aborted label may be reused),
//!    so the tables still receive exactly the epoch's rows.
//!
//! Only then is epoch e+1 cut, so at any instant at most one epoch is
//! undecided: recovery knows where to look. **Recovery** (at start and on
//! every partition assignment) reads the decisions the source holds: the
//! PREPARED transactions of each decided epoch are committed (for this
//! instance's prefix and for any other prefix found, since a decided
//! epoch's commit is always right); one StarRocks lost (ABORTED, or a
//! re-load left in PREPARE, rolled back) is rebuilt: the source re-reads
//! the epoch's range ([`EpochSource::replay`], from the `from` position the
//! decision records), a [`Rebuilder`] runs it through a decoder and shards
//! of its own from the recorded watermarks, and only the lost labels are
//! prepared and committed (counted lost only when that cannot be done);
//! labels of this prefix above the last
//! decided epoch E are probed upward and rolled back while PREPARE or
//! PREPARED (cancelled if rollback fails); a COMMITTED one means another
//! writer uses this label prefix, and rockfeed refuses to go on.
//!
//! An epoch with no positions and no rows is skipped without using a
//! number. A source only supplies positions (through the messages) and the
//! [`EpochSource`] operations: Kafka its offsets, MQTT its WAL positions.
//!
//! The files:
//! - `crate::model::epoch`: the decision a source stores, its codec, and
//!   what a source does for the protocol ([`EpochSource`]), shared with
//!   the sources;
//! - `messages.rs`: what the coordinator, the decoder and the shards send
//!   each other (cuts, prepared transactions, rebuilds, errors);
//! - `coordinator.rs`: the coordinator's loop (seal, decide, commit,
//!   pacing);
//! - `decide.rs`: a decision made durable, at the source and in the local
//!   notes;
//! - `requests.rs`: the source's revokes and assignments;
//! - `plan.rs`: recovery's decisions, pure (no I/O), unit-tested;
//! - `recover.rs`: recovery carried out against StarRocks and the source.
//!
//! [`EpochSource`]: crate::model::epoch::EpochSource
//! [`EpochSource::decide`]: crate::model::epoch::EpochSource::decide
//! [`EpochSource::decided`]: crate::model::epoch::EpochSource::decided
//! [`EpochSource::replay`]: crate::model::epoch::EpochSource::replay

mod coordinator;
mod decide;
mod messages;
pub mod plan;
mod recover;
mod requests;

pub use coordinator::{Coordinator, CoordinatorConfig};
pub use messages::{Cut, CutReply, EpochError, PreparedTxn, Rebuilder, Rebuilt, ShardDone, ShardError};
