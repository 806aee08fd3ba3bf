//! Errors of the store. Each says which database (its path, or `:memory:`) and which operation.

use std::path::PathBuf;

use jiff::Timestamp;
use safe_updater_core::audit::VerifyProblem;
use safe_updater_core::lease::Owner;

use crate::types::UpdateStatus;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot create the directory {} for the state database: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot open the state database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "{path}: SQLite refused write-ahead logging (journal mode stays {mode}); the store needs \
         it for its durability and locking guarantees. Is the file on a network file system?"
    )]
    WalUnavailable { path: String, mode: String },

    #[error(
        "{path} is not a safe-updater state database (it holds tables but no schema version); \
         refusing to touch it"
    )]
    ForeignDatabase { path: String },

    #[error(
        "{path} has schema version {found}, newer than version {known} that this safe-updater \
         knows: it was written by a newer release. Run that release (or a newer one), or \
         restore the backup ({path}.bak-v{known}) taken before the upgrade"
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        known: i64,
    },

    #[error("{path}: cannot back up the database to {backup} before migrating it: {source}")]
    Backup {
        path: String,
        backup: String,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "{path}: migration {version} ({name}) failed; the database stays at schema version \
         {from}: {source}"
    )]
    Migration {
        path: String,
        version: i64,
        name: &'static str,
        from: i64,
        #[source]
        source: rusqlite::Error,
    },

    #[error("{path}: {op}: {source}")]
    Sqlite {
        path: String,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error("{path}: {op}: cannot encode JSON: {source}")]
    Json {
        path: String,
        op: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("{path}: {op}: cannot write the export: {source}")]
    Export {
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: update {id} does not exist")]
    UnknownUpdate { path: String, id: i64 },

    #[error("{path}: update {id} has already finished ({status}); it cannot be finished again")]
    UpdateAlreadyFinished {
        path: String,
        id: i64,
        status: UpdateStatus,
    },

    /// Another live process owns an update of this asset that is still in progress.
    #[error(
        "{asset_id} is being updated by another process: update #{update_id} is in progress, \
         owned by {owner} (lease until {}); leaving it alone",
        lease_until.strftime("%Y-%m-%dT%H:%M:%SZ")
    )]
    UpdateInProgress {
        path: String,
        asset_id: String,
        update_id: i64,
        owner: Box<Owner>,
        lease_until: Timestamp,
    },

    /// The update is in progress but belongs to another process (it took the update over, or
    /// this process never owned it): its outcome is that process's to record.
    #[error(
        "{path}: update {id} is owned by {owner}, not by this process; its outcome is that \
         process's to record"
    )]
    NotOwner {
        path: String,
        id: i64,
        owner: Box<Owner>,
    },

    #[error(
        "{path}: refusing to import: the store already holds data (import with replace to \
         overwrite it)"
    )]
    ImportIntoNonEmpty { path: String },

    #[error(
        "{path}: refusing to import: the dump has format version {found}, this release reads \
         version {supported}"
    )]
    UnsupportedDumpFormat {
        path: String,
        found: u32,
        supported: u32,
    },

    #[error(
        "{path}: refusing to import: the dump comes from schema version {found}, newer than \
         version {known} that this release knows"
    )]
    DumpSchemaTooNew {
        path: String,
        found: i64,
        known: i64,
    },

    #[error(
        "{path}: refusing to import: the dump's audit trail is broken at record {}: {}",
        problem.seq,
        problem.message
    )]
    BrokenDumpAudit {
        path: String,
        problem: VerifyProblem,
    },

    #[error(
        "{path}: refusing to replace the state: {reason}. Replacing never discards audit \
         records; import into a new, empty state file instead"
    )]
    ReplaceWouldLoseAudit { path: String, reason: String },

    #[error("{path}: refusing to prune the audit trail: {reason}")]
    AuditPruneRefused { path: String, reason: String },
}

/// Adds the database and the operation to a rusqlite error.
pub(crate) trait Context<T> {
    fn during(self, path: &str, op: &'static str) -> Result<T>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn during(self, path: &str, op: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Sqlite {
            path: path.to_string(),
            op,
            source,
        })
    }
}

impl<T> Context<T> for serde_json::Result<T> {
    fn during(self, path: &str, op: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Json {
            path: path.to_string(),
            op,
            source,
        })
    }
}
