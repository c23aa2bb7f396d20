//! The agent's contract: the message kinds it accepts and the reply kinds it emits, encoded
//! at compile time into the `caxton.contract` custom section.

use alloc::string::String;
use core::fmt;

/// The kinds of message an agent accepts and of reply it emits.
///
/// Its JSON form, `{"accepts":["order"],"emits":["receipt","error"]}`, is what the
/// `caxton.contract` section holds. Everything here is `const`, so
/// [`contract!`](crate::contract) builds the section's bytes while compiling and a bad kind
/// is a compile error.
///
/// ```
/// use caxton_agent::Contract;
///
/// const CONTRACT: Contract<'static> = Contract::new(&["order"], &["receipt", "error"]);
/// const JSON: [u8; CONTRACT.encoded_len()] = CONTRACT.encode();
/// assert_eq!(&JSON, br#"{"accepts":["order"],"emits":["receipt","error"]}"#);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contract<'a> {
    accepts: &'a [&'a str],
    emits: &'a [&'a str],
}

/// Which list of a [`Contract`] a kind is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindList {
    /// The kinds of message accepted.
    Accepts,
    /// The kinds of reply emitted.
    Emits,
}

impl KindList {
    const fn name(self) -> &'static str {
        match self {
            Self::Accepts => "accepts",
            Self::Emits => "emits",
        }
    }
}

/// Why a list of kinds cannot be a contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContractError {
    /// A kind is the empty string.
    EmptyKind {
        /// The list holding it.
        list: KindList,
        /// Its position in the list.
        index: usize,
    },
    /// A kind holds `"`, `\` or a control character, which kinds never need.
    NeedsEscaping {
        /// The list holding it.
        list: KindList,
        /// Its position in the list.
        index: usize,
    },
    /// A kind appears twice in the same list.
    Duplicate {
        /// The list holding it.
        list: KindList,
        /// Position of the second occurrence.
        index: usize,
    },
}

impl ContractError {
    /// A fixed description, usable in `const` panics.
    pub const fn description(&self) -> &'static str {
        match self {
            Self::EmptyKind { .. } => "a contract kind is empty",
            Self::NeedsEscaping { .. } => "a contract kind holds `\"`, `\\` or a control character",
            Self::Duplicate { .. } => "a contract kind appears twice in the same list",
        }
    }
}

impl fmt::Display for ContractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (list, index) = match *self {
            Self::EmptyKind { list, index }
            | Self::NeedsEscaping { list, index }
            | Self::Duplicate { list, index } => (list, index),
        };
        write!(
            f,
            "{} (`{}` kind at index {index})",
            self.description(),
            list.name()
        )
    }
}

impl core::error::Error for ContractError {}

const OPEN: &[u8] = br#"{"accepts":["#;
const MIDDLE: &[u8] = br#"],"emits":["#;
const CLOSE: &[u8] = br#"]}"#;

impl<'a> Contract<'a> {
    /// The contract, checked; use it in `const` items, where a bad kind stops the build.
    ///
    /// # Panics
    ///
    /// When [`try_new`](Contract::try_new) would fail (at compile time in a `const`).
    pub const fn new(accepts: &'a [&'a str], emits: &'a [&'a str]) -> Self {
        match Self::try_new(accepts, emits) {
            Ok(contract) => contract,
            Err(error) => panic!("{}", error.description()),
        }
    }

    /// The contract, or why the kinds cannot make one: every kind is non-empty, needs no
    /// JSON escaping and appears once in its list.
    pub const fn try_new(
        accepts: &'a [&'a str],
        emits: &'a [&'a str],
    ) -> Result<Self, ContractError> {
        if let Err(error) = check_kinds(KindList::Accepts, accepts) {
            return Err(error);
        }
        if let Err(error) = check_kinds(KindList::Emits, emits) {
            return Err(error);
        }
        Ok(Self { accepts, emits })
    }

    /// The kinds of message the agent accepts.
    pub const fn accepts(&self) -> &'a [&'a str] {
        self.accepts
    }

    /// The kinds of reply the agent emits.
    pub const fn emits(&self) -> &'a [&'a str] {
        self.emits
    }

    /// Length of the JSON form in bytes.
    pub const fn encoded_len(&self) -> usize {
        OPEN.len() + list_len(self.accepts) + MIDDLE.len() + list_len(self.emits) + CLOSE.len()
    }

    /// The JSON form, `N` bytes long.
    ///
    /// # Panics
    ///
    /// When `N` is not [`encoded_len`](Contract::encoded_len) (at compile time in a
    /// `const`).
    pub const fn encode<const N: usize>(&self) -> [u8; N] {
        assert!(
            N == self.encoded_len(),
            "the array length must be the contract's encoded_len()"
        );
        let mut out = [0u8; N];
        self.write_into(&mut out);
        out
    }

    /// The JSON form as a string, for use at run time.
    pub fn to_json(&self) -> String {
        let mut out = alloc::vec![0u8; self.encoded_len()];
        self.write_into(&mut out);
        // Kinds are `str`s and the rest is ASCII, so the bytes are UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Writes the JSON form at the start of `out`, which holds at least `encoded_len()`
    /// bytes.
    const fn write_into(&self, out: &mut [u8]) {
        let mut at = copy(out, 0, OPEN);
        at = write_list(out, at, self.accepts);
        at = copy(out, at, MIDDLE);
        at = write_list(out, at, self.emits);
        copy(out, at, CLOSE);
    }
}

