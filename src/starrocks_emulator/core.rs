//! The emulator's shared state behind one lock: the registry, the tables,
//! the BEs' per-label transaction contexts, error logs, and the state log.
//!
//! Lock discipline: request handlers parse bodies *outside* the lock and take
//! it only to begin, stage, prepare, commit or abort, so a large load never
//! blocks other requests while it is being parsed.
//!
//! Persistence (`--state DIR`): every state change is appended to
//! `DIR/emulator.log` as one JSON line (Begin, Stage, Prepared, Commit,
//! Abort), written before the reply that reports it. On start the log is
//! replayed through the same registry functions; VISIBLE, label expiry and
//! timeouts follow from the replayed times. A BE's in-flight context (a txn
//! API transaction that has not been prepared) is not persisted, exactly as
//! a real BE loses it on restart.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value as J, json};

use super::engine::{RowOp, StagedBatch, StagedRow, Table, VersionPolicy};
use super::registry::{LoadCounts, Registry, RegistryConfig, Txn, TxnState};
use crate::starrocks::ddl::{Catalog, TableDef};
use crate::starrocks::types::Value;

/// A BE's context for a transaction opened through `/api/transaction/begin`.
#[derive(Debug)]
pub struct BeCtx {
    pub txn_id: i64,
    pub be: usize,
    pub table: String,
    pub batches: Vec<StagedBatch>,
    pub counts: LoadCounts,
    pub errors: Vec<String>,
    /// Load calls seen; the highest filter ratio applies at prepare.
    pub max_filter_ratio: f64,
    pub loads: u64,
    /// A request currently holds this context (TXN_IN_PROCESSING for others).
    pub busy: bool,
    pub last_active_ms: u64,
    pub idle_timeout_ms: Option<u64>,
}

/// Counters for `/_emulator/stats`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub stream_loads: u64,
    pub txn_loads: u64,
    pub loads_by_status: BTreeMap<String, u64>,
    pub rows_loaded: u64,
    pub rows_filtered: u64,
    pub bytes_received: u64,
    pub redirects: u64,
    /// Begins refused by `max_running_txn_num_per_db`.
    pub begin_rejected_cap: u64,
}

pub struct Core {
    pub registry: Registry,
    pub tables: HashMap<(String, String), Table>,
    pub be_ctx: HashMap<(String, String), BeCtx>,
    /// label → coordinator BE, as `coordinatorMgr` keeps it.
    pub coordinators: HashMap<(String, String), usize>,
    pub error_logs: BTreeMap<String, String>,
    pub next_tablet_id: i64,
    pub policy: VersionPolicy,
    pub stats: Stats,
    log: Option<File>,
}

fn key(db: &str, name: &str) -> (String, String) {
    (db.to_string(), name.to_ascii_lowercase())
}

impl Core {
    pub fn new(catalog: &Catalog, reg: RegistryConfig, policy: VersionPolicy) -> Core {
        let tables = catalog.tables.iter().map(|t| (key(&t.db, &t.name), Table::new(Arc::new(t.clone())))).collect();
        Core {
            registry: Registry::new(reg),
            tables,
            be_ctx: HashMap::new(),
            coordinators: HashMap::new(),
            error_logs: BTreeMap::new(),
            next_tablet_id: 10_000,
            policy,
            stats: Stats::default(),
            log: None,
        }
    }

    pub fn table(&self, db: &str, name: &str) -> Option<&Table> {
        self.tables.get(&key(db, name))
    }

    pub fn table_mut(&mut self, db: &str, name: &str) -> Option<&mut Table> {
        self.tables.get_mut(&key(db, name))
    }

    pub fn def(&self, db: &str, name: &str) -> Option<Arc<TableDef>> {
        self.table(db, name).map(|t| t.def.clone())
    }

    /// Keeps an error log for `ErrorURL`; bounded to the newest 1000.
    pub fn keep_error_log(&mut self, name: String, lines: &[String]) {
        self.error_logs.insert(name, lines.join("\n") + "\n");
        while self.error_logs.len() > 1000 {
            self.error_logs.pop_first();
        }
    }

