//! The FE's label and transaction registry: a pure state machine, no I/O.
//!
//! States (FE `TransactionStatus`): PREPARE → PREPARED → COMMITTED → VISIBLE,
//! or → ABORTED from PREPARE/PREPARED; UNKNOWN for a label never seen or
//! expired. Rules it enforces, each from `starrocks-stream-load.md`:
//! - labels are unique per database; only the label of an ABORTED
//!   transaction may be reused (§4.1);
//! - a reused label answers `Label Already Exists` with `ExistingJobStatus`
//!   RUNNING (PREPARE/PREPARED) or FINISHED (COMMITTED/VISIBLE) (§3.1);
//! - `max_running_txn_num_per_db` caps PREPARE+PREPARED transactions (§5.3);
//! - a PREPARE transaction aborts after its `timeout`, a PREPARED one after
//!   its prepared timeout (§4.2); a finished transaction's label is
//!   forgotten `label_keep_max_second` after it finished (§4.1);
//! - COMMITTED transactions become VISIBLE in commit order (publish queue),
//!   so versions apply in commit order even when a publish is delayed.
//!
//! Times are milliseconds on a caller-supplied clock, so tests can drive it.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::engine::StagedBatch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TxnState {
    Prepare,
    Prepared,
    Committed,
    Visible,
    Aborted,
}

impl TxnState {
    pub fn name(&self) -> &'static str {
        match self {
            TxnState::Prepare => "PREPARE",
            TxnState::Prepared => "PREPARED",
            TxnState::Committed => "COMMITTED",
            TxnState::Visible => "VISIBLE",
            TxnState::Aborted => "ABORTED",
        }
    }

    /// `ExistingJobStatus` for a label in this state.
    pub fn job_status(&self) -> &'static str {
        match self {
            TxnState::Committed | TxnState::Visible => "FINISHED",
            _ => "RUNNING",
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self, TxnState::Prepare | TxnState::Prepared)
    }
}

/// Row counts and byte counts of a transaction's data.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadCounts {
    pub total: u64,
    pub loaded: u64,
    pub filtered: u64,
    pub unselected: u64,
    pub bytes: u64,
}

impl LoadCounts {
    pub fn add(&mut self, o: &LoadCounts) {
        self.total += o.total;
        self.loaded += o.loaded;
        self.filtered += o.filtered;
        self.unselected += o.unselected;
        self.bytes += o.bytes;
    }
}

