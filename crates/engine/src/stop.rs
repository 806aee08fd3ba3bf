//! A request to stop, passed into long work: an update checks it between the steps it may not
//! cut short, and stops waiting (a pull, a health window) when it comes. The CLI requests it
//! on the first SIGINT/SIGTERM; the daemon, whose SIGTERM lets updates in flight finish,
//! passes [`Stop::never`].

use tokio::sync::watch;

/// The receiving side: cheap to clone, one per piece of work.
#[derive(Debug, Clone)]
pub struct Stop {
    rx: Option<watch::Receiver<bool>>,
}

/// The requesting side.
#[derive(Debug)]
pub struct StopRequest {
    tx: watch::Sender<bool>,
}

impl StopRequest {
    /// Asks every [`Stop`] of this pair to stop. Idempotent.
    pub fn request(&self) {
        self.tx.send_replace(true);
    }
}

impl Stop {
    /// A pair: what the signal handler keeps, and what the work receives.
    pub fn pair() -> (StopRequest, Stop) {
        let (tx, rx) = watch::channel(false);
        (StopRequest { tx }, Stop { rx: Some(rx) })
    }

    /// A stop that never comes.
    pub fn never() -> Stop {
        Stop { rx: None }
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.rx.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// Completes when a stop is requested (never, if the requesting side is gone without
    /// asking).
    pub async fn wait(&self) {
        let Some(rx) = &self.rx else {
            return std::future::pending().await;
        };
        let mut rx = rx.clone();
        if rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_reaches_every_clone_and_never_never_comes() {
        let (req, stop) = Stop::pair();
        let other = stop.clone();
        assert!(!stop.requested());
        req.request();
        assert!(stop.requested() && other.requested());
        stop.wait().await;
        let never = Stop::never();
        assert!(!never.requested());
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), never.wait()).await;
        assert!(waited.is_err());
        let (req, stop) = Stop::pair();
        drop(req);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), stop.wait()).await;
        assert!(waited.is_err(), "a dropped requester is no request");
    }
}
