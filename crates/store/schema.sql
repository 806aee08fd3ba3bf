-- The current schema of the safe-updater state store (schema version 6), for reading.
--
-- The database is built by the migrations in migrations/, never from this file; the test
-- `migrations_match_schema_sql` checks that the two agree. When adding a migration, update
-- this file to the resulting schema.

-- Conventions (see the crate documentation):
-- * Timestamps are TEXT in the form of safe_updater_core::audit::canonical_timestamp:
--   RFC 3339, UTC, 'Z', exactly 9 fractional digits ('2024-05-01T12:00:00.000000000Z').
--   Fixed width, so comparing and sorting them as text is chronological.
-- * JSON columns hold serde_json text.
-- * Tables are STRICT: a value of the wrong type is an error, not silently converted.
-- * No foreign keys to assets: history and audit outlive the assets they mention.

-- What was discovered. The id is stable across scans (built from where the asset lives).
CREATE TABLE assets (
    id          TEXT NOT NULL PRIMARY KEY,
    kind        TEXT NOT NULL,
    location    TEXT NOT NULL,
    namespace   TEXT,
    name        TEXT NOT NULL,
    container   TEXT,
    image       TEXT NOT NULL,
    digest      TEXT,
    labels      TEXT NOT NULL,
    annotations TEXT NOT NULL,
    extra       TEXT,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX assets_by_namespace ON assets (namespace);
CREATE INDEX assets_by_kind ON assets (kind);
CREATE INDEX assets_by_location ON assets (location);
CREATE INDEX assets_by_last_seen ON assets (last_seen);

-- Tags seen in each repository, with when each was first seen (release cooldown) and when its
-- current digest was first seen (a re-pushed tag is a new release).
CREATE TABLE observed_tags (
    repository        TEXT NOT NULL,
    tag               TEXT NOT NULL,
    digest            TEXT,
    first_seen        TEXT NOT NULL,
    last_seen         TEXT NOT NULL,
    digest_first_seen TEXT NOT NULL,
    PRIMARY KEY (repository, tag)
) STRICT, WITHOUT ROWID;

-- What the engine decided for an asset, as it explained it.
CREATE TABLE decisions (
    id             INTEGER PRIMARY KEY,
    asset_id       TEXT NOT NULL,
    at             TEXT NOT NULL,
    actor          TEXT NOT NULL,
    current        TEXT NOT NULL,
    candidate      TEXT,
    change         TEXT NOT NULL,
    gate           TEXT NOT NULL,
    decision       TEXT NOT NULL,
    rule           TEXT,
    reason         TEXT NOT NULL,
    correlation_id TEXT
) STRICT;

CREATE INDEX decisions_by_asset ON decisions (asset_id, id);

-- Operators' verdicts on a candidate version of an asset. The latest one counts. origin: what
-- recorded it (review: an answer to a pending review; skip, rollback: a version rejected
-- outright, which an explicit approval may lift; update: `update --to`).
CREATE TABLE approvals (
    id        INTEGER PRIMARY KEY,
    asset_id  TEXT NOT NULL,
    candidate TEXT NOT NULL,
    verdict   TEXT NOT NULL CHECK (verdict IN ('approved', 'rejected')),
    operator  TEXT NOT NULL,
    reason    TEXT,
    at        TEXT NOT NULL
    , origin TEXT NOT NULL DEFAULT 'review'
    CHECK (origin IN ('review', 'skip', 'rollback', 'update'))) STRICT;

CREATE INDEX approvals_by_asset ON approvals (asset_id, candidate, at);

-- Update attempts. AUTOINCREMENT: an id, once used (and written in the audit trail), is never
-- given to another update. owner_* and lease_until: the process that owns an update in
-- progress, and until when its lease holds (see core::lease).
CREATE TABLE updates (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    asset_id       TEXT NOT NULL,
    from_ref       TEXT NOT NULL,
    to_ref         TEXT NOT NULL,
    status         TEXT NOT NULL
        CHECK (status IN ('in_progress', 'succeeded', 'failed', 'rolled_back', 'frozen')),
    error          TEXT,
    correlation_id TEXT,
    started_by     TEXT NOT NULL,
    started_at     TEXT NOT NULL,
    finished_by    TEXT,
    finished_at    TEXT,
    owner_host TEXT,
    owner_pid INTEGER,
    owner_pid_namespace TEXT,
    owner_process_start INTEGER,
    owner_started_at TEXT,
    lease_until TEXT,
    CHECK ((status = 'in_progress') = (finished_at IS NULL))
) STRICT;

CREATE INDEX updates_by_asset ON updates (asset_id, id);
CREATE INDEX updates_in_progress ON updates (id) WHERE status = 'in_progress';

-- What an update needs to be rolled back, committed before the update changes anything.
-- Kept apart from updates so that listing history does not read the snapshots.
CREATE TABLE update_snapshots (
    update_id INTEGER NOT NULL PRIMARY KEY REFERENCES updates (id) ON DELETE CASCADE,
    snapshot  TEXT NOT NULL
) STRICT;

-- The hash-chained audit trail (safe_updater_core::audit). Append-only.
CREATE TABLE audit (
    seq            INTEGER PRIMARY KEY CHECK (seq >= 1),
    timestamp      TEXT NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    asset_id       TEXT,
    correlation_id TEXT,
    details        TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
) STRICT;

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: records cannot be changed');
END;

-- Only a prefix covered by a checkpoint can be deleted (retention: Store::prune_audit writes
-- the checkpoint first, then deletes up to it). Any other delete is refused.
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
WHEN NOT EXISTS (SELECT 1 FROM audit_checkpoints WHERE seq >= OLD.seq)
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: records cannot be deleted, except a prefix covered by a checkpoint (safe-updater audit prune)');
END;

-- A checkpoint is the (seq, hash) of an audit record. Pruning (Store::prune_audit) writes one
-- for the last record it removes; the remaining trail verifies from it instead of from the
-- genesis hash, and new records continue after it. Append-only, and a checkpoint must carry
-- the hash of its record while that record is still there.
CREATE TABLE audit_checkpoints (
    seq        INTEGER PRIMARY KEY CHECK (seq >= 1),
    hash       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    note       TEXT
) STRICT;

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are append-only: they cannot be changed');
END;

CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are append-only: they cannot be deleted');
END;

CREATE TRIGGER audit_checkpoints_match BEFORE INSERT ON audit_checkpoints
WHEN EXISTS (SELECT 1 FROM audit WHERE seq = NEW.seq AND hash <> NEW.hash)
BEGIN
    SELECT RAISE(ABORT, 'an audit checkpoint must carry the hash of the record it marks');
END;

-- Operators' standing instructions for one asset: a pin (a version constraint the caller
-- checked) and a snooze (no update before a time), each with who set it and when. A row with
-- neither part is deleted. No foreign key to assets: a recreated container keeps them.
CREATE TABLE asset_overrides (
    asset_id       TEXT NOT NULL PRIMARY KEY,
    pin_constraint TEXT,
    pinned_by      TEXT,
    pinned_at      TEXT,
    snoozed_until  TEXT,
    snoozed_by     TEXT,
    snoozed_at     TEXT,
    CHECK ((pin_constraint IS NULL) = (pinned_by IS NULL) AND (pinned_by IS NULL) = (pinned_at IS NULL)),
    CHECK ((snoozed_until IS NULL) = (snoozed_by IS NULL) AND (snoozed_by IS NULL) = (snoozed_at IS NULL))
) STRICT, WITHOUT ROWID;