    /// Publishes due commits, applies their data, aborts timed-out txns and
    /// idle BE contexts.
    pub fn tick(&mut self, now: u64) {
        let idle: Vec<(String, String)> = self
            .be_ctx
            .iter()
            .filter(|(_, c)| !c.busy && c.idle_timeout_ms.is_some_and(|t| now.saturating_sub(c.last_active_ms) > t))
            .map(|(k, _)| k.clone())
            .collect();
        for k in idle {
            if let Some(c) = self.be_ctx.remove(&k) {
                let _ = self.abort(c.txn_id, "transaction is aborted by idle timeout", now);
            }
        }
        let out = self.registry.tick(now);
        for id in out.published {
            self.apply_visible(id, now);
        }
        for id in out.aborted {
            self.be_ctx.retain(|_, c| c.txn_id != id);
        }
    }

    fn apply_visible(&mut self, id: i64, now: u64) {
        let Some(t) = self.registry.get_mut(id) else {
            return;
        };
        let data = std::mem::take(&mut t.data);
        let (db, table) = (t.db.clone(), t.table.clone());
        let policy = self.policy;
        let mut next = self.next_tablet_id;
        if let Some(tbl) = self.tables.get_mut(&key(&db, &table)) {
            tbl.apply(data, &policy, now, &mut next);
        }
        self.next_tablet_id = next;
    }

    // ---- logged state changes -------------------------------------------

    pub fn begin(
        &mut self,
        db: &str,
        table: &str,
        label: &str,
        timeout_ms: u64,
        be: usize,
        now: u64,
    ) -> Result<i64, super::registry::BeginError> {
        self.tick(now);
        let id = self.registry.begin(db, table, label, timeout_ms, be, now).inspect_err(|e| {
            if matches!(e, super::registry::BeginError::TooManyRunning { .. }) {
                self.stats.begin_rejected_cap += 1;
            }
        })?;
        self.write(
            json!({"ev":"begin","id":id,"db":db,"table":table,"label":label,"be":be,"at":now,"timeout_ms":timeout_ms}),
        );
        Ok(id)
    }

    /// Attaches staged rows to a PREPARE transaction.
    pub fn stage(&mut self, id: i64, batches: Vec<StagedBatch>, counts: &LoadCounts) {
        if self.log.is_some() {
            let def = self.registry.get(id).and_then(|t| self.def(&t.db, &t.table));
            if let Some(def) = def {
                let b: Vec<J> = batches.iter().map(|b| batch_to_json(&def, b)).collect();
                self.write(json!({"ev":"stage","id":id,"batches":b,"counts":counts}));
            }
        }
        if let Some(t) = self.registry.get_mut(id) {
            t.data.extend(batches);
            t.counts.add(counts);
        }
    }

    pub fn prepare(
        &mut self,
        id: i64,
        prepared_timeout_ms: Option<u64>,
        now: u64,
    ) -> Result<(), super::registry::TxnError> {
        self.registry.prepare(id, prepared_timeout_ms, now)?;
        self.write(json!({"ev":"prepared","id":id,"at":now,"prepared_timeout_ms":prepared_timeout_ms}));
        Ok(())
    }

    /// Commits; VISIBLE at once unless `publish_delay_ms`.
    pub fn commit(
        &mut self,
        id: i64,
        publish_delay_ms: Option<u64>,
        now: u64,
    ) -> Result<bool, super::registry::TxnError> {
        let visible_at = publish_delay_ms.map(|d| now + d);
        let changed = self.registry.commit(id, visible_at, now)?;
        if changed {
            self.write(json!({"ev":"commit","id":id,"at":now,"visible_at":visible_at}));
        }
        self.tick(now);
        Ok(changed)
    }

    pub fn abort(&mut self, id: i64, reason: &str, now: u64) -> Result<bool, super::registry::TxnError> {
        let changed = self.registry.abort(id, reason, now)?;
        if changed {
            self.write(json!({"ev":"abort","id":id,"at":now,"reason":reason}));
            self.be_ctx.retain(|_, c| c.txn_id != id);
        }
        Ok(changed)
    }

    fn write(&mut self, ev: J) {
        if let Some(f) = self.log.as_mut() {
            let mut line = ev.to_string();
            line.push('\n');
            if let Err(e) = f.write_all(line.as_bytes()).and_then(|_| f.flush()) {
                tracing::error!(error = %e, "Emulator state log write failed; state may not survive a restart.");
            }
        }
    }

