//! The daemon's work queue, the record of "approval needed" notices, and updates a crash cut
//! short.
//!
//! An entry moves `queued → in_flight → done | dropped`; every move is one statement guarded by
//! the state it leaves, so two workers (or a worker and a restart) can never both claim an
//! entry, and an entry is finished once. At most one entry per asset is open (queued or in
//! flight): a newer target supersedes a queued one; an entry in flight is never touched by
//! enqueueing. A process killed mid-update leaves its entry in flight; [`Store::requeue_in_flight`]
//! at the next start puts it back.
//!
//! What this module must not do: decide. Whether an entry may run now (windows, approvals,
//! pins) is the engine's question, asked afresh before each claim; the queue only remembers
//! what was found eligible and what became of it. Queue moves are scheduling state, not
//! audited facts: the update they lead to is audited by `begin_update`/`finish_update`.

use jiff::Timestamp;
use rusqlite::{OptionalExtension as _, Row, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::error::{Context as _, Result};
use crate::{Store, UpdateId, limit_to_sql, opt_ts_col, ts_col, ts_to_sql};

/// After this many interruptions of the same target, it counts as failed after all.
pub const INTERRUPTIONS_BEFORE_FAILED: i64 = 3;

/// Where a queue entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueState {
    Queued,
    InFlight,
    Done,
    Dropped,
}

impl QueueState {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Queued => "queued",
            QueueState::InFlight => "in_flight",
            QueueState::Done => "done",
            QueueState::Dropped => "dropped",
        }
    }

    pub fn parse(s: &str) -> Option<QueueState> {
        Some(match s {
            "queued" => QueueState::Queued,
            "in_flight" => QueueState::InFlight,
            "done" => QueueState::Done,
            "dropped" => QueueState::Dropped,
            _ => return None,
        })
    }
}

impl std::fmt::Display for QueueState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an entry ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueEnd {
    /// The update ran (whatever its outcome).
    Done,
    /// It will not run: policy no longer allows it, or it is moot.
    Dropped,
}

/// Work to queue: move `asset_id` to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQueueEntry {
    pub asset_id: String,
    /// The tag (or digest) to move to.
    pub target: String,
    /// `patch`, `minor`, `major`, `digest`...
    pub change: String,
    /// Why it is queued: `auto` (policy approves it), `approved` (an operator did), `webhook`.
    pub reason: String,
    /// Higher first.
    pub priority: i64,
    pub correlation_id: Option<String>,
}

/// A stored queue entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub id: i64,
    pub asset_id: String,
    pub target: String,
    pub change: String,
    pub reason: String,
    pub priority: i64,
    pub enqueued_at: Timestamp,
    pub state: QueueState,
    /// How many times a worker claimed it.
    pub attempts: u32,
    pub claimed_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// For `done`: how the update ended (`succeeded`, `rolled_back`, `failed`, `skipped`).
    pub outcome: Option<String>,
    pub detail: Option<String>,
    pub correlation_id: Option<String>,
}

/// What [`Store::enqueue`] did with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new entry with this id.
    Added(i64),
    /// The same target was already queued (or in flight) under this id; its priority and
    /// reason were brought up to date if it was still queued.
    Present(i64),
    /// A new entry replaced a queued one for an older target (dropped as superseded).
    Superseded { dropped: i64, added: i64 },
    /// Another target of the asset is in flight; nothing was queued.
    Busy(i64),
}

const COLUMNS: &str = "id, asset_id, target, change, reason, priority, enqueued_at, state, \
     attempts, claimed_at, finished_at, outcome, detail, correlation_id";

fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<QueueEntry> {
    let state: String = row.get(7)?;
    let state = QueueState::parse(&state).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            7,
            rusqlite::types::Type::Text,
            format!("unknown queue state {state:?}").into(),
        )
    })?;
    let attempts: i64 = row.get(8)?;
    Ok(QueueEntry {
        id: row.get(0)?,
        asset_id: row.get(1)?,
        target: row.get(2)?,
        change: row.get(3)?,
        reason: row.get(4)?,
        priority: row.get(5)?,
        enqueued_at: ts_col(row, 6)?,
        state,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        claimed_at: opt_ts_col(row, 9)?,
        finished_at: opt_ts_col(row, 10)?,
        outcome: row.get(11)?,
        detail: row.get(12)?,
        correlation_id: row.get(13)?,
    })
}

impl Store {
    /// Queues each entry (all in one transaction), keeping at most one open entry per asset.
    /// Returns what happened to each, in order.
    pub fn enqueue(&mut self, entries: &[NewQueueEntry], now: Timestamp) -> Result<Vec<Enqueued>> {
        let label = &self.label;
        let op = "enqueue updates";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        let mut out = Vec::with_capacity(entries.len());
        let at = ts_to_sql(&now);
        for e in entries {
            let open: Option<(i64, String, String)> = tx
                .prepare_cached(
                    "SELECT id, target, state FROM update_queue
                     WHERE asset_id = ?1 AND state IN ('queued', 'in_flight')",
                )
                .and_then(|mut s| {
                    s.query_row([&e.asset_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()
                })
                .during(label, op)?;
            let mut dropped = None;
            match open {
                Some((id, target, state)) if target == e.target => {
                    if state == "queued" {
                        tx.prepare_cached(
                            "UPDATE update_queue SET priority = ?2, reason = ?3
                             WHERE id = ?1 AND state = 'queued'",
                        )
                        .and_then(|mut s| s.execute(params![id, e.priority, e.reason]))
                        .during(label, op)?;
                    }
                    out.push(Enqueued::Present(id));
                    continue;
                }
                Some((id, _, state)) if state == "in_flight" => {
                    out.push(Enqueued::Busy(id));
                    continue;
                }
                Some((id, _, _)) => {
                    tx.prepare_cached(
                        "UPDATE update_queue SET state = 'dropped', finished_at = ?2,
                             detail = ?3
                         WHERE id = ?1 AND state = 'queued'",
                    )
                    .and_then(|mut s| {
                        s.execute(params![id, at, format!("superseded by {}", e.target)])
                    })
                    .during(label, op)?;
                    dropped = Some(id);
                }
                None => {}
            }
            tx.prepare_cached(
                "INSERT INTO update_queue (asset_id, target, change, reason, priority,
                     enqueued_at, state, correlation_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    e.asset_id,
                    e.target,
                    e.change,
                    e.reason,
                    e.priority,
                    at,
                    e.correlation_id
                ])
            })
            .during(label, op)?;
            let added = tx.last_insert_rowid();
            out.push(match dropped {
                Some(dropped) => Enqueued::Superseded { dropped, added },
                None => Enqueued::Added(added),
            });
        }
        tx.commit().during(label, op)?;
        Ok(out)
    }

    /// Claims a queued entry for a worker: `queued → in_flight`, attempts + 1. `false` when it
    /// is no longer queued (another worker has it, or it was dropped).
    pub fn claim_queued(&mut self, id: i64, now: Timestamp) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE update_queue SET state = 'in_flight', attempts = attempts + 1,
                     claimed_at = ?2
                 WHERE id = ?1 AND state = 'queued'",
            )
            .and_then(|mut s| s.execute(params![id, ts_to_sql(&now)]))
            .during(&self.label, "claim a queue entry")?;
        Ok(n == 1)
    }

    /// Puts a claimed entry back in the queue (the worker could not start it after all).
    /// `false` when it was not in flight.
    pub fn release_claim(&mut self, id: i64, detail: &str) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE update_queue SET state = 'queued', detail = ?2
                 WHERE id = ?1 AND state = 'in_flight'",
            )
            .and_then(|mut s| s.execute(params![id, detail]))
            .during(&self.label, "release a queue entry")?;
        Ok(n == 1)
    }

    /// Puts an entry in flight back in the queue without counting the attempt: it never
    /// began (another process was updating the asset). Returns whether it was in flight.
    pub fn unclaim(&mut self, id: i64, detail: &str) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE update_queue SET state = 'queued', detail = ?2,
                     attempts = max(attempts - 1, 0)
                 WHERE id = ?1 AND state = 'in_flight'",
            )
            .and_then(|mut s| s.execute(params![id, detail]))
            .during(&self.label, "put a queue entry back")?;
        Ok(n == 1)
    }

    /// Finishes an entry, queued or in flight, as `done` (with how the update ended) or
    /// `dropped` (with why). `false` when it was already finished: the first end stands.
    pub fn finish_queued(
        &mut self,
        id: i64,
        end: QueueEnd,
        outcome: Option<&str>,
        detail: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        let op = "finish a queue entry";
        let state = match end {
            QueueEnd::Done => QueueState::Done,
            QueueEnd::Dropped => QueueState::Dropped,
        };
        let n = self
            .conn
            .prepare_cached(
                "UPDATE update_queue SET state = ?2, outcome = ?3, detail = ?4, finished_at = ?5
                 WHERE id = ?1 AND state IN ('queued', 'in_flight')",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    state.as_str(),
                    outcome,
                    detail,
                    ts_to_sql(&now)
                ])
            })
            .during(&self.label, op)?;
        Ok(n == 1)
    }

    /// At start: every entry left in flight by a process that died goes back to the queue.
    /// Returns those entries (as they are now).
    pub fn requeue_in_flight(&mut self) -> Result<Vec<QueueEntry>> {
        let label = &self.label;
        let op = "requeue interrupted entries";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        let ids: Vec<i64> = {
            let mut s = tx
                .prepare("SELECT id FROM update_queue WHERE state = 'in_flight' ORDER BY id")
                .during(label, op)?;
            let rows = s.query_map([], |r| r.get(0)).during(label, op)?;
            rows.collect::<rusqlite::Result<_>>().during(label, op)?
        };
        let mut requeued = Vec::with_capacity(ids.len());
        for id in ids {
            tx.prepare_cached(
                "UPDATE update_queue SET state = 'queued',
                     detail = 'interrupted: the process stopped while it was in flight'
                 WHERE id = ?1 AND state = 'in_flight'",
            )
            .and_then(|mut s| s.execute([id]))
            .during(label, op)?;
            let entry = tx
                .prepare_cached(&format!("SELECT {COLUMNS} FROM update_queue WHERE id = ?1"))
                .and_then(|mut s| s.query_row([id], entry_from_row))
                .during(label, op)?;
            requeued.push(entry);
        }
        tx.commit().during(label, op)?;
        Ok(requeued)
    }

    /// The open entries (queued and in flight), by priority (higher first), then oldest first.
    pub fn open_queue(&self) -> Result<Vec<QueueEntry>> {
        self.collect_all(
            &format!(
                "SELECT {COLUMNS} FROM update_queue WHERE state IN ('queued', 'in_flight')
                 ORDER BY priority DESC, id"
            ),
            "read the queue",
            entry_from_row,
        )
    }

    /// The latest `limit` entries in any state, newest first (for listings).
    pub fn queue_entries(&self, limit: usize) -> Result<Vec<QueueEntry>> {
        let op = "read the queue";
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM update_queue ORDER BY id DESC LIMIT ?1"
            ))
            .during(&self.label, op)?;
        let rows = stmt
            .query_map([limit_to_sql(limit)], entry_from_row)
            .during(&self.label, op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .during(&self.label, op)
    }

    /// One entry by id.
    pub fn queue_entry(&self, id: i64) -> Result<Option<QueueEntry>> {
        self.conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM update_queue WHERE id = ?1"))
            .and_then(|mut s| s.query_row([id], entry_from_row).optional())
            .during(&self.label, "read a queue entry")
    }

    /// Records that "approval needed" was announced for each (asset, candidate) not announced
    /// before, in one transaction. Returns, for each pair in order, whether it is new (and so
    /// should be announced now). Kept across restarts: a review is announced once.
    pub fn mark_reviews_notified(
        &mut self,
        reviews: &[(String, String)],
        now: Timestamp,
    ) -> Result<Vec<bool>> {
        let label = &self.label;
        let op = "record review notices";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        let at = ts_to_sql(&now);
        let mut out = Vec::with_capacity(reviews.len());
        for (asset, candidate) in reviews {
            let n = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO review_notices (asset_id, candidate, notified_at)
                     VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut s| s.execute(params![asset, candidate, at]))
                .during(label, op)?;
            out.push(n == 1);
        }
        tx.commit().during(label, op)?;
        Ok(out)
    }

    /// Marks an update (finished by recovery) as cut short by a crash rather than failed by
    /// its target: see [`Store::failed_targets`].
    pub fn mark_interrupted(&mut self, id: UpdateId) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO interrupted_updates (update_id) VALUES (?1)")
            .and_then(|mut s| s.execute([id.0]))
            .during(&self.label, "mark an update interrupted")?;
        Ok(())
    }

    /// Every queue entry, oldest first (for the state dump).
    pub(crate) fn all_queue_entries(&self) -> Result<Vec<QueueEntry>> {
        self.collect_all(
            &format!("SELECT {COLUMNS} FROM update_queue ORDER BY id"),
            "read the queue",
            entry_from_row,
        )
    }

    /// Every review announced, by asset and candidate (for the state dump).
    pub(crate) fn all_review_notices(&self) -> Result<Vec<ReviewNotice>> {
        self.collect_all(
            "SELECT asset_id, candidate, notified_at FROM review_notices \
             ORDER BY asset_id, candidate",
            "read review notices",
            |row| {
                Ok(ReviewNotice {
                    asset_id: row.get(0)?,
                    candidate: row.get(1)?,
                    notified_at: ts_col(row, 2)?,
                })
            },
        )
    }

    /// The ids of the updates a crash cut short (for the state dump).
    pub(crate) fn all_interrupted_updates(&self) -> Result<Vec<i64>> {
        self.collect_all(
            "SELECT update_id FROM interrupted_updates ORDER BY update_id",
            "read interrupted updates",
            |row| row.get(0),
        )
    }
}

