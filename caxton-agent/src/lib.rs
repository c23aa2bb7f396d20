//! Write Caxton agents in Rust.
//!
//! A Caxton agent is a WebAssembly module that speaks the agent ABI v1 (see [`abi`]): the
//! host puts each message in the agent's memory, calls `caxton_handle` and reads the reply
//! back. This crate writes that glue for you:
//!
//! - implement [`Agent`] (start-up state, then one call per message) and invoke
//!   [`export_agent!`] once: it emits `caxton_alloc`, `caxton_handle` and `caxton_init`,
//!   keeps the agent's state in linear memory for the instance's life (one instance per
//!   session, so that is session state) and keeps each reply valid until the next message;
//! - call the host through safe wrappers: [`log`], [`config`] (which grows its buffer and
//!   retries when a value is longer than it), [`now_ms`];
//! - declare the message kinds the agent accepts and emits with [`contract!`], which builds
//!   the `caxton.contract` custom section at compile time.
//!
//! The crate is `#![no_std]` with `alloc`; agents themselves may use `std` (on
//! `wasm32-unknown-unknown` it brings the allocator and needs no import). A `no_std` agent
//! must provide its own `#[global_allocator]` and `#[panic_handler]`. A panic traps, and
//! the host counts a trap as an error of that message and discards the instance.
//!
//! Build the agent as a `cdylib` for `wasm32-unknown-unknown`. The module then imports only
//! the `caxton` functions the agent calls. On every other target the exports are left out
//! and the wrappers talk to in-process stand-ins ([`host`]), so `cargo test` can check an
//! agent's logic, driving it with [`host::Harness`] through the same dispatch code.
//!
//! # Example
//!
//! An agent that greets and counts the turns of its session:
//!
//! ```
//! use caxton_agent::{config, contract, error_reply, export_agent, log, Agent, InitError, Level};
//!
//! #[derive(Debug)]
//! pub struct Greeter {
//!     turns: u32,
//! }
//!
//! impl Agent for Greeter {
//!     fn init() -> Result<Self, InitError> {
//!         Ok(Greeter { turns: 0 })
//!     }
//!
//!     fn handle(&mut self, message: &[u8]) -> Vec<u8> {
//!         // A real agent parses JSON (serde_json works in `no_std` + `alloc` too).
//!         let Some(name) = message.strip_prefix(br#"{"kind":"hello","name":""#)
//!             .and_then(|rest| rest.strip_suffix(br#""}"#))
//!             .and_then(|name| std::str::from_utf8(name).ok())
//!         else {
//!             return error_reply("expected {\"kind\":\"hello\",\"name\":\"…\"}");
//!         };
//!         self.turns += 1;
//!         let greeting = config("greeting").unwrap_or_else(|| "Hello".into());
//!         log(Level::Debug, &format!("turn {}", self.turns));
//!         format!(r#"{{"kind":"greeting","turn":{},"text":"{greeting}, {name}!"}}"#, self.turns)
//!             .into_bytes()
//!     }
//! }
//!
//! export_agent!(Greeter);
//! contract!(accepts: ["hello"], emits: ["greeting", "error"]);
//!
//! // On the host target the same agent runs in-process.
//! use caxton_agent::host::{self, Harness};
//!
//! host::set_config("greeting", "Hi");
//! let mut session = Harness::<Greeter>::new();
//! session.init()?;
//! assert_eq!(
//!     session.handle_str(r#"{"kind":"hello","name":"Ada"}"#),
//!     r#"{"kind":"greeting","turn":1,"text":"Hi, Ada!"}"#
//! );
//! assert_eq!(
//!     session.handle_str(r#"{"kind":"hello","name":"Bob"}"#),
//!     r#"{"kind":"greeting","turn":2,"text":"Hi, Bob!"}"#
//! );
//! assert!(session.handle_str("nonsense").starts_with(r#"{"kind":"error""#));
//! assert_eq!(host::take_logs().len(), 2);
//! assert_eq!(&CAXTON_CONTRACT, br#"{"accepts":["hello"],"emits":["greeting","error"]}"#);
//! # Ok::<(), InitError>(())
//! ```
//!
//! Built with `cargo build --release --target wasm32-unknown-unknown`, the module exports
//! `memory`, `caxton_alloc`, `caxton_handle` and `caxton_init`, imports `caxton.log` and
//! `caxton.config`, and carries `caxton.contract`. (rustc 1.95 also exports the linker
//! globals `__heap_base` and `__data_end` from every wasm32-unknown-unknown module; Caxton's
//! sample agents in `examples/agents/` link through a wrapper that leaves them out.)
#![no_std]

