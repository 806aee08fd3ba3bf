//! Keeping the lease of an update in flight, and judging the updates of other processes.
//!
//! [`LeaseKeeper`] renews the lease of one update (on its own store connection, so the work
//! holding the main one is never in the way) every [`LEASE_RENEW_EVERY`] until it is dropped,
//! and tells the work when the lease was lost: another process took the update over, so this
//! one must not touch the host again. [`standing_of`] is the core's rule applied to a stored
//! update with this host's process table.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::Timestamp;
use safe_updater_core::lease::{LEASE_RENEW_EVERY, Standing, standing};
use safe_updater_store::{Store, UpdateId, UpdateRecord, process};
use tokio::sync::Notify;

/// Who may act on `u` (an update in progress), as this store's process sees it now.
pub fn standing_of(store: &Store, u: &UpdateRecord, now: Timestamp) -> Standing {
    standing(
        u.owner.as_ref(),
        u.lease_until,
        store.owner(),
        now,
        process::probe,
    )
}

/// Renews one update's lease while it lives. See the module docs.
#[derive(Debug)]
pub struct LeaseKeeper {
    task: Option<tokio::task::JoinHandle<()>>,
    lost: Arc<(AtomicBool, Notify)>,
}

impl LeaseKeeper {
    /// Starts renewing update `id` of `store`'s file (nothing to renew for a store in memory:
    /// no other process can see it).
    pub fn start(store: &Store, id: UpdateId) -> LeaseKeeper {
        let lost = Arc::new((AtomicBool::new(false), Notify::new()));
        let task = store.path().map(|p| {
            let path: PathBuf = p.to_path_buf();
            let owner = store.owner().clone();
            let flag = Arc::clone(&lost);
            tokio::spawn(async move {
                let mut conn: Option<Store> = None;
                loop {
                    tokio::time::sleep(LEASE_RENEW_EVERY).await;
                    if conn.is_none() {
                        match Store::open(&path) {
                            Ok(mut s) => {
                                s.act_as(owner.clone());
                                conn = Some(s);
                            }
                            Err(e) => {
                                tracing::warn!(update = id.0, error = %e, "cannot open the state database to renew the lease; trying again");
                                continue;
                            }
                        }
                    }
                    let Some(s) = conn.as_mut() else { continue };
                    match s.renew_lease(id, Timestamp::now()) {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(update = id.0, "the update's lease was lost: another process took it over");
                            flag.0.store(true, Ordering::SeqCst);
                            flag.1.notify_waiters();
                            return;
                        }
                        // A busy database or a full disk: the lease still runs for a while;
                        // the next renewal tries again.
                        Err(e) => {
                            tracing::warn!(update = id.0, error = %e, "cannot renew the update's lease")
                        }
                    }
                }
            })
        });
        LeaseKeeper { task, lost }
    }

    /// Whether the lease was lost.
    pub fn lost(&self) -> bool {
        self.lost.0.load(Ordering::SeqCst)
    }

    /// Completes when the lease is lost (never while it is kept).
    pub async fn wait_lost(&self) {
        loop {
            let notified = self.lost.1.notified();
            if self.lost() {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
