//! The [`Agent`] trait an agent implements, and the error its start-up may return.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// An agent: state created once per instance, then one call per message.
///
/// Caxton creates one WebAssembly instance per session, so the value returned by
/// [`init`](Agent::init) lives in the instance's linear memory for the whole session and
/// [`handle`](Agent::handle) may keep conversation state in `self` across messages.
/// Messages without a session get a fresh or pooled instance, so an agent must not count
/// on seeing any earlier message.
///
/// [`export_agent!`](crate::export_agent) turns an implementation into the ABI exports.
/// The state lives in a `static`, which is why [`export_agent!`](crate::export_agent)
/// also asks for `Send` (trivially true for ordinary owned data).
pub trait Agent: Sized {
    /// Creates the agent's state; called by `caxton_init` before the first message.
    ///
    /// Returning an error makes `caxton_init` answer "not ready", and the host discards the
    /// instance. A host that does not call `caxton_init` gets the same call on the first
    /// message instead; while it fails, every message is answered with an `error` reply.
    fn init() -> Result<Self, InitError>;

    /// Handles one message and returns the reply's bytes.
    ///
    /// By convention both are JSON objects with a string field `kind`; a reply of kind
    /// `error` counts as an application error (see [`error_reply`](crate::error_reply)).
    fn handle(&mut self, message: &[u8]) -> Vec<u8>;
}

/// Why an agent could not start: the reason is what the host logs and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitError {
    reason: String,
}

impl InitError {
    /// An error with a reason such as `"config key \`model\` is absent"`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// The reason given when the error was made.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "agent could not start: {}", self.reason)
    }
}

impl core::error::Error for InitError {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn init_error_message_carries_the_reason() {
        let error = InitError::new("config key `model` is absent");
        assert_eq!(error.reason(), "config key `model` is absent");
        assert_eq!(
            error.to_string(),
            "agent could not start: config key `model` is absent"
        );
    }
}
