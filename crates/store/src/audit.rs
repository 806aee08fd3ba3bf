//! The audit trail in the database: appending (inside the caller's write transaction),
//! reading, verifying and exporting.
//!
//! The table is append-only: triggers abort any UPDATE or DELETE. That stops mistakes and
//! casual edits through the store; someone with the file can drop the triggers, which is what
//! the hash chain is for: [`Store::verify_audit`] then says where the trail was changed.

use std::io::Write;

use rusqlite::{Connection, OptionalExtension as _, Row, TransactionBehavior, params};
use safe_updater_core::audit::{self, AuditEvent, AuditRecord, ChainHead, Verifier, VerifyReport};

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
        verify_in(&self.conn, &self.label)
    }

    /// Writes the whole trail to `out` in seq order, streaming. Returns how many records were
    /// written. The export is read in one transaction: a consistent snapshot even while
    /// others append.
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
        let mut rows = stmt.query([]).during(label, op)?;
        let mut count = 0u64;
        match format {
            AuditFormat::Jsonl => {
                let mut out = std::io::BufWriter::new(out);
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

    pub(crate) fn all_audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>> {
        let op = "read audit checkpoints";
        let mut stmt = self
            .conn
            .prepare("SELECT seq, hash, created_at, note FROM audit_checkpoints ORDER BY seq")
            .during(&self.label, op)?;
        let rows = stmt
            .query_map([], |row| {
                Ok(AuditCheckpoint {
                    seq: u64_col(row, 0)?,
                    hash: row.get(1)?,
                    created_at: ts_col(row, 2)?,
                    note: row.get(3)?,
                })
            })
            .during(&self.label, op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .during(&self.label, op)
    }

    pub(crate) fn all_audit_records(&self) -> Result<Vec<AuditRecord>> {
        self.audit_records(0, usize::MAX)
    }
}
