//! Safe wrappers over the host imports `caxton.log`, `caxton.config` and `caxton.now_ms`.
//!
//! On `wasm32` each wrapper calls the import; a module imports only the functions its code
//! actually reaches. On every other target the wrappers call the in-process stand-ins of
//! [`crate::host`], so an agent's logic can be tested with `cargo test`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Log levels of `caxton.log`, numbered as the ABI numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i32)]
pub enum Level {
    /// Step-by-step detail (0).
    Trace = 0,
    /// Diagnostic detail (1).
    Debug = 1,
    /// Normal events (2).
    Info = 2,
    /// Something unexpected that the agent handled (3).
    Warn = 3,
    /// Something the agent could not handle (4).
    Error = 4,
}

impl Level {
    /// The number the ABI uses for this level.
    pub const fn as_i32(self) -> i32 {
        self as i32
    }

    /// The level the ABI numbers `level`, if any.
    pub const fn from_i32(level: i32) -> Option<Self> {
        Some(match level {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            _ => return None,
        })
    }
}

/// Sends a log line to the host, which forwards it to `tracing` with the agent, deployment
/// and session of the instance (and may cut long lines).
///
/// ```
/// use caxton_agent::{host, log, Level};
///
/// log(Level::Info, "order o-17 accepted");
/// assert_eq!(host::take_logs()[0].message, "order o-17 accepted");
/// ```
pub fn log(level: Level, message: &str) {
    // A wasm32 memory cannot hold more than 4 GiB, and the host caps lines far below
    // i32::MAX, so cutting there loses nothing the host would keep.
    let len = message.len().min(i32::MAX as usize);
    sys::log(level, &message.as_bytes()[..len]);
}

/// The host clock in milliseconds since the Unix epoch; virtual inside the validation
/// sandbox, so agents must not assume it moves between messages.
pub fn now_ms() -> i64 {
    sys::now_ms()
}

/// The value of configuration key `key` as text, or `None` when it is absent.
///
/// Configuration carries the version's model, prompt and tools layers and the settings the
/// host injects; values may change between messages without a restart, so read them when
/// they are needed. This is [`try_config`] with every failure read as "absent"; use
/// [`try_config`] to tell them apart.
///
/// ```
/// use caxton_agent::{config, host};
///
/// assert_eq!(config("prompt"), None);
/// host::set_config("prompt", "You are a terse assistant.");
/// assert_eq!(config("prompt").as_deref(), Some("You are a terse assistant."));
/// ```
pub fn config(key: &str) -> Option<String> {
    try_config(key).ok().flatten()
}

/// The value of configuration key `key` as text: `Ok(None)` when it is absent, an error when
/// it is not UTF-8 or could not be read.
pub fn try_config(key: &str) -> Result<Option<String>, ConfigError> {
    match config_bytes(key)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|error| ConfigError::NotUtf8 {
                key: key.into(),
                valid_up_to: error.utf8_error().valid_up_to(),
            }),
    }
}

/// The raw bytes of configuration key `key`, or `Ok(None)` when it is absent.
///
/// The value is read into a buffer of [`CONFIG_INITIAL_CAPACITY`] bytes; when the host
/// reports a longer value (and copies nothing, as the ABI says), the buffer grows to that
/// length and the read is retried, up to [`CONFIG_MAX_ATTEMPTS`] times in all, since the
/// value may change in between.
pub fn config_bytes(key: &str) -> Result<Option<Vec<u8>>, ConfigError> {
    read_config_with(key, CONFIG_INITIAL_CAPACITY, sys::config)
}

/// Size of the first buffer [`config_bytes`] offers the host.
pub const CONFIG_INITIAL_CAPACITY: usize = 256;

/// How many times [`config_bytes`] asks the host before giving up on a value that keeps
/// growing.
pub const CONFIG_MAX_ATTEMPTS: u32 = 4;

/// Why a configuration value could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The key is longer than an `i32` length can say.
    KeyTooLong {
        /// Length of the key in bytes.
        len: usize,
    },
    /// The host answered with a length below `-1`, which the ABI does not define.
    InvalidLength {
        /// The key that was read.
        key: String,
        /// What the host returned.
        returned: i32,
    },
    /// The value grew between every pair of reads.
    Unstable {
        /// The key that was read.
        key: String,
        /// How many reads were tried.
        attempts: u32,
    },
    /// The value is not UTF-8 ([`config_bytes`] returns it as it is).
    NotUtf8 {
        /// The key that was read.
        key: String,
        /// Length of the longest valid UTF-8 prefix.
        valid_up_to: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyTooLong { len } => {
                write!(f, "config key of {len} bytes is longer than i32::MAX")
            }
            Self::InvalidLength { key, returned } => write!(
                f,
                "host returned length {returned} for config key `{key}`; the ABI allows -1 or a length"
            ),
            Self::Unstable { key, attempts } => write!(
                f,
                "config key `{key}` grew between each of {attempts} reads"
            ),
            Self::NotUtf8 { key, valid_up_to } => write!(
                f,
                "config key `{key}` is not UTF-8 (invalid byte at offset {valid_up_to})"
            ),
        }
    }
}

