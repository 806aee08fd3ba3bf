//! Statistics, and the whole state as one serde value for backup and restore.

use std::collections::BTreeMap;

use rusqlite::{TransactionBehavior, params};
use safe_updater_core::audit::{ChainHead, Verifier};

use crate::assets::{ASSET_COLUMNS, asset_from_row, upsert_asset};
use crate::audit::{head_in, insert_record, verify_in};
use crate::error::{Context as _, Result, StoreError};
use crate::history::{insert_approval, insert_decision, insert_update};
use crate::migrations::SCHEMA_VERSION;
use crate::types::{DUMP_FORMAT_VERSION, StateDump, Stats, Verdict};
use crate::{Store, ts_to_sql, u64_to_sql};

/// Every table holding state, children before parents (the order to empty them in).
const STATE_TABLES: [&str; 12] = [
    "interrupted_updates",
    "review_notices",
    "update_queue",
    "asset_overrides",
    "update_snapshots",
    "updates",
    "decisions",
    "approvals",
    "observed_tags",
    "assets",
    "audit_checkpoints",
    "audit",
];

impl Store {
    /// A summary of what the store holds, read in one consistent snapshot.
    pub fn stats(&self) -> Result<Stats> {
        let label = &self.label;
        let op = "compute statistics";
        let tx = self.conn.unchecked_transaction().during(label, op)?;
        let grouped = |sql: &str| -> Result<BTreeMap<String, u64>> {
            self.collect_all(sql, op, |row| Ok((row.get(0)?, crate::u64_col(row, 1)?)))
                .map(|rows| rows.into_iter().collect())
        };
        let assets_by_kind = grouped("SELECT kind, count(*) FROM assets GROUP BY kind")?;
        let updates_by_status = grouped("SELECT status, count(*) FROM updates GROUP BY status")?;
        let verdicts = grouped("SELECT verdict, count(*) FROM approvals GROUP BY verdict")?;
        let stats = Stats {
            schema_version: self.schema_version()?,
            assets: assets_by_kind.values().sum(),
            assets_by_kind,
            observed_tags: self.count("SELECT count(*) FROM observed_tags", op)?,
            decisions: self.count("SELECT count(*) FROM decisions", op)?,
            approvals: verdicts
                .get(Verdict::Approved.as_str())
                .copied()
                .unwrap_or(0),
            rejections: verdicts
                .get(Verdict::Rejected.as_str())
                .copied()
                .unwrap_or(0),
            updates_in_progress: updates_by_status.get("in_progress").copied().unwrap_or(0),
            updates_by_status,
            audit_len: self.audit_len()?,
            audit_head: head_in(&tx).during(label, op)?,
            file_size_bytes: self
                .path
                .as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len()),
            wal_size_bytes: self
                .path
                .as_ref()
                .and_then(|p| {
                    let mut wal = p.as_os_str().to_owned();
                    wal.push("-wal");
                    std::fs::metadata(wal).ok()
                })
                .map(|m| m.len()),
        };
        tx.finish().during(label, op)?;
        Ok(stats)
    }

    /// Everything in the store, read in one consistent snapshot. Holds it all in memory.
    pub fn export_state(&self) -> Result<StateDump> {
        let label = &self.label;
        let op = "export the state";
        let tx = self.conn.unchecked_transaction().during(label, op)?;
        let dump = StateDump {
            format_version: DUMP_FORMAT_VERSION,
            schema_version: self.schema_version()?,
            assets: self.collect_all(
                &format!("SELECT {ASSET_COLUMNS} FROM assets ORDER BY id"),
                op,
                asset_from_row,
            )?,
            observed_tags: self.all_observed_tags()?,
            decisions: self.all_decisions()?,
            approvals: self.all_approvals()?,
            updates: self.all_updates()?,
            overrides: self.all_overrides()?,
            queue: self.all_queue_entries()?,
            review_notices: self.all_review_notices()?,
            interrupted_updates: self.all_interrupted_updates()?,
            audit_checkpoints: self.all_audit_checkpoints()?,
            audit: self.all_audit_records()?,
        };
        tx.finish().during(label, op)?;
        Ok(dump)
    }

    /// Loads a dump, in one transaction: all of it or nothing.
    ///
    /// The dump's audit trail is verified first and a broken one is refused. Without
    /// `replace`, the store must be empty. With `replace`, the current state is replaced, but
    /// audit records are never discarded: the current trail must verify and be a prefix of
    /// the dump's (the dump's later records are appended); otherwise import into a new file.
    ///
    /// The import itself is not recorded in the trail (so that exporting again gives the same
    /// dump); the caller may append an `import` event afterwards.
    pub fn import_state(&mut self, dump: &StateDump, replace: bool) -> Result<()> {
        let label = &self.label;
        let op = "import the state";
        if dump.format_version != DUMP_FORMAT_VERSION {
            return Err(StoreError::UnsupportedDumpFormat {
                path: label.clone(),
                found: dump.format_version,
                supported: DUMP_FORMAT_VERSION,
            });
        }
        if dump.schema_version > SCHEMA_VERSION {
            return Err(StoreError::DumpSchemaTooNew {
                path: label.clone(),
                found: dump.schema_version,
                known: SCHEMA_VERSION,
            });
        }
        let first_seq = dump.audit.first().map(|r| r.seq);
        let anchor = match first_seq {
            Some(first) if first > 1 => dump
                .audit_checkpoints
                .iter()
                .find(|c| c.seq == first - 1)
                .map(|c| ChainHead {
                    seq: c.seq,
                    hash: c.hash.clone(),
                }),
            _ => None,
        };
        let mut verifier = Verifier::new(anchor);
        for record in &dump.audit {
            if !verifier.push(record) {
                break;
            }
        }
        if let Some(problem) = verifier.finish().problem {
            return Err(StoreError::BrokenDumpAudit {
                path: label.clone(),
                problem,
            });
        }

        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        let mut rows = 0u64;
        for table in STATE_TABLES {
            rows += tx
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                    crate::u64_col(row, 0)
                })
                .during(label, op)?;
        }
        // Audit records up to this seq are already in the store.
        let mut keep_audit_up_to = 0u64;
        if rows > 0 {
            if !replace {
                return Err(StoreError::ImportIntoNonEmpty {
                    path: label.clone(),
                });
            }
            let current = verify_in(&tx, label)?;
            if let Some(problem) = &current.problem {
                return Err(StoreError::ReplaceWouldLoseAudit {
                    path: label.clone(),
                    reason: format!(
                        "the current audit trail is broken at record {} ({}), and its records \
                         cannot be replaced",
                        problem.seq, problem.message
                    ),
                });
            }
            let existing: Option<i64> = tx
                .query_row("SELECT max(seq) FROM audit", [], |row| row.get(0))
                .during(label, op)?;
            if existing.is_some()
                && let Some(head) = current.head
            {
                let in_dump = dump.audit.iter().find(|r| r.seq == head.seq);
                if in_dump.map(|r| &r.hash) != Some(&head.hash) {
                    return Err(StoreError::ReplaceWouldLoseAudit {
                        path: label.clone(),
                        reason: format!(
                            "the dump's audit trail does not contain the store's record {} \
                             (hash {})",
                            head.seq, head.hash
                        ),
                    });
                }
                keep_audit_up_to = head.seq;
            }
            // Checkpoints are append-only like the trail (the kept records may start after
            // one); the dump's are added below.
            for table in STATE_TABLES
                .iter()
                .filter(|t| **t != "audit" && **t != "audit_checkpoints")
            {
                tx.execute(&format!("DELETE FROM {table}"), [])
                    .during(label, op)?;
            }
        }

        for asset in &dump.assets {
            upsert_asset(&tx, label, op, asset, false)?;
        }
        for t in &dump.observed_tags {
            tx.prepare_cached(
                "INSERT INTO observed_tags
                     (repository, tag, digest, first_seen, last_seen, digest_first_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    t.repository,
                    t.tag.tag,
                    t.tag.digest,
                    ts_to_sql(&t.tag.first_seen),
                    ts_to_sql(&t.tag.last_seen),
                    ts_to_sql(&t.tag.digest_first_seen),
                ])
            })
            .during(label, op)?;
        }
        for d in &dump.decisions {
            insert_decision(&tx, label, op, Some(d.id), &d.record)?;
        }
        for a in &dump.approvals {
            insert_approval(&tx, label, op, Some(a.id), &a.record)?;
        }
        for u in &dump.updates {
            insert_update(&tx, label, op, &u.update, u.snapshot.as_ref())?;
        }
        for o in &dump.overrides {
            crate::overrides::insert_overrides(&tx, label, op, o)?;
        }
        crate::queue::insert_scheduling_state(
            &tx,
            label,
            op,
            &dump.queue,
            &dump.review_notices,
            &dump.interrupted_updates,
        )?;
        for c in &dump.audit_checkpoints {
            let added = tx
                .execute(
                    "INSERT INTO audit_checkpoints (seq, hash, created_at, note)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (seq) DO NOTHING",
                    params![
                        u64_to_sql(c.seq).during(label, op)?,
                        c.hash,
                        ts_to_sql(&c.created_at),
                        c.note
                    ],
                )
                .during(label, op)?;
            if added == 0 {
                let kept: String = tx
                    .query_row(
                        "SELECT hash FROM audit_checkpoints WHERE seq = ?1",
                        [u64_to_sql(c.seq).during(label, op)?],
                        |row| row.get(0),
                    )
                    .during(label, op)?;
                if kept != c.hash {
                    return Err(StoreError::ReplaceWouldLoseAudit {
                        path: label.clone(),
                        reason: format!(
                            "the dump's audit checkpoint at record {} differs from the store's",
                            c.seq
                        ),
                    });
                }
            }
        }
        for record in dump.audit.iter().filter(|r| r.seq > keep_audit_up_to) {
            insert_record(&tx, label, op, record)?;
        }
        tx.commit().during(label, op)
    }
}
