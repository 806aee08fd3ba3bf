//! The state store of safe-updater: one embedded SQLite file holding
//!
//! * what the updater has seen: assets, and the tags observed in each repository (with when
//!   each was first seen, for release cooldowns);
//! * what the engine decided, and what operators approved or rejected;
//! * what it did: every update attempt, with the snapshot needed to roll it back committed
//!   before anything is changed, so that a restart finds unfinished updates;
//! * the daemon's work queue (what it means to apply, claimed and finished atomically) and the
//!   "approval needed" notices already sent;
//! * the hash-chained audit trail of all of it ([`safe_updater_core::audit`]), append-only.
//!
//! What it must not do: decide anything. It does not evaluate policy, pick versions, judge
//! health or choose to roll back; it stores what the engine and operators decided, exactly as
//! they said it, and answers questions about it. It does not read the clock either: every
//! timestamp comes from the caller.
//!
//! # Durability and concurrency
//!
//! The file runs in WAL mode with `synchronous=FULL`: a call that returned has been fsynced and
//! survives a crash or power loss. Every write is one `IMMEDIATE` transaction, so several
//! processes may share the file (each waits up to [`BUSY_TIMEOUT`] for the others) and the
//! audit chain cannot fork: reading its head and appending after it happen under one write
//! lock. Every write that matters to the audit trail (decision, approval, update start and
//! end) appends its audit record in the same transaction as the change itself: both or
//! neither.
//!
//! A [`Store`] is one connection: use it from one thread at a time (put it in a `Mutex`, or
//! open one per thread).
//!
//! # Representation
//!
//! Timestamps are stored as TEXT in [`safe_updater_core::audit::canonical_timestamp`] form
//! (RFC 3339, UTC, nine fractional digits): readable with the `sqlite3` shell, and fixed width
//! so that text order is time order. JSON values are serde_json text. The schema is in
//! `schema.sql` beside this crate's `Cargo.toml`; it is built by the numbered migrations in
//! `migrations/`, tracked with `PRAGMA user_version`.

mod assets;
mod audit;
mod dump;
mod error;
mod history;
mod migrations;
mod overrides;
pub mod process;
mod queue;
mod types;

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::types::Type;
use rusqlite::{Connection, Row};

pub use audit::{AuditVerification, CHECKPOINT_ACTION, PRUNED_ACTION, PruneReport};
pub use error::{Result, StoreError};
pub use migrations::SCHEMA_VERSION;
pub use overrides::{AssetOverrides, PinOverride, SnoozeOverride};
pub use queue::{
    Enqueued, INTERRUPTIONS_BEFORE_FAILED, NewQueueEntry, QueueEnd, QueueEntry, QueueState,
    ReviewNotice,
};
pub use safe_updater_core::audit::{AuditEvent, AuditRecord, ChainHead, VerifyReport};
pub use types::*;

use error::Context as _;

/// How long a write waits for another process holding the write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The label of an in-memory store in error messages.
const MEMORY_LABEL: &str = ":memory:";

/// The state store. See the crate documentation.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    /// The database file; `None` in memory.
    path: Option<PathBuf>,
    /// How errors name this store: its path, or `:memory:`.
    label: String,
    /// The process this store acts for: the owner of the updates it begins or takes over.
    owner: Owner,
}

impl Store {
    /// Opens (creating it and its directory if missing) the state file at `path`, and brings
    /// its schema up to date. Before migrating a database that already holds a schema, copies
    /// it to `<path>.bak-v<old version>`. Refuses a database written by a newer release and a
    /// SQLite file that is not a safe-updater database.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        let label = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(&path).map_err(|source| StoreError::Open {
            path: label.clone(),
            source,
        })?;
        let mut store = Store {
            conn,
            path: Some(path),
            label,
            owner: process::this_process(),
        };
        store.configure()?;
        migrations::migrate(&mut store.conn, &store.label, store.path.as_deref())?;
        Ok(store)
    }

    /// A fresh store in memory, for tests and dry runs. Same schema, nothing persists.
    pub fn open_in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: MEMORY_LABEL.to_string(),
            source,
        })?;
        let mut store = Store {
            conn,
            path: None,
            label: MEMORY_LABEL.to_string(),
            owner: process::this_process(),
        };
        store.configure()?;
        migrations::migrate(&mut store.conn, &store.label, None)?;
        Ok(store)
    }

    /// The process this store acts for (this one, unless [`Store::act_as`] said otherwise).
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Acts for another owner from now on: what a replica, or a test standing in for a second
    /// process, uses. The updates it begins are owned by `owner`, and only those it may
    /// finish.
    pub fn act_as(&mut self, owner: Owner) {
        self.owner = owner;
    }

    /// The database file, `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The schema version of the open database (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64> {
        migrations::user_version(&self.conn).during(&self.label, "read the schema version")
    }

    fn configure(&mut self) -> Result<()> {
        let label = &self.label;
        let op = "configure the connection";
        // First, so that the pragmas below also wait for another process's lock.
        self.conn.busy_timeout(BUSY_TIMEOUT).during(label, op)?;
        if self.path.is_some() {
            let mode: String = self
                .conn
                .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
                .during(label, op)?;
            if !mode.eq_ignore_ascii_case("wal") {
                // Without WAL the durability and concurrency promises above do not hold.
                return Err(StoreError::WalUnavailable {
                    path: label.clone(),
                    mode,
                });
            }
        }
        self.conn
            .execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .during(label, op)?;
        Ok(())
    }
}

/// Hooks for this crate's own tests. Not part of the API.
#[doc(hidden)]
pub mod testing {
    use std::path::Path;

    use crate::{Result, StoreError, migrations};

    /// Creates or migrates the file at `path` only up to schema `version`, as an older release
    /// would have left it, with the same backup step as [`crate::Store::open`].
    pub fn migrate_file_to(path: &Path, version: i64) -> Result<()> {
        let label = path.display().to_string();
        let mut conn = rusqlite::Connection::open(path).map_err(|source| StoreError::Open {
            path: label.clone(),
            source,
        })?;
        migrations::migrate_to(&mut conn, &label, Some(path), version)
    }

    /// An owner that stands for a process of this host that has since exited (a pid no
    /// process has, in this process's namespace): what a crashed earlier run left behind.
    pub fn departed_process() -> crate::Owner {
        crate::Owner {
            pid: u32::MAX - 1,
            process_start: 1,
            ..crate::process::this_process()
        }
    }

    /// The store connection's `(journal_mode, synchronous, foreign_keys, busy_timeout)`.
    pub fn connection_settings(store: &crate::Store) -> rusqlite::Result<(String, i64, i64, i64)> {
        let conn = &store.conn;
        Ok((
            conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
            conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
            conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?,
            conn.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?,
        ))
    }
}

// Conversions between Rust values and columns. Parse failures surface as rusqlite conversion
// errors so that they carry the column index and reach the caller with the operation's context.

pub(crate) fn ts_to_sql(ts: &Timestamp) -> String {
    safe_updater_core::audit::canonical_timestamp(ts)
}

pub(crate) fn ts_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Timestamp> {
    let text: String = row.get(idx)?;
    text.parse()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

pub(crate) fn opt_ts_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Timestamp>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| {
        t.parse()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
    })
    .transpose()
}

pub(crate) fn json_col<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    idx: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

pub(crate) fn u64_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(idx)?;
    u64::try_from(v)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Integer, Box::new(e)))
}

pub(crate) fn u64_to_sql(v: u64) -> rusqlite::Result<i64> {
    i64::try_from(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// A `LIMIT` value: SQLite takes a signed 64-bit integer; anything larger means "all".
pub(crate) fn limit_to_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