const fn check_kinds(list: KindList, kinds: &[&str]) -> Result<(), ContractError> {
    let mut index = 0;
    while index < kinds.len() {
        let kind = kinds[index].as_bytes();
        if kind.is_empty() {
            return Err(ContractError::EmptyKind { list, index });
        }
        let mut at = 0;
        while at < kind.len() {
            let byte = kind[at];
            if byte == b'"' || byte == b'\\' || byte < 0x20 {
                return Err(ContractError::NeedsEscaping { list, index });
            }
            at += 1;
        }
        let mut earlier = 0;
        while earlier < index {
            if bytes_equal(kinds[earlier].as_bytes(), kind) {
                return Err(ContractError::Duplicate { list, index });
            }
            earlier += 1;
        }
        index += 1;
    }
    Ok(())
}

const fn bytes_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut at = 0;
    while at < a.len() {
        if a[at] != b[at] {
            return false;
        }
        at += 1;
    }
    true
}

/// Bytes of `"a","b"` for the kinds given.
const fn list_len(kinds: &[&str]) -> usize {
    let mut len = 0;
    let mut index = 0;
    while index < kinds.len() {
        if index > 0 {
            len += 1;
        }
        len += kinds[index].len() + 2;
        index += 1;
    }
    len
}

const fn write_list(out: &mut [u8], mut at: usize, kinds: &[&str]) -> usize {
    let mut index = 0;
    while index < kinds.len() {
        if index > 0 {
            at = copy(out, at, b",");
        }
        at = copy(out, at, b"\"");
        at = copy(out, at, kinds[index].as_bytes());
        at = copy(out, at, b"\"");
        index += 1;
    }
    at
}

const fn copy(out: &mut [u8], at: usize, bytes: &[u8]) -> usize {
    let mut offset = 0;
    while offset < bytes.len() {
        out[at + offset] = bytes[offset];
        offset += 1;
    }
    at + bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[test]
    fn encodes_the_json_the_abi_describes() {
        const CONTRACT: Contract<'static> = Contract::new(&["say", "end"], &["reply", "error"]);
        const BYTES: [u8; CONTRACT.encoded_len()] = CONTRACT.encode();
        assert_eq!(
            core::str::from_utf8(&BYTES).unwrap(),
            r#"{"accepts":["say","end"],"emits":["reply","error"]}"#
        );
    }

    #[test]
    fn empty_lists_encode_as_empty_arrays() {
        const CONTRACT: Contract<'static> = Contract::new(&[], &[]);
        const BYTES: [u8; CONTRACT.encoded_len()] = CONTRACT.encode();
        assert_eq!(&BYTES, br#"{"accepts":[],"emits":[]}"#);
    }

    #[test]
    fn bad_kinds_are_refused_with_their_place() {
        assert_eq!(
            Contract::try_new(&["order", ""], &[]),
            Err(ContractError::EmptyKind {
                list: KindList::Accepts,
                index: 1
            })
        );
        assert_eq!(
            Contract::try_new(&["order"], &["re\"ceipt"]),
            Err(ContractError::NeedsEscaping {
                list: KindList::Emits,
                index: 0
            })
        );
        assert_eq!(
            Contract::try_new(&["tab\there"], &[]),
            Err(ContractError::NeedsEscaping {
                list: KindList::Accepts,
                index: 0
            })
        );
        let duplicate = Contract::try_new(&["a"], &["x", "y", "x"]).unwrap_err();
        assert_eq!(
            duplicate,
            ContractError::Duplicate {
                list: KindList::Emits,
                index: 2
            }
        );
        assert_eq!(
            duplicate.to_string(),
            "a contract kind appears twice in the same list (`emits` kind at index 2)"
        );
    }

    #[test]
    fn a_kind_may_be_both_accepted_and_emitted() {
        assert!(Contract::try_new(&["ping"], &["ping"]).is_ok());
    }

    #[test]
    #[should_panic(expected = "a contract kind is empty")]
    fn new_panics_on_a_bad_kind() {
        let _ = Contract::new(&[""], &[]);
    }

    fn kinds() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::btree_set("[^\"\\\\\\x00-\\x1f]{1,12}", 0..5)
            .prop_map(|set| set.into_iter().collect())
    }

    proptest! {
        #[test]
        fn encoding_is_json_listing_the_kinds_in_order(accepts in kinds(), emits in kinds()) {
            let accepts: Vec<&str> = accepts.iter().map(String::as_str).collect();
            let emits: Vec<&str> = emits.iter().map(String::as_str).collect();
            let contract = Contract::try_new(&accepts, &emits).unwrap();
            let json = contract.to_json();
            prop_assert_eq!(json.len(), contract.encoded_len());
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            let listed = |field: &str| -> Vec<String> {
                value[field].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect()
            };
            prop_assert_eq!(listed("accepts"), accepts);
            prop_assert_eq!(listed("emits"), emits);
            prop_assert_eq!(value.as_object().unwrap().len(), 2);
        }
    }
}
