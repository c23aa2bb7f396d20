//! What the host keeps per instance (the store's data) and the `caxton.*` host functions.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use caxton_core::{AgentId, Clock, DeploymentId, SessionId};
use wasmtime::{Caller, Linker, Memory, ResourceLimiter};

use crate::abi::{self, guest_range};
use crate::config::ConfigLayers;

/// The store data of one instance.
pub(crate) struct HostState {
    pub(crate) guard: ResourceGuard,
    pub(crate) config: ConfigLayers,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) identity: Identity,
    pub(crate) log: SharedLogGate,
    pub(crate) log_line_bytes: usize,
    /// Set once the instance exists; before that (in a start function) the export is looked up.
    pub(crate) memory: Option<Memory>,
}

/// Who an instance runs for, as its log lines name it.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) agent: AgentId,
    pub(crate) deployment: DeploymentId,
    pub(crate) session: Option<SessionId>,
}

/// Enforces the per-instance memory and table limits and remembers a denied growth, so the
/// trap the agent raises next is reported as the memory limit it really is.
#[derive(Debug)]
pub(crate) struct ResourceGuard {
    pub(crate) memory_bytes: usize,
    pub(crate) table_elements: usize,
    /// The size a denied memory growth asked for, since the last reset.
    pub(crate) memory_denied: Option<usize>,
}

impl ResourceLimiter for ResourceGuard {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_denied = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // Growth we allowed failed anyway: the pool's per-memory maximum is lower than our
        // limit, which is a memory limit all the same.
        self.memory_denied.get_or_insert(self.memory_bytes);
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// A [`LogGate`] shared by every instance of one deployment, so the rate limit is the
/// deployment's, not a fresh burst for each instance it starts.
pub(crate) type SharedLogGate = Arc<Mutex<LogGate>>;

/// A token bucket limiting how many log lines may be emitted.
#[derive(Debug, Clone)]
pub(crate) struct LogGate {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Option<Instant>,
    dropped: u64,
}

impl LogGate {
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        LogGate {
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            refilled_at: None,
            dropped: 0,
        }
    }

    /// A gate to share between instances.
    pub(crate) fn shared(per_second: u32, burst: u32) -> SharedLogGate {
        Arc::new(Mutex::new(LogGate::new(per_second, burst)))
    }

    /// Whether a line may go out at `now`; when it may, also how many were dropped since the
    /// last line that went out.
    pub(crate) fn admit(&mut self, now: Instant) -> Option<u64> {
        if let Some(before) = self.refilled_at {
            let elapsed = now.saturating_duration_since(before).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        }
        self.refilled_at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.dropped))
        } else {
            self.dropped += 1;
            None
        }
    }
}

/// At most `cap` bytes of a log message, as escaped text (see [`escaped`]); and whether it
/// was cut.
pub(crate) fn log_text(bytes: &[u8], cap: usize) -> (Cow<'_, str>, bool) {
    let cut = bytes.len() > cap;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(cap)]);
    let text = match escaped(&text) {
        Some(escaped) => Cow::Owned(escaped),
        None => text,
    };
    (text, cut)
}

/// Whether a character of guest text could break or disguise a host log line: line
/// breaks, control characters (terminal escapes among them), Unicode line separators and
/// bidirectional overrides; and the backslash, so escaped text reads back unambiguously.
fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Guest text with every character that [`needs_escape`] written as `\n`, `\r`, `\t`,
/// `\\` or `\u{..}`, so it stays on one log line and cannot pass for a host line; `None`
/// when there is nothing to escape.
pub(crate) fn escaped(text: &str) -> Option<String> {
    if !text.chars().any(needs_escape) {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            // Writing to a String cannot fail.
            c if needs_escape(c) => _ = write!(out, "\\u{{{:x}}}", u32::from(c)),
            c => out.push(c),
        }
    }
    Some(out)
}

fn memory_of(caller: &mut Caller<'_, HostState>, function: &str) -> wasmtime::Result<Memory> {
    if let Some(memory) = caller.data().memory {
        return Ok(memory);
    }
    caller
        .get_export(abi::EXPORT_MEMORY)
        .and_then(|export| export.into_memory())
        .ok_or_else(|| wasmtime::format_err!("caxton.{function}: the agent exports no memory"))
}

