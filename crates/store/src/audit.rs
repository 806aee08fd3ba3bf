//! The audit trail in the database: appending (inside the caller's write transaction),
//! reading, verifying, exporting and pruning for retention.
//!
//! The table is append-only: triggers abort any UPDATE, and any DELETE except of records
//! covered by a checkpoint. That stops mistakes and casual edits through the store; someone
//! with the file can drop the triggers, which is what the hash chain is for:
//! [`Store::verify_audit`] then says where the trail was changed.
//!
//! # Retention
//!
//! [`Store::prune_audit`] removes only a *prefix* of the trail, never a middle part: in one
//! write transaction it verifies the whole trail (a broken trail is never pruned: that would
//! delete the evidence), writes a checkpoint holding the seq and hash of the last record it
//! removes, deletes the records up to it, and appends an `audit.pruned` record saying what
//! was removed, so the pruning itself is on the trail. The remaining trail verifies from the
//! checkpoint ([`Store::verify_audit_trail`] names it). Checkpoints are append-only too.
//!
//! What pruning cannot prove: that the removed records were the ones the chain held. The
//! checkpoint's hash commits to them, so an export archived before pruning (whose last
//! records include the checkpoint's seq with the same hash) is the proof; archive exports
//! before records age out.
//!
//! # Exports of a pruned trail
//!
//! An export says which checkpoint it starts from, so that it verifies on its own:
//!
//! * JSONL: the first line is `{"checkpoint":{"seq":57,"hash":"…","created_at":"…","note":…}}`
//!   (a line without `seq` at the top level); every later line is a record as before, the
//!   first of them with `prev_hash` equal to the checkpoint's `hash`.
//! * CSV: the first row after the header stands for the checkpoint: `seq` and `hash` are the
//!   checkpoint's, `timestamp` is when it was written, `action` is `audit.checkpoint`,
//!   `details` is `{"note":…}`, and `prev_hash`, `actor`, `asset_id` and `correlation_id`
//!   are empty (no record ever has an empty `prev_hash`). Read in a spreadsheet, each row's
//!   `prev_hash` is the `hash` of the row above, the first record's included.
//!
//! A trail that was never pruned is exported exactly as before: records only.

use std::io::Write;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension as _, Row, TransactionBehavior, params};
use safe_updater_core::audit::{self, AuditEvent, AuditRecord, ChainHead, Verifier, VerifyReport};
use serde::Serialize;

use crate::error::{Context as _, Result, StoreError};
use crate::types::{AuditCheckpoint, AuditFormat};
use crate::{Store, json_col, ts_col, ts_to_sql, u64_col, u64_to_sql};

const AUDIT_COLUMNS: &str =
    "seq, timestamp, actor, action, asset_id, correlation_id, details, prev_hash, hash";

/// The CSV header; the same names as the JSONL keys.
const CSV_HEADER: [&str; 9] = [
    "seq",
    "timestamp",
    "actor",
    "action",
    "asset_id",
    "correlation_id",
    "details",
    "prev_hash",
    "hash",
];

/// The `action` of the record [`Store::prune_audit`] appends to say what it removed.
pub const PRUNED_ACTION: &str = "audit.pruned";

/// The `action` of the CSV row that stands for the checkpoint a pruned export starts from.
pub const CHECKPOINT_ACTION: &str = "audit.checkpoint";

/// What [`Store::prune_audit`] did, or what [`Store::preview_audit_prune`] says it would do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PruneReport {
    /// True for a preview: nothing was changed.
    pub dry_run: bool,
    /// The cutoff asked for: records older than this were due.
    pub older_than: Timestamp,
    /// How many records were (or would be) removed; 0 when nothing was old enough.
    pub removed: u64,
    /// The first removed record's seq; `None` when nothing was removed.
    pub first_removed_seq: Option<u64>,
    /// The checkpoint written (or to be written) for the last removed record; the trail
    /// verifies from it. `None` when nothing was removed.
    pub checkpoint: Option<AuditCheckpoint>,
    /// The `audit.pruned` record appended; `None` for a preview or when nothing was removed.
    pub record: Option<AuditRecord>,
    /// How many records the trail holds afterwards, the `audit.pruned` record included.
    pub remaining: u64,
    /// The timestamp of the oldest record left afterwards; `None` for an empty trail.
    pub oldest_remaining: Option<Timestamp>,
}