    /// Opens (and first replays) the state log in `dir`.
    pub fn open_state(&mut self, dir: &Path, now: u64) -> std::io::Result<usize> {
        std::fs::create_dir_all(dir)?;
        let path: PathBuf = dir.join("emulator.log");
        let mut replayed = 0;
        if path.exists() {
            let f = File::open(&path)?;
            for (n, line) in BufReader::new(f).lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let ev: J = match serde_json::from_str(&line) {
                    Ok(v) => v,
                    Err(e) => {
                        // A torn last line after a crash: stop there.
                        tracing::warn!(line = n + 1, error = %e, "Ignoring a torn state log line.");
                        break;
                    }
                };
                self.replay(&ev).map_err(|m| std::io::Error::other(format!("state log line {}: {m}", n + 1)))?;
                replayed += 1;
            }
        }
        self.tick(now);
        self.compact(&path)?;
        self.log = Some(OpenOptions::new().create(true).append(true).open(&path)?);
        Ok(replayed)
    }

    /// Rewrites the log as one `snapshot` event (the visible rows of every
    /// table) followed by the events of the transactions the registry still
    /// remembers, so the log does not grow without bound across restarts.
    /// Written to a temporary file, synced, then renamed over the log: a crash
    /// leaves either the old or the new log, never a mix (which would apply
    /// visible data twice).
    fn compact(&mut self, path: &Path) -> std::io::Result<()> {
        let mut lines: Vec<J> = Vec::new();
        let mut tables = Vec::new();
        for t in self.tables.values() {
            let def = t.def.clone();
            let rows = t
                .rows()
                .into_iter()
                .filter_map(|values| {
                    let part = t.partition_of(&values).ok()?;
                    let bucket = t.bucket_of(&values);
                    Some(StagedRow { values, op: RowOp::Upsert, tablet: (part, bucket) })
                })
                .collect();
            let batch = StagedBatch { rows, partial: None, merge_condition: None };
            tables.push(json!({"db": def.db, "table": def.name, "batch": batch_to_json(&def, &batch)}));
        }
        lines.push(json!({"ev": "snapshot", "tables": tables}));
        for t in self.registry.all() {
            let at = t.created_ms;
            lines.push(json!({"ev":"begin","id":t.id,"db":t.db,"table":t.table,"label":t.label,"be":t.be,"at":at,"timeout_ms":t.timeout_ms.saturating_sub(at)}));
            if !t.data.is_empty()
                && let Some(def) = self.def(&t.db, &t.table)
            {
                let b: Vec<J> = t.data.iter().map(|b| batch_to_json(&def, b)).collect();
                lines.push(json!({"ev":"stage","id":t.id,"batches":b,"counts":t.counts}));
            }
            let fin = t.finish_ms.unwrap_or(at);
            match t.state {
                TxnState::Prepare => {}
                TxnState::Prepared => {
                    let d = t.prepared_deadline_ms.unwrap_or(at);
                    lines.push(json!({"ev":"prepared","id":t.id,"at":at,"prepared_timeout_ms":d.saturating_sub(at)}));
                }
                TxnState::Committed | TxnState::Visible => {
                    // VISIBLE data is in the snapshot; the event keeps the label's state.
                    let visible_at = if t.state == TxnState::Visible { Some(fin) } else { t.visible_at_ms };
                    lines.push(json!({"ev":"commit","id":t.id,"at":fin,"visible_at":visible_at,"finish_ms":fin}));
                }
                TxnState::Aborted => lines.push(json!({"ev":"abort","id":t.id,"at":fin,"reason":t.reason})),
            }
        }
        let tmp = path.with_extension("log.tmp");
        {
            let mut f = File::create(&tmp)?;
            for l in &lines {
                let mut text = l.to_string();
                text.push('\n');
                f.write_all(text.as_bytes())?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    fn replay(&mut self, ev: &J) -> Result<(), String> {
        if ev["ev"].as_str() == Some("snapshot") {
            for t in ev["tables"].as_array().ok_or("bad snapshot")? {
                let (db, name) = (t["db"].as_str().unwrap_or_default(), t["table"].as_str().unwrap_or_default());
                let Some(def) = self.def(db, name) else {
                    tracing::warn!(db, table = name, "Snapshot table no longer in the DDL; skipped.");
                    continue;
                };
                let batch = batch_from_json(&def, &t["batch"])?;
                let policy = self.policy;
                let mut next = self.next_tablet_id;
                if let Some(tbl) = self.tables.get_mut(&key(db, name)) {
                    tbl.apply(vec![batch], &policy, 0, &mut next);
                }
                self.next_tablet_id = next;
            }
            return Ok(());
        }
        let id = ev["id"].as_i64().ok_or("missing id")?;
        let at = ev["at"].as_u64().unwrap_or(0);
        match ev["ev"].as_str() {
            Some("begin") => {
                let s = |k: &str| ev[k].as_str().unwrap_or_default().to_string();
                self.registry.insert(Txn {
                    id,
                    db: s("db"),
                    table: s("table"),
                    label: s("label"),
                    state: TxnState::Prepare,
                    be: ev["be"].as_u64().unwrap_or(0) as usize,
                    created_ms: at,
                    timeout_ms: at + ev["timeout_ms"].as_u64().unwrap_or(600_000),
                    prepared_deadline_ms: None,
                    finish_ms: None,
                    reason: String::new(),
                    data: Vec::new(),
                    counts: LoadCounts::default(),
                    visible_at_ms: None,
                });
            }
            Some("stage") => {
                let t = self.registry.get(id).ok_or("stage of unknown txn")?;
                let def = self.def(&t.db, &t.table).ok_or("stage for unknown table")?;
                let batches = ev["batches"]
                    .as_array()
                    .ok_or("bad batches")?
                    .iter()
                    .map(|b| batch_from_json(&def, b))
                    .collect::<Result<Vec<_>, _>>()?;
                let counts: LoadCounts = serde_json::from_value(ev["counts"].clone()).map_err(|e| e.to_string())?;
                let t = self.registry.get_mut(id).ok_or("stage of unknown txn")?;
                t.data.extend(batches);
                t.counts.add(&counts);
            }
            Some("prepared") => {
                self.registry.prepare(id, ev["prepared_timeout_ms"].as_u64(), at).map_err(|e| e.to_string())?;
            }
            Some("commit") => {
                self.registry.commit(id, ev["visible_at"].as_u64(), at).map_err(|e| e.to_string())?;
                // Publish what was due by then, in order, before later events.
                self.tick(at);
            }
            Some("abort") => {
                self.registry.abort(id, ev["reason"].as_str().unwrap_or(""), at).map_err(|e| e.to_string())?;
            }
            other => return Err(format!("unknown event {other:?}")),
        }
        Ok(())
    }
}

fn batch_to_json(def: &TableDef, b: &StagedBatch) -> J {
    let rows: Vec<J> = b
        .rows
        .iter()
        .map(|r| {
            let vals: Vec<J> = r.values.iter().zip(&def.columns).map(|(v, c)| v.to_json(&c.ty)).collect();
            json!([vals, r.op == RowOp::Delete, &*r.tablet.0, r.tablet.1])
        })
        .collect();
    json!({"rows": rows, "partial": b.partial, "merge_condition": b.merge_condition})
}

fn batch_from_json(def: &TableDef, j: &J) -> Result<StagedBatch, String> {
    let mut parts: HashMap<String, Arc<str>> = HashMap::new();
    let mut rows = Vec::new();
    for r in j["rows"].as_array().ok_or("bad rows")? {
        let vals = r[0].as_array().ok_or("bad row values")?;
        let values = vals
            .iter()
            .zip(&def.columns)
            .map(|(v, c)| {
                let raw = match v {
                    J::Null => Value::Null,
                    J::Bool(b) => Value::Bool(*b),
                    J::Number(n) => match n.as_i64() {
                        Some(i) => Value::Int(i as i128),
                        None => Value::Float(n.as_f64().unwrap_or(0.0)),
                    },
                    J::String(s) => Value::Str(s.as_str().into()),
                    other => Value::Str(other.to_string().into()),
                };
                c.ty.coerce(raw).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let p = r[2].as_str().ok_or("bad partition")?;
        let part = parts.entry(p.to_string()).or_insert_with(|| p.into()).clone();
        rows.push(StagedRow {
            values,
            op: if r[1].as_bool() == Some(true) { RowOp::Delete } else { RowOp::Upsert },
            tablet: (part, r[3].as_u64().ok_or("bad bucket")? as u32),
        });
    }
    Ok(StagedBatch {
        rows,
        partial: serde_json::from_value(j["partial"].clone()).map_err(|e| e.to_string())?,
        merge_condition: j["merge_condition"].as_u64().map(|m| m as usize),
    })
}
