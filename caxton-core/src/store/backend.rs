//! [`BackendError`]: the failure of whatever an implementation of a joint stands on.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// A failure of the backend of a store or another joint (a database, a file, a network
/// call), kept with the operation that failed and, when there is one, the error that
/// caused it.
///
/// The text is `"{context}: {source}"` (or the context alone), so a one-line report still
/// says what went wrong; [`source`](Error::source) returns the original error, so a
/// caller can inspect or downcast it. The source is shared ([`Arc`]), so the error stays
/// [`Clone`]. Two backend errors are equal when their texts are.
///
/// ```
/// use std::error::Error;
/// use caxton_core::BackendError;
///
/// let io = std::io::Error::other("disk full");
/// let err = BackendError::new("writing deployment `processor-v2`", io);
/// assert_eq!(err.to_string(), "writing deployment `processor-v2`: disk full");
/// let source = err.source().and_then(|s| s.downcast_ref::<std::io::Error>());
/// assert_eq!(source.map(|e| e.to_string()).as_deref(), Some("disk full"));
/// ```
#[derive(Clone)]
pub struct BackendError {
    context: String,
    source: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

impl BackendError {
    /// A failure of the operation described by `context` (e.g. "promoting deployment
    /// `processor-v2` of agent `processor`"), caused by `source`.
    pub fn new<E>(context: impl Into<String>, source: E) -> Self
    where
        E: Error + Send + Sync + 'static,
    {
        BackendError {
            context: context.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// A failure caused by an error that is already boxed, as many drivers return them.
    /// The box is kept as it is: [`source`](Error::source) returns the boxed error itself.
    pub fn from_boxed(
        context: impl Into<String>,
        source: Box<dyn Error + Send + Sync + 'static>,
    ) -> Self {
        BackendError {
            context: context.into(),
            source: Some(Arc::from(source)),
        }
    }

    /// A failure with no underlying error value: `message` says what went wrong.
    pub fn message(message: impl Into<String>) -> Self {
        BackendError {
            context: message.into(),
            source: None,
        }
    }

    /// What failed: the context given to [`new`](Self::new) or the text given to
    /// [`message`](Self::message), without the source's text.
    pub fn context(&self) -> &str {
        &self.context
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendError")
            .field("context", &self.context)
            .field("source", &self.source)
            .finish()
    }
}

impl Error for BackendError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn Error + 'static))
    }
}

/// Equal when the texts are: the source errors themselves need not be comparable.
impl PartialEq for BackendError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for BackendError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error, PartialEq)]
    #[error("connection reset by peer")]
    struct Reset;

    #[test]
    fn source_is_the_original_error() {
        let err = BackendError::new("reading deployment `v2`", Reset);
        assert_eq!(
            err.to_string(),
            "reading deployment `v2`: connection reset by peer"
        );
        assert_eq!(err.context(), "reading deployment `v2`");
        let source = err.source().expect("a source");
        assert_eq!(source.downcast_ref::<Reset>(), Some(&Reset));
        // A clone shares the same source.
        let clone = err.clone();
        assert_eq!(clone, err);
        assert_eq!(
            clone.source().and_then(|s| s.downcast_ref::<Reset>()),
            Some(&Reset)
        );
    }

    #[test]
    fn a_boxed_source_is_returned_as_it_was_boxed() {
        let boxed: Box<dyn Error + Send + Sync> = Box::new(Reset);
        let err = BackendError::from_boxed("listing agent `processor`", boxed);
        assert_eq!(
            err.source().and_then(|s| s.downcast_ref::<Reset>()),
            Some(&Reset)
        );
    }

    #[test]
    fn a_message_has_no_source_and_equality_compares_text() {
        let err = BackendError::message("the registry file is locked by another process");
        assert!(err.source().is_none());
        assert_eq!(
            err.to_string(),
            "the registry file is locked by another process"
        );
        assert_eq!(
            BackendError::new("opening the registry", Reset),
            BackendError::message("opening the registry: connection reset by peer"),
        );
        assert_ne!(err, BackendError::message("something else"));
    }
}
