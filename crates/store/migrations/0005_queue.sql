-- 0005_queue: the daemon's work queue, "approval needed" notices, interrupted updates.
--
-- update_queue: what the daemon means to apply. An entry is 'queued' until a worker claims it
-- ('in_flight', attempts + 1), then 'done' (the update ran; outcome says how it ended) or
-- 'dropped' (policy no longer allows it, or a newer target superseded it; detail says why).
-- At most one open (queued or in-flight) entry per asset. A process killed mid-update leaves
-- its entry in flight; the next start puts it back in the queue.
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