/// [`Store::verify_audit_trail`]'s answer: the verification and where the trail starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditVerification {
    #[serde(flatten)]
    pub report: VerifyReport,
    /// The checkpoint the verified trail continues from. `None` when the trail starts at
    /// record 1 from the genesis hash (it was never pruned), or when the checkpoint it needs
    /// is missing (then `report` names the gap).
    pub checkpoint: Option<AuditCheckpoint>,
    /// The seq of the `audit.pruned` record in the trail that states `checkpoint`. `None`
    /// with a checkpoint means the records before it were removed by something other than
    /// [`Store::prune_audit`] (or its record was itself pruned by a later run that wrote no
    /// checkpoint, which `prune_audit` never does).
    pub pruned_by: Option<u64>,
}

fn checkpoint_from_row(row: &Row<'_>) -> rusqlite::Result<AuditCheckpoint> {
    Ok(AuditCheckpoint {
        seq: u64_col(row, 0)?,
        hash: row.get(1)?,
        created_at: ts_col(row, 2)?,
        note: row.get(3)?,
    })
}

/// The checkpoint at exactly `seq`.
fn checkpoint_row_at(conn: &Connection, seq: u64) -> rusqlite::Result<Option<AuditCheckpoint>> {
    conn.prepare_cached("SELECT seq, hash, created_at, note FROM audit_checkpoints WHERE seq = ?1")?
        .query_row([u64_to_sql(seq)?], checkpoint_from_row)
        .optional()
}

/// The checkpoint the stored trail starts from (see [`AuditVerification::checkpoint`]).
fn starting_checkpoint(conn: &Connection) -> rusqlite::Result<Option<AuditCheckpoint>> {
    match first_seq(conn)? {
        Some(1) => Ok(None),
        Some(first) => checkpoint_row_at(conn, first - 1),
        None => conn
            .prepare_cached(
                "SELECT seq, hash, created_at, note FROM audit_checkpoints \
                 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row([], checkpoint_from_row)
            .optional(),
    }
}

fn first_seq(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    let first: Option<i64> = conn.query_row("SELECT min(seq) FROM audit", [], |row| row.get(0))?;
    Ok(first.map(|s| u64::try_from(s).unwrap_or(0)))
}

/// The prefix that is old enough: `(first seq, last seq, last hash)`, or `None`.
///
/// The prefix ends before the first record (in seq order) that is not older than
/// `older_than`: if clocks went backwards, an old record after a young one stays, so no
/// record younger than the cutoff is ever removed and no gap is ever cut in the middle.
fn due_prefix(
    conn: &Connection,
    older_than: &Timestamp,
) -> rusqlite::Result<Option<(u64, u64, String)>> {
    let Some(first) = first_seq(conn)? else {
        return Ok(None);
    };
    // Scans in seq order and stops at the first young record: cheap when most are young.
    let first_young: Option<i64> = conn
        .query_row(
            "SELECT seq FROM audit WHERE timestamp >= ?1 ORDER BY seq LIMIT 1",
            [ts_to_sql(older_than)],
            |row| row.get(0),
        )
        .optional()?;
    let last: i64 = match first_young {
        Some(young) => young - 1,
        None => conn.query_row("SELECT max(seq) FROM audit", [], |row| row.get(0))?,
    };
    let Ok(last) = u64::try_from(last) else {
        return Ok(None);
    };
    if last < first {
        return Ok(None);
    }
    let hash: String = conn.query_row(
        "SELECT hash FROM audit WHERE seq = ?1",
        [u64_to_sql(last)?],
        |row| row.get(0),
    )?;
    Ok(Some((first, last, hash)))
}

fn oldest_timestamp(conn: &Connection) -> rusqlite::Result<Option<Timestamp>> {
    conn.prepare_cached("SELECT timestamp FROM audit ORDER BY seq LIMIT 1")?
        .query_row([], |row| ts_col(row, 0))
        .optional()
}

fn count_in(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM audit", [], |row| u64_col(row, 0))
}

/// Refuses to prune a trail that does not verify: pruning would delete the evidence.
/// The whole verification: the chain (from its checkpoint), and that the checkpoint it starts
/// from is stated by an `audit.pruned` record. A checkpoint no such record states is a prefix
/// deleted behind a forged or copied checkpoint (the triggers allow deleting what a checkpoint
/// covers): the records it stands for are missing, whatever the chain from it says.
fn verify_full(conn: &Connection, label: &str) -> Result<AuditVerification> {
    let op = "verify the audit trail";
    let mut report = verify_in(conn, label)?;
    let checkpoint = starting_checkpoint(conn).during(label, op)?;
    let pruned_by = match &checkpoint {
        None => None,
        Some(c) => conn
            .query_row(
                "SELECT seq FROM audit WHERE action = ?1 \
                 AND json_extract(details, '$.up_to_seq') = ?2 \
                 AND json_extract(details, '$.up_to_hash') = ?3 ORDER BY seq LIMIT 1",
                params![PRUNED_ACTION, u64_to_sql(c.seq).during(label, op)?, c.hash],
                |row| u64_col(row, 0),
            )
            .optional()
            .during(label, op)?,
    };
    if let Some(c) = &checkpoint
        && pruned_by.is_none()
        && report.problem.is_none()
    {
        let before: Option<u64> = conn
            .query_row(
                "SELECT max(seq) FROM audit_checkpoints WHERE seq < ?1",
                [u64_to_sql(c.seq).during(label, op)?],
                |row| row.get::<_, Option<i64>>(0),
            )
            .during(label, op)?
            .and_then(|s| u64::try_from(s).ok());
        let first_missing = before.map_or(1, |b| b + 1);
        report.ok = false;
        report.problem = Some(audit::VerifyProblem {
            seq: first_missing,
            kind: audit::ProblemKind::Missing,
            message: format!(
                "records #{first_missing} to #{} are missing: checkpoint #{} stands for them, but \
                 no audit.pruned record states their removal, so they were deleted outside \
                 `safe-updater audit prune`",
                c.seq, c.seq
            ),
        });
    }
    Ok(AuditVerification {
        report,
        checkpoint,
        pruned_by,
    })
}

fn require_intact(conn: &Connection, label: &str) -> Result<()> {
    let report = verify_full(conn, label)?.report;
    match report.problem {
        None => Ok(()),
        Some(p) => Err(StoreError::AuditPruneRefused {
            path: label.to_string(),
            reason: format!(
                "the trail is broken at record {} ({}); pruning would delete the evidence. \
                 Export the trail and investigate first",
                p.seq, p.message
            ),
        }),
    }
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: u64_col(row, 0)?,
        event: AuditEvent {
            timestamp: ts_col(row, 1)?,
            actor: row.get(2)?,
            action: row.get(3)?,
            asset_id: row.get(4)?,
            correlation_id: row.get(5)?,
            details: json_col(row, 6)?,
        },
        prev_hash: row.get(7)?,
        hash: row.get(8)?,
    })
}