extern crate alloc;

pub mod abi;
mod agent;
mod contract;
mod export;
#[cfg(not(target_arch = "wasm32"))]
pub mod host;
mod imports;
mod instance;
mod reply;

pub use agent::{Agent, InitError};
pub use contract::{Contract, ContractError, KindList};
pub use imports::{
    CONFIG_INITIAL_CAPACITY, CONFIG_MAX_ATTEMPTS, ConfigError, Level, config, config_bytes, log,
    now_ms, try_config,
};
pub use reply::error_reply;

/// What the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::export::Slot;
}

/// Exports an [`Agent`] implementation as the agent ABI v1.
///
/// Invoke it once, in the agent's crate (a `cdylib`), with the agent's type. On `wasm32`
/// it emits the exports `caxton_alloc`, `caxton_handle` and `caxton_init`, sharing one
/// instance of the agent kept in a `static`; the type must therefore be `Send`. On other
/// targets it only checks those bounds, so the crate still builds and tests on the host.
///
/// ```
/// # use caxton_agent::{Agent, InitError};
/// #[derive(Debug)]
/// struct Echo;
///
/// impl Agent for Echo {
///     fn init() -> Result<Self, InitError> { Ok(Echo) }
///     fn handle(&mut self, message: &[u8]) -> Vec<u8> { message.to_vec() }
/// }
///
/// caxton_agent::export_agent!(Echo);
/// ```
#[macro_export]
macro_rules! export_agent {
    ($agent:ty) => {
        const _: () = {
            const fn exportable<A: $crate::Agent + ::core::marker::Send>() {}
            exportable::<$agent>();
        };

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static INSTANCE: $crate::__private::Slot<$agent> = $crate::__private::Slot::new();

            // `no_mangle` makes these the module's exports; their names are the ABI's and
            // nothing else in the module may define them.
            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            extern "C" fn caxton_alloc(len: i32) -> i32 {
                INSTANCE.alloc(len)
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            extern "C" fn caxton_handle(ptr: i32, len: i32) -> i64 {
                INSTANCE.handle(ptr, len)
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            extern "C" fn caxton_init() -> i32 {
                INSTANCE.init()
            }
        };
    };
}

/// Declares the agent's contract and embeds it as the `caxton.contract` custom section.
///
/// Lists the message kinds the agent accepts and the reply kinds it emits. The JSON is built
/// at compile time; an empty, duplicated or quote-holding kind is a compile error. The
/// macro defines `pub static CAXTON_CONTRACT: [u8; _]` holding the JSON, which tests can
/// read; on `wasm32` it is placed in the custom section. Invoke it once per agent crate.
///
/// ```
/// caxton_agent::contract!(accepts: ["order"], emits: ["receipt", "error"]);
///
/// assert_eq!(&CAXTON_CONTRACT, br#"{"accepts":["order"],"emits":["receipt","error"]}"#);
/// ```
///
/// A kind that cannot be one stops the build:
///
/// ```compile_fail
/// caxton_agent::contract!(accepts: ["order", "order"], emits: ["receipt"]);
/// ```
#[macro_export]
macro_rules! contract {
    (accepts: [$($accepts:expr),* $(,)?], emits: [$($emits:expr),* $(,)?] $(,)?) => {
        /// The agent's contract as JSON; on wasm32 this is the `caxton.contract` section.
        // `link_section` names where the bytes go; a custom section is never executed.
        #[allow(unsafe_code)]
        #[cfg_attr(target_arch = "wasm32", unsafe(link_section = "caxton.contract"))]
        #[used]
        pub static CAXTON_CONTRACT: [u8; $crate::Contract::new(&[$($accepts),*], &[$($emits),*])
            .encoded_len()] = $crate::Contract::new(&[$($accepts),*], &[$($emits),*]).encode();
    };
}
