//! Liveness and readiness. `/healthz` answers while the process serves HTTP; `/readyz` answers
//! 200 only after the daemon opened its store and started its first cycle, and 503 again while
//! it shuts down. The daemon flips the [`Readiness`] handle; this module never inspects the
//! store or the engine itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// What `/readyz` reports. Cheap to clone; every clone sees the same state.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    inner: Arc<Flags>,
}

#[derive(Debug, Default)]
struct Flags {
    store_open: AtomicBool,
    cycle_started: AtomicBool,
    shutting_down: AtomicBool,
}

/// The JSON body of `/readyz`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReadyStatus {
    pub ready: bool,
    /// What readiness still waits for (`store`, `first_cycle`) or `shutting_down`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<&'static str>,
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// The store opened (migrations done).
    pub fn set_store_open(&self) {
        self.inner.store_open.store(true, Ordering::SeqCst);
    }

    /// The first cycle started.
    pub fn set_cycle_started(&self) {
        self.inner.cycle_started.store(true, Ordering::SeqCst);
    }

    /// Shutdown began: load balancers should stop sending traffic.
    pub fn set_shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn status(&self) -> ReadyStatus {
        let mut waiting_for = Vec::new();
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            waiting_for.push("shutting_down");
        }
        if !self.inner.store_open.load(Ordering::SeqCst) {
            waiting_for.push("store");
        }
        if !self.inner.cycle_started.load(Ordering::SeqCst) {
            waiting_for.push("first_cycle");
        }
        ReadyStatus {
            ready: waiting_for.is_empty(),
            waiting_for,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_after_store_and_cycle_until_shutdown() {
        let r = Readiness::new();
        assert_eq!(r.status().waiting_for, vec!["store", "first_cycle"]);
        let clone = r.clone();
        clone.set_store_open();
        assert_eq!(r.status().waiting_for, vec!["first_cycle"]);
        clone.set_cycle_started();
        assert!(r.status().ready);
        r.set_shutting_down();
        assert_eq!(r.status().waiting_for, vec!["shutting_down"]);
    }
}
