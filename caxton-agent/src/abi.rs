//! Names and value layouts of the Caxton agent ABI v1.
//!
//! An agent is a core WebAssembly module that exports [`MEMORY`], [`ALLOC`], [`HANDLE`] and
//! optionally [`INIT`], imports from module [`IMPORT_MODULE`] only what it uses
//! ([`IMPORT_LOG`], [`IMPORT_CONFIG`], [`IMPORT_NOW_MS`]) and may carry a custom section
//! [`CONTRACT_SECTION`]. [`export_agent!`](crate::export_agent) writes the exports and
//! [`contract!`](crate::contract) the section; hosts can use these constants and
//! [`ReplyRegion`] to speak the same ABI.

/// The version of the agent ABI this crate implements.
pub const ABI_VERSION: u32 = 1;

/// Export: the agent's linear memory.
pub const MEMORY: &str = "memory";
/// Export `(len: i32) -> i32`: a pointer to `len` writable bytes for the next message.
pub const ALLOC: &str = "caxton_alloc";
/// Export `(ptr: i32, len: i32) -> i64`: handle the message, return a packed [`ReplyRegion`].
pub const HANDLE: &str = "caxton_handle";
/// Optional export `() -> i32`: `0` when the new instance is ready for messages.
pub const INIT: &str = "caxton_init";

/// The module every import comes from.
pub const IMPORT_MODULE: &str = "caxton";
/// Import `(level: i32, ptr: i32, len: i32)`: a log line, level 0 (trace) to 4 (error).
pub const IMPORT_LOG: &str = "log";
/// Import `(key_ptr: i32, key_len: i32, out_ptr: i32, out_cap: i32) -> i32`: a config value.
pub const IMPORT_CONFIG: &str = "config";
/// Import `() -> i64`: the host clock in milliseconds.
pub const IMPORT_NOW_MS: &str = "now_ms";

/// Custom section holding the agent's contract as UTF-8 JSON (see [`Contract`](crate::Contract)).
pub const CONTRACT_SECTION: &str = "caxton.contract";

/// `caxton_init`'s answer when the instance is ready.
pub const INIT_READY: i32 = 0;
/// `caxton_init`'s answer when the agent could not start.
pub const INIT_FAILED: i32 = 1;

/// Where a reply lies in linear memory: `caxton_handle` returns it packed in an `i64` as
/// `(ptr << 32) | len`.
///
/// ```
/// use caxton_agent::abi::ReplyRegion;
///
/// let region = ReplyRegion { ptr: 0x0011_2000, len: 42 };
/// assert_eq!(region.pack(), 0x0011_2000_0000_002a);
/// assert_eq!(ReplyRegion::unpack(region.pack()), region);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyRegion {
    /// Address of the reply's first byte in linear memory.
    pub ptr: u32,
    /// Length of the reply in bytes.
    pub len: u32,
}

impl ReplyRegion {
    /// An empty reply at address 0, the answer when there is nothing to point at.
    pub const EMPTY: Self = Self { ptr: 0, len: 0 };

    /// Packs the region into `caxton_handle`'s return value.
    pub const fn pack(self) -> i64 {
        (((self.ptr as u64) << 32) | self.len as u64) as i64
    }

    /// Unpacks `caxton_handle`'s return value; every `i64` is some region, which the host
    /// must still check lies inside linear memory.
    pub const fn unpack(packed: i64) -> Self {
        let bits = packed as u64;
        Self {
            ptr: (bits >> 32) as u32,
            len: bits as u32,
        }
    }

    /// One past the region's last byte; a host accepts the reply only when this is at most
    /// the memory's size in bytes.
    pub const fn end(self) -> u64 {
        self.ptr as u64 + self.len as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn high_addresses_pack_into_negative_values_and_back() {
        let region = ReplyRegion {
            ptr: 0xffff_fff0,
            len: 16,
        };
        assert!(region.pack() < 0);
        assert_eq!(ReplyRegion::unpack(region.pack()), region);
        assert_eq!(region.end(), 1 << 32);
        assert_eq!(
            ReplyRegion {
                ptr: u32::MAX,
                len: u32::MAX
            }
            .end(),
            (1 << 33) - 2
        );
    }

    proptest! {
        #[test]
        fn pack_then_unpack_is_identity(ptr in any::<u32>(), len in any::<u32>()) {
            let region = ReplyRegion { ptr, len };
            prop_assert_eq!(ReplyRegion::unpack(region.pack()), region);
        }

        #[test]
        fn unpack_then_pack_is_identity(packed in any::<i64>()) {
            prop_assert_eq!(ReplyRegion::unpack(packed).pack(), packed);
        }

        #[test]
        fn pointer_sits_in_the_high_half_and_length_in_the_low_half(ptr in any::<u32>(), len in any::<u32>()) {
            let packed = ReplyRegion { ptr, len }.pack() as u64;
            prop_assert_eq!(packed >> 32, u64::from(ptr));
            prop_assert_eq!(packed & 0xffff_ffff, u64::from(len));
        }
    }
}
