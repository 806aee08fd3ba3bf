-- 0006_owners: an update in flight belongs to the process doing it; rollbacks reject.
--
-- updates.owner_*: the process that began (or took over) an in-progress update: host, pid,
-- where pids mean the same (boot id and PID namespace), the process's start in clock ticks
-- (a reused pid is another process), and when it began acting. lease_until: the owner renews
-- it while it works; another process may recover the update only when the owner is gone (the
-- lease expired, or the process is provably dead on this host). Rows of earlier releases have
-- no owner: they count as gone.
ALTER TABLE updates ADD COLUMN owner_host TEXT;
ALTER TABLE updates ADD COLUMN owner_pid INTEGER;
ALTER TABLE updates ADD COLUMN owner_pid_namespace TEXT;
ALTER TABLE updates ADD COLUMN owner_process_start INTEGER;
ALTER TABLE updates ADD COLUMN owner_started_at TEXT;
ALTER TABLE updates ADD COLUMN lease_until TEXT;

-- approvals.origin: what recorded a verdict. 'review' answers a pending review (the first
-- verdict stands); 'skip' and 'rollback' (the version an operator rolled an asset away from)
-- reject a version outright, and an explicit approval may lift them; 'update' is the approval
-- an operator gave by naming the version (`update --to`).
ALTER TABLE approvals ADD COLUMN origin TEXT NOT NULL DEFAULT 'review'
    CHECK (origin IN ('review', 'skip', 'rollback', 'update'));
