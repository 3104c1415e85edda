//! Recovery's decisions without I/O (the README's "Recovery"): given what
//! the source and the local notes hold and what StarRocks says of each
//! label, what to commit, rebuild, roll back or refuse. The coordinator
//! (`recover.rs`) asks the questions and carries the answers out; every
//! case here has a unit test that needs no network.

use std::collections::BTreeMap;

use crate::model::epoch::Decision;

/// The instance recovering: its label prefix and what it writes now.
#[derive(Debug, Clone)]
pub struct Own {
    pub prefix: String,
    pub shards: u32,
    pub tables: Vec<String>,
}

/// The last decided epoch of every prefix, as far as recovery can know it.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    /// Per prefix, its latest decision.
    pub latest: BTreeMap<String, Decision>,
    /// The local note of this instance's last decided epoch, after recovery
    /// looked at it (it may have promoted the intent).
    pub noted: Option<u64>,
    /// The intent noted before a crash proved decided: the caller writes it
    /// as the note.
    pub promoted: Option<u64>,
    /// This prefix's latest decision comes from the note, not the source.
    pub from_note: bool,
}

/// The last decided epochs: the latest decision of each prefix among the
/// source's (`decisions`), corrected by this instance's own notes.
///
/// - The note (`noted`) counts only when the source holds other decisions
///   (a deleted or reset group is refused later, since consumption would
///   restart from the reset position) and is later than the source's
///   decision of this prefix (another instance has since committed over its
///   partitions).
/// - A crash between a decision and its note leaves the intent. It counts
///   as decided only when some partition's decision records it as the
///   `base` another instance found there at assignment: then it landed.
pub fn known(decisions: &[Decision], own: &Own, noted: Option<u64>, intent: Option<u64>) -> Known {
    let mut latest: BTreeMap<String, Decision> = BTreeMap::new();
    for d in decisions {
        if latest.get(&d.prefix).is_none_or(|x| x.epoch < d.epoch) {
            latest.insert(d.prefix.clone(), d.clone());
        }
    }
    let mut noted = noted;
    let mut promoted = None;
    let mut from_note = false;
    if let Some(intent) = intent
        && intent > noted.unwrap_or(0)
        && latest.get(&own.prefix).is_none_or(|x| x.epoch < intent)
        && decisions.iter().any(|d| d.base.as_ref().is_some_and(|(p, e)| *p == own.prefix && *e >= intent))
    {
        noted = Some(intent);
        promoted = Some(intent);
    }
    if !latest.is_empty()
        && let Some(n) = noted
        && latest.get(&own.prefix).is_none_or(|x| x.epoch < n)
    {
        let d = Decision {
            prefix: own.prefix.clone(),
            epoch: n,
            shards: own.shards,
            tables: own.tables.clone(),
            ..Default::default()
        };
        latest.insert(d.prefix.clone(), d);
        from_note = true;
    }
    Known { latest, noted, promoted, from_note }
}

/// What StarRocks said of one label (`get_load_state`).
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub table: String,
    pub label: String,
    pub state: String,
    pub reason: String,
}

/// One step of recovery, in the order to carry it out.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A decided epoch's transaction still PREPARED: commit it (should the
    /// commit find it aborted after all, it is rebuilt).
    Commit { table: String, label: String },
    /// Roll back an open transaction (cancel if the rollback fails).
    RollBack { table: String, label: String, state: String },
    /// A decided epoch's rows StarRocks no longer holds: rebuild them from
    /// the source's range and load them under the label (`why`: how they
    /// were lost, for the ERROR line should the rebuild be impossible).
    Rebuild { table: String, label: String, why: String },
    /// Stop: a label above the last decided epoch holds committed data.
    Refuse(String),
}

