//! Operators' per-asset overrides — a pin (a version constraint) and a snooze (no update before
//! a time) — and the read behind the approval queue: the reviews still waiting for a verdict.
//!
//! Every change appends its audit record (actor: the operator) in the same transaction. What
//! this module must not do: judge. It does not check that a constraint parses or that a
//! snooze lies in the future, and it does not decide what an override means for a candidate;
//! the engine validates before storing and the core's `decide` reads the overrides as facts.

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension as _, Row, TransactionBehavior, params};
use safe_updater_core::audit::AuditEvent;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::append_in;
use crate::error::{Context as _, Result, StoreError};
use crate::history::{approval_event, insert_approval};
use crate::types::{Approval, DecisionRecord, Stored, Verdict};
use crate::{Store, opt_ts_col, ts_col, ts_to_sql};

const OVERRIDE_COLUMNS: &str = "asset_id, pin_constraint, pinned_by, pinned_at, snoozed_until, \
     snoozed_by, snoozed_at";

/// An operator's pin: the asset moves only to versions that satisfy `constraint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinOverride {
    /// A Helm/Masterminds constraint (`~1.2`, `>=1.2 <2`), as the operator wrote it.
    pub constraint: String,
    pub by: String,
    pub at: Timestamp,
}

/// An operator's snooze: no update of the asset starts before `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnoozeOverride {
    pub until: Timestamp,
    pub by: String,
    pub at: Timestamp,
}

/// The overrides on one asset. Stored only while at least one part is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetOverrides {
    pub asset_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pin: Option<PinOverride>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub snooze: Option<SnoozeOverride>,
}

fn overrides_from_row(row: &Row<'_>) -> rusqlite::Result<AssetOverrides> {
    let constraint: Option<String> = row.get(1)?;
    let pinned_by: Option<String> = row.get(2)?;
    let pinned_at = opt_ts_col(row, 3)?;
    let until = opt_ts_col(row, 4)?;
    let snoozed_by: Option<String> = row.get(5)?;
    let snoozed_at = opt_ts_col(row, 6)?;
    Ok(AssetOverrides {
        asset_id: row.get(0)?,
        // The table's CHECKs keep each part all-set or all-null.
        pin: match (constraint, pinned_by, pinned_at) {
            (Some(constraint), Some(by), Some(at)) => Some(PinOverride { constraint, by, at }),
            _ => None,
        },
        snooze: match (until, snoozed_by, snoozed_at) {
            (Some(until), Some(by), Some(at)) => Some(SnoozeOverride { until, by, at }),
            _ => None,
        },
    })
}

fn get_in(
    conn: &Connection,
    label: &str,
    op: &'static str,
    asset_id: &str,
) -> Result<Option<AssetOverrides>> {
    conn.prepare_cached(&format!(
        "SELECT {OVERRIDE_COLUMNS} FROM asset_overrides WHERE asset_id = ?1"
    ))
    .and_then(|mut stmt| stmt.query_row([asset_id], overrides_from_row).optional())
    .during(label, op)
}

/// Writes `o` (or deletes its row when it holds nothing).
fn put_in(conn: &Connection, label: &str, op: &'static str, o: &AssetOverrides) -> Result<()> {
    if o.pin.is_none() && o.snooze.is_none() {
        conn.prepare_cached("DELETE FROM asset_overrides WHERE asset_id = ?1")
            .and_then(|mut stmt| stmt.execute([&o.asset_id]))
            .during(label, op)?;
        return Ok(());
    }
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO asset_overrides ({OVERRIDE_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))
    .and_then(|mut stmt| {
        stmt.execute(params![
            o.asset_id,
            o.pin.as_ref().map(|p| &p.constraint),
            o.pin.as_ref().map(|p| &p.by),
            o.pin.as_ref().map(|p| ts_to_sql(&p.at)),
            o.snooze.as_ref().map(|s| ts_to_sql(&s.until)),
            o.snooze.as_ref().map(|s| &s.by),
            o.snooze.as_ref().map(|s| ts_to_sql(&s.at)),
        ])
    })
    .during(label, op)?;
    Ok(())
}

