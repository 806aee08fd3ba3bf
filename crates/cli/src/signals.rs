//! SIGINT and SIGTERM for the commands that change things (`update`, `rollback`, `run`).
//!
//! The first signal asks the work to stop safely ([`Stop`]): the step in progress finishes, an
//! update not yet verified is restored, one already verified is kept, no other starts; the
//! command then says what it did and exits with 128 + the signal's number. A second signal
//! exits at once: an update left in progress keeps its owner's record, and the next command
//! (this process being gone) recovers it.

use std::sync::atomic::{AtomicI32, Ordering};

use safe_updater_engine::Stop;
use tokio::signal::unix::{SignalKind, signal};

/// 128 + the number of the first signal received, or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Starts listening on `rt`; the returned [`Stop`] is requested by the first signal. Signals
/// that cannot be listened to (no such facility) leave the default behaviour: the process
/// ends at once, as without this.
pub fn stop_on_signals(rt: &tokio::runtime::Runtime) -> Stop {
    let (request, stop) = Stop::pair();
    // Registered now, inside the runtime, so that a signal arriving before the task first
    // runs is not lost to the default action.
    let listeners = {
        let _inside = rt.enter();
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(i), Ok(t)) => Some((i, t)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for SIGINT/SIGTERM; they stop the command at once");
                None
            }
        }
    };
    let Some((mut int, mut term)) = listeners else {
        return Stop::never();
    };
    rt.spawn(async move {
        let code = tokio::select! {
            _ = int.recv() => 130,
            _ = term.recv() => 143,
        };
        RECEIVED.store(code, Ordering::SeqCst);
        eprintln!(
            "safe-updater: stopping: the step in progress finishes, then an update not yet verified is restored (one already verified is kept); press Ctrl-C again to exit at once"
        );
        request.request();
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!(
            "safe-updater: exiting at once; an update left in progress is recovered by the next command"
        );
        std::process::exit(code);
    });
    stop
}

/// The exit code a signal asks for (`Some(130)` after SIGINT, `Some(143)` after SIGTERM).
pub fn exit_code() -> Option<u8> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        code => u8::try_from(code).ok(),
    }
}