impl core::error::Error for ConfigError {}

/// The grow-and-retry loop of [`config_bytes`], over any function with the semantics of the
/// `caxton.config` import: `read(key, out)` returns the value's length or `-1` when absent,
/// and copies the value into `out` only when it fits.
pub(crate) fn read_config_with(
    key: &str,
    initial_capacity: usize,
    mut read: impl FnMut(&[u8], &mut [u8]) -> i32,
) -> Result<Option<Vec<u8>>, ConfigError> {
    if i32::try_from(key.len()).is_err() {
        return Err(ConfigError::KeyTooLong { len: key.len() });
    }
    let mut buffer = Vec::new();
    let mut capacity = initial_capacity.min(i32::MAX as usize);
    for _ in 0..CONFIG_MAX_ATTEMPTS {
        buffer.resize(capacity, 0);
        let returned = read(key.as_bytes(), &mut buffer);
        let len = match returned {
            -1 => return Ok(None),
            len if len < -1 => {
                return Err(ConfigError::InvalidLength {
                    key: key.into(),
                    returned,
                });
            }
            len => len as usize,
        };
        if len <= capacity {
            buffer.truncate(len);
            return Ok(Some(buffer));
        }
        capacity = len;
    }
    Err(ConfigError::Unstable {
        key: key.into(),
        attempts: CONFIG_MAX_ATTEMPTS,
    })
}

/// The imports themselves, on wasm32.
#[cfg(target_arch = "wasm32")]
mod sys {
    use super::Level;

    #[link(wasm_import_module = "caxton")]
    #[allow(unsafe_code)]
    unsafe extern "C" {
        /// The host reads `[ptr, ptr + len)` and nothing else.
        #[link_name = "log"]
        fn caxton_log(level: i32, ptr: *const u8, len: i32);
        /// The host reads the key and writes at most `out_cap` bytes at `out_ptr`.
        #[link_name = "config"]
        fn caxton_config(key_ptr: *const u8, key_len: i32, out_ptr: *mut u8, out_cap: i32) -> i32;
        /// Takes no pointer, so any call is sound.
        #[link_name = "now_ms"]
        safe fn caxton_now_ms() -> i64;
    }

    pub(super) fn log(level: Level, message: &[u8]) {
        // SAFETY: the pointer and length describe `message`, a live borrowed slice whose
        // length the caller capped to fit an i32; the host only reads that range.
        #[allow(unsafe_code)]
        unsafe {
            caxton_log(level.as_i32(), message.as_ptr(), message.len() as i32)
        }
    }

    pub(super) fn config(key: &[u8], out: &mut [u8]) -> i32 {
        // SAFETY: both pointer/length pairs describe live slices (`read_config_with` keeps
        // both lengths within i32); the host writes at most `out.len()` bytes into `out`,
        // which is exclusively borrowed, and any bytes are valid `u8`s.
        #[allow(unsafe_code)]
        unsafe {
            caxton_config(
                key.as_ptr(),
                key.len() as i32,
                out.as_mut_ptr(),
                out.len() as i32,
            )
        }
    }

    pub(super) fn now_ms() -> i64 {
        caxton_now_ms()
    }
}