fn out_of_bounds(function: &str, what: &str, ptr: i32, len: i32, memory: usize) -> wasmtime::Error {
    wasmtime::format_err!(
        "caxton.{function}: {what} at {}+{} lies outside the {memory}-byte memory",
        ptr as u32,
        len as u32
    )
}

fn host_log(
    mut caller: Caller<'_, HostState>,
    level: i32,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<()> {
    let memory = memory_of(&mut caller, abi::IMPORT_LOG)?;
    let (memory, state) = memory.data_and_store_mut(&mut caller);
    let range = guest_range(ptr as u32, len as u32, memory.len())
        .ok_or_else(|| out_of_bounds(abi::IMPORT_LOG, "message", ptr, len, memory.len()))?;
    // Every critical section of the gate leaves it consistent, so a poisoned one is usable.
    let admitted = state
        .log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .admit(Instant::now());
    let Some(dropped) = admitted else {
        return Ok(());
    };
    let (text, truncated) = log_text(&memory[range], state.log_line_bytes);
    let id = &state.identity;
    let session = id.session.as_ref().map_or("", SessionId::as_str);
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(
                target: "caxton::agent",
                $level,
                agent = %id.agent,
                deployment = %id.deployment,
                session,
                truncated,
                dropped_before = dropped,
                "{text}"
            )
        };
    }
    match level {
        i32::MIN..=0 => emit!(tracing::Level::TRACE),
        1 => emit!(tracing::Level::DEBUG),
        2 => emit!(tracing::Level::INFO),
        3 => emit!(tracing::Level::WARN),
        _ => emit!(tracing::Level::ERROR),
    }
    Ok(())
}

fn host_config(
    mut caller: Caller<'_, HostState>,
    key_ptr: i32,
    key_len: i32,
    out_ptr: i32,
    out_cap: i32,
) -> wasmtime::Result<i32> {
    let memory = memory_of(&mut caller, abi::IMPORT_CONFIG)?;
    let (memory, state) = memory.data_and_store_mut(&mut caller);
    let key_range = guest_range(key_ptr as u32, key_len as u32, memory.len())
        .ok_or_else(|| out_of_bounds(abi::IMPORT_CONFIG, "key", key_ptr, key_len, memory.len()))?;
    // Keys are text; bytes that are not UTF-8 cannot name any key.
    let Ok(key) = std::str::from_utf8(&memory[key_range]) else {
        return Ok(-1);
    };
    let key = key.to_owned();
    let cap = usize::try_from(out_cap).unwrap_or(0);
    state.config.with_value(&key, |value| {
        let Some(value) = value else {
            return Ok(-1);
        };
        let len = i32::try_from(value.len()).map_err(|_| {
            wasmtime::format_err!(
                "caxton.config: the value of `{key}` is {} bytes, too long to report",
                value.len()
            )
        })?;
        if value.len() > cap {
            return Ok(len);
        }
        let out = guest_range(out_ptr as u32, len as u32, memory.len()).ok_or_else(|| {
            out_of_bounds(
                abi::IMPORT_CONFIG,
                "output buffer",
                out_ptr,
                len,
                memory.len(),
            )
        })?;
        memory[out].copy_from_slice(value.as_bytes());
        Ok(len)
    })
}

fn host_now_ms(caller: Caller<'_, HostState>) -> i64 {
    i64::try_from(caller.data().clock.now().as_millis()).unwrap_or(i64::MAX)
}

/// A linker offering exactly the `caxton` imports of the ABI, and nothing else.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(abi::IMPORT_MODULE, abi::IMPORT_LOG, host_log)?;
    linker.func_wrap(abi::IMPORT_MODULE, abi::IMPORT_CONFIG, host_config)?;
    linker.func_wrap(abi::IMPORT_MODULE, abi::IMPORT_NOW_MS, host_now_ms)?;
    Ok(linker)
}

