//! Decisions, approvals and updates: each write also appends its audit record in the same
//! transaction, so the trail never misses a change and never records one that did not happen.

use jiff::Timestamp;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension as _, Row, TransactionBehavior, params};
use safe_updater_core::audit::AuditEvent;
use safe_updater_core::lease::{Owner, lease_end};
use serde_json::json;

use crate::audit::append_in;
use crate::error::{Context as _, Result, StoreError};
use crate::types::{
    Approval, ApprovalOrigin, DecisionRecord, Stored, UpdateId, UpdateOutcome, UpdateRecord,
    UpdateStart, UpdateStatus, UpdateWithSnapshot, Verdict,
};
use crate::{Store, json_col, limit_to_sql, opt_ts_col, ts_col, ts_to_sql};

const DECISION_COLUMNS: &str = "id, asset_id, at, actor, current, candidate, change, gate, \
     decision, rule, reason, correlation_id";
const APPROVAL_COLUMNS: &str = "id, asset_id, candidate, verdict, operator, reason, at, origin";
const UPDATE_COLUMNS: &str = "id, asset_id, from_ref, to_ref, status, error, correlation_id, \
     started_by, started_at, finished_by, finished_at, owner_host, owner_pid, \
     owner_pid_namespace, owner_process_start, owner_started_at, lease_until";

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
            origin: origin_col(row, 7)?,
        },
    })
}

pub(crate) fn origin_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<ApprovalOrigin> {
    let origin: String = row.get(idx)?;
    ApprovalOrigin::parse(&origin).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            Type::Text,
            format!("unknown approval origin {origin:?}").into(),
        )
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
        owner: owner_from_row(row, 11)?,
        lease_until: opt_ts_col(row, 16)?,
    })
}

/// The owner in the five columns from `first` on (host, pid, pid namespace, process start,
/// started at); `None` when no host is recorded.
fn owner_from_row(row: &Row<'_>, first: usize) -> rusqlite::Result<Option<Owner>> {
    let Some(host) = row.get::<_, Option<String>>(first)? else {
        return Ok(None);
    };
    let pid: i64 = row.get(first + 1)?;
    let start: i64 = row.get(first + 3)?;
    Ok(Some(Owner {
        host,
        pid: u32::try_from(pid).unwrap_or_default(),
        pid_namespace: row.get(first + 2)?,
        process_start: u64::try_from(start).unwrap_or_default(),
        started_at: ts_col(row, first + 4)?,
    }))
}

/// The five owner columns: host, pid, pid namespace, process start, started at.
type OwnerColumns<'a> = (
    Option<&'a str>,
    Option<i64>,
    Option<&'a str>,
    Option<i64>,
    Option<String>,
);

/// The owner as the five column values [`owner_from_row`] reads.
fn owner_params(o: Option<&Owner>) -> OwnerColumns<'_> {
    match o {
        Some(o) => (
            Some(o.host.as_str()),
            Some(i64::from(o.pid)),
            Some(o.pid_namespace.as_str()),
            Some(i64::try_from(o.process_start).unwrap_or(i64::MAX)),
            Some(ts_to_sql(&o.started_at)),
        ),
        None => (None, None, None, None, None),
    }
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
        "INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
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
            a.origin.as_str(),
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
    let (host, pid, ns, start, started) = owner_params(u.owner.as_ref());
    conn.prepare_cached(&format!(
        "INSERT INTO updates ({UPDATE_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
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
            host,
            pid,
            ns,
            start,
            started,
            u.lease_until.as_ref().map(ts_to_sql),
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
            "origin": a.origin.as_str(),
        }),
    }
}