/// The position new records follow: the last record, else the latest checkpoint (a fully
/// pruned trail), else `None` (genesis).
pub(crate) fn head_in(conn: &Connection) -> rusqlite::Result<Option<ChainHead>> {
    let last = conn
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| {
            Ok(ChainHead {
                seq: u64_col(row, 0)?,
                hash: row.get(1)?,
            })
        })
        .optional()?;
    if last.is_some() {
        return Ok(last);
    }
    conn.prepare_cached("SELECT seq, hash FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| {
            Ok(ChainHead {
                seq: u64_col(row, 0)?,
                hash: row.get(1)?,
            })
        })
        .optional()
}

/// Appends `event` after the current head. Must run inside a write (IMMEDIATE) transaction,
/// so that nobody else appends between reading the head and inserting.
pub(crate) fn append_in(
    conn: &Connection,
    label: &str,
    op: &'static str,
    event: AuditEvent,
) -> Result<AuditRecord> {
    let head = head_in(conn).during(label, op)?;
    let record = audit::next_after(head.as_ref(), event);
    insert_record(conn, label, op, &record)?;
    Ok(record)
}

/// Inserts a record as is (append or import).
pub(crate) fn insert_record(
    conn: &Connection,
    label: &str,
    op: &'static str,
    record: &AuditRecord,
) -> Result<()> {
    let details = serde_json::to_string(&record.event.details).during(label, op)?;
    let seq = u64_to_sql(record.seq).during(label, op)?;
    let e = &record.event;
    conn.prepare_cached(
        "INSERT INTO audit (seq, timestamp, actor, action, asset_id, correlation_id, details, \
         prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            seq,
            ts_to_sql(&e.timestamp),
            e.actor,
            e.action,
            e.asset_id,
            e.correlation_id,
            details,
            record.prev_hash,
            record.hash,
        ])
    })
    .during(label, op)?;
    Ok(())
}

