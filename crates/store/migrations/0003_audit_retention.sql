-- 0003_audit_retention: pruning the oldest audit records, and nothing else.
--
-- A record may be deleted only when a checkpoint at or after its seq exists: pruning writes
-- the checkpoint (the seq and hash of the last record it removes) first, then deletes that
-- prefix. Any other delete (a record after the latest checkpoint, a record in the middle of
-- the kept trail) is still refused. Checkpoints themselves are append-only, and one can only
-- be written with the hash of the record it marks while that record is still there.
DROP TRIGGER audit_no_delete;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
WHEN NOT EXISTS (SELECT 1 FROM audit_checkpoints WHERE seq >= OLD.seq)
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: records cannot be deleted, except a prefix covered by a checkpoint (safe-updater audit prune)');
END;

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
