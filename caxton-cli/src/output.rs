//! What every subcommand shares: exit codes, the one-line reason for a command that
//! could not run, `✓`/`✗`/`→` lines for people and JSON lines for machines.
//!
//! A subcommand's `run` returns [`Verdict`] or [`Failure`]; `main` turns that into the
//! exit code of the command-line contract (`docs/architecture.md`) with [`exit`].

use std::fmt::Display;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;

use serde::Serialize;

/// What a command that ran concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Success: accepted, promoted, planned. Exit code 0.
    Positive,
    /// The verdict is negative: rejected, rolled back. Exit code 1.
    Negative,
}

/// Why a command could not run (unreadable input, bad flags). Exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure(String);

impl Failure {
    /// A failure with this reason; only its first line is kept.
    pub(crate) fn new(reason: impl Display) -> Self {
        let reason = reason.to_string();
        Failure(reason.lines().next().unwrap_or_default().trim().to_owned())
    }

    /// The reason, one line.
    pub(crate) fn reason(&self) -> &str {
        &self.0
    }
}

/// The outcome of a subcommand.
pub(crate) type CommandResult = Result<Verdict, Failure>;

/// Exit code 0 for success.
pub(crate) const EXIT_SUCCESS: u8 = 0;
/// Exit code 1 for a negative verdict.
pub(crate) const EXIT_NEGATIVE: u8 = 1;
/// Exit code 2 for a command that could not run.
pub(crate) const EXIT_COULD_NOT_RUN: u8 = 2;

/// The exit code for `result`; a failure's reason goes to standard error on one line.
pub(crate) fn exit(result: CommandResult) -> ExitCode {
    match result {
        Ok(Verdict::Positive) => ExitCode::from(EXIT_SUCCESS),
        Ok(Verdict::Negative) => ExitCode::from(EXIT_NEGATIVE),
        Err(failure) => {
            let _ = writeln!(io::stderr().lock(), "caxton: {}", failure.reason());
            ExitCode::from(EXIT_COULD_NOT_RUN)
        }
    }
}

/// The mark a line for people starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// `✓`
    Done,
    /// `✗`
    Failed,
    /// `→`
    Progress,
}

impl Mark {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Mark::Done => "✓",
            Mark::Failed => "✗",
            Mark::Progress => "→",
        }
    }
}

/// Writes to standard output, line by line, from any thread. A closed pipe (`caxton …
/// | head`) ends the output quietly; any other write error is kept for the end.
pub(crate) struct Printer {
    out: Mutex<PrinterState>,
}

struct PrinterState {
    closed: bool,
    error: Option<io::Error>,
}

impl Printer {
    pub(crate) fn new() -> Self {
        Printer {
            out: Mutex::new(PrinterState {
                closed: false,
                error: None,
            }),
        }
    }

    /// Writes one line.
    pub(crate) fn line(&self, text: &str) {
        let mut state = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if state.closed {
            return;
        }
        let mut stdout = io::stdout().lock();
        if let Err(error) = writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
            state.closed = true;
            if error.kind() != io::ErrorKind::BrokenPipe {
                state.error = Some(error);
            }
        }
    }

    /// `✓ text`, `✗ text` or `→ text`, after an optional prefix such as a time column.
    pub(crate) fn mark(&self, prefix: &str, mark: Mark, text: &str) {
        self.line(&format!("{prefix}{} {text}", mark.symbol()));
    }

    /// `→ text`; other marks go through [`mark`](Printer::mark).
    pub(crate) fn progress(&self, text: &str) {
        self.mark("", Mark::Progress, text);
    }

    /// One JSON object on one line.
    pub(crate) fn json(&self, value: &impl Serialize) {
        match serde_json::to_string(value) {
            Ok(text) => self.line(&text),
            Err(error) => {
                let mut state = self.out.lock().unwrap_or_else(|p| p.into_inner());
                state.error.get_or_insert(io::Error::other(error));
            }
        }
    }

    /// Whether every line was written (a closed pipe counts as written).
    pub(crate) fn finish(&self) -> Result<(), Failure> {
        let mut state = self.out.lock().unwrap_or_else(|p| p.into_inner());
        match state.error.take() {
            Some(error) => Err(Failure::new(format!("could not write the output: {error}"))),
            None => Ok(()),
        }
    }
}

/// The largest rollout spec or policy file the command reads: 1 MiB, thousands of times
/// what one needs.
pub(crate) const MAX_TEXT_BYTES: u64 = 1024 * 1024;

/// Reads a text file of at most `limit` bytes, or standard input for `-`. A regular file's
/// size is checked before it is read; anything else (standard input, a pipe, a device) is
/// read no further than one byte past the limit.
pub(crate) fn read_text(path: &Path, limit: u64) -> Result<String, Failure> {
    let (shown, reader): (String, Box<dyn Read>) = if path == Path::new("-") {
        ("standard input".to_owned(), Box::new(io::stdin()))
    } else {
        let shown = path.display().to_string();
        let cannot = |e: io::Error| Failure::new(format!("cannot read {shown}: {e}"));
        let file = std::fs::File::open(path).map_err(cannot)?;
        if file.metadata().map_err(cannot)?.len() > limit {
            return Err(too_large(&shown, limit));
        }
        (shown, Box::new(file))
    };
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::new(format!("cannot read {shown}: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(&shown, limit));
    }
    String::from_utf8(bytes).map_err(|e| {
        Failure::new(format!(
            "cannot read {shown}: not UTF-8 text (at byte {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

fn too_large(shown: &str, limit: u64) -> Failure {
    Failure::new(format!(
        "{shown}: larger than {limit} bytes, the most this command reads from one file"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_one_line() {
        let failure = Failure::new("first line\nsecond line");
        assert_eq!(failure.reason(), "first line");
    }

    #[test]
    fn text_is_read_up_to_the_limit_and_no_further() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.yaml");
        std::fs::write(&path, "0123456789").unwrap();
        assert_eq!(read_text(&path, 10).unwrap(), "0123456789");
        let err = read_text(&path, 9).unwrap_err();
        assert!(err.reason().contains("spec.yaml"), "{err:?}");
        assert!(err.reason().contains("larger than 9 bytes"), "{err:?}");
        #[cfg(unix)]
        {
            let err = read_text(Path::new("/dev/zero"), 4096).unwrap_err();
            assert!(err.reason().contains("larger than 4096 bytes"), "{err:?}");
        }
        std::fs::write(&path, b"\xff").unwrap();
        assert!(read_text(&path, 10).unwrap_err().reason().contains("UTF-8"));
    }

    #[test]
    fn marks_are_the_documented_symbols() {
        assert_eq!(Mark::Done.symbol(), "✓");
        assert_eq!(Mark::Failed.symbol(), "✗");
        assert_eq!(Mark::Progress.symbol(), "→");
        assert_eq!((EXIT_SUCCESS, EXIT_NEGATIVE, EXIT_COULD_NOT_RUN), (0, 1, 2));
    }
}