pub(crate) fn insert_overrides(
    conn: &Connection,
    label: &str,
    op: &'static str,
    o: &AssetOverrides,
) -> Result<()> {
    put_in(conn, label, op, o)
}

impl Store {
    /// Reads the asset's overrides, changes them with `change` (which returns the audit
    /// action and details, or `None` to leave everything as it was), writes them back and
    /// appends the audit record, all in one transaction. Returns what `change` returned.
    fn change_overrides(
        &mut self,
        op: &'static str,
        asset_id: &str,
        operator: &str,
        at: Timestamp,
        change: impl FnOnce(&mut AssetOverrides) -> Option<(&'static str, serde_json::Value)>,
    ) -> Result<bool> {
        let label = &self.label;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        let mut o = get_in(&tx, label, op, asset_id)?.unwrap_or_else(|| AssetOverrides {
            asset_id: asset_id.to_owned(),
            pin: None,
            snooze: None,
        });
        let Some((action, details)) = change(&mut o) else {
            return Ok(false);
        };
        put_in(&tx, label, op, &o)?;
        append_in(
            &tx,
            label,
            op,
            AuditEvent {
                timestamp: at,
                actor: operator.to_owned(),
                action: action.to_owned(),
                asset_id: Some(asset_id.to_owned()),
                correlation_id: None,
                details,
            },
        )?;
        tx.commit().during(label, op)?;
        Ok(true)
    }

    /// Pins the asset to `constraint` (replacing any pin), with the audit event `pin`. The
    /// caller checks that the constraint parses.
    pub fn set_pin(
        &mut self,
        asset_id: &str,
        constraint: &str,
        operator: &str,
        at: Timestamp,
    ) -> Result<()> {
        self.change_overrides("pin an asset", asset_id, operator, at, |o| {
            let previous = o.pin.take().map(|p| p.constraint);
            o.pin = Some(PinOverride {
                constraint: constraint.to_owned(),
                by: operator.to_owned(),
                at,
            });
            Some((
                "pin",
                json!({ "constraint": constraint, "previous": previous }),
            ))
        })
        .map(|_| ())
    }

    /// Removes the asset's pin, with the audit event `unpin`. Returns the pin removed; `None`
    /// (and nothing recorded) when there was none.
    pub fn clear_pin(
        &mut self,
        asset_id: &str,
        operator: &str,
        at: Timestamp,
    ) -> Result<Option<PinOverride>> {
        let mut removed = None;
        self.change_overrides("unpin an asset", asset_id, operator, at, |o| {
            let pin = o.pin.take()?;
            let details = json!({ "constraint": pin.constraint, "pinned_by": pin.by });
            removed = Some(pin);
            Some(("unpin", details))
        })?;
        Ok(removed)
    }

    /// Snoozes the asset's updates until `until` (replacing any snooze), with the audit event
    /// `snooze`. The caller checks that `until` is in the future.
    pub fn set_snooze(
        &mut self,
        asset_id: &str,
        until: Timestamp,
        operator: &str,
        at: Timestamp,
    ) -> Result<()> {
        self.change_overrides("snooze an asset", asset_id, operator, at, |o| {
            let previous = o.snooze.take().map(|s| ts_to_sql(&s.until));
            o.snooze = Some(SnoozeOverride {
                until,
                by: operator.to_owned(),
                at,
            });
            Some((
                "snooze",
                json!({ "until": ts_to_sql(&until), "previous": previous }),
            ))
        })
        .map(|_| ())
    }

    /// Ends the asset's snooze, with the audit event `unsnooze`. Returns the snooze removed;
    /// `None` (and nothing recorded) when there was none.
    pub fn clear_snooze(
        &mut self,
        asset_id: &str,
        operator: &str,
        at: Timestamp,
    ) -> Result<Option<SnoozeOverride>> {
        let mut removed = None;
        self.change_overrides("unsnooze an asset", asset_id, operator, at, |o| {
            let snooze = o.snooze.take()?;
            let details = json!({
                "until": ts_to_sql(&snooze.until),
                "snoozed_by": snooze.by,
            });
            removed = Some(snooze);
            Some(("unsnooze", details))
        })?;
        Ok(removed)
    }

    /// The asset's overrides, `None` when it has none.
    pub fn overrides(&self, asset_id: &str) -> Result<Option<AssetOverrides>> {
        get_in(&self.conn, &self.label, "read overrides", asset_id)
    }

    /// Every asset's overrides, by asset id.
    pub fn all_overrides(&self) -> Result<Vec<AssetOverrides>> {
        self.collect_all(
            &format!("SELECT {OVERRIDE_COLUMNS} FROM asset_overrides ORDER BY asset_id"),
            "read overrides",
            overrides_from_row,
        )
    }

    /// Records an operator's verdict exactly like [`Store::record_approval`] (same row, same
    /// audit event), but only when this candidate of this asset has no verdict yet: the check
    /// and the write share one transaction, so two operators answering the same review at once
    /// cannot both win. Returns `Ok(None)` when recorded, or the verdict already on record
    /// (and writes nothing).
    pub fn record_approval_if_undecided(
        &mut self,
        approval: &Approval,
    ) -> Result<Option<Approval>> {
        let label = &self.label;
        let op = "record an approval";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        let existing = tx
            .prepare_cached(
                "SELECT verdict, operator, reason, at, origin FROM approvals
                 WHERE asset_id = ?1 AND candidate = ?2 ORDER BY at DESC, id DESC LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([&approval.asset_id, &approval.candidate], |row| {
                    let verdict: String = row.get(0)?;
                    Ok((
                        verdict,
                        row.get(1)?,
                        row.get(2)?,
                        ts_col(row, 3)?,
                        crate::history::origin_col(row, 4)?,
                    ))
                })
                .optional()
            })
            .during(label, op)?;
        if let Some((verdict, operator, reason, at, origin)) = existing {
            let verdict = Verdict::parse(&verdict).ok_or_else(|| StoreError::Sqlite {
                path: label.clone(),
                op,
                source: rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    format!("unknown verdict {verdict:?}").into(),
                ),
            })?;
            return Ok(Some(Approval {
                asset_id: approval.asset_id.clone(),
                candidate: approval.candidate.clone(),
                verdict,
                operator,
                reason,
                at,
                origin,
            }));
        }
        let id = insert_approval(&tx, label, op, None, approval)?;
        append_in(&tx, label, op, approval_event(id, approval))?;
        tx.commit().during(label, op)?;
        Ok(None)
    }

    /// The approval queue as recorded: for each (asset, candidate) whose latest decision is
    /// `pending_review` and that no operator has approved or rejected yet, that decision with
    /// its id; oldest first. Whether the candidate is still newer than what runs is the
    /// caller's question.
    pub fn pending_reviews(&self) -> Result<Vec<Stored<DecisionRecord>>> {
        self.pending_reviews_page(None, None)
    }

    /// [`Store::pending_reviews`] one page at a time: at most `limit` (all when `None`) whose
    /// decision id is above `after`. Pass the last id of a page to get the next; a page
    /// shorter than `limit` is the last.
    pub fn pending_reviews_page(
        &self,
        after: Option<i64>,
        limit: Option<usize>,
    ) -> Result<Vec<Stored<DecisionRecord>>> {
        let op = "read pending reviews";
        let limit = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT d.id, d.asset_id, d.at, d.actor, d.current, d.candidate, d.change, d.gate,
                    d.decision, d.rule, d.reason, d.correlation_id
             FROM decisions d
             WHERE d.id > ?1 AND d.decision = 'pending_review' AND d.candidate IS NOT NULL
               AND d.id = (SELECT max(x.id) FROM decisions x
                           WHERE x.asset_id = d.asset_id AND x.candidate = d.candidate)
               AND NOT EXISTS (SELECT 1 FROM approvals a
                               WHERE a.asset_id = d.asset_id AND a.candidate = d.candidate)
             ORDER BY d.id
             LIMIT ?2",
            )
            .during(&self.label, op)?;
        let rows = stmt
            .query_map(params![after.unwrap_or(0), limit], |row| {
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
            })
            .during(&self.label, op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .during(&self.label, op)
    }
}