/// A review announced to the notification channels ("approval needed"), once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewNotice {
    pub asset_id: String,
    pub candidate: String,
    pub notified_at: Timestamp,
}

/// Restores the queue, notices and interruptions of a dump inside its import transaction.
pub(crate) fn insert_scheduling_state(
    tx: &rusqlite::Transaction<'_>,
    label: &str,
    op: &'static str,
    queue: &[QueueEntry],
    notices: &[ReviewNotice],
    interrupted: &[i64],
) -> Result<()> {
    for e in queue {
        tx.prepare_cached(&format!(
            "INSERT INTO update_queue ({COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ))
        .and_then(|mut stmt| {
            stmt.execute(params![
                e.id,
                e.asset_id,
                e.target,
                e.change,
                e.reason,
                e.priority,
                ts_to_sql(&e.enqueued_at),
                e.state.as_str(),
                i64::from(e.attempts),
                e.claimed_at.as_ref().map(ts_to_sql),
                e.finished_at.as_ref().map(ts_to_sql),
                e.outcome,
                e.detail,
                e.correlation_id,
            ])
        })
        .during(label, op)?;
    }
    for n in notices {
        tx.prepare_cached(
            "INSERT INTO review_notices (asset_id, candidate, notified_at) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![n.asset_id, n.candidate, ts_to_sql(&n.notified_at)])
        })
        .during(label, op)?;
    }
    for id in interrupted {
        tx.prepare_cached("INSERT INTO interrupted_updates (update_id) VALUES (?1)")
            .and_then(|mut stmt| stmt.execute([id]))
            .during(label, op)?;
    }
    Ok(())
}
