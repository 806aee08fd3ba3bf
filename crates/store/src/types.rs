//! The records the store keeps. Plain data: the engine fills them in, the store keeps them.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::audit::{AuditRecord, ChainHead};
pub use safe_updater_core::lease::Owner;
use serde::{Deserialize, Serialize};

/// Which assets [`crate::Store::list_assets`] returns. Every field left `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetFilter {
    pub kind: Option<AssetKind>,
    pub namespace: Option<String>,
    pub location: Option<String>,
    /// Part of the name, case-insensitive for ASCII letters.
    pub name_contains: Option<String>,
}

/// A tag seen in a registry listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedTagInput {
    pub tag: String,
    /// `None` when the listing did not say; an unknown digest never replaces a known one.
    pub digest: Option<String>,
}

/// What the store knows about a tag of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedTag {
    pub tag: String,
    pub digest: Option<String>,
    /// When the tag was first seen; kept on every later observation (release cooldown).
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// When the current digest was first seen: equals `first_seen` unless the tag was
    /// re-pushed with different content, which a cooldown may treat as a new release.
    pub digest_first_seen: Timestamp,
}

/// A decision of the engine about one asset, stored as it explained it (plain strings: the
/// store does not interpret them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub asset_id: String,
    pub at: Timestamp,
    /// Who ran the evaluation (`daemon`, `cli:alice`); the actor of the audit event.
    pub actor: String,
    /// The version running now.
    pub current: String,
    /// The version considered, if any.
    pub candidate: Option<String>,
    /// The kind of change (`patch`, `minor`, `digest`, ...).
    pub change: String,
    /// The gate that applied (`auto`, `approval`, `never`, ...).
    pub gate: String,
    /// The outcome (`update`, `hold`, `wait`, `skip`, ...).
    pub decision: String,
    /// The policy rule that matched, if any.
    pub rule: Option<String>,
    pub reason: String,
    pub correlation_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approved,
    Rejected,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approved => "approved",
            Verdict::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        match s {
            "approved" => Some(Verdict::Approved),
            "rejected" => Some(Verdict::Rejected),
            _ => None,
        }
    }

    /// The audit action recording this verdict.
    pub fn audit_action(self) -> &'static str {
        match self {
            Verdict::Approved => "approval",
            Verdict::Rejected => "rejection",
        }
    }
}

/// What recorded an operator's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalOrigin {
    /// The answer to a pending review: the first verdict stands.
    #[default]
    Review,
    /// `skip`: a version rejected outright.
    Skip,
    /// `rollback`: the version an operator rolled the asset away from.
    Rollback,
    /// `update --to`: the operator named the version.
    Update,
}

impl ApprovalOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalOrigin::Review => "review",
            ApprovalOrigin::Skip => "skip",
            ApprovalOrigin::Rollback => "rollback",
            ApprovalOrigin::Update => "update",
        }
    }

    pub fn parse(s: &str) -> Option<ApprovalOrigin> {
        Some(match s {
            "review" => ApprovalOrigin::Review,
            "skip" => ApprovalOrigin::Skip,
            "rollback" => ApprovalOrigin::Rollback,
            "update" => ApprovalOrigin::Update,
            _ => return None,
        })
    }

    /// Whether an operator's explicit approval may lift a rejection of this origin (a review's
    /// answer stands: two operators answering at once must not overrule each other).
    pub fn may_be_lifted(self) -> bool {
        matches!(self, ApprovalOrigin::Skip | ApprovalOrigin::Rollback)
    }
}

/// An operator's verdict on a candidate version of an asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub asset_id: String,
    pub candidate: String,
    pub verdict: Verdict,
    /// Who decided (`cli:alice`, `api:bob`); the actor of the audit event.
    pub operator: String,
    pub reason: Option<String>,
    pub at: Timestamp,
    /// What recorded it (dumps of earlier releases: `review`).
    #[serde(default)]
    pub origin: ApprovalOrigin,
}

/// The id of an update attempt. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UpdateId(pub i64);

impl fmt::Display for UpdateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the caller is about to change, and what it needs to undo it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateStart {
    pub asset_id: String,
    pub from_ref: String,
    pub to_ref: String,
    /// Whatever the adapter needs to roll back (previous spec, image, values...). Opaque here.
    pub snapshot: serde_json::Value,
    pub correlation_id: Option<String>,
    pub actor: String,
    pub at: Timestamp,
}

/// How an update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateOutcome {
    Succeeded,
    Failed,
    /// The update was undone from its snapshot.
    RolledBack,
    /// The update failed and could not be undone: the asset is left for a person.
    Frozen,
}

impl UpdateOutcome {
    pub fn status(self) -> UpdateStatus {
        match self {
            UpdateOutcome::Succeeded => UpdateStatus::Succeeded,
            UpdateOutcome::Failed => UpdateStatus::Failed,
            UpdateOutcome::RolledBack => UpdateStatus::RolledBack,
            UpdateOutcome::Frozen => UpdateStatus::Frozen,
        }
    }

    /// The audit action recording this outcome.
    pub fn audit_action(self) -> &'static str {
        match self {
            UpdateOutcome::Succeeded => "update.succeeded",
            UpdateOutcome::Failed => "update.failed",
            UpdateOutcome::RolledBack => "update.rolled_back",
            UpdateOutcome::Frozen => "update.frozen",
        }
    }
}