/// The in-process stand-ins of [`crate::host`], on every other target.
#[cfg(not(target_arch = "wasm32"))]
mod sys {
    pub(super) use crate::host::{
        config_import as config, log_import as log, now_ms_import as now_ms,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use proptest::prelude::*;

    /// A stand-in for `caxton.config` holding one value, counting the reads.
    fn serve(value: &[u8], reads: &mut u32) -> impl FnMut(&[u8], &mut [u8]) -> i32 {
        move |_key, out| {
            *reads += 1;
            if value.len() <= out.len() {
                out[..value.len()].copy_from_slice(value);
            }
            value.len() as i32
        }
    }

    #[test]
    fn levels_use_the_abi_numbers() {
        let levels = [
            Level::Trace,
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error,
        ];
        for (number, level) in levels.into_iter().enumerate() {
            assert_eq!(level.as_i32(), number as i32);
            assert_eq!(Level::from_i32(number as i32), Some(level));
        }
        assert_eq!(Level::from_i32(5), None);
        assert_eq!(Level::from_i32(-1), None);
    }

    #[test]
    fn short_value_is_read_in_one_call() {
        let mut reads = 0;
        let value = read_config_with("model", 16, serve(b"claude", &mut reads)).unwrap();
        assert_eq!(value.as_deref(), Some(&b"claude"[..]));
        assert_eq!(reads, 1);
    }

    #[test]
    fn value_longer_than_the_buffer_is_read_again_with_its_length() {
        let long = vec![b'p'; 1000];
        let mut reads = 0;
        let value = read_config_with("prompt", 16, serve(&long, &mut reads)).unwrap();
        assert_eq!(value, Some(long));
        assert_eq!(reads, 2);
    }

    #[test]
    fn value_exactly_the_buffer_size_needs_no_retry() {
        let mut reads = 0;
        let value = read_config_with("k", 4, serve(b"four", &mut reads)).unwrap();
        assert_eq!(value.as_deref(), Some(&b"four"[..]));
        assert_eq!(reads, 1);
    }

    #[test]
    fn absent_key_reads_as_none() {
        assert_eq!(read_config_with("missing", 16, |_, _| -1), Ok(None));
    }

    #[test]
    fn empty_value_is_present_and_empty() {
        assert_eq!(read_config_with("flag", 0, |_, _| 0), Ok(Some(Vec::new())));
    }

    #[test]
    fn value_that_keeps_growing_gives_up_with_an_error() {
        let mut len = 10;
        let error = read_config_with("prompt", 4, |_, out: &mut [u8]| {
            len = out.len() as i32 + 1;
            len
        })
        .unwrap_err();
        assert_eq!(
            error,
            ConfigError::Unstable {
                key: "prompt".into(),
                attempts: CONFIG_MAX_ATTEMPTS
            }
        );
        assert_eq!(
            error.to_string(),
            "config key `prompt` grew between each of 4 reads"
        );
    }

    #[test]
    fn value_that_grew_once_is_read_on_the_third_call() {
        let mut calls = 0;
        let value = read_config_with("tools", 4, |_, out: &mut [u8]| {
            calls += 1;
            let value: &[u8] = if calls == 1 {
                b"0123456"
            } else {
                b"0123456789"
            };
            if value.len() <= out.len() {
                out[..value.len()].copy_from_slice(value);
            }
            value.len() as i32
        })
        .unwrap();
        assert_eq!(value.as_deref(), Some(&b"0123456789"[..]));
        assert_eq!(calls, 3);
    }

    #[test]
    fn lengths_below_minus_one_are_refused() {
        let error = read_config_with("model", 8, |_, _| -7).unwrap_err();
        assert!(matches!(
            error,
            ConfigError::InvalidLength { returned: -7, .. }
        ));
        assert!(error.to_string().contains("`model`"));
    }

    #[test]
    fn non_utf8_value_is_an_error_for_text_but_readable_as_bytes() {
        crate::host::set_config("secret", vec![b'o', b'k', 0xff]);
        assert_eq!(
            try_config("secret"),
            Err(ConfigError::NotUtf8 {
                key: "secret".into(),
                valid_up_to: 2
            })
        );
        assert_eq!(config("secret"), None);
        assert_eq!(config_bytes("secret"), Ok(Some(vec![b'o', b'k', 0xff])));
    }

    #[test]
    fn log_lines_reach_the_host_with_their_level() {
        crate::host::take_logs();
        log(Level::Warn, "coupon expired");
        log(Level::Trace, "");
        let logs = crate::host::take_logs();
        assert_eq!(logs.len(), 2);
        assert_eq!(
            (logs[0].level, logs[0].message.as_str()),
            (Level::Warn, "coupon expired")
        );
        assert_eq!(
            (logs[1].level, logs[1].message.as_str()),
            (Level::Trace, "")
        );
    }

    #[test]
    fn now_ms_reads_the_host_clock() {
        crate::host::set_now_ms(1_700_000_000_123);
        assert_eq!(now_ms(), 1_700_000_000_123);
        crate::host::use_system_clock();
        assert!(now_ms() > 1_600_000_000_000);
    }

    proptest! {
        #[test]
        fn any_value_is_read_whole_whatever_the_first_buffer(
            value in proptest::collection::vec(any::<u8>(), 0..2000),
            initial in 0usize..600,
        ) {
            let mut reads = 0;
            let read = read_config_with("key", initial, serve(&value, &mut reads)).unwrap();
            prop_assert_eq!(read, Some(value.clone()));
            prop_assert_eq!(reads, if value.len() <= initial { 1 } else { 2 });
        }
    }
}
