//! Host applications and sample agents for Caxton.
//!
//! - [`agents`]: the sample agents built with the guest SDK (`caxton-agent`) in
//!   `examples/agents/`, embedded, with the version tuple each runs with.
//! - [`host`]: a host as an application would write one around Caxton's crates: registry,
//!   router, runtime, metrics and validation put together through `caxton-core`'s traits.
//! - [`load`]: synthetic order traffic that accounts for every message.
//! - [`demo`]: the four acts of `caxton demo`.
//!
//! The runnable host examples are in `examples/examples/`: `cargo run --example
//! minimal_host`, `canary_rollout`, `rainbow_sessions`.
#![forbid(unsafe_code)]

pub mod agents;
pub mod demo;
pub mod host;
pub mod load;