/// The steps for one decided epoch's labels:
/// - PREPARED: commit;
/// - ABORTED (StarRocks' prepared timeout ran out, or an operator rolled it
///   back): rebuild;
/// - PREPARE (a re-load after StarRocks aborted the prepared transaction,
///   cut short by a crash): roll back, since it holds a running-transaction
///   slot, then rebuild;
/// - anything else (VISIBLE, COMMITTED, UNKNOWN for a shard without rows):
///   nothing.
pub fn decided(found: &[Found]) -> Vec<Action> {
    let mut out = Vec::new();
    for f in found {
        let (table, label) = (f.table.clone(), f.label.clone());
        match f.state.as_str() {
            "PREPARED" => out.push(Action::Commit { table, label }),
            "ABORTED" => out.push(Action::Rebuild { table, label, why: f.reason.clone() }),
            "PREPARE" => {
                out.push(Action::RollBack { table: table.clone(), label: label.clone(), state: f.state.clone() });
                out.push(Action::Rebuild {
                    table,
                    label,
                    why: "a re-load of the decided epoch's rows was interrupted before it was prepared".into(),
                });
            }
            _ => {}
        }
    }
    out
}

/// Whether a decided epoch's lost rows can be rebuilt here: only this
/// instance's own epoch, since another prefix's range belongs to another
/// instance's source. `Err`: why not.
pub fn rebuildable(d: &Decision, own: &Own) -> Result<(), String> {
    if d.prefix == own.prefix {
        Ok(())
    } else {
        Err("the epoch belongs to another instance (prefix), whose source this one cannot re-read".into())
    }
}

/// The epochs above the last decided one that are probed: this prefix, at
/// least the shards and tables it writes now, and those of its last
/// decision (a restart with fewer shards or tables still finds the old
/// labels).
pub fn probe_scope(known: &Known, own: &Own) -> Decision {
    let ours = known.latest.get(&own.prefix);
    let mut tables = own.tables.clone();
    for t in ours.map(|d| d.tables.clone()).unwrap_or_default() {
        if !tables.contains(&t) {
            tables.push(t);
        }
    }
    Decision {
        prefix: own.prefix.clone(),
        epoch: ours.map(|d| d.epoch).unwrap_or(0),
        shards: ours.map(|d| d.shards).unwrap_or(0).max(own.shards),
        tables,
        ..Default::default()
    }
}

/// What one epoch above the last decided one holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Probe {
    /// Some label of the epoch is known to StarRocks.
    pub used: bool,
    pub actions: Vec<Action>,
}

/// The steps for the labels of `epoch`, above `decided` (the last decided
/// epoch of `prefix`).
/// - Exactly-once: PREPARE or PREPARED are rolled back (the epoch was never
///   decided); COMMITTED or VISIBLE mean another writer uses the prefix, or
///   the source's decisions were reset: refuse, after the roll-backs before
///   it; ABORTED marks the epoch used.
/// - At-least-once: loads commit at once, so any state but UNKNOWN marks
///   the epoch used (its labels hold data, and must not be reused).
pub fn undecided(epoch: u64, decided: u64, prefix: &str, found: &[Found], exactly_once: bool) -> Probe {
    let mut p = Probe::default();
    for f in found {
        if !exactly_once {
            p.used |= f.state != "UNKNOWN";
            continue;
        }
        match f.state.as_str() {
            "PREPARE" | "PREPARED" => {
                p.used = true;
                p.actions.push(Action::RollBack {
                    table: f.table.clone(),
                    label: f.label.clone(),
                    state: f.state.clone(),
                });
            }
            "COMMITTED" | "VISIBLE" => {
                p.actions.push(Action::Refuse(format!(
                    "label {} (epoch {epoch}) is {} in StarRocks, but the last epoch decided for prefix '{prefix}' is {decided}: \
                     another rockfeed instance uses this label prefix, or the consumer group's offsets were reset. \
                     Give each instance its own starrocks.label_prefix.",
                    f.label, f.state
                )));
                return p;
            }
            "ABORTED" => p.used = true,
            _ => {}
        }
    }
    p
}

