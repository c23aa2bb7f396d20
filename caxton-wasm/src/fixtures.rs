//! WAT agents to test against: well-behaved ones, hostile ones and ABI breakers.
//!
//! Each [`Fixture`] is a small module in WebAssembly text, kept as a `.wat` file in this
//! crate's `tests/fixtures/`. [`Fixture::wasm`] assembles it.
//!
//! ```
//! use caxton_wasm::fixtures::Fixture;
//!
//! let echo = Fixture::Echo.wasm();
//! assert_eq!(&echo[..4], b"\0asm");
//! assert!(Fixture::MemoryBomb.is_hostile());
//! ```

/// One fixture agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fixture {
    /// Replies with the message it was sent.
    Echo,
    /// Echo with a `caxton_init` that marks it ready (messages of up to 60 000 bytes).
    EchoWithInit,
    /// Keeps a count in its instance and replies with it in decimal ("1", "2", …); logs
    /// "counter ready" at info level from `caxton_init`.
    Counter,
    /// The message is a little-endian u32 capacity then a key; replies with the i32 that
    /// `caxton.config` returned (little-endian) followed by its 64-byte output buffer, which
    /// starts filled with `#`.
    ConfigReader,
    /// Replies with `caxton.now_ms()` as 8 little-endian bytes.
    Clock,
    /// The message is a level byte then text, passed to `caxton.log`; replies with nothing.
    Logger,
    /// The message is a little-endian u32 of milliseconds to spin on `caxton.now_ms`
    /// before replying "done".
    Slow,
    /// The message is 8 little-endian bytes returned as is from `caxton_handle`, so the
    /// caller picks the reply's pointer and length.
    ReplyAt,
    /// Hostile: never returns from `caxton_handle`.
    InfiniteLoop,
    /// Hostile: grows memory until growth fails, then traps.
    MemoryBomb,
    /// Hostile: recurses until the stack overflows.
    UnboundedRecursion,
    /// Hostile: replies with bytes far outside its memory.
    ReplyOutsideMemory,
    /// Broken: `caxton_init` traps.
    TrappingInit,
    /// Broken: `caxton_init` returns 7 (not ready).
    InitNotReady,
    /// ABI violation: `memory` is not exported.
    MissingMemory,
    /// ABI violation: no `caxton_alloc`.
    MissingAlloc,
    /// ABI violation: no `caxton_handle`.
    MissingHandle,
    /// ABI violation: `caxton_handle` returns i32.
    WrongHandleSignature,
    /// ABI violation: imports `env.abort` and `caxton.exec`.
    ForeignImport,
}

impl Fixture {
    /// Every fixture.
    pub const ALL: [Fixture; 19] = [
        Fixture::Echo,
        Fixture::EchoWithInit,
        Fixture::Counter,
        Fixture::ConfigReader,
        Fixture::Clock,
        Fixture::Logger,
        Fixture::Slow,
        Fixture::ReplyAt,
        Fixture::InfiniteLoop,
        Fixture::MemoryBomb,
        Fixture::UnboundedRecursion,
        Fixture::ReplyOutsideMemory,
        Fixture::TrappingInit,
        Fixture::InitNotReady,
        Fixture::MissingMemory,
        Fixture::MissingAlloc,
        Fixture::MissingHandle,
        Fixture::WrongHandleSignature,
        Fixture::ForeignImport,
    ];

    /// The module's WebAssembly text.
    pub fn wat(self) -> &'static str {
        match self {
            Fixture::Echo => include_str!("../tests/fixtures/echo.wat"),
            Fixture::EchoWithInit => include_str!("../tests/fixtures/echo_with_init.wat"),
            Fixture::Counter => include_str!("../tests/fixtures/counter.wat"),
            Fixture::ConfigReader => include_str!("../tests/fixtures/config_reader.wat"),
            Fixture::Clock => include_str!("../tests/fixtures/clock.wat"),
            Fixture::Logger => include_str!("../tests/fixtures/logger.wat"),
            Fixture::Slow => include_str!("../tests/fixtures/slow.wat"),
            Fixture::ReplyAt => include_str!("../tests/fixtures/reply_at.wat"),
            Fixture::InfiniteLoop => include_str!("../tests/fixtures/infinite_loop.wat"),
            Fixture::MemoryBomb => include_str!("../tests/fixtures/memory_bomb.wat"),
            Fixture::UnboundedRecursion => {
                include_str!("../tests/fixtures/unbounded_recursion.wat")
            }
            Fixture::ReplyOutsideMemory => {
                include_str!("../tests/fixtures/reply_outside_memory.wat")
            }
            Fixture::TrappingInit => include_str!("../tests/fixtures/trapping_init.wat"),
            Fixture::InitNotReady => include_str!("../tests/fixtures/init_not_ready.wat"),
            Fixture::MissingMemory => include_str!("../tests/fixtures/missing_memory.wat"),
            Fixture::MissingAlloc => include_str!("../tests/fixtures/missing_alloc.wat"),
            Fixture::MissingHandle => include_str!("../tests/fixtures/missing_handle.wat"),
            Fixture::WrongHandleSignature => {
                include_str!("../tests/fixtures/wrong_handle_signature.wat")
            }
            Fixture::ForeignImport => include_str!("../tests/fixtures/foreign_import.wat"),
        }
    }

    /// The module's binary.
    pub fn wasm(self) -> Vec<u8> {
        assemble(self.wat())
    }

    /// Whether the agent misbehaves at run time (loops, bombs memory, recurses, replies
    /// out of bounds).
    pub fn is_hostile(self) -> bool {
        matches!(
            self,
            Fixture::InfiniteLoop
                | Fixture::MemoryBomb
                | Fixture::UnboundedRecursion
                | Fixture::ReplyOutsideMemory
        )
    }

    /// Whether the module breaks the ABI and must fail to load.
    pub fn breaks_abi(self) -> bool {
        matches!(
            self,
            Fixture::MissingMemory
                | Fixture::MissingAlloc
                | Fixture::MissingHandle
                | Fixture::WrongHandleSignature
                | Fixture::ForeignImport
        )
    }
}

