//! Decisions, approvals and updates: each write also appends its audit record in the same
//! transaction, so the trail never misses a change and never records one that did not happen.

use jiff::Timestamp;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension as _, Row, TransactionBehavior, params};
use safe_updater_core::audit::AuditEvent;
use serde_json::json;

use crate::audit::append_in;
use crate::error::{Context as _, Result, StoreError};
use crate::types::{
    Approval, DecisionRecord, Stored, UpdateId, UpdateOutcome, UpdateRecord, UpdateStart,
    UpdateStatus, UpdateWithSnapshot, Verdict,
};
use crate::{Store, json_col, limit_to_sql, opt_ts_col, ts_col, ts_to_sql};

const DECISION_COLUMNS: &str = "id, asset_id, at, actor, current, candidate, change, gate, \
     decision, rule, reason, correlation_id";
const APPROVAL_COLUMNS: &str = "id, asset_id, candidate, verdict, operator, reason, at";
const UPDATE_COLUMNS: &str = "id, asset_id, from_ref, to_ref, status, error, correlation_id, \
     started_by, started_at, finished_by, finished_at";

fn decision_from_row(row: &Row<'_>) -> rusqlite::Result<Stored<DecisionRecord>> {
    Ok(Stored {
        id: row.get(0)?,
        record: DecisionRecord {
            asset_id: row.get(1)?,
            at: ts_col(row, 2)?,
            actor: row.get(3)?,
            current: row.get(4)?,
            candidate: row.get(5)?,
            change: row.get(6)?,
            gate: row.get(7)?,
            decision: row.get(8)?,
            rule: row.get(9)?,
            reason: row.get(10)?,
            correlation_id: row.get(11)?,
        },
    })
}

fn approval_from_row(row: &Row<'_>) -> rusqlite::Result<Stored<Approval>> {
    let verdict: String = row.get(3)?;
    let verdict = Verdict::parse(&verdict).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            Type::Text,
            format!("unknown verdict {verdict:?}").into(),
        )
    })?;
    Ok(Stored {
        id: row.get(0)?,
        record: Approval {
            asset_id: row.get(1)?,
            candidate: row.get(2)?,
            verdict,
            operator: row.get(4)?,
            reason: row.get(5)?,
            at: ts_col(row, 6)?,
        },
    })
}

fn update_from_row(row: &Row<'_>) -> rusqlite::Result<UpdateRecord> {
    let status: String = row.get(4)?;
    let status = UpdateStatus::parse(&status).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            4,
            Type::Text,
            format!("unknown update status {status:?}").into(),
        )
    })?;
    Ok(UpdateRecord {
        id: UpdateId(row.get(0)?),
        asset_id: row.get(1)?,
        from_ref: row.get(2)?,
        to_ref: row.get(3)?,
        status,
        error: row.get(5)?,
        correlation_id: row.get(6)?,
        started_by: row.get(7)?,
        started_at: ts_col(row, 8)?,
        finished_by: row.get(9)?,
        finished_at: opt_ts_col(row, 10)?,
    })
}

pub(crate) fn insert_decision(
    conn: &Connection,
    label: &str,
    op: &'static str,
    id: Option<i64>,
    d: &DecisionRecord,
) -> Result<i64> {
    conn.prepare_cached(&format!(
        "INSERT INTO decisions ({DECISION_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))
    .and_then(|mut stmt| {
        stmt.execute(params![
            id,
            d.asset_id,
            ts_to_sql(&d.at),
            d.actor,
            d.current,
            d.candidate,
            d.change,
            d.gate,
            d.decision,
            d.rule,
            d.reason,
            d.correlation_id,
        ])
    })
    .during(label, op)?;
    Ok(conn.last_insert_rowid())
}

pub(crate) fn insert_approval(
    conn: &Connection,
    label: &str,
    op: &'static str,
    id: Option<i64>,
    a: &Approval,
) -> Result<i64> {
    conn.prepare_cached(&format!(
        "INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))
    .and_then(|mut stmt| {
        stmt.execute(params![
            id,
            a.asset_id,
            a.candidate,
            a.verdict.as_str(),
            a.operator,
            a.reason,
            ts_to_sql(&a.at),
        ])
    })
    .during(label, op)?;
    Ok(conn.last_insert_rowid())
}

pub(crate) fn insert_update(
    conn: &Connection,
    label: &str,
    op: &'static str,
    u: &UpdateRecord,
    snapshot: Option<&serde_json::Value>,
) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO updates ({UPDATE_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))
    .and_then(|mut stmt| {
        stmt.execute(params![
            u.id.0,
            u.asset_id,
            u.from_ref,
            u.to_ref,
            u.status.as_str(),
            u.error,
            u.correlation_id,
            u.started_by,
            ts_to_sql(&u.started_at),
            u.finished_by,
            u.finished_at.as_ref().map(ts_to_sql),
        ])
    })
    .during(label, op)?;
    if let Some(snapshot) = snapshot {
        let text = serde_json::to_string(snapshot).during(label, op)?;
        conn.prepare_cached("INSERT INTO update_snapshots (update_id, snapshot) VALUES (?1, ?2)")
            .and_then(|mut stmt| stmt.execute(params![u.id.0, text]))
            .during(label, op)?;
    }
    Ok(())
}

fn get_update(
    conn: &Connection,
    label: &str,
    op: &'static str,
    id: UpdateId,
) -> Result<Option<UpdateRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {UPDATE_COLUMNS} FROM updates WHERE id = ?1"
    ))
    .and_then(|mut stmt| stmt.query_row([id.0], update_from_row).optional())
    .during(label, op)
}

