//! Why a fleet spec was refused or its manifests could not be written.

use std::fmt;

/// The text format of a fleet spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Yaml => "YAML",
            Format::Json => "JSON",
        })
    }
}

/// Why a fleet spec was refused, or its manifests could not be written. Every variant
/// about the spec names the path in the document, e.g. `fleet.agents[1].resources.limits.cpu`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The text could not be read as a fleet spec: bad syntax, an unknown field or
    /// strategy, a value of the wrong type or out of range.
    #[error("{path}: {message}{}", location(*line, *column))]
    Syntax {
        /// YAML or JSON.
        format: Format,
        /// Where in the document.
        path: String,
        /// 1-based line, when known.
        line: Option<u64>,
        /// 1-based column, when known.
        column: Option<u64>,
        /// What is wrong.
        message: String,
    },
    /// The document parsed but does not make a valid fleet (limits below requests,
    /// `min` above `max`, two agents of one name, …).
    #[error("{path}: {message}")]
    Invalid {
        /// Where in the document.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The fleet is valid but the target cannot express part of it (a shadow rollout
    /// for Argo Rollouts, a fractional weight).
    #[error("{path}: {message}")]
    Unsupported {
        /// Where in the document.
        path: String,
        /// What the target cannot do, and what to do instead.
        message: String,
    },
    /// The manifests could not be written as text.
    #[error("could not write the manifests: {0}")]
    Render(String),
}

impl FleetError {
    /// The path in the document the error is about, if any.
    pub fn path(&self) -> Option<&str> {
        match self {
            FleetError::Syntax { path, .. }
            | FleetError::Invalid { path, .. }
            | FleetError::Unsupported { path, .. } => Some(path),
            FleetError::Render(_) => None,
        }
    }

    pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        FleetError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(path: impl Into<String>, message: impl Into<String>) -> Self {
        FleetError::Unsupported {
            path: path.into(),
            message: message.into(),
        }
    }
}

fn location(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" (line {line}, column {column})"),
        (Some(line), None) => format!(" (line {line})"),
        _ => String::new(),
    }
}
