//! The `caxton.contract` section and contract test vectors.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What an agent declares it accepts and emits: message kinds by the `kind` field.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    /// Message kinds the agent handles.
    pub accepts: BTreeSet<String>,
    /// Reply kinds the agent may send.
    pub emits: BTreeSet<String>,
}

impl Contract {
    /// Parses the contents of a `caxton.contract` custom section.
    pub fn from_section(bytes: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| format!("the section is not UTF-8 (at byte {})", e.valid_up_to()))?;
        let contract: Contract = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if let Some(empty) = contract
            .accepts
            .iter()
            .chain(&contract.emits)
            .find(|k| k.is_empty())
        {
            return Err(format!(
                "message kinds must not be empty strings (found {empty:?})"
            ));
        }
        Ok(contract)
    }
}

/// What a contract test expects of a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The reply's `kind`.
    pub kind: String,
    /// Top-level fields the reply must carry with equal values.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// One contract test vector: a message and what its reply must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractTest {
    /// A name for people.
    pub name: String,
    /// The message sent, a JSON object.
    pub input: serde_json::Map<String, serde_json::Value>,
    /// What the reply must be.
    pub expect: Expectation,
}

/// The largest contract test file [`ContractTest::from_file`] reads: 16 MiB, far above
/// any set of test vectors, and checked before the file is read.
pub const MAX_CONTRACT_TESTS_BYTES: u64 = 16 * 1024 * 1024;

/// Why a test vector file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VectorsError {
    /// The file could not be read.
    #[error("cannot read contract tests {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONTRACT_TESTS_BYTES`].
    #[error(
        "contract tests {path}: larger than {limit} bytes, the most a contract test file may be"
    )]
    TooLarge {
        /// The file.
        path: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The file is not a JSON array of test vectors.
    #[error("contract tests {path} are not valid: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong and where.
        message: String,
    },
}

impl ContractTest {
    /// Parses a JSON array of test vectors.
    pub fn parse_all(text: &str) -> Result<Vec<ContractTest>, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// Reads a JSON file of test vectors, of at most [`MAX_CONTRACT_TESTS_BYTES`].
    pub fn from_file(path: &Path) -> Result<Vec<ContractTest>, VectorsError> {
        let shown = path.display().to_string();
        let read_error = |source| VectorsError::Read {
            path: shown.clone(),
            source,
        };
        let bytes = crate::input::read_at_most(path, MAX_CONTRACT_TESTS_BYTES)
            .map_err(read_error)?
            .ok_or_else(|| VectorsError::TooLarge {
                path: shown.clone(),
                limit: MAX_CONTRACT_TESTS_BYTES,
            })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            read_error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.utf8_error(),
            ))
        })?;
        ContractTest::parse_all(&text).map_err(|message| VectorsError::Parse {
            path: shown,
            message,
        })
    }

    /// The message as bytes.
    pub fn message_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.input).unwrap_or_default()
    }

    /// The input's `kind`, when it has a string one.
    pub fn input_kind(&self) -> Option<&str> {
        self.input.get("kind").and_then(|k| k.as_str())
    }
}

/// The `kind` of a reply, when the reply is a JSON object with a string `kind`.
pub fn reply_kind(
    reply: &[u8],
) -> Result<(String, serde_json::Map<String, serde_json::Value>), String> {
    let value: serde_json::Value =
        serde_json::from_slice(reply).map_err(|e| format!("the reply is not JSON: {e}"))?;
    let serde_json::Value::Object(object) = value else {
        return Err("the reply is JSON but not an object".to_owned());
    };
    match object.get("kind") {
        Some(serde_json::Value::String(kind)) => Ok((kind.clone(), object)),
        Some(_) => Err("the reply's `kind` is not a string".to_owned()),
        None => Err("the reply has no `kind` field".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_section_parses_and_rejects_bad_input() {
        let c = Contract::from_section(br#"{"accepts": ["order"], "emits": ["receipt", "error"]}"#)
            .unwrap();
        assert!(c.accepts.contains("order") && c.emits.len() == 2);
        assert!(
            Contract::from_section(b"\xff")
                .unwrap_err()
                .contains("UTF-8")
        );
        assert!(
            Contract::from_section(br#"{"accepts": []}"#)
                .unwrap_err()
                .contains("emits")
        );
        assert!(
            Contract::from_section(br#"{"accepts": [], "emits": [], "x": 1}"#)
                .unwrap_err()
                .contains("x")
        );
        assert!(Contract::from_section(br#"{"accepts": [""], "emits": []}"#).is_err());
    }

    #[test]
    fn vectors_parse_with_optional_fields() {
        let tests = ContractTest::parse_all(
            r#"[{"name": "ok", "input": {"kind": "order", "id": "o-1"}, "expect": {"kind": "receipt", "fields": {"id": "o-1"}}},
                {"name": "bare", "input": {"kind": "ping"}, "expect": {"kind": "pong"}}]"#,
        )
        .unwrap();
        assert_eq!(tests.len(), 2);
        assert_eq!(tests[0].expect.fields["id"], "o-1");
        assert_eq!(tests[1].input_kind(), Some("ping"));
        assert!(
            ContractTest::parse_all(r#"[{"name": "x", "input": 3, "expect": {"kind": "k"}}]"#)
                .is_err()
        );
        assert!(ContractTest::parse_all("{}").is_err());
    }

    #[test]
    fn reply_kind_demands_a_json_object_with_a_string_kind() {
        assert_eq!(
            reply_kind(br#"{"kind": "pong", "n": 1}"#).unwrap().0,
            "pong"
        );
        assert!(reply_kind(b"pong").is_err());
        assert!(reply_kind(b"[1]").is_err());
        assert!(reply_kind(br#"{"kind": 1}"#).is_err());
        assert!(reply_kind(br#"{"k": "x"}"#).is_err());
    }
}
