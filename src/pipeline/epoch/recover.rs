//! Recovery carried out (the module doc of `epoch` and the README's
//! "Recovery"): it reads the source's decisions and the local notes, asks
//! StarRocks for the state of each label that matters, and does what
//! [`plan`](super::plan) decides: commit, roll back, rebuild from the
//! source's range, or refuse to go on.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::coordinator::{commit_decided, fatal_txn};
use super::plan::{self, Action, Found};
use super::{Coordinator, EpochError, Rebuilt};
use crate::model::epoch::{Decision, EpochSource, Replay};
use crate::sink::starrocks::label::label;
use crate::sink::starrocks::txn::{Committed, TxnLoader};
use crate::telemetry::Stats;

impl<S: EpochSource> Coordinator<S> {
    /// Recovery (module doc). At-least-once only finds the first epoch
    /// number no label of this prefix has used: its loads commit at once,
    /// so a used label holds data, and a replay must not reuse it.
    pub async fn recover(&mut self) -> Result<(), EpochError> {
        let decisions = loop {
            match self.source.decisions().await {
                Ok(d) => break d,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot read the source's decisions; retrying.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let txn = TxnLoader::new(&self.loader, self.cfg.timeouts);
        let own =
            plan::Own { prefix: self.cfg.prefix.clone(), shards: self.cfg.shards, tables: self.cfg.tables.clone() };
        let noted = self.noted(&self.note_path("decided"))?;
        let intent = self.noted(&self.note_path("intent"))?;
        let known = plan::known(&decisions, &own, noted, intent);
        if let Some(intent) = known.promoted {
            tracing::warn!(prefix = %own.prefix, epoch = intent, "Epoch {intent} was decided but not noted before a crash; another instance took its partitions over after the decision, so it is recovered as decided.");
            self.note(&self.note_path("decided"), intent);
        }
        if known.from_note {
            tracing::info!(prefix = %own.prefix, noted = ?known.noted, "The group's offsets hold an older decision of this prefix; recovering from the local note.");
        }
        // At-least-once has no prepared transactions to finish.
        if self.exactly_once() {
            for d in known.latest.values() {
                self.finish_decided(&txn, d, &own).await?;
            }
        }
        let scope = plan::probe_scope(&known, &own);
        let decided = scope.epoch;
        let mut e = decided + 1;
        let mut last_used = None;
        loop {
            let found = found(&txn, &Decision { epoch: e, ..scope.clone() }).await;
            let probe = plan::undecided(e, decided, &own.prefix, &found, self.exactly_once());
            for a in probe.actions {
                match a {
                    Action::RollBack { table, label, state } => {
                        let fin = txn.abort(&table, &label).await;
                        self.stats.txns_rolled_back.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%label, %state, now = ?fin, "Recovery rolled back a transaction of an undecided epoch.");
                    }
                    Action::Refuse(why) => return Err(EpochError::Fatal(why)),
                    Action::Commit { .. } | Action::Rebuild { .. } => {}
                }
            }
            if probe.used {
                last_used = Some(e);
            }
            if !plan::probe_further(e, decided, probe.used) {
                break;
            }
            e += 1;
        }
        self.next_epoch = plan::next_epoch(self.next_epoch, decided, last_used, self.exactly_once());
        if !self.exactly_once() {
            tracing::info!(prefix = %own.prefix, decided, next = self.next_epoch, "Epoch recovery done (at-least-once: epoch numbers past the used labels).");
            return Ok(());
        }
        if let Some(a) = &self.archive {
            // The archive keeps every frame the note calls decided, even
            // when the group's offsets no longer say so.
            let keep = decided.max(known.noted.unwrap_or(0));
            a.recover(Some(keep)).await.map_err(EpochError::Fatal)?;
        }
        tracing::info!(prefix = %own.prefix, decided, next = self.next_epoch, "Epoch recovery done.");
        Ok(())
    }

    /// Finishes decided epoch `d`: commits what StarRocks holds prepared,
    /// rolls back an interrupted re-load, and rebuilds what it lost from the
    /// source (counted lost, with an ERROR line, only when that cannot be done).
    async fn finish_decided(&self, txn: &TxnLoader<'_>, d: &Decision, own: &plan::Own) -> Result<(), EpochError> {
        // (table, label, why) of the transactions StarRocks no longer holds prepared.
        let mut gone = Vec::new();
        for a in plan::decided(&found(txn, d).await) {
            match a {
                Action::Commit { table, label } => match txn.commit(&table, &label).await.map_err(|e| fatal_txn(&e))? {
                    Committed::Yes => {
                        self.stats.txns_recovered.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%label, epoch = d.epoch, "Recovery committed a prepared transaction of a decided epoch.");
                    }
                    Committed::Aborted { reason } => gone.push((table, label, reason)),
                },
                Action::RollBack { table, label, .. } => {
                    let fin = txn.abort(&table, &label).await;
                    self.stats.txns_rolled_back.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%label, now = ?fin, "Recovery rolled back an interrupted re-load of a decided epoch.");
                }
                Action::Rebuild { table, label, why } => gone.push((table, label, why)),
                Action::Refuse(why) => return Err(EpochError::Fatal(why)),
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        let rebuilt = match plan::rebuildable(d, own) {
            Ok(()) => self.rebuild_lost(d, &gone).await?,
            Err(why) => Err(why),
        };
        match rebuilt {
            Ok(missing) => {
                for (_, l, reason) in gone.iter().filter(|g| missing.contains(&g.1)) {
                    lost(l, &format!("{reason}; its rebuild from the source produced no rows to load"), &self.stats);
                }
            }
            Err(why) => {
                for (_, l, reason) in &gone {
                    lost(l, &format!("{reason}; not rebuilt: {why}"), &self.stats);
                }
            }
        }
        Ok(())
    }

    /// Rebuilds the transactions of decided epoch `d` that StarRocks lost
    /// (`gone`: table, label, why) from the source's range, under the same
    /// labels, and commits them. `Err`: why it could not (the rows are
    /// lost); `Ok`: the labels the rebuild had no rows for.
    async fn rebuild_lost(
        &self,
        d: &Decision,
        gone: &[(String, String, String)],
    ) -> Result<Result<Vec<String>, String>, EpochError> {
        let Some(rebuild) = &self.rebuild else { return Ok(Err("no pipeline to rebuild it with".into())) };
        let Replay { messages, done } = match self.source.replay(d) {
            Ok(r) => r,
            Err(why) => return Ok(Err(format!("the source cannot re-read the epoch's range: {why}"))),
        };
        let labels: Vec<String> = gone.iter().map(|g| g.1.clone()).collect();
        tracing::warn!(
            epoch = d.epoch,
            ?labels,
            "StarRocks lost transactions of a decided epoch; rebuilding their rows from the source's range."
        );
        let built = rebuild(d.clone(), labels.clone(), messages).await;
        let read = done.await.map_err(|e| e.to_string()).and_then(|r| r);
        let txn = TxnLoader::new(&self.loader, self.cfg.timeouts);
        let Rebuilt { txns, readings } = match (built, read) {
            (Ok(t), Ok(n)) => {
                tracing::info!(epoch = d.epoch, messages = n, "Re-read the decided epoch's range.");
                t
            }
            (built, read) => {
                // Never load part of a range: roll back what was prepared.
                for t in built.as_ref().map(|b| &b.txns[..]).unwrap_or_default() {
                    txn.abort(&t.table, &t.label).await;
                    self.stats.txns_rolled_back.fetch_add(1, Ordering::Relaxed);
                }
                let why = [built.err(), read.err()].into_iter().flatten().collect::<Vec<_>>().join("; ");
                return Ok(Err(format!("the rebuild failed: {why}")));
            }
        };
        for t in &txns {
            commit_decided(&txn, &self.stats, t).await?;
            self.stats.txns_rebuilt.fetch_add(1, Ordering::Relaxed);
            tracing::info!(label = %t.label, rows = t.rows, epoch = d.epoch, "Recovery rebuilt a lost transaction of a decided epoch and committed it.");
        }
        self.stats.readings_committed.fetch_add(readings, Ordering::Relaxed);
        Ok(Ok(labels.into_iter().filter(|l| !txns.iter().any(|t| &t.label == l)).collect()))
    }
}

/// `get_load_state`, retried until StarRocks answers: recovery cannot
/// decide without it. The loader's health says why it waits (`/ready`).
async fn state_patiently(txn: &TxnLoader<'_>, label: &str) -> crate::sink::starrocks::response::LabelState {
    let mut n = 0;
    loop {
        match txn.state(label).await {
            Ok(s) => return s,
            Err(e) => {
                n += 1;
                tracing::debug!(label, error = %e, "get_load_state failed during recovery; retrying.");
                tokio::time::sleep(Duration::from_secs((1u64 << n.min(5)).min(30))).await;
            }
        }
    }
}

/// Every label of `d`'s epoch, with its table: one per table and shard.
fn labels(d: &Decision) -> impl Iterator<Item = (String, String)> + '_ {
    d.tables.iter().flat_map(move |t| {
        (0..d.shards).filter_map(move |k| label(&d.prefix, t, k, d.epoch).ok().map(|l| (t.clone(), l)))
    })
}

/// StarRocks' state of every label of `d`, asked patiently.
async fn found(txn: &TxnLoader<'_>, d: &Decision) -> Vec<Found> {
    let mut out = Vec::new();
    for (table, label) in labels(d) {
        let st = state_patiently(txn, &label).await;
        out.push(Found { table, label, state: st.state, reason: st.reason });
    }
    out
}

fn lost(label: &str, reason: &str, stats: &Stats) {
    stats.txns_lost.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        label,
        reason,
        "A transaction of a decided epoch did not commit in StarRocks: its rows are lost (rockfeed_txns_lost_total; a prepared timeout shorter than the outage?)."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_names_one_label_per_table_and_shard() {
        let d = Decision {
            prefix: "edge_7".into(),
            epoch: 42,
            shards: 4,
            tables: vec!["t1".into(), "latest".into()],
            ..Default::default()
        };
        let labels: Vec<_> = labels(&d).map(|(_, l)| l).collect();
        assert_eq!(labels.len(), 8);
        assert!(labels.contains(&"edge_7-latest-3-42".to_string()));
    }
}
