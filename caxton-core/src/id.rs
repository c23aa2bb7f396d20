//! Validated identifiers for agents, deployments and sessions.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why a string is not a valid identifier.
///
/// Every variant quotes the rejected value so a host can log it as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The string was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which kind of identifier was being parsed.
        kind: IdKind,
    },
    /// The string was longer than [`MAX_ID_LEN`] bytes.
    #[error("{kind} {value:?} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Which kind of identifier was being parsed.
        kind: IdKind,
        /// The rejected value, cut to the limit so a huge input does not flood logs.
        value: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The string held a character outside `A-Z a-z 0-9 - _ . :`.
    #[error(
        "{kind} {value:?} has the character {character:?} at byte {index}; \
         allowed are ASCII letters, digits and - _ . :"
    )]
    InvalidCharacter {
        /// Which kind of identifier was being parsed.
        kind: IdKind,
        /// The rejected value.
        value: String,
        /// The first character that is not allowed.
        character: char,
        /// Its byte offset.
        index: usize,
    },
}

/// The kind of an identifier, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    /// An [`AgentId`].
    Agent,
    /// A [`DeploymentId`].
    Deployment,
    /// A [`SessionId`].
    Session,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Agent => "agent id",
            IdKind::Deployment => "deployment id",
            IdKind::Session => "session id",
        })
    }
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

fn check(kind: IdKind, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        let mut cut = MAX_ID_LEN;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        return Err(IdError::TooLong {
            kind,
            value: format!("{}…", &value[..cut]),
            len: value.len(),
            max: MAX_ID_LEN,
        });
    }
    if let Some((index, character)) = value.char_indices().find(|(_, c)| !is_allowed(*c)) {
        return Err(IdError::InvalidCharacter {
            kind,
            value: value.to_owned(),
            character,
            index,
        });
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        ///
        /// Valid identifiers are 1 to 128 bytes of ASCII letters, digits and `- _ . :`.
        /// Cloning is a reference-count increment; hashing and comparison use the text.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `value` and wraps it.
            pub fn new(value: impl AsRef<str>) -> Result<Self, IdError> {
                let value = value.as_ref();
                check($kind, value)?;
                Ok(Self(Arc::from(value)))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::new(&*text).map_err(serde::de::Error::custom)
            }
        }
    };
}

identifier!(
    /// The name of an agent: a long-lived service such as `processor` or `support-chat`.
    AgentId,
    IdKind::Agent
);
identifier!(
    /// The identity of one deployment: one version of one agent. Unique across agents.
    DeploymentId,
    IdKind::Deployment
);
identifier!(
    /// A run of messages that must stay on the version that started it.
    SessionId,
    IdKind::Session
);

impl DeploymentId {
    /// A fresh identifier, unique within this process and very likely across processes:
    /// `dpl_` followed by the time in milliseconds and a process-wide counter, in hex.
    pub fn generate() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        Self(Arc::from(format!("dpl_{millis:x}_{pid:x}_{n:x}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_character_set() {
        for ok in [
            "processor",
            "support-chat",
            "v1.2.3",
            "a_b:c",
            "0",
            &"x".repeat(128),
        ] {
            assert!(AgentId::new(ok).is_ok(), "{ok} should be valid");
        }
    }

    #[test]
    fn empty_is_an_error_naming_the_kind() {
        let err = SessionId::new("").unwrap_err();
        assert_eq!(
            err,
            IdError::Empty {
                kind: IdKind::Session
            }
        );
        assert_eq!(err.to_string(), "session id must not be empty");
    }

    #[test]
    fn over_long_is_an_error_quoting_the_value() {
        let long = "y".repeat(200);
        let err = DeploymentId::new(&long).unwrap_err();
        match &err {
            IdError::TooLong { len, max, .. } => assert_eq!((*len, *max), (200, 128)),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("yyyy"));
    }

    #[test]
    fn bad_character_is_an_error_with_its_position() {
        let err = AgentId::new("chat bot").unwrap_err();
        assert_eq!(
            err,
            IdError::InvalidCharacter {
                kind: IdKind::Agent,
                value: "chat bot".into(),
                character: ' ',
                index: 4
            }
        );
        assert!(err.to_string().contains("\"chat bot\""));
        assert!(AgentId::new("naïve").is_err());
        assert!(AgentId::new("a/b").is_err());
    }

    #[test]
    fn generated_deployment_ids_are_valid_and_distinct() {
        let a = DeploymentId::generate();
        let b = DeploymentId::generate();
        assert_ne!(a, b);
        assert!(DeploymentId::new(a.as_str()).is_ok());
    }

    #[test]
    fn serde_round_trips_and_rejects_invalid_text() {
        let id = AgentId::new("processor").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"processor\"");
        assert_eq!(serde_json::from_str::<AgentId>(&json).unwrap(), id);
        let err = serde_json::from_str::<AgentId>("\"bad id\"").unwrap_err();
        assert!(err.to_string().contains("bad id"));
    }
}