/// The anchor a trail whose first record is `first_seq` must link to: none when it starts at
/// 1, else the checkpoint just before it (none if missing: verification then reports the gap).
fn anchor_for(conn: &Connection, first_seq: Option<u64>) -> rusqlite::Result<Option<ChainHead>> {
    match first_seq {
        Some(1) => Ok(None),
        Some(first) => checkpoint_at(conn, first - 1),
        // An empty trail: whatever was pruned ends at the latest checkpoint.
        None => head_in(conn),
    }
}

fn checkpoint_at(conn: &Connection, seq: u64) -> rusqlite::Result<Option<ChainHead>> {
    conn.query_row(
        "SELECT seq, hash FROM audit_checkpoints WHERE seq = ?1",
        [u64_to_sql(seq)?],
        |row| {
            Ok(ChainHead {
                seq: u64_col(row, 0)?,
                hash: row.get(1)?,
            })
        },
    )
    .optional()
}

/// Verifies the trail as stored, streaming rows in seq order.
pub(crate) fn verify_in(conn: &Connection, label: &str) -> Result<VerifyReport> {
    let op = "verify the audit trail";
    let first: Option<i64> = conn
        .query_row("SELECT min(seq) FROM audit", [], |row| row.get(0))
        .during(label, op)?;
    let first = first.map(|s| u64::try_from(s).unwrap_or(0));
    let anchor = anchor_for(conn, first).during(label, op)?;
    let mut verifier = Verifier::new(anchor);
    let mut stmt = conn
        .prepare(&format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq"))
        .during(label, op)?;
    let mut rows = stmt.query([]).during(label, op)?;
    while let Some(row) = rows.next().during(label, op)? {
        match record_from_row(row) {
            Ok(record) => {
                if !verifier.push(&record) {
                    break;
                }
            }
            Err(e) => {
                // A row that does not even decode (a timestamp or details edited into
                // garbage) is a finding about the trail, not a failure of the store.
                let seq: i64 = row.get(0).during(label, op)?;
                verifier.unreadable(u64::try_from(seq).unwrap_or(0), &e.to_string());
                break;
            }
        }
    }
    Ok(verifier.finish())
}

impl Store {
    /// Appends an event to the audit trail and returns the record, chained to the current
    /// head, in its own IMMEDIATE transaction.
    pub fn append_audit(&mut self, event: AuditEvent) -> Result<AuditRecord> {
        let label = &self.label;
        let op = "append to the audit trail";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        let record = append_in(&tx, label, op, event)?;
        tx.commit().during(label, op)?;
        Ok(record)
    }

    /// The number of records in the trail.
    pub fn audit_len(&self) -> Result<u64> {
        self.count("SELECT count(*) FROM audit", "count audit records")
    }

    /// The last record's position (or the latest checkpoint's, if every record was pruned).
    pub fn audit_head(&self) -> Result<Option<ChainHead>> {
        head_in(&self.conn).during(&self.label, "read the audit head")
    }

    /// Up to `limit` records from `from_seq` on, in seq order.
    pub fn audit_records(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let op = "read audit records";
        let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
            ))
            .during(&self.label, op)?;
        let rows = stmt
            .query_map(params![from, crate::limit_to_sql(limit)], record_from_row)
            .during(&self.label, op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .during(&self.label, op)
    }

    /// Checks the whole trail, reading it in seq order with constant memory. A trail that
    /// starts after seq 1 must link to the checkpoint just before it.
    pub fn verify_audit(&self) -> Result<VerifyReport> {
        Ok(verify_full(&self.conn, &self.label)?.report)
    }

    /// Writes the whole trail to `out` in seq order, streaming. Returns how many records were
    /// written. The export is read in one transaction: a consistent snapshot even while
    /// others append. A pruned trail's export starts with the checkpoint it continues from
    /// (see the module documentation), which is not counted as a record.
    pub fn export_audit(&self, out: impl Write, format: AuditFormat) -> Result<u64> {
        let label = &self.label;
        let op = "export the audit trail";
        let io_err = |source| StoreError::Export {
            path: label.clone(),
            op,
            source,
        };
        let tx = self.conn.unchecked_transaction().during(label, op)?;
        let mut stmt = tx
            .prepare(&format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq"))
            .during(label, op)?;
        let start = starting_checkpoint(&tx).during(label, op)?;
        let mut rows = stmt.query([]).during(label, op)?;
        let mut count = 0u64;
        match format {
            AuditFormat::Jsonl => {
                let mut out = std::io::BufWriter::new(out);
                if let Some(c) = &start {
                    let line = serde_json::json!({
                        "checkpoint": {
                            "seq": c.seq,
                            "hash": c.hash,
                            "created_at": ts_to_sql(&c.created_at),
                            "note": c.note,
                        }
                    });
                    serde_json::to_writer(&mut out, &line).during(label, op)?;
                    out.write_all(b"\n").map_err(io_err)?;
                }
                while let Some(row) = rows.next().during(label, op)? {
                    let record = record_from_row(row).during(label, op)?;
                    serde_json::to_writer(&mut out, &record).during(label, op)?;
                    out.write_all(b"\n").map_err(io_err)?;
                    count += 1;
                }
                out.flush().map_err(io_err)?;
            }
            AuditFormat::Csv => {
                let csv_err = |e: csv::Error| io_err(std::io::Error::other(e));
                let mut out = csv::Writer::from_writer(out);
                out.write_record(CSV_HEADER).map_err(csv_err)?;
                if let Some(c) = &start {
                    out.write_record([
                        c.seq.to_string().as_str(),
                        &ts_to_sql(&c.created_at),
                        "",
                        CHECKPOINT_ACTION,
                        "",
                        "",
                        &audit::canonical_json(&serde_json::json!({ "note": c.note })),
                        "",
                        &c.hash,
                    ])
                    .map_err(csv_err)?;
                }
                while let Some(row) = rows.next().during(label, op)? {
                    let r = record_from_row(row).during(label, op)?;
                    let e = &r.event;
                    out.write_record([
                        r.seq.to_string().as_str(),
                        &ts_to_sql(&e.timestamp),
                        &e.actor,
                        &e.action,
                        e.asset_id.as_deref().unwrap_or(""),
                        e.correlation_id.as_deref().unwrap_or(""),
                        &audit::canonical_json(&e.details),
                        &r.prev_hash,
                        &r.hash,
                    ])
                    .map_err(csv_err)?;
                    count += 1;
                }
                out.flush().map_err(io_err)?;
            }
        }
        drop(rows);
        drop(stmt);
        // Read-only: nothing to commit, ending it releases the snapshot.
        tx.finish().during(label, op)?;
        Ok(count)
    }

    /// Every checkpoint, oldest first: one per pruning, each the seq and hash of the last
    /// record that pruning removed.
    pub fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>> {
        self.all_audit_checkpoints()
    }

    /// Removes the records older than `older_than` from the start of the trail, in one
    /// IMMEDIATE transaction: verifies the trail (and refuses, changing nothing, if it is
    /// broken), writes a checkpoint with the seq and hash of the last record removed, deletes
    /// the records up to it, and appends an `audit.pruned` record by `actor` at `now` stating
    /// how many records were removed, from and up to which seq, and the hash they end with
    /// (plus `note`). Only a prefix is removed: it ends before the first record, in seq order,
    /// that is not older than `older_than`. When nothing is old enough, nothing is written.
    ///
    /// Meant to run on a schedule (e.g. once a day with `older_than = now - retention`);
    /// running it twice in a row removes nothing the second time.
    pub fn prune_audit(
        &mut self,
        older_than: Timestamp,
        now: Timestamp,
        actor: &str,
        note: Option<&str>,
    ) -> Result<PruneReport> {
        let label = &self.label;
        let op = "prune the audit trail";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        require_intact(&tx, label)?;
        let Some((first, last, hash)) = due_prefix(&tx, &older_than).during(label, op)? else {
            let report = PruneReport {
                dry_run: false,
                older_than,
                removed: 0,
                first_removed_seq: None,
                checkpoint: None,
                record: None,
                remaining: count_in(&tx).during(label, op)?,
                oldest_remaining: oldest_timestamp(&tx).during(label, op)?,
            };
            // Nothing was written; ending the transaction releases the lock.
            tx.finish().during(label, op)?;
            return Ok(report);
        };

        let last_sql = u64_to_sql(last).during(label, op)?;
        // A checkpoint at this seq can exist already (imported with a dump); it must then
        // carry the same hash, or the stored trail and its checkpoints disagree.
        tx.execute(
            "INSERT INTO audit_checkpoints (seq, hash, created_at, note) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (seq) DO NOTHING",
            params![last_sql, hash, ts_to_sql(&now), note],
        )
        .during(label, op)?;
        let checkpoint = checkpoint_row_at(&tx, last)
            .during(label, op)?
            .filter(|c| c.hash == hash)
            .ok_or_else(|| StoreError::AuditPruneRefused {
                path: label.clone(),
                reason: format!(
                    "the existing checkpoint at record {last} does not carry that record's hash \
                     {hash}; the checkpoints do not match the trail"
                ),
            })?;
        let removed = tx
            .execute("DELETE FROM audit WHERE seq <= ?1", [last_sql])
            .during(label, op)?;
        let removed = u64::try_from(removed).unwrap_or(u64::MAX);
        let record = append_in(
            &tx,
            label,
            op,
            AuditEvent {
                timestamp: now,
                actor: actor.to_string(),
                action: PRUNED_ACTION.to_string(),
                asset_id: None,
                correlation_id: None,
                details: serde_json::json!({
                    "removed": removed,
                    "first_seq": first,
                    "up_to_seq": last,
                    "up_to_hash": hash,
                    "older_than": audit::canonical_timestamp(&older_than),
                    "note": note,
                }),
            },
        )?;
        let report = PruneReport {
            dry_run: false,
            older_than,
            removed,
            first_removed_seq: Some(first),
            checkpoint: Some(checkpoint),
            record: Some(record),
            remaining: count_in(&tx).during(label, op)?,
            oldest_remaining: oldest_timestamp(&tx).during(label, op)?,
        };
        tx.commit().during(label, op)?;
        Ok(report)
    }

    /// What [`Store::prune_audit`] would remove now, changing nothing. Also refuses a broken
    /// trail. The checkpoint shown carries `now` as its creation time.
    pub fn preview_audit_prune(
        &self,
        older_than: Timestamp,
        now: Timestamp,
        note: Option<&str>,
    ) -> Result<PruneReport> {
        let label = &self.label;
        let op = "preview pruning the audit trail";
        // A read transaction: one consistent snapshot for all the questions below.
        let tx = self.conn.unchecked_transaction().during(label, op)?;
        require_intact(&tx, label)?;
        let total = count_in(&tx).during(label, op)?;
        let due = due_prefix(&tx, &older_than).during(label, op)?;
        let report = match due {
            None => PruneReport {
                dry_run: true,
                older_than,
                removed: 0,
                first_removed_seq: None,
                checkpoint: None,
                record: None,
                remaining: total,
                oldest_remaining: oldest_timestamp(&tx).during(label, op)?,
            },
            Some((first, last, hash)) => {
                let removed = last - first + 1;
                let oldest = match last.checked_add(1) {
                    Some(next) => tx
                        .query_row(
                            "SELECT timestamp FROM audit WHERE seq = ?1",
                            [u64_to_sql(next).during(label, op)?],
                            |row| ts_col(row, 0),
                        )
                        .optional()
                        .during(label, op)?,
                    None => None,
                };
                PruneReport {
                    dry_run: true,
                    older_than,
                    removed,
                    first_removed_seq: Some(first),
                    checkpoint: Some(AuditCheckpoint {
                        seq: last,
                        hash,
                        created_at: now,
                        note: note.map(str::to_string),
                    }),
                    record: None,
                    // The records kept, plus the `audit.pruned` record pruning appends.
                    remaining: total - removed + 1,
                    // When everything goes, the oldest left is the `audit.pruned` record.
                    oldest_remaining: oldest.or(Some(now)),
                }
            }
        };
        tx.finish().during(label, op)?;
        Ok(report)
    }

    /// Verifies the trail like [`Store::verify_audit`] and says which checkpoint it starts
    /// from and which `audit.pruned` record states that checkpoint, all read in one snapshot.
    pub fn verify_audit_trail(&self) -> Result<AuditVerification> {
        let label = &self.label;
        let op = "verify the audit trail";
        let tx = self.conn.unchecked_transaction().during(label, op)?;
        let v = verify_full(&tx, label)?;
        tx.finish().during(label, op)?;
        Ok(v)
    }

    pub(crate) fn all_audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>> {
        let op = "read audit checkpoints";
        let mut stmt = self
            .conn
            .prepare("SELECT seq, hash, created_at, note FROM audit_checkpoints ORDER BY seq")
            .during(&self.label, op)?;
        let rows = stmt
            .query_map([], checkpoint_from_row)
            .during(&self.label, op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .during(&self.label, op)
    }

    pub(crate) fn all_audit_records(&self) -> Result<Vec<AuditRecord>> {
        self.audit_records(0, usize::MAX)
    }
}
