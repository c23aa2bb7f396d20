//! In-process stand-ins for the host, on every target but `wasm32`.
//!
//! Built for the host target, the SDK cannot call the `caxton` imports, so
//! [`log`](crate::log), [`config`](crate::config) and [`now_ms`](crate::now_ms) use the
//! stand-ins here instead: a configuration map you set, a list of captured log lines and a
//! clock you may fix. [`Harness`] drives an [`Agent`] through the same allocation, dispatch
//! and reply code the wasm exports run. Together they let `cargo test` exercise an agent's
//! logic without a WebAssembly runtime.
//!
//! The state is per thread, so tests running in parallel do not see each other's settings.
//! A new thread starts with no configuration, no log lines and the system clock.
//!
//! ```
//! use caxton_agent::{host, config, log, now_ms, Level};
//!
//! host::set_config("model", "claude-sonnet");
//! host::set_now_ms(42);
//! log(Level::Debug, "ready");
//!
//! assert_eq!(config("model").as_deref(), Some("claude-sonnet"));
//! assert_eq!(now_ms(), 42);
//! assert_eq!(host::take_logs(), vec![host::LogRecord { level: Level::Debug, message: "ready".into() }]);
//!
//! host::reset();
//! assert_eq!(config("model"), None);
//! ```

extern crate std;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::agent::{Agent, InitError};
use crate::imports::Level;
use crate::instance::Instance;
use crate::reply::error_reply;

/// One line the agent logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The level it was logged at.
    pub level: Level,
    /// The line, decoded as UTF-8 (invalid bytes replaced, as the host does).
    pub message: String,
}

#[derive(Debug, Default)]
struct HostState {
    config: BTreeMap<Vec<u8>, Vec<u8>>,
    logs: Vec<LogRecord>,
    fixed_now_ms: Option<i64>,
}

std::thread_local! {
    static HOST: RefCell<HostState> = RefCell::new(HostState::default());
}

/// Sets configuration key `key` to `value`, as the host would for the instance.
pub fn set_config(key: impl Into<String>, value: impl Into<Vec<u8>>) {
    let key = key.into().into_bytes();
    HOST.with_borrow_mut(|host| host.config.insert(key, value.into()));
}

/// Removes configuration key `key` and returns its value, if it was set.
pub fn remove_config(key: &str) -> Option<Vec<u8>> {
    HOST.with_borrow_mut(|host| host.config.remove(key.as_bytes()))
}

/// Removes every configuration key.
pub fn clear_config() {
    HOST.with_borrow_mut(|host| host.config.clear());
}

/// The log lines captured so far, oldest first, leaving them in place.
pub fn logs() -> Vec<LogRecord> {
    HOST.with_borrow(|host| host.logs.clone())
}

/// The log lines captured so far, oldest first, emptying the capture.
pub fn take_logs() -> Vec<LogRecord> {
    HOST.with_borrow_mut(|host| core::mem::take(&mut host.logs))
}

/// Makes [`now_ms`](crate::now_ms) return `ms` until changed, like the validation sandbox's
/// virtual clock.
pub fn set_now_ms(ms: i64) {
    HOST.with_borrow_mut(|host| host.fixed_now_ms = Some(ms));
}

/// Makes [`now_ms`](crate::now_ms) follow the system clock again (the default).
pub fn use_system_clock() {
    HOST.with_borrow_mut(|host| host.fixed_now_ms = None);
}

/// Clears configuration and captured logs and returns to the system clock.
pub fn reset() {
    HOST.with_borrow_mut(|host| *host = HostState::default());
}

/// `caxton.log` of this thread's stand-in host.
pub(crate) fn log_import(level: Level, message: &[u8]) {
    let message = String::from_utf8_lossy(message).into_owned();
    HOST.with_borrow_mut(|host| host.logs.push(LogRecord { level, message }));
}

/// `caxton.config` of this thread's stand-in host, with the import's exact semantics: the
/// value's length or `-1`, and a copy only when the value fits in `out`.
pub(crate) fn config_import(key: &[u8], out: &mut [u8]) -> i32 {
    HOST.with_borrow(|host| match host.config.get(key) {
        None => -1,
        Some(value) => {
            if value.len() <= out.len() {
                out[..value.len()].copy_from_slice(value);
            }
            i32::try_from(value.len()).unwrap_or(i32::MAX)
        }
    })
}

/// `caxton.now_ms` of this thread's stand-in host.
pub(crate) fn now_ms_import() -> i64 {
    HOST.with_borrow(|host| host.fixed_now_ms)
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| {
                    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
                })
        })
}

