//! The wasm exports' side of the ABI: `i32`/`i64` values in, an [`Instance`] behind a lock.
//!
//! [`export_agent!`](crate::export_agent) puts one [`Slot`] in a `static` of the agent's
//! crate and forwards each export to it.

use core::fmt;

use crate::abi::{INIT_FAILED, INIT_READY, ReplyRegion};
use crate::agent::Agent;
use crate::instance::Instance;

/// Answer to a call that arrives while another call into the same instance is running (the
/// host called back into the agent from inside an import). It lives in the data segment, so
/// it stays valid without touching the locked instance.
static REENTRANT_REPLY: &[u8] =
    br#"{"kind":"error","reason":"caxton_handle was called while the agent was already handling a message"}"#;

/// The state of the one agent instance this module is, for the exports to share.
///
/// A lock keeps the `static` safe to share (Rust requires `Sync` of it); a wasm instance
/// runs one call at a time, so the lock is never contended, and a re-entrant call is
/// answered instead of waiting forever.
pub struct Slot<A> {
    instance: spin::Mutex<Instance<A>>,
}

impl<A> Slot<A> {
    /// An empty slot, for a `static`.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self {
            instance: spin::Mutex::new(Instance::new()),
        }
    }
}

impl<A> fmt::Debug for Slot<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("busy", &self.instance.is_locked())
            .finish_non_exhaustive()
    }
}

impl<A: Agent> Slot<A> {
    /// `caxton_init`: `0` once the agent runs, `1` when it could not start or the instance
    /// is busy.
    pub fn init(&self) -> i32 {
        match self.instance.try_lock() {
            Some(mut instance) => match instance.init() {
                Ok(()) => INIT_READY,
                Err(_) => INIT_FAILED,
            },
            None => INIT_FAILED,
        }
    }

    /// `caxton_alloc`: the address of `len` writable bytes, or `0` when `len` is negative,
    /// memory ran out, or the instance is busy.
    pub fn alloc(&self, len: i32) -> i32 {
        let (Ok(len), Some(mut instance)) = (usize::try_from(len), self.instance.try_lock()) else {
            return 0;
        };
        instance
            .alloc(len)
            .and_then(wasm_address)
            .map_or(0, |address| address as i32)
    }

    /// `caxton_handle`: handles the message at `[ptr, ptr + len)` and returns the packed
    /// region of the reply.
    pub fn handle(&self, ptr: i32, len: i32) -> i64 {
        let Some(mut instance) = self.instance.try_lock() else {
            return region_of(REENTRANT_REPLY).pack();
        };
        // Linear-memory addresses are unsigned: reinterpret the i32's bits.
        let address = ptr as u32 as usize;
        // A negative length cannot be a region; as usize it is far past any buffer, so
        // dispatch refuses it with an error reply.
        let len = len as u32 as usize;
        region_of(instance.handle(address, len)).pack()
    }
}

/// The region of `bytes`, which on wasm32 always fits in 32 bits; elsewhere (never used
/// there) an empty region.
fn region_of(bytes: &[u8]) -> ReplyRegion {
    match (
        wasm_address(bytes.as_ptr() as usize),
        u32::try_from(bytes.len()),
    ) {
        (Some(ptr), Ok(len)) => ReplyRegion { ptr, len },
        _ => ReplyRegion::EMPTY,
    }
}

fn wasm_address(address: usize) -> Option<u32> {
    u32::try_from(address).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::InitError;
    use alloc::format;
    use alloc::vec::Vec;

    #[derive(Debug)]
    struct Refuses;

    impl Agent for Refuses {
        fn init() -> Result<Self, InitError> {
            Err(InitError::new("no model configured"))
        }

        fn handle(&mut self, _message: &[u8]) -> Vec<u8> {
            Vec::new()
        }
    }

    #[derive(Debug)]
    struct Ready;

    impl Agent for Ready {
        fn init() -> Result<Self, InitError> {
            Ok(Ready)
        }

        fn handle(&mut self, _message: &[u8]) -> Vec<u8> {
            Vec::new()
        }
    }

    #[test]
    fn init_reports_ready_or_failed_as_the_abi_numbers_them() {
        assert_eq!(Slot::<Ready>::new().init(), 0);
        assert_eq!(Slot::<Refuses>::new().init(), 1);
    }

    #[test]
    fn negative_lengths_get_no_buffer() {
        assert_eq!(Slot::<Ready>::new().alloc(-1), 0);
    }

    #[test]
    fn calls_into_a_busy_instance_are_refused_not_deadlocked() {
        let slot = Slot::<Ready>::new();
        let _held = slot.instance.lock();
        assert_eq!(slot.init(), INIT_FAILED);
        assert_eq!(slot.alloc(8), 0);
        // On the host the reply's address does not fit in 32 bits, so only the refusal's
        // length can be checked here.
        let region = ReplyRegion::unpack(slot.handle(8, 8));
        let expected = region_of(REENTRANT_REPLY);
        assert_eq!(region, expected);
        let reply: serde_json::Value = serde_json::from_slice(REENTRANT_REPLY).unwrap();
        assert_eq!(reply["kind"], "error");
        assert!(format!("{slot:?}").contains("busy: true"));
    }

    #[test]
    fn addresses_beyond_32_bits_are_not_wasm_addresses() {
        assert_eq!(wasm_address(0xffff_ffff), Some(u32::MAX));
        #[cfg(target_pointer_width = "64")]
        assert_eq!(wasm_address(0x1_0000_0000), None);
    }
}
