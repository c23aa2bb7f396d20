//! A live spinner on standard error while the client waits, shown only when standard
//! error is a terminal; lines for people go around it.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::http::stderr_is_terminal;
use crate::output::{Mark, Printer};

/// A spinner, or nothing when standard error is not a terminal.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts a spinner saying `message`, when `wanted` and standard error is a terminal.
    pub(crate) fn start(wanted: bool, message: &str) -> Self {
        if !wanted || !stderr_is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar: Some(bar) }
    }

    /// Changes what the spinner says.
    pub(crate) fn message(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.to_owned());
        }
    }

    /// Prints `✓ text` (or another mark) above the spinner.
    pub(crate) fn mark(&self, printer: &Printer, mark: Mark, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| printer.mark("", mark, text)),
            None => printer.mark("", mark, text),
        }
    }

    /// Removes the spinner.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