/// Whether to probe the epoch after `epoch`: only `decided + 1` can hold
/// transactions (the next epoch is cut after the previous commit), so the
/// probe goes on past it while epochs are used, and checks one more.
pub fn probe_further(epoch: u64, decided: u64, used: bool) -> bool {
    used || epoch <= decided + 1
}

/// The first epoch number to use after recovery. Exactly-once: the one after
/// the last decided. At-least-once: the one after the last epoch whose labels
/// are used (its loads committed without a decision), so a replay never
/// reuses a label of different data.
pub fn next_epoch(current: u64, decided: u64, last_used: Option<u64>, exactly_once: bool) -> u64 {
    if exactly_once { current.max(decided + 1) } else { current.max(last_used.map_or(decided + 1, |u| u + 1)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Own {
        Own { prefix: "a".into(), shards: 2, tables: vec!["t".into()] }
    }

    fn dec(prefix: &str, epoch: u64) -> Decision {
        Decision { prefix: prefix.into(), epoch, shards: 2, tables: vec!["t".into()], ..Default::default() }
    }

    fn found(label: &str, state: &str) -> Found {
        Found { table: "t".into(), label: label.into(), state: state.into(), reason: format!("{state} reason") }
    }

    #[test]
    fn the_latest_decision_of_each_prefix_is_the_one_recovered() {
        let k = known(&[dec("a", 3), dec("b", 7), dec("a", 5), dec("b", 2)], &own(), None, None);
        assert_eq!(k.latest.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!((k.latest["a"].epoch, k.latest["b"].epoch), (5, 7));
        assert_eq!((k.noted, k.promoted), (None, None));
    }

    #[test]
    fn a_later_local_note_wins_when_another_instance_committed_over_the_partitions() {
        let k = known(&[dec("a", 3), dec("b", 9)], &own(), Some(6), None);
        assert_eq!((k.latest["a"].epoch, k.from_note), (6, true));
        assert_eq!((k.latest["a"].shards, &k.latest["a"].tables), (2, &vec!["t".to_string()]));
        // An older note changes nothing.
        let k = known(&[dec("a", 3), dec("b", 9)], &own(), Some(2), None);
        assert_eq!((k.latest["a"].epoch, k.from_note), (3, false));
    }

    #[test]
    fn a_note_does_not_count_when_the_source_holds_no_decision_at_all() {
        // A deleted or reset group: refused later, not papered over by the note.
        let k = known(&[], &own(), Some(6), None);
        assert!(k.latest.is_empty());
    }

    #[test]
    fn an_intent_counts_as_decided_only_when_a_later_owner_found_it_on_a_partition() {
        let mut seen = dec("b", 9);
        seen.base = Some(("a".into(), 7));
        let k = known(&[dec("a", 5), seen.clone()], &own(), Some(6), Some(7));
        assert_eq!((k.noted, k.promoted, k.latest["a"].epoch), (Some(7), Some(7), 7));
        // Without that proof the intent never landed: epoch 7 stays undecided.
        let k = known(&[dec("a", 5), dec("b", 9)], &own(), Some(6), Some(7));
        assert_eq!((k.noted, k.promoted, k.latest["a"].epoch), (Some(6), None, 6));
        // An intent the source already shows decided needs no promotion.
        let k = known(&[dec("a", 7), seen], &own(), Some(6), Some(7));
        assert_eq!((k.promoted, k.latest["a"].epoch), (None, 7));
    }

    #[test]
    fn a_decided_epochs_prepared_transactions_are_committed() {
        assert_eq!(
            decided(&[found("a-t-0-5", "PREPARED"), found("a-t-1-5", "VISIBLE"), found("a-t-2-5", "UNKNOWN")]),
            [Action::Commit { table: "t".into(), label: "a-t-0-5".into() }]
        );
    }

    #[test]
    fn a_decided_transaction_starrocks_aborted_is_rebuilt_with_its_reason() {
        assert_eq!(
            decided(&[found("a-t-0-5", "ABORTED")]),
            [Action::Rebuild { table: "t".into(), label: "a-t-0-5".into(), why: "ABORTED reason".into() }]
        );
    }

    #[test]
    fn an_interrupted_reload_of_a_decided_epoch_is_rolled_back_then_rebuilt() {
        let a = decided(&[found("a-t-0-5", "PREPARE")]);
        assert!(matches!(&a[0], Action::RollBack { label, state, .. } if label == "a-t-0-5" && state == "PREPARE"));
        assert!(
            matches!(&a[1], Action::Rebuild { label, why, .. } if label == "a-t-0-5" && why.contains("interrupted"))
        );
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn only_this_instances_own_epoch_is_rebuilt() {
        assert!(rebuildable(&dec("a", 5), &own()).is_ok());
        assert!(rebuildable(&dec("b", 5), &own()).unwrap_err().contains("another instance"));
    }

    #[test]
    fn the_probe_covers_the_old_shards_and_tables_as_well_as_the_new() {
        let mut old = dec("a", 5);
        old.shards = 4;
        old.tables = vec!["t".into(), "latest".into()];
        let k = known(&[old], &own(), None, None);
        let p = probe_scope(&k, &own());
        assert_eq!((p.epoch, p.shards, p.tables), (5, 4, vec!["t".to_string(), "latest".to_string()]));
        // Nothing decided yet: from epoch 0, with what the instance writes now.
        let p = probe_scope(&known(&[], &own(), None, None), &own());
        assert_eq!((p.epoch, p.shards), (0, 2));
    }

    #[test]
    fn open_transactions_above_the_decided_epoch_are_rolled_back() {
        let p = undecided(6, 5, "a", &[found("a-t-0-6", "PREPARED"), found("a-t-1-6", "PREPARE")], true);
        assert!(p.used);
        assert_eq!(p.actions.len(), 2);
        assert!(p.actions.iter().all(|a| matches!(a, Action::RollBack { .. })));
        let p = undecided(7, 5, "a", &[found("a-t-0-7", "ABORTED")], true);
        assert!(p.used && p.actions.is_empty());
        let p = undecided(7, 5, "a", &[found("a-t-0-7", "UNKNOWN")], true);
        assert!(!p.used);
    }

    #[test]
    fn a_committed_label_above_the_decided_epoch_is_refused_as_a_second_writer() {
        let p = undecided(
            6,
            5,
            "a",
            &[found("a-t-0-6", "PREPARED"), found("a-t-1-6", "VISIBLE"), found("a-t-2-6", "PREPARED")],
            true,
        );
        assert_eq!(p.actions.len(), 2, "the roll-back before it, then the refusal, nothing after");
        let Action::Refuse(why) = &p.actions[1] else { panic!("{p:?}") };
        assert!(
            why.contains("a-t-1-6")
                && why.contains("is VISIBLE")
                && why.contains("last epoch decided for prefix 'a' is 5")
                && why.contains("label_prefix"),
            "{why}"
        );
    }

    #[test]
    fn at_least_once_marks_an_epoch_used_by_any_known_label_and_rolls_nothing_back() {
        let p = undecided(6, 5, "a", &[found("a-t-0-6", "VISIBLE")], false);
        assert_eq!((p.used, p.actions.len()), (true, 0));
        let p = undecided(6, 5, "a", &[found("a-t-0-6", "UNKNOWN")], false);
        assert!(!p.used);
    }

    #[test]
    fn the_probe_checks_one_epoch_past_the_next_and_goes_on_while_epochs_are_used() {
        assert!(probe_further(6, 5, false), "decided + 1 is always followed by one more");
        assert!(!probe_further(7, 5, false));
        assert!(probe_further(9, 5, true));
    }

    #[test]
    fn numbering_resumes_after_the_decided_epoch_or_at_least_once_after_the_last_used() {
        assert_eq!(next_epoch(1, 5, Some(8), true), 6);
        assert_eq!(next_epoch(1, 5, Some(8), false), 9);
        assert_eq!(next_epoch(1, 5, None, false), 6);
        assert_eq!(next_epoch(12, 5, None, true), 12, "never backwards");
    }
}