#[derive(Debug, Clone)]
pub struct Txn {
    pub id: i64,
    pub db: String,
    pub table: String,
    pub label: String,
    pub state: TxnState,
    /// Index of the coordinator BE that began it.
    pub be: usize,
    pub created_ms: u64,
    /// PREPARE → ABORTED deadline.
    pub timeout_ms: u64,
    /// PREPARED → ABORTED deadline, set at prepare.
    pub prepared_deadline_ms: Option<u64>,
    pub finish_ms: Option<u64>,
    pub reason: String,
    /// Staged rows; applied when the transaction becomes VISIBLE.
    pub data: Vec<StagedBatch>,
    pub counts: LoadCounts,
    /// When a delayed publish makes it VISIBLE.
    pub visible_at_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub label_keep_max_ms: u64,
    pub max_running_txn_num_per_db: usize,
    pub prepared_default_timeout_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            label_keep_max_ms: 259_200_000,
            max_running_txn_num_per_db: 1000,
            prepared_default_timeout_ms: 86_400_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeginError {
    #[error("Label [{label}] has already been used.")]
    LabelExists { label: String, state: TxnState, txn_id: i64 },
    #[error("current running txns on db {db_id} is {running}, larger than limit {limit}")]
    TooManyRunning { db_id: i64, running: usize, limit: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("transaction {0} not exists")]
    NotFound(i64),
    #[error("Can not commit {state} transaction {id}, label is {label}")]
    CannotCommit { id: i64, label: String, state: &'static str },
    #[error("Can not abort {state} transaction {id}, label is {label}")]
    CannotAbort { id: i64, label: String, state: &'static str },
    #[error("transaction {id} is in {state} state, expected {expected}")]
    WrongState { id: i64, state: &'static str, expected: &'static str },
}

/// What `tick` changed, for the caller to log and apply.
#[derive(Debug, Default, PartialEq)]
pub struct TickOutcome {
    pub aborted: Vec<i64>,
    pub published: Vec<i64>,
    pub expired: Vec<i64>,
}

#[derive(Debug, Default)]
pub struct Registry {
    pub cfg: RegistryConfig,
    txns: BTreeMap<i64, Txn>,
    labels: HashMap<(String, String), i64>,
    publish_queue: VecDeque<i64>,
    next_id: i64,
    db_ids: HashMap<String, i64>,
}

impl Registry {
    pub fn new(cfg: RegistryConfig) -> Self {
        Registry { cfg, next_id: 1000, ..Default::default() }
    }

    /// Stable numeric id of a database, as the FE's messages print it.
    pub fn db_id(&mut self, db: &str) -> i64 {
        let n = self.db_ids.len() as i64;
        *self.db_ids.entry(db.to_string()).or_insert(10_001 + n)
    }

    pub fn get(&self, id: i64) -> Option<&Txn> {
        self.txns.get(&id)
    }

    pub fn get_mut(&mut self, id: i64) -> Option<&mut Txn> {
        self.txns.get_mut(&id)
    }

    /// The transaction currently holding `label` in `db`.
    pub fn by_label(&self, db: &str, label: &str) -> Option<&Txn> {
        self.labels.get(&(db.to_string(), label.to_string())).and_then(|id| self.txns.get(id))
    }

    pub fn running_in(&self, db: &str) -> usize {
        self.txns.values().filter(|t| t.db == db && t.state.is_running()).count()
    }

    pub fn all(&self) -> impl Iterator<Item = &Txn> {
        self.txns.values()
    }

    /// Begins a transaction (state PREPARE).
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        &mut self,
        db: &str,
        table: &str,
        label: &str,
        timeout_ms: u64,
        be: usize,
        now: u64,
    ) -> Result<i64, BeginError> {
        if let Some(t) = self.by_label(db, label)
            && t.state != TxnState::Aborted
        {
            return Err(BeginError::LabelExists { label: label.to_string(), state: t.state, txn_id: t.id });
        }
        let running = self.running_in(db);
        if running >= self.cfg.max_running_txn_num_per_db {
            let db_id = self.db_id(db);
            return Err(BeginError::TooManyRunning { db_id, running, limit: self.cfg.max_running_txn_num_per_db });
        }
        self.next_id += 1;
        let id = self.next_id;
        self.insert(Txn {
            id,
            db: db.to_string(),
            table: table.to_string(),
            label: label.to_string(),
            state: TxnState::Prepare,
            be,
            created_ms: now,
            timeout_ms: now + timeout_ms,
            prepared_deadline_ms: None,
            finish_ms: None,
            reason: String::new(),
            data: Vec::new(),
            counts: LoadCounts::default(),
            visible_at_ms: None,
        });
        Ok(id)
    }

    /// Re-inserts a transaction (state replay).
    pub fn insert(&mut self, t: Txn) {
        self.next_id = self.next_id.max(t.id);
        self.labels.insert((t.db.clone(), t.label.clone()), t.id);
        self.txns.insert(t.id, t);
    }

    /// PREPARE → PREPARED (2PC pre-commit); data must already be staged.
    pub fn prepare(&mut self, id: i64, prepared_timeout_ms: Option<u64>, now: u64) -> Result<(), TxnError> {
        let default = self.cfg.prepared_default_timeout_ms;
        let t = self.txns.get_mut(&id).ok_or(TxnError::NotFound(id))?;
        if t.state != TxnState::Prepare {
            return Err(TxnError::WrongState { id, state: t.state.name(), expected: "PREPARE" });
        }
        t.state = TxnState::Prepared;
        t.prepared_deadline_ms = Some(now + prepared_timeout_ms.unwrap_or(default));
        Ok(())
    }

    /// PREPARE/PREPARED → COMMITTED; VISIBLE at `visible_at` (publish) or at
    /// once. Returns `Ok(false)` when it was already COMMITTED/VISIBLE.
    pub fn commit(&mut self, id: i64, visible_at: Option<u64>, now: u64) -> Result<bool, TxnError> {
        let t = self.txns.get_mut(&id).ok_or(TxnError::NotFound(id))?;
        match t.state {
            TxnState::Committed | TxnState::Visible => Ok(false),
            TxnState::Aborted => Err(TxnError::CannotCommit { id, label: t.label.clone(), state: "ABORTED" }),
            TxnState::Prepare | TxnState::Prepared => {
                t.state = TxnState::Committed;
                t.visible_at_ms = Some(visible_at.unwrap_or(now));
                self.publish_queue.push_back(id);
                Ok(true)
            }
        }
    }

    /// → ABORTED. Returns `Ok(false)` when it was already ABORTED.
    pub fn abort(&mut self, id: i64, reason: &str, now: u64) -> Result<bool, TxnError> {
        let t = self.txns.get_mut(&id).ok_or(TxnError::NotFound(id))?;
        match t.state {
            TxnState::Aborted => Ok(false),
            TxnState::Committed | TxnState::Visible => {
                Err(TxnError::CannotAbort { id, label: t.label.clone(), state: t.state.name() })
            }
            TxnState::Prepare | TxnState::Prepared => {
                t.state = TxnState::Aborted;
                t.reason = reason.to_string();
                t.finish_ms = Some(now);
                t.data.clear();
                Ok(true)
            }
        }
    }

    /// Publishes due COMMITTED transactions in commit order (returned in the
    /// order to apply), aborts timed-out ones and forgets expired labels.
    pub fn tick(&mut self, now: u64) -> TickOutcome {
        let mut out = TickOutcome::default();
        while let Some(&id) = self.publish_queue.front() {
            let Some(t) = self.txns.get_mut(&id) else {
                self.publish_queue.pop_front();
                continue;
            };
            if t.visible_at_ms.is_some_and(|v| v > now) {
                break;
            }
            self.publish_queue.pop_front();
            t.state = TxnState::Visible;
            t.finish_ms = Some(now);
            out.published.push(id);
        }
        for t in self.txns.values_mut() {
            let timed_out = match t.state {
                TxnState::Prepare => now > t.timeout_ms,
                TxnState::Prepared => t.prepared_deadline_ms.is_some_and(|d| now > d),
                _ => false,
            };
            if timed_out {
                t.state = TxnState::Aborted;
                t.reason = if t.prepared_deadline_ms.is_some() {
                    "prepared transaction timeout".to_string()
                } else {
                    format!("timeout by txn manager, txn {} timeout {}s", t.id, (t.timeout_ms - t.created_ms) / 1000)
                };
                t.finish_ms = Some(now);
                t.data.clear();
                out.aborted.push(t.id);
            }
        }
        let keep = self.cfg.label_keep_max_ms;
        let expired: Vec<i64> = self
            .txns
            .values()
            .filter(|t| matches!(t.state, TxnState::Visible | TxnState::Aborted))
            .filter(|t| t.finish_ms.is_some_and(|f| now.saturating_sub(f) > keep))
            .map(|t| t.id)
            .collect();
        for id in expired {
            if let Some(t) = self.txns.remove(&id) {
                let key = (t.db, t.label);
                if self.labels.get(&key) == Some(&id) {
                    self.labels.remove(&key);
                }
                out.expired.push(id);
            }
        }
        out
    }

    /// Counts of labels by state, for the stats endpoint.
    pub fn state_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for id in self.labels.values() {
            if let Some(t) = self.txns.get(id) {
                *m.entry(t.state.name()).or_insert(0) += 1;
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registry {
        Registry::new(RegistryConfig {
            label_keep_max_ms: 10_000,
            max_running_txn_num_per_db: 2,
            prepared_default_timeout_ms: 5_000,
        })
    }

    #[test]
    fn begin_prepare_commit_publishes_visible() {
        let mut r = reg();
        let id = r.begin("db", "t", "l1", 600_000, 0, 0).unwrap();
        assert_eq!(r.by_label("db", "l1").unwrap().state, TxnState::Prepare);
        r.prepare(id, None, 1).unwrap();
        assert_eq!(r.get(id).unwrap().state, TxnState::Prepared);
        assert_eq!(r.commit(id, None, 2), Ok(true));
        assert_eq!(r.get(id).unwrap().state, TxnState::Committed);
        assert_eq!(r.tick(2).published, vec![id]);
        assert_eq!(r.get(id).unwrap().state, TxnState::Visible);
        assert_eq!(r.commit(id, None, 3), Ok(false), "re-commit is idempotent");
    }

    #[test]
    fn used_label_reports_running_or_finished() {
        let mut r = reg();
        let id = r.begin("db", "t", "l", 600_000, 0, 0).unwrap();
        let e = r.begin("db", "t", "l", 600_000, 0, 0).unwrap_err();
        assert_eq!(e, BeginError::LabelExists { label: "l".into(), state: TxnState::Prepare, txn_id: id });
        assert_eq!(TxnState::Prepare.job_status(), "RUNNING");
        r.commit(id, None, 1).unwrap();
        r.tick(1);
        let BeginError::LabelExists { state, .. } = r.begin("db", "t", "l", 1, 0, 2).unwrap_err() else { panic!() };
        assert_eq!(state.job_status(), "FINISHED");
        assert!(r.begin("other_db", "t", "l", 1, 0, 2).is_ok(), "labels are per database");
    }

    #[test]
    fn aborted_labels_can_be_reused() {
        let mut r = reg();
        let id = r.begin("db", "t", "l", 600_000, 0, 0).unwrap();
        assert_eq!(r.abort(id, "user", 1), Ok(true));
        assert_eq!(r.abort(id, "user", 1), Ok(false));
        let id2 = r.begin("db", "t", "l", 600_000, 0, 2).unwrap();
        assert_ne!(id, id2);
        assert_eq!(r.by_label("db", "l").unwrap().id, id2);
    }

    #[test]
    fn committed_cannot_abort_and_aborted_cannot_commit() {
        let mut r = reg();
        let a = r.begin("db", "t", "a", 600_000, 0, 0).unwrap();
        r.commit(a, None, 0).unwrap();
        assert!(matches!(r.abort(a, "x", 0), Err(TxnError::CannotAbort { state: "COMMITTED", .. })));
        r.tick(0);
        assert!(matches!(r.abort(a, "x", 0), Err(TxnError::CannotAbort { state: "VISIBLE", .. })));
        let b = r.begin("db", "t", "b", 600_000, 0, 0).unwrap();
        r.abort(b, "x", 0).unwrap();
        assert!(matches!(r.commit(b, None, 0), Err(TxnError::CannotCommit { state: "ABORTED", .. })));
    }

    #[test]
    fn running_transactions_are_capped_per_db() {
        let mut r = reg();
        r.begin("db", "t", "a", 600_000, 0, 0).unwrap();
        r.begin("db", "t", "b", 600_000, 0, 0).unwrap();
        let e = r.begin("db", "t", "c", 600_000, 0, 0).unwrap_err();
        assert!(e.to_string().starts_with("current running txns on db"));
        assert!(e.to_string().ends_with("is 2, larger than limit 2"), "{e}");
    }

    #[test]
    fn timeouts_abort_prepare_and_prepared() {
        let mut r = reg();
        let a = r.begin("db", "t", "a", 1_000, 0, 0).unwrap();
        let b = r.begin("db", "t", "b", 1_000, 0, 0).unwrap();
        r.prepare(b, Some(3_000), 500).unwrap();
        let out = r.tick(1_001);
        assert_eq!(out.aborted, vec![a]);
        assert_eq!(r.get(b).unwrap().state, TxnState::Prepared, "prepared outlives the load timeout");
        assert_eq!(r.tick(3_501).aborted, vec![b]);
    }

    #[test]
    fn labels_expire_after_keep_time_and_become_reusable() {
        let mut r = reg();
        let a = r.begin("db", "t", "a", 1_000, 0, 0).unwrap();
        r.commit(a, None, 0).unwrap();
        r.tick(0);
        assert!(r.tick(10_000).expired.is_empty());
        assert_eq!(r.tick(10_001).expired, vec![a]);
        assert!(r.by_label("db", "a").is_none());
        assert!(r.begin("db", "t", "a", 1_000, 0, 10_002).is_ok());
    }

    #[test]
    fn delayed_publish_holds_later_commits_in_order() {
        let mut r = reg();
        let a = r.begin("db", "t", "a", 60_000, 0, 0).unwrap();
        let b = r.begin("db", "t", "b", 60_000, 0, 0).unwrap();
        r.commit(a, Some(100), 0).unwrap();
        r.commit(b, None, 1).unwrap();
        assert!(r.tick(50).published.is_empty());
        assert_eq!(r.get(b).unwrap().state, TxnState::Committed);
        assert_eq!(r.tick(100).published, vec![a, b]);
    }
}
