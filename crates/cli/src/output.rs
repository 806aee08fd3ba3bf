//! Printing: JSON for scripts, aligned tables and plain sentences for people.

use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// Writes one line on stdout (what the crate's `println!` calls). A reader that went away
/// (`| head`) ends the process with success, as a pipeline expects; another write error ends
/// it with the error.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Whether an error comes from writing to a closed pipe (an export streamed to `| head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints one JSON document on stdout.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// A borderless table like `kubectl get` prints.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.to_vec());
    for r in rows {
        t.add_row(r);
    }
    // comfy-table pads every line with a leading space in this preset; trim for tidy output.
    t.to_string()
        .lines()
        .map(|l| l.trim_end().strip_prefix(' ').unwrap_or(l).to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints an error: `{"error": ...}` on stdout for JSON (scripts read one stream), a sentence
/// on stderr otherwise. The whole cause chain is shown: the outermost says what failed, the
/// inner ones why.
pub fn print_error(format: OutputFormat, err: &anyhow::Error) {
    // Some library errors already quote their cause; print each cause only once.
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    match format {
        OutputFormat::Json => println!("{}", serde_json::json!({ "error": message })),
        OutputFormat::Table => eprintln!("error: {message}"),
    }
}

/// An error whose message already says what to do; shown as is.
#[derive(Debug)]
pub struct Reported(pub String);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reported {}