/// Epoch ticks that cover at least `deadline` when the epoch advances every `tick`.
pub(crate) fn ticks_for(deadline: Option<Duration>, tick: Duration) -> u64 {
    // "No deadline" must still be a finite delta: the store adds it to the current epoch.
    const NEVER: u64 = u64::MAX / 4;
    match deadline {
        None => NEVER,
        Some(deadline) => {
            let tick = tick.as_nanos().max(1);
            // One extra tick: the first may be partly over when the deadline is set.
            let ticks = deadline.as_nanos().div_ceil(tick) + 1;
            u64::try_from(ticks).unwrap_or(NEVER).min(NEVER)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_gate_drops_lines_over_the_burst_and_counts_them() {
        let start = Instant::now();
        let mut gate = LogGate::new(10, 3);
        assert_eq!(gate.admit(start), Some(0));
        assert_eq!(gate.admit(start), Some(0));
        assert_eq!(gate.admit(start), Some(0));
        assert_eq!(gate.admit(start), None);
        assert_eq!(gate.admit(start), None);
        // 100 ms refills one token at 10 per second; the line reports the two dropped.
        assert_eq!(gate.admit(start + Duration::from_millis(100)), Some(2));
        assert_eq!(gate.admit(start + Duration::from_millis(100)), None);
    }

    #[test]
    fn guest_text_cannot_break_or_disguise_a_log_line() {
        let forged = "done\nERROR caxton::wasm: deployment unloaded\r\x1b[2K\u{202e}\\n";
        let (text, cut) = log_text(forged.as_bytes(), 1024);
        assert!(!cut);
        assert_eq!(
            text,
            "done\\nERROR caxton::wasm: deployment unloaded\\r\\u{1b}[2K\\u{202e}\\\\n"
        );
        assert!(!text.contains(['\n', '\r', '\x1b']), "{text}");
        // Text with nothing to escape is passed on as is, without a copy.
        assert!(matches!(
            log_text("plain text, üñí".as_bytes(), 64).0,
            Cow::Borrowed(_)
        ));
        assert_eq!(escaped("tab\there").as_deref(), Some("tab\\there"));
        assert_eq!(
            escaped("\u{85}\u{2028}").as_deref(),
            Some("\\u{85}\\u{2028}")
        );
    }

    #[test]
    fn ticks_cover_the_deadline() {
        let tick = Duration::from_millis(1);
        assert_eq!(ticks_for(Some(Duration::from_millis(10)), tick), 11);
        assert_eq!(ticks_for(Some(Duration::from_micros(1500)), tick), 3);
        assert_eq!(ticks_for(Some(Duration::ZERO), tick), 1);
        assert!(ticks_for(None, tick) > 1 << 60);
        assert!(ticks_for(Some(Duration::MAX), tick) <= u64::MAX / 4);
    }

    proptest! {
        #[test]
        fn the_gate_never_admits_more_than_burst_plus_rate_times_time(
            per_second in 1u32..1_000,
            burst in 1u32..100,
            gaps in proptest::collection::vec(0u64..50_000, 1..300),
        ) {
            let start = Instant::now();
            let mut gate = LogGate::new(per_second, burst);
            let mut now = start;
            let mut admitted = 0u64;
            for gap in gaps {
                now += Duration::from_micros(gap);
                if gate.admit(now).is_some() {
                    admitted += 1;
                }
            }
            let elapsed = now.duration_since(start).as_secs_f64();
            let bound = f64::from(burst) + elapsed * f64::from(per_second);
            prop_assert!(admitted as f64 <= bound + 1e-9, "{admitted} > {bound}");
        }

        #[test]
        fn log_text_is_capped_and_escaped(bytes in proptest::collection::vec(any::<u8>(), 0..600), cap in 0usize..300) {
            let (text, cut) = log_text(&bytes, cap);
            prop_assert_eq!(cut, bytes.len() > cap);
            // Lossy decoding turns a bad byte into 3 bytes of U+FFFD; escaping turns a
            // control byte into at most 6 (`\u{1f}`) and a 3-byte separator into 8.
            prop_assert!(text.len() <= 6 * cap.min(bytes.len()));
            prop_assert!(!text.chars().any(|c| c != '\\' && needs_escape(c)), "{text:?}");
            if let (Ok(original), false) = (std::str::from_utf8(&bytes), cut)
                && !original.chars().any(needs_escape)
            {
                prop_assert_eq!(&*text, original);
            }
        }
    }
}
