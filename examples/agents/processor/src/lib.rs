//! `processor`: a Caxton sample agent that prices orders.
//!
//! It accepts `order` messages and emits `receipt` or `error` replies:
//!
//! ```text
//! {"kind":"order","id":"o-17","items":[{"sku":"A1","qty":2,"price_cents":1250}],"coupon":"SAVE10"}
//! → {"kind":"receipt","id":"o-17","total_cents":2250,"items":1,"discount_cents":250}
//! ```
//!
//! `items` in the receipt counts order lines. Coupons: `SAVE10` (10 % off), `SAVE25`
//! (25 % off), `FLAT500` (500 cents off, never below zero); discounts round down to whole
//! cents. Anything malformed gets `{"kind":"error","reason":"…"}` naming what was wrong.
//!
//! One crate, three releases, chosen with a cargo feature when building (see `build.sh`):
//!
//! - **v1** (no feature): the release in production.
//! - **v2** (`--features v2`): a refactor of coupon handling with a regression a canary must
//!   catch: every order whose coupon is the plain string clients send (`"coupon":"SAVE10"`)
//!   is answered with an `error` reply; see [`Release::V2`]. It also writes an audit log
//!   line per order through `caxton.log`, which makes it a little slower. Every other reply
//!   is byte-identical to v1.
//! - **v3** (`--features v3`): a shadow candidate that borrows strings from the message
//!   instead of copying them and writes receipt fields in another order. Its replies equal
//!   v1's after JSON normalisation for every input, but receipts differ byte for byte.
//!
//! All three are in this crate's code (only the built module's release is reachable), so
//! its tests compare them directly.

use caxton_agent::{Agent, InitError, contract, export_agent};

mod coupon;
mod order;

pub use order::{Release, process};

#[cfg(all(feature = "v2", feature = "v3"))]
compile_error!("build one release at a time: enable at most one of the features `v2` and `v3`");

/// The release this build answers as, chosen by the cargo features.
pub const RELEASE: Release = if cfg!(feature = "v2") {
    Release::V2
} else if cfg!(feature = "v3") {
    Release::V3
} else {
    Release::V1
};

/// The agent: stateless, so every instance answers the same message the same way.
#[derive(Debug)]
pub struct Processor;

impl Agent for Processor {
    fn init() -> Result<Self, InitError> {
        Ok(Processor)
    }

    fn handle(&mut self, message: &[u8]) -> Vec<u8> {
        process(RELEASE, message)
    }
}

export_agent!(Processor);
contract!(accepts: ["order"], emits: ["receipt", "error"]);

#[cfg(test)]
mod tests {
    use super::*;
    use caxton_agent::host::Harness;

    #[test]
    fn contract_section_lists_order_receipt_and_error() {
        assert_eq!(
            &CAXTON_CONTRACT,
            br#"{"accepts":["order"],"emits":["receipt","error"]}"#
        );
    }

    #[test]
    fn agent_answers_through_the_abi_dispatch() {
        let mut instance = Harness::<Processor>::new();
        instance.init().unwrap();
        let reply = instance.handle_str(
            r#"{"kind":"order","id":"o-1","items":[{"sku":"A1","qty":1,"price_cents":99}]}"#,
        );
        assert!(reply.starts_with(r#"{"kind":"receipt","id":"o-1""#));
        assert!(reply.contains(r#""total_cents":99"#));
    }

    #[test]
    fn default_build_is_v1() {
        if !cfg!(any(feature = "v2", feature = "v3")) {
            assert_eq!(RELEASE, Release::V1);
        }
    }
}
