//! Progress of a health window for an operator at a terminal: one line, rewritten after each
//! round ("round 3 of 31, 20s of 5m: ok, docker: healthy"). Off a terminal and under
//! `-o json` nothing is drawn: scripts read the result, and logs say what happened.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use safe_updater_engine::Progress;
use safe_updater_engine::progress::Round;

/// How much of a round's result fits the line (a wrapped line cannot be rewritten).
const LAST_WIDTH: usize = 60;

/// The line being drawn; [`Line::finish`] ends it so that what follows starts on its own.
pub struct Line {
    drawn: Arc<AtomicBool>,
}

impl Line {
    /// Ends the progress line, if one was drawn.
    pub fn finish(&self) {
        if self.drawn.swap(false, Ordering::Relaxed) {
            let mut err = std::io::stderr().lock();
            // Nothing to do if the terminal is gone.
            let _ = writeln!(err);
        }
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Progress drawn on stderr when it is a terminal and the output is a table.
pub fn health_window(table: bool) -> (Progress, Line) {
    let drawn = Arc::new(AtomicBool::new(false));
    let line = Line {
        drawn: drawn.clone(),
    };
    if !table || !std::io::stderr().is_terminal() {
        return (Progress::none(), line);
    }
    let progress = Progress::new(move |r| {
        let mut err = std::io::stderr().lock();
        // A terminal that went away loses its progress line, nothing else.
        let _ = write!(err, "\r\x1b[2K  {}", describe(r));
        let _ = err.flush();
        drawn.store(true, Ordering::Relaxed);
    });
    (progress, line)
}

/// The line's text.
pub fn describe(r: &Round) -> String {
    let mut last: String = r.last.chars().take(LAST_WIDTH).collect();
    if r.last.chars().count() > LAST_WIDTH {
        last.push('…');
    }
    format!(
        "health round {} of {}, {} of {}: {}, {last}",
        r.number,
        r.planned,
        seconds(r.elapsed),
        seconds(r.window),
        if r.ok { "ok" } else { "not ok" },
    )
}

fn seconds(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_reads_as_a_short_line() {
        let r = Round {
            number: 3,
            planned: 31,
            elapsed: Duration::from_millis(20_400),
            window: Duration::from_secs(300),
            ok: false,
            last: format!("http GET http://web/health: {}", "x".repeat(200)),
        };
        let line = describe(&r);
        assert!(
            line.starts_with("health round 3 of 31, 20s of 5m: not ok, http GET"),
            "{line}"
        );
        assert!(line.ends_with('…') && line.chars().count() < 120, "{line}");
    }
}
