//! Where long work stands, for the CLI to show an operator at a terminal: the engine reports
//! each round of a health window here. Nothing is decided from it; the engine never prints it.

use std::sync::Arc;

pub use safe_updater_docker::health::Round;

/// What hears of each round.
type Listener = Arc<dyn Fn(&Round) + Send + Sync>;

/// Who hears of progress; [`Progress::none`] (the default) for the daemon and scripts.
#[derive(Clone, Default)]
pub struct Progress(Option<Listener>);

impl Progress {
    /// Nobody listens.
    pub fn none() -> Progress {
        Progress(None)
    }

    /// `f` hears of every round.
    pub fn new(f: impl Fn(&Round) + Send + Sync + 'static) -> Progress {
        Progress(Some(Arc::new(f)))
    }

    /// Tells the listener, if any.
    pub fn round(&self, r: &Round) {
        if let Some(f) = &self.0 {
            f(r);
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(listened)"
        } else {
            "Progress(none)"
        })
    }
}