/// The audit event of an operator's verdict (`approval` or `rejection`, actor: the operator),
/// the one kind readers of the trail see however the verdict was recorded.
pub(crate) fn approval_event(id: i64, a: &Approval) -> AuditEvent {
    AuditEvent {
        timestamp: a.at,
        actor: a.operator.clone(),
        action: a.verdict.audit_action().to_string(),
        asset_id: Some(a.asset_id.clone()),
        correlation_id: None,
        details: json!({
            "approval_id": id,
            "candidate": a.candidate,
            "verdict": a.verdict.as_str(),
            "reason": a.reason,
        }),
    }
}

impl Store {
    /// Stores a decision of the engine and appends the audit event `decision` (actor: the
    /// decision's actor), in one transaction. Returns the decision's id.
    pub fn record_decision(&mut self, decision: &DecisionRecord) -> Result<i64> {
        let label = &self.label;
        let op = "record a decision";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        let id = insert_decision(&tx, label, op, None, decision)?;
        let d = decision;
        append_in(
            &tx,
            label,
            op,
            AuditEvent {
                timestamp: d.at,
                actor: d.actor.clone(),
                action: "decision".to_string(),
                asset_id: Some(d.asset_id.clone()),
                correlation_id: d.correlation_id.clone(),
                details: json!({
                    "decision_id": id,
                    "current": d.current,
                    "candidate": d.candidate,
                    "change": d.change,
                    "gate": d.gate,
                    "decision": d.decision,
                    "rule": d.rule,
                    "reason": d.reason,
                }),
            },
        )?;
        tx.commit().during(label, op)?;
        Ok(id)
    }

    /// Decisions, newest first: all of them, or those about one asset.
    pub fn decisions(&self, asset_id: Option<&str>, limit: usize) -> Result<Vec<DecisionRecord>> {
        self.newest_first(
            "read decisions",
            &format!("SELECT {DECISION_COLUMNS} FROM decisions"),
            asset_id,
            limit,
            |row| decision_from_row(row).map(|s| s.record),
        )
    }

