-- 0002_audit_checkpoints: groundwork for audit retention.
--
-- A checkpoint is the (seq, hash) of an audit record. Once a later release prunes the records
-- up to a checkpoint, the trail verifies from it instead of from the genesis hash, and new
-- records continue after it. Nothing writes checkpoints yet.
CREATE TABLE audit_checkpoints (
    seq        INTEGER PRIMARY KEY CHECK (seq >= 1),
    hash       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    note       TEXT
) STRICT;