/// One agent instance driven in-process, through the code the wasm exports run.
///
/// [`handle`](Harness::handle) does what a Caxton host does for each message: ask for a
/// buffer as `caxton_alloc` would, copy the message in, dispatch it as `caxton_handle`
/// would and read the reply. State persists between messages, as in one session.
///
/// ```
/// use caxton_agent::{host::Harness, Agent, InitError};
///
/// #[derive(Debug)]
/// struct Counter(u32);
///
/// impl Agent for Counter {
///     fn init() -> Result<Self, InitError> { Ok(Counter(0)) }
///     fn handle(&mut self, _message: &[u8]) -> Vec<u8> {
///         self.0 += 1;
///         self.0.to_string().into_bytes()
///     }
/// }
///
/// let mut session = Harness::<Counter>::new();
/// session.init()?;
/// assert_eq!(session.handle(b"a"), b"1");
/// assert_eq!(session.handle(b"b"), b"2");
/// # Ok::<(), InitError>(())
/// ```
#[derive(Debug)]
pub struct Harness<A> {
    instance: Instance<A>,
}

impl<A: Agent> Harness<A> {
    /// A fresh instance; the agent starts on [`init`](Harness::init) or the first message.
    pub fn new() -> Self {
        Self {
            instance: Instance::new(),
        }
    }

    /// Starts the agent as `caxton_init` would (a no-op when it already runs).
    pub fn init(&mut self) -> Result<(), InitError> {
        self.instance.init()
    }

    /// Sends one message and returns the reply.
    pub fn handle(&mut self, message: &[u8]) -> Vec<u8> {
        let Some(address) = self.instance.alloc(message.len()) else {
            return error_reply("caxton_alloc could not allocate the message");
        };
        if let Some(buffer) = self.instance.inputs_mut().get_mut(address, message.len()) {
            buffer.copy_from_slice(message);
        }
        self.instance.handle(address, message.len()).to_vec()
    }

    /// Sends one message given as text and returns the reply as text (invalid UTF-8 in the
    /// reply replaced).
    pub fn handle_str(&mut self, message: &str) -> String {
        String::from_utf8_lossy(&self.handle(message.as_bytes())).into_owned()
    }

    /// The agent's state, once it started.
    pub fn agent(&self) -> Option<&A> {
        self.instance.agent()
    }
}

impl<A: Agent> Default for Harness<A> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn config_stand_in_copies_only_when_the_value_fits() {
        set_config("prompt", "hello world");
        let mut small = [0u8; 4];
        assert_eq!(config_import(b"prompt", &mut small), 11);
        assert_eq!(small, [0; 4]);
        let mut big = [0u8; 16];
        assert_eq!(config_import(b"prompt", &mut big), 11);
        assert_eq!(&big[..11], b"hello world");
        assert_eq!(config_import(b"absent", &mut big), -1);
    }

    #[test]
    fn config_can_be_removed_and_cleared() {
        set_config("a", "1");
        set_config("b", "2");
        assert_eq!(remove_config("a"), Some(b"1".to_vec()));
        assert_eq!(remove_config("a"), None);
        clear_config();
        assert_eq!(crate::config("b"), None);
    }

    #[test]
    fn state_is_per_thread() {
        set_config("model", "here");
        let seen_elsewhere = std::thread::spawn(|| crate::config("model"))
            .join()
            .unwrap();
        assert_eq!(seen_elsewhere, None);
        assert_eq!(crate::config("model").as_deref(), Some("here"));
    }

    #[test]
    fn logs_keep_invalid_utf8_visible_as_replacement_characters() {
        reset();
        log_import(Level::Info, &[b'a', 0xff]);
        assert_eq!(logs()[0].message, "a\u{fffd}");
        assert_eq!(logs().len(), 1, "logs() leaves the capture in place");
        assert_eq!(take_logs().len(), 1);
        assert!(logs().is_empty());
    }

    #[derive(Debug)]
    struct Echo;

    impl Agent for Echo {
        fn init() -> Result<Self, InitError> {
            Ok(Echo)
        }

        fn handle(&mut self, message: &[u8]) -> Vec<u8> {
            message.to_vec()
        }
    }

    #[test]
    fn harness_round_trips_messages_of_any_size() {
        let mut harness = Harness::<Echo>::default();
        for len in [0, 1, 255, 4096, 100_000] {
            let message = vec![7u8; len];
            assert_eq!(harness.handle(&message), message);
        }
        assert_eq!(
            harness.handle_str("{\"kind\":\"ping\"}"),
            "{\"kind\":\"ping\"}"
        );
    }
}