-- The daemon's work queue: queued -> in_flight (attempts + 1) -> done | dropped; at most one
-- open entry per asset.
CREATE TABLE update_queue (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    asset_id       TEXT NOT NULL,
    target         TEXT NOT NULL,
    change         TEXT NOT NULL,
    reason         TEXT NOT NULL,
    priority       INTEGER NOT NULL DEFAULT 0,
    enqueued_at    TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('queued', 'in_flight', 'done', 'dropped')),
    attempts       INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    claimed_at     TEXT,
    finished_at    TEXT,
    outcome        TEXT,
    detail         TEXT,
    correlation_id TEXT,
    CHECK ((state IN ('done', 'dropped')) = (finished_at IS NOT NULL))
) STRICT;

CREATE UNIQUE INDEX update_queue_one_open ON update_queue (asset_id)
    WHERE state IN ('queued', 'in_flight');
CREATE INDEX update_queue_by_state ON update_queue (state, id);

-- Each review ("approval needed") announced to the notification channels, once.
CREATE TABLE review_notices (
    asset_id    TEXT NOT NULL,
    candidate   TEXT NOT NULL,
    notified_at TEXT NOT NULL,
    PRIMARY KEY (asset_id, candidate)
) STRICT, WITHOUT ROWID;

-- Updates a crash cut short and recovery rolled back. Such an update says nothing against its
-- target version, so it does not count as a failure (until the same target was cut short
-- three times: then something about it keeps killing the process).
CREATE TABLE interrupted_updates (
    update_id INTEGER NOT NULL PRIMARY KEY REFERENCES updates (id) ON DELETE CASCADE
) STRICT;