/// Where an update stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateStatus {
    InProgress,
    Succeeded,
    Failed,
    RolledBack,
    Frozen,
}

impl UpdateStatus {
    pub const ALL: [UpdateStatus; 5] = [
        UpdateStatus::InProgress,
        UpdateStatus::Succeeded,
        UpdateStatus::Failed,
        UpdateStatus::RolledBack,
        UpdateStatus::Frozen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpdateStatus::InProgress => "in_progress",
            UpdateStatus::Succeeded => "succeeded",
            UpdateStatus::Failed => "failed",
            UpdateStatus::RolledBack => "rolled_back",
            UpdateStatus::Frozen => "frozen",
        }
    }

    pub fn parse(s: &str) -> Option<UpdateStatus> {
        UpdateStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether an update that ended this way means its target version must not be retried.
    pub fn target_failed(self) -> bool {
        matches!(
            self,
            UpdateStatus::Failed | UpdateStatus::RolledBack | UpdateStatus::Frozen
        )
    }
}

impl fmt::Display for UpdateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One update attempt as stored (without its snapshot: see [`crate::Store::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRecord {
    pub id: UpdateId,
    pub asset_id: String,
    pub from_ref: String,
    pub to_ref: String,
    pub status: UpdateStatus,
    pub error: Option<String>,
    pub correlation_id: Option<String>,
    pub started_by: String,
    pub started_at: Timestamp,
    pub finished_by: Option<String>,
    pub finished_at: Option<Timestamp>,
    /// The process that owns the update while it is in progress (kept afterwards: who ran
    /// it last). `None` for updates of releases that did not record owners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Until when the owner's lease holds; renewed while it works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<Timestamp>,
}

/// The format of an audit export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditFormat {
    /// One JSON [`AuditRecord`] per line, as serde writes it: `seq`, `timestamp` (canonical
    /// form), `actor`, `action`, `asset_id`, `correlation_id`, `details`, `prev_hash`, `hash`.
    Jsonl,
    /// RFC 4180 CSV with a header row and the same columns; `details` holds the canonical JSON
    /// that was hashed; an absent `asset_id` or `correlation_id` is an empty field. Values
    /// are written as recorded, never altered: spreadsheet programs may interpret a cell
    /// starting with `=`, `+`, `-` or `@` as a formula, so open the file as text.
    Csv,
}

/// A summary of the store, for `status` output and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub schema_version: i64,
    pub assets: u64,
    /// Keyed by [`AssetKind::as_str`]; kinds with no asset are left out.
    pub assets_by_kind: BTreeMap<String, u64>,
    pub observed_tags: u64,
    pub decisions: u64,
    pub approvals: u64,
    pub rejections: u64,
    /// Keyed by [`UpdateStatus::as_str`]; statuses with no update are left out.
    pub updates_by_status: BTreeMap<String, u64>,
    /// Updates begun and never finished: what a restart must recover or roll back.
    pub updates_in_progress: u64,
    pub audit_len: u64,
    pub audit_head: Option<ChainHead>,
    /// Size of the database file, `None` in memory. Recent writes may still sit in the WAL.
    pub file_size_bytes: Option<u64>,
    pub wal_size_bytes: Option<u64>,
}

/// A stored row with its id, as kept in a [`StateDump`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored<T> {
    pub id: i64,
    #[serde(flatten)]
    pub record: T,
}

/// An observed tag with its repository, as kept in a [`StateDump`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryTag {
    pub repository: String,
    #[serde(flatten)]
    pub tag: ObservedTag,
}

/// An update with its rollback snapshot, as kept in a [`StateDump`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateWithSnapshot {
    #[serde(flatten)]
    pub update: UpdateRecord,
    /// `None` only if the snapshot row is missing.
    pub snapshot: Option<serde_json::Value>,
}

/// A checkpoint of the audit trail (see migration 0002): a pruned trail continues from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    pub seq: u64,
    pub hash: String,
    pub created_at: Timestamp,
    pub note: Option<String>,
}

/// The version of the [`StateDump`] layout. Raised on any incompatible change.
pub const DUMP_FORMAT_VERSION: u32 = 1;

/// Everything in the store, for backup and restore. Rows keep their ids, so that a dump
/// imported and exported again is identical.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateDump {
    pub format_version: u32,
    /// The schema version of the store it was exported from.
    pub schema_version: i64,
    pub assets: Vec<Asset>,
    pub observed_tags: Vec<RepositoryTag>,
    pub decisions: Vec<Stored<DecisionRecord>>,
    pub approvals: Vec<Stored<Approval>>,
    pub updates: Vec<UpdateWithSnapshot>,
    /// Operators' pins and snoozes (schema 4). Absent from older dumps and left out when
    /// empty, so dumps without overrides read and write as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<crate::AssetOverrides>,
    /// The daemon's queue, the reviews already announced, and the updates a crash cut short
    /// (schema 5). Absent from older dumps and left out when empty, like `overrides`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue: Vec<crate::QueueEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub review_notices: Vec<crate::ReviewNotice>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interrupted_updates: Vec<i64>,
    pub audit_checkpoints: Vec<AuditCheckpoint>,
    pub audit: Vec<AuditRecord>,
}