/// An agent replying with `tag` followed by the message: two tags make two versions of one
/// agent that tell their answers apart.
pub fn tagged_echo(tag: &str) -> Vec<u8> {
    let escaped: String = tag.bytes().map(|b| format!("\\{b:02x}")).collect();
    let base = tag.len();
    assemble(&format!(
        r#"(module
  (memory (export "memory") 1)
  (data (i32.const 0) "{escaped}")
  (func (export "caxton_alloc") (param $len i32) (result i32)
    (local $missing i32)
    (local.set $missing
      (i32.sub
        (i32.shr_u (i32.add (local.get $len) (i32.const {end_pad})) (i32.const 16))
        (memory.size)))
    (if (i32.gt_s (local.get $missing) (i32.const 0))
      (then
        (if (i32.eq (memory.grow (local.get $missing)) (i32.const -1))
          (then unreachable))))
    (i32.const {base}))
  (func (export "caxton_handle") (param $ptr i32) (param $len i32) (result i64)
    (i64.extend_i32_u (i32.add (local.get $len) (i32.const {base})))))"#,
        end_pad = base + 65535,
    ))
}

/// A synthetic agent with `functions` helper functions (at least 1), each hashing part of
/// the message and calling the next: code of a realistic size for compile and cache
/// measurements (128 functions make about 14 KB of wasm). Replies with a 4-byte hash.
pub fn synthetic_agent(functions: usize) -> Vec<u8> {
    use std::fmt::Write as _;
    let functions = functions.max(1);
    let mut wat = String::from(
        r#"(module
  (memory (export "memory") 1)
  (func (export "caxton_alloc") (param $len i32) (result i32)
    (if (i32.gt_u (local.get $len) (i32.const 60000)) (then unreachable))
    (i32.const 1024))
  (func (export "caxton_handle") (param $ptr i32) (param $len i32) (result i64)
    (i32.store (i32.const 0) (call $f0 (local.get $len)))
    (i64.const 4))
"#,
    );
    for k in 0..functions {
        let seed = (k as u32).wrapping_mul(2_654_435_761);
        let onward = if k + 1 < functions {
            format!(
                "(i32.add (local.get $acc) (call $f{} (i32.shr_u (local.get $x) (i32.const 1))))",
                k + 1
            )
        } else {
            "(local.get $acc)".to_owned()
        };
        // Writing to a String cannot fail.
        let _ = write!(
            wat,
            r#"  (func $f{k} (param $x i32) (result i32)
    (local $i i32) (local $acc i32)
    (local.set $acc (i32.const {seed}))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $x)))
        (local.set $acc
          (i32.xor
            (i32.mul (local.get $acc) (i32.const 16777619))
            (i32.load8_u (i32.add (i32.const 1024) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (if (result i32) (i32.gt_u (local.get $x) (i32.const {k}))
      (then {onward})
      (else (local.get $acc))))
"#,
            seed = seed as i32,
        );
    }
    wat.push(')');
    assemble(&wat)
}

fn assemble(wat: &str) -> Vec<u8> {
    match wat::parse_str(wat) {
        Ok(wasm) => wasm,
        // The fixtures are part of this crate and assemble; reaching this is a bug here.
        Err(err) => unreachable!("fixture does not assemble: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_assembles() {
        for fixture in Fixture::ALL {
            assert_eq!(&fixture.wasm()[..4], b"\0asm", "{fixture:?}");
        }
        assert_eq!(&tagged_echo("v1:")[..4], b"\0asm");
        let synthetic = synthetic_agent(128);
        assert!(
            (5_000..40_000).contains(&synthetic.len()),
            "{}",
            synthetic.len()
        );
    }
}
