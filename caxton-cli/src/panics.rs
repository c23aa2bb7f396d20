//! The last resort for a panic: it is a bug in `caxton` (inputs are checked so that none
//! should happen), but it still ends the way the command-line contract says a command that
//! could not run ends, with one line on standard error and exit code 2, rather than Rust's
//! report over several lines and exit code 101.
//!
//! [`install_hook`] makes the first panic of the process print one line, `caxton: internal
//! error: …`, with the message (its lines joined) and where it happened; set
//! `RUST_BACKTRACE=1` to also get the backtrace, over further lines. [`guard`] runs `main`'s
//! body and turns a panic that reaches it into exit code 2.
//!
//! A hook sees every panic, also one that some code catches and recovers from; none of
//! the crates `caxton` runs on does that today (a panic in one of their threads is itself a
//! bug), so the first panic is reported as the error it is.
//!
//! No hidden flag or subcommand panics on purpose to test this: the unit tests below call
//! the same functions `main` calls, with a panic of their own.

use std::any::Any;
use std::backtrace::Backtrace;
use std::io::{self, Write};
use std::panic::{self, AssertUnwindSafe, Location};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::output::EXIT_COULD_NOT_RUN;

/// The most characters of a panic message the line quotes.
const MAX_MESSAGE_CHARS: usize = 400;

/// The one line reporting a panic with `payload` at `location`.
pub(crate) fn panic_line(payload: &(dyn Any + Send), location: Option<&Location<'_>>) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    let mut message = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(cut);
        message.push('…');
    }
    let place = location.map_or_else(String::new, |l| {
        format!(" at {}:{}:{}", l.file(), l.line(), l.column())
    });
    format!("caxton: internal error: {message}{place} (a bug in caxton; please report it)")
}

/// Makes a panic report itself on standard error in one line (see the module docs).
pub(crate) fn install_hook() {
    let backtrace = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    install_hook_with(backtrace, |text| {
        let _ = writeln!(io::stderr().lock(), "{text}");
    });
}

/// The hook, reporting through `report`. Only the first panic is reported: it is the
/// cause, and whatever panics after it (a thread joining a panicked one) would add lines.
fn install_hook_with(backtrace: bool, report: impl Fn(&str) + Send + Sync + 'static) {
    let reported = AtomicBool::new(false);
    panic::set_hook(Box::new(move |info| {
        if reported.swap(true, Ordering::Relaxed) {
            return;
        }
        report(&panic_line(info.payload(), info.location()));
        if backtrace {
            report(&Backtrace::force_capture().to_string());
        }
    }));
}

/// Runs `main`'s body; a panic that reaches it (already reported by the hook) is exit
/// code 2.
pub(crate) fn guard(main: impl FnOnce() -> ExitCode) -> ExitCode {
    panic::catch_unwind(AssertUnwindSafe(main))
        .unwrap_or_else(|_| ExitCode::from(EXIT_COULD_NOT_RUN))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn a_panic_is_reported_in_one_line_with_its_message_and_place_and_exits_2() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let captured = Arc::clone(&lines);
        install_hook_with(false, move |text| {
            captured.lock().unwrap().push(text.to_owned())
        });
        let code = guard(|| panic!("the plan lost a step\n  left: 1\n right: 2"));
        // A second panic (say, a thread joining the first) adds nothing.
        let again = guard(|| panic!("second"));
        drop(panic::take_hook());
        assert_eq!(code, ExitCode::from(2));
        assert_eq!(again, ExitCode::from(2));
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("caxton: internal error: the plan lost a step; left: 1; right: 2 at "),
            "{line}"
        );
        assert!(line.contains("panics.rs:"), "names the place: {line}");
    }

    #[test]
    fn what_does_not_panic_keeps_its_exit_code() {
        assert_eq!(guard(|| ExitCode::from(1)), ExitCode::from(1));
        assert_eq!(guard(|| ExitCode::SUCCESS), ExitCode::SUCCESS);
    }

    #[test]
    fn any_payload_makes_one_bounded_line() {
        let long = "x".repeat(10 * MAX_MESSAGE_CHARS);
        let line = panic_line(&long, None);
        assert!(line.chars().count() < 2 * MAX_MESSAGE_CHARS, "{line}");
        assert!(line.contains("x…"), "{line}");
        let line = panic_line(&42_u32, None);
        assert_eq!(
            line,
            "caxton: internal error: a panic without a message (a bug in caxton; please \
             report it)"
        );
    }
}
