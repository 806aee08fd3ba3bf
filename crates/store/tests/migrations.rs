//! Schema migrations: step by step equals fresh equals schema.sql; backups; refusals.

mod common;

use std::path::Path;

use rusqlite::Connection;
use safe_updater_store::{SCHEMA_VERSION, Store, StoreError, testing};

/// A description of a database's schema that two equal schemas share: every object's SQL
/// (whitespace collapsed), every table's columns, options and foreign keys, every index's
/// columns.
fn describe(conn: &Connection) -> Vec<String> {
    let mut out = Vec::new();
    let objects: Vec<(String, String, String, Option<String>)> = conn
        .prepare(
            "SELECT type, name, tbl_name, sql FROM sqlite_schema
             WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
        )
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    for (kind, name, table, sql) in objects {
        let sql = sql
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        out.push(format!("{kind} {name} on {table}: {sql}"));
        let rows = |q: &str| -> Vec<String> {
            let mut stmt = conn.prepare(q).expect("prepare");
            let n = stmt.column_count();
            stmt.query_map([&name], |r| {
                (0..n)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(|v| v.join("|"))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
        };
        match kind.as_str() {
            "table" => {
                out.extend(rows("SELECT * FROM pragma_table_xinfo(?1)"));
                out.extend(rows("SELECT * FROM pragma_foreign_key_list(?1)"));
                out.extend(rows(
                    "SELECT type, ncol, wr, strict FROM pragma_table_list WHERE name = ?1",
                ));
            }
            "index" => out.extend(rows("SELECT * FROM pragma_index_xinfo(?1)")),
            _ => {}
        }
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    out.push(format!("user_version {version}"));
    out
}

fn user_version(path: &Path) -> i64 {
    Connection::open(path)
        .expect("open")
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version")
}

#[test]
fn migrations_one_by_one_equal_the_fresh_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fresh = dir.path().join("fresh.db");
    drop(Store::open(&fresh).expect("fresh"));
    let fresh_schema = describe(&Connection::open(&fresh).expect("open"));
    assert!(
        fresh_schema
            .last()
            .is_some_and(|l| l.ends_with(&SCHEMA_VERSION.to_string()))
    );

    let stepped = dir.path().join("stepped.db");
    for version in 1..=SCHEMA_VERSION {
        testing::migrate_file_to(&stepped, version).expect("migrate one step");
        assert_eq!(user_version(&stepped), version);
        // Data written by each "release" must survive the next migrations.
        Connection::open(&stepped)
            .expect("open")
            .execute(
                "INSERT INTO decisions (asset_id, at, actor, current, change, gate, decision, \
                 reason) VALUES (?1, '2024-05-01T12:00:00.000000000Z', 'daemon', '1', 'patch', \
                 'auto', 'update', 'test')",
                [format!("asset-v{version}")],
            )
            .expect("insert");
    }
    let stepped_store = Store::open(&stepped).expect("open stepped");
    assert_eq!(
        stepped_store.decisions(None, 10).expect("read").len() as i64,
        SCHEMA_VERSION
    );
    drop(stepped_store);
    assert_eq!(
        describe(&Connection::open(&stepped).expect("open")),
        fresh_schema
    );
}

#[test]
fn migrations_match_schema_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fresh = dir.path().join("fresh.db");
    drop(Store::open(&fresh).expect("fresh"));
    let documented = Connection::open_in_memory().expect("memory");
    documented
        .execute_batch(include_str!("../schema.sql"))
        .expect("schema.sql runs");
    documented
        .pragma_update(None, "user_version", SCHEMA_VERSION)
        .expect("version");
    assert_eq!(
        describe(&documented),
        describe(&Connection::open(&fresh).expect("open")),
        "schema.sql no longer matches the migrations"
    );
}

#[test]
fn an_older_database_is_backed_up_before_migrating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    testing::migrate_file_to(&path, 1).expect("v1");
    Connection::open(&path)
        .expect("open")
        .execute(
            "INSERT INTO approvals (asset_id, candidate, verdict, operator, at) \
             VALUES ('a', '2', 'approved', 'cli:alice', '2024-05-01T12:00:00.000000000Z')",
            [],
        )
        .expect("insert");
    // A backup from an earlier attempt is never overwritten.
    let first_backup = dir.path().join("state.db.bak-v1");
    std::fs::write(&first_backup, b"earlier").expect("write");

    let s = Store::open(&path).expect("open migrates");
    assert_eq!(s.schema_version().expect("version"), SCHEMA_VERSION);
    assert_eq!(s.approvals_for("a").expect("read").len(), 1);
    assert_eq!(std::fs::read(&first_backup).expect("read"), b"earlier");
    let backup = dir.path().join("state.db.bak-v1.1");
    assert_eq!(user_version(&backup), 1);
    let n: i64 = Connection::open(&backup)
        .expect("open backup")
        .query_row("SELECT count(*) FROM approvals", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 1);
    drop(s);

    // Up to date: no further backup.
    drop(Store::open(&path).expect("reopen"));
    let backups = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".bak-"))
        .count();
    assert_eq!(backups, 2);
}

#[test]
fn a_new_database_is_not_backed_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    drop(Store::open(&path).expect("create"));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".bak-")), "{names:?}");
}

#[test]
fn a_newer_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    drop(Store::open(&path).expect("create"));
    Connection::open(&path)
        .expect("open")
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("bump");
    let err = Store::open(&path).expect_err("must refuse");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, known, .. }
            if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("newer"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    // Untouched.
    assert_eq!(user_version(&path), SCHEMA_VERSION + 1);
}

#[test]
fn a_foreign_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.db");
    Connection::open(&path)
        .expect("open")
        .execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY);")
        .expect("create");
    let err = Store::open(&path).expect_err("must refuse");
    assert!(matches!(err, StoreError::ForeignDatabase { .. }), "{err}");
    assert_eq!(user_version(&path), 0);
}

#[test]
fn the_file_runs_in_wal_with_full_sync_and_foreign_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path().join("state.db")).expect("open");
    let (mode, synchronous, foreign_keys, busy) =
        testing::connection_settings(&s).expect("settings");
    assert_eq!(mode, "wal");
    assert_eq!(synchronous, 2, "synchronous=FULL");
    assert_eq!(foreign_keys, 1);
    assert!(busy >= 1000, "busy timeout {busy} ms");
}
