-- 0004_overrides: operators' standing instructions for one asset.
--
-- A pin restricts the versions an asset may move to (a Helm/Masterminds constraint, checked by
-- the caller before it is stored); a snooze holds back every update until a time. Each part
-- names who set it and when. A row with neither part is deleted rather than kept empty. No
-- foreign key to assets: a container recreated under the same id keeps its overrides.
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