    /// Rows of `select` (a `SELECT ... FROM table` of a table with `id` and `asset_id`),
    /// newest first, for one asset or all, at most `limit`.
    fn newest_first<T>(
        &self,
        op: &'static str,
        select: &str,
        asset_id: Option<&str>,
        limit: usize,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "{select} WHERE ?1 IS NULL OR asset_id = ?1 ORDER BY id DESC LIMIT ?2"
            ))
            .during(&self.label, op)?;
        let rows = stmt
            .query_map(params![asset_id, limit_to_sql(limit)], map)
            .during(&self.label, op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .during(&self.label, op)
    }

    /// Stores an operator's verdict and appends the audit event `approval` or `rejection`
    /// (actor: the operator), in one transaction. Returns the approval's id.
    pub fn record_approval(&mut self, approval: &Approval) -> Result<i64> {
        let label = &self.label;
        let op = "record an approval";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        let id = insert_approval(&tx, label, op, None, approval)?;
        append_in(&tx, label, op, approval_event(id, approval))?;
        tx.commit().during(label, op)?;
        Ok(id)
    }

    /// Every verdict on this asset, oldest first.
    pub fn approvals_for(&self, asset_id: &str) -> Result<Vec<Approval>> {
        let op = "read approvals";
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE asset_id = ?1 ORDER BY at, id"
            ))
            .during(&self.label, op)?;
        let rows = stmt
            .query_map([asset_id], |row| approval_from_row(row).map(|s| s.record))
            .during(&self.label, op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .during(&self.label, op)
    }

    /// The latest verdict on this candidate of this asset (the one that counts), if any.
    pub fn approval_for(&self, asset_id: &str, candidate: &str) -> Result<Option<Approval>> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE asset_id = ?1 AND candidate = ?2
                 ORDER BY at DESC, id DESC LIMIT 1"
            ))
            .and_then(|mut stmt| {
                stmt.query_row([asset_id, candidate], |row| {
                    approval_from_row(row).map(|s| s.record)
                })
                .optional()
            })
            .during(&self.label, "read an approval")
    }

    /// Records that an update is about to start: the row (status `in_progress`), its rollback
    /// snapshot and the audit event `update.started`, committed together and fsynced before
    /// this returns. Call it BEFORE changing anything, so that a crash at any later point
    /// leaves an unfinished update to recover from its snapshot.
    pub fn begin_update(&mut self, start: &UpdateStart) -> Result<UpdateId> {
        let label = &self.label;
        let op = "begin an update";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        // The id comes from AUTOINCREMENT: insert without one, then read it back.
        tx.prepare_cached(
            "INSERT INTO updates (asset_id, from_ref, to_ref, status, correlation_id, \
             started_by, started_at) VALUES (?1, ?2, ?3, 'in_progress', ?4, ?5, ?6)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                start.asset_id,
                start.from_ref,
                start.to_ref,
                start.correlation_id,
                start.actor,
                ts_to_sql(&start.at),
            ])
        })
        .during(label, op)?;
        let id = UpdateId(tx.last_insert_rowid());
        let snapshot = serde_json::to_string(&start.snapshot).during(label, op)?;
        tx.prepare_cached("INSERT INTO update_snapshots (update_id, snapshot) VALUES (?1, ?2)")
            .and_then(|mut stmt| stmt.execute(params![id.0, snapshot]))
            .during(label, op)?;
        append_in(
            &tx,
            label,
            op,
            AuditEvent {
                timestamp: start.at,
                actor: start.actor.clone(),
                action: "update.started".to_string(),
                asset_id: Some(start.asset_id.clone()),
                correlation_id: start.correlation_id.clone(),
                details: json!({
                    "update_id": id.0,
                    "from": start.from_ref,
                    "to": start.to_ref,
                }),
            },
        )?;
        tx.commit().during(label, op)?;
        Ok(id)
    }

    /// Records how an update ended, with the audit event `update.succeeded`, `update.failed`,
    /// `update.rolled_back` or `update.frozen`, in one transaction. An update finishes once:
    /// finishing it again is an error (the first outcome stands).
    pub fn finish_update(
        &mut self,
        id: UpdateId,
        outcome: UpdateOutcome,
        error: Option<String>,
        at: Timestamp,
        actor: &str,
    ) -> Result<UpdateRecord> {
        let label = &self.label;
        let op = "finish an update";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        let Some(mut update) = get_update(&tx, label, op, id)? else {
            return Err(StoreError::UnknownUpdate {
                path: label.clone(),
                id: id.0,
            });
        };
        if update.status != UpdateStatus::InProgress {
            return Err(StoreError::UpdateAlreadyFinished {
                path: label.clone(),
                id: id.0,
                status: update.status,
            });
        }
        let status = outcome.status();
        tx.prepare_cached(
            "UPDATE updates SET status = ?2, error = ?3, finished_by = ?4, finished_at = ?5
             WHERE id = ?1 AND status = 'in_progress'",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![id.0, status.as_str(), error, actor, ts_to_sql(&at)])
        })
        .during(label, op)?;
        append_in(
            &tx,
            label,
            op,
            AuditEvent {
                timestamp: at,
                actor: actor.to_string(),
                action: outcome.audit_action().to_string(),
                asset_id: Some(update.asset_id.clone()),
                correlation_id: update.correlation_id.clone(),
                details: json!({
                    "update_id": id.0,
                    "from": update.from_ref,
                    "to": update.to_ref,
                    "outcome": status.as_str(),
                    "error": error,
                }),
            },
        )?;
        tx.commit().during(label, op)?;
        update.status = status;
        update.error = error;
        update.finished_by = Some(actor.to_string());
        update.finished_at = Some(at);
        Ok(update)
    }

    /// Update attempts, newest first: all of them, or those of one asset.
    pub fn history(&self, asset_id: Option<&str>, limit: usize) -> Result<Vec<UpdateRecord>> {
        self.newest_first(
            "read update history",
            &format!("SELECT {UPDATE_COLUMNS} FROM updates"),
            asset_id,
            limit,
            update_from_row,
        )
    }

    /// One update attempt.
    pub fn update(&self, id: UpdateId) -> Result<Option<UpdateRecord>> {
        get_update(&self.conn, &self.label, "read an update", id)
    }

    /// Updates begun and never finished, oldest first: after a restart, each must be
    /// recovered or rolled back from its snapshot.
    pub fn unfinished_updates(&self) -> Result<Vec<UpdateRecord>> {
        let op = "read unfinished updates";
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {UPDATE_COLUMNS} FROM updates WHERE status = 'in_progress' ORDER BY id"
            ))
            .during(&self.label, op)?;
        let rows = stmt
            .query_map([], update_from_row)
            .during(&self.label, op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .during(&self.label, op)
    }

    /// The versions this asset was updated to and that ended failed, rolled back or frozen:
    /// they must not be tried again. An update a crash cut short ([`Store::mark_interrupted`])
    /// does not count, unless its target was cut short [`crate::INTERRUPTIONS_BEFORE_FAILED`]
    /// times. Sorted, without duplicates.
    pub fn failed_targets(&self, asset_id: &str) -> Result<Vec<String>> {
        let op = "read failed targets";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT to_ref FROM updates u
                 WHERE asset_id = ?1 AND status IN ('failed', 'rolled_back', 'frozen')
                 GROUP BY to_ref
                 HAVING sum(u.id NOT IN (SELECT update_id FROM interrupted_updates)) > 0
                     OR count(*) >= ?2
                 ORDER BY to_ref",
            )
            .during(&self.label, op)?;
        let rows = stmt
            .query_map(
                params![asset_id, crate::INTERRUPTIONS_BEFORE_FAILED],
                |row| row.get(0),
            )
            .during(&self.label, op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .during(&self.label, op)
    }

    /// The rollback snapshot of an update.
    pub fn snapshot(&self, id: UpdateId) -> Result<Option<serde_json::Value>> {
        self.conn
            .prepare_cached("SELECT snapshot FROM update_snapshots WHERE update_id = ?1")
            .and_then(|mut stmt| stmt.query_row([id.0], |row| json_col(row, 0)).optional())
            .during(&self.label, "read an update snapshot")
    }

    pub(crate) fn all_decisions(&self) -> Result<Vec<Stored<DecisionRecord>>> {
        self.collect_all(
            &format!("SELECT {DECISION_COLUMNS} FROM decisions ORDER BY id"),
            "read decisions",
            decision_from_row,
        )
    }

    pub(crate) fn all_approvals(&self) -> Result<Vec<Stored<Approval>>> {
        self.collect_all(
            &format!("SELECT {APPROVAL_COLUMNS} FROM approvals ORDER BY id"),
            "read approvals",
            approval_from_row,
        )
    }

    pub(crate) fn all_updates(&self) -> Result<Vec<UpdateWithSnapshot>> {
        let columns = UPDATE_COLUMNS
            .split(", ")
            .map(|c| format!("u.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.collect_all(
            &format!(
                "SELECT {columns}, s.snapshot FROM updates u
                 LEFT JOIN update_snapshots s ON s.update_id = u.id ORDER BY u.id"
            ),
            "read updates",
            |row| {
                let snapshot: Option<String> = row.get(11)?;
                let snapshot = snapshot
                    .map(|text| {
                        serde_json::from_str(&text).map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(11, Type::Text, Box::new(e))
                        })
                    })
                    .transpose()?;
                Ok(UpdateWithSnapshot {
                    update: update_from_row(row)?,
                    snapshot,
                })
            },
        )
    }

    pub(crate) fn collect_all<T>(
        &self,
        sql: &str,
        op: &'static str,
        f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare(sql).during(&self.label, op)?;
        let rows = stmt.query_map([], f).during(&self.label, op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .during(&self.label, op)
    }
}
