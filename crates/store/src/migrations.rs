//! Schema migrations: numbered SQL files applied in order, each once, each in its own
//! transaction, the version tracked with `PRAGMA user_version`.
//!
//! To change the schema, add a file `migrations/NNNN_name.sql` and an entry below; never edit
//! a migration that has shipped. Update `schema.sql` to match (a test compares them).

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Result, StoreError};

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "0002_audit_checkpoints",
        sql: include_str!("../migrations/0002_audit_checkpoints.sql"),
    },
    Migration {
        version: 3,
        name: "0003_audit_retention",
        sql: include_str!("../migrations/0003_audit_retention.sql"),
    },
    Migration {
        version: 4,
        name: "0004_overrides",
        sql: include_str!("../migrations/0004_overrides.sql"),
    },
    Migration {
        version: 5,
        name: "0005_queue",
        sql: include_str!("../migrations/0005_queue.sql"),
    },
    Migration {
        version: 6,
        name: "0006_owners",
        sql: include_str!("../migrations/0006_owners.sql"),
    },
];

/// The schema version this release writes: the number of the last migration.
pub const SCHEMA_VERSION: i64 = 6;

pub(crate) fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Brings the database to [`SCHEMA_VERSION`]. `path` is the database file (for the backup);
/// `None` in memory.
pub(crate) fn migrate(conn: &mut Connection, label: &str, path: Option<&Path>) -> Result<()> {
    migrate_to(conn, label, path, SCHEMA_VERSION)
}

/// Brings the database to `target` (at most [`SCHEMA_VERSION`]); tests use it to build the
/// databases of older releases.
pub(crate) fn migrate_to(
    conn: &mut Connection,
    label: &str,
    path: Option<&Path>,
    target: i64,
) -> Result<()> {
    let sqlite_err = |op: &'static str| {
        move |source| StoreError::Sqlite {
            path: label.to_string(),
            op,
            source,
        }
    };
    let current = user_version(conn).map_err(sqlite_err("read the schema version"))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: label.to_string(),
            found: current,
            known: SCHEMA_VERSION,
        });
    }
    if current >= target {
        return Ok(());
    }
    if current == 0 {
        let objects: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
                [],
                |row| row.get(0),
            )
            .map_err(sqlite_err("inspect the database"))?;
        if objects > 0 {
            return Err(StoreError::ForeignDatabase {
                path: label.to_string(),
            });
        }
    } else if let Some(path) = path {
        backup(conn, label, path, current)?;
    }

    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > current && m.version <= target)
    {
        let failed = |source| StoreError::Migration {
            path: label.to_string(),
            version: m.version,
            name: m.name,
            from: m.version - 1,
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        // Another process may have migrated while this one waited for the lock.
        let now = user_version(&tx).map_err(failed)?;
        if now >= m.version {
            continue;
        }
        tx.execute_batch(m.sql).map_err(failed)?;
        // user_version lives in the database header and is written by this transaction:
        // the schema change and its version number commit together.
        tx.pragma_update(None, "user_version", m.version)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
    }
    Ok(())
}

/// Copies the database to `<path>.bak-v<version>` (or `.bak-v<version>.<n>` if that exists
/// already: an earlier backup is never overwritten).
fn backup(conn: &Connection, label: &str, path: &Path, version: i64) -> Result<()> {
    let base = format!("{}.bak-v{version}", path.display());
    let mut target = base.clone();
    let mut n = 1;
    while Path::new(&target).exists() {
        target = format!("{base}.{n}");
        n += 1;
    }
    // VACUUM INTO writes a consistent, compacted copy from a read transaction.
    conn.execute("VACUUM INTO ?1", [&target])
        .map(|_| ())
        .map_err(|source| StoreError::Backup {
            path: label.to_string(),
            backup: target,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }
}