/// Stands for the owner of an in-progress update written before owners were recorded.
fn unknown_owner(started_at: Timestamp) -> Owner {
    Owner {
        host: "unknown".into(),
        pid: 0,
        pid_namespace: String::new(),
        process_start: 0,
        started_at,
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

    /// The verdict that counts (the latest) for every candidate of every asset, newest first.
    pub fn latest_verdicts(&self) -> Result<Vec<Approval>> {
        let op = "read the latest verdicts";
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals a
                 WHERE id = (SELECT b.id FROM approvals b
                             WHERE b.asset_id = a.asset_id AND b.candidate = a.candidate
                             ORDER BY b.at DESC, b.id DESC LIMIT 1)
                 ORDER BY at DESC, id DESC"
            ))
            .during(&self.label, op)?;
        let rows = stmt
            .query_map([], |row| approval_from_row(row).map(|s| s.record))
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

    /// Records that an update is about to start: the row (status `in_progress`, owned by this
    /// store's process with a lease from `start.at`), its rollback snapshot and the audit
    /// event `update.started`, committed together and fsynced before this returns. Call it
    /// BEFORE changing anything, so that a crash at any later point leaves an unfinished
    /// update to recover from its snapshot.
    ///
    /// One asset has at most one update in progress: while another is (whoever owns it),
    /// this refuses with [`StoreError::UpdateInProgress`] and writes nothing. The check and
    /// the insert happen under one write lock, so two processes cannot both begin.
    pub fn begin_update(&mut self, start: &UpdateStart) -> Result<UpdateId> {
        let label = &self.label;
        let op = "begin an update";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        let running = tx
            .prepare_cached(&format!(
                "SELECT {UPDATE_COLUMNS} FROM updates
                 WHERE asset_id = ?1 AND status = 'in_progress' ORDER BY id LIMIT 1"
            ))
            .and_then(|mut stmt| {
                stmt.query_row([&start.asset_id], update_from_row)
                    .optional()
            })
            .during(label, op)?;
        if let Some(u) = running {
            return Err(StoreError::UpdateInProgress {
                path: label.clone(),
                asset_id: u.asset_id,
                update_id: u.id.0,
                owner: Box::new(u.owner.unwrap_or_else(|| unknown_owner(u.started_at))),
                lease_until: u.lease_until.unwrap_or(Timestamp::UNIX_EPOCH),
            });
        }
        let (host, pid, ns, process_start, started) = owner_params(Some(&self.owner));
        // The id comes from AUTOINCREMENT: insert without one, then read it back.
        tx.prepare_cached(
            "INSERT INTO updates (asset_id, from_ref, to_ref, status, correlation_id, \
             started_by, started_at, owner_host, owner_pid, owner_pid_namespace, \
             owner_process_start, owner_started_at, lease_until) \
             VALUES (?1, ?2, ?3, 'in_progress', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                start.asset_id,
                start.from_ref,
                start.to_ref,
                start.correlation_id,
                start.actor,
                ts_to_sql(&start.at),
                host,
                pid,
                ns,
                process_start,
                started,
                ts_to_sql(&lease_end(start.at)),
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
        if let Some(owner) = &update.owner
            && !owner.is(&self.owner)
        {
            return Err(StoreError::NotOwner {
                path: label.clone(),
                id: id.0,
                owner: Box::new(owner.clone()),
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

    /// Extends the lease of update `id` to `lease_end(now)`, if it is in progress and this
    /// store's process owns it. Returns whether it did: `false` means the lease is lost (the
    /// update was taken over, or finished).
    pub fn renew_lease(&mut self, id: UpdateId, now: Timestamp) -> Result<bool> {
        let (host, pid, ns, start, _) = owner_params(Some(&self.owner));
        let n = self
            .conn
            .prepare_cached(
                "UPDATE updates SET lease_until = ?6
                 WHERE id = ?1 AND status = 'in_progress' AND owner_host = ?2 AND owner_pid = ?3
                   AND owner_pid_namespace = ?4 AND owner_process_start = ?5",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id.0,
                    host,
                    pid,
                    ns,
                    start,
                    ts_to_sql(&lease_end(now))
                ])
            })
            .during(&self.label, "renew an update's lease")?;
        Ok(n == 1)
    }

    /// Whether this store's process still owns update `id` in progress (it was not finished,
    /// nor taken over by another process).
    pub fn owns_update(&self, id: UpdateId) -> Result<bool> {
        Ok(self.update(id)?.is_some_and(|u| {
            u.status == UpdateStatus::InProgress
                && u.owner.as_ref().is_some_and(|o| o.is(&self.owner))
        }))
    }

    /// Makes this store's process the owner of update `id`, in progress, if its owner is
    /// still `previous` (`None`: it records none) — the compare-and-swap by which exactly one
    /// of several processes recovers an orphaned update. Appends `update.taken_over` in the
    /// same transaction. Returns whether this process now owns it.
    pub fn take_over_update(
        &mut self,
        id: UpdateId,
        previous: Option<&Owner>,
        why: &str,
        now: Timestamp,
        actor: &str,
    ) -> Result<bool> {
        let label = &self.label;
        let op = "take over an update";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        let Some(update) = get_update(&tx, label, op, id)? else {
            return Ok(false);
        };
        let same = match (&update.owner, previous) {
            (None, None) => true,
            (Some(a), Some(b)) => a.is(b),
            _ => false,
        };
        if update.status != UpdateStatus::InProgress || !same {
            return Ok(false);
        }
        let (host, pid, ns, start, started) = owner_params(Some(&self.owner));
        tx.prepare_cached(
            "UPDATE updates SET owner_host = ?2, owner_pid = ?3, owner_pid_namespace = ?4,
                 owner_process_start = ?5, owner_started_at = ?6, lease_until = ?7
             WHERE id = ?1 AND status = 'in_progress'",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                id.0,
                host,
                pid,
                ns,
                start,
                started,
                ts_to_sql(&lease_end(now))
            ])
        })
        .during(label, op)?;
        append_in(
            &tx,
            label,
            op,
            AuditEvent {
                timestamp: now,
                actor: actor.to_string(),
                action: "update.taken_over".to_string(),
                asset_id: Some(update.asset_id.clone()),
                correlation_id: update.correlation_id.clone(),
                details: json!({
                    "update_id": id.0,
                    "previous_owner": previous,
                    "owner": &self.owner,
                    "why": why,
                }),
            },
        )?;
        tx.commit().during(label, op)?;
        Ok(true)
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
                let snapshot: Option<String> = row.get(17)?;
                let snapshot = snapshot
                    .map(|text| {
                        serde_json::from_str(&text).map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(17, Type::Text, Box::new(e))
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
