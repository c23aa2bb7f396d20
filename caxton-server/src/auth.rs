//! The bearer token every `/v1` route needs when one is configured.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The shortest token accepted: shorter ones can be guessed.
pub const MIN_TOKEN_BYTES: usize = 16;

/// An API token. Only its SHA-256 is kept, and it is compared in constant time, so
/// neither its value nor its length leaks through `Debug` or response timing.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Shorter than [`MIN_TOKEN_BYTES`].
    #[error("the token is {length} bytes long; at least {MIN_TOKEN_BYTES} are needed")]
    TooShort {
        /// Its length.
        length: usize,
    },
    /// It holds whitespace or control characters, which no `Authorization` header carries.
    #[error("the token holds whitespace or control characters")]
    NotPrintable,
    /// Its file could not be read.
    #[error("cannot read the token file {path}: {message}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

impl Token {
    /// A token from its text.
    pub fn new(text: &str) -> Result<Token, TokenError> {
        if text.len() < MIN_TOKEN_BYTES {
            return Err(TokenError::TooShort { length: text.len() });
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotPrintable);
        }
        Ok(Token {
            digest: Sha256::digest(text.as_bytes()).into(),
        })
    }

    /// A token from a file; one trailing newline is ignored.
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|error| TokenError::Unreadable {
            path: path.display().to_string(),
            message: error.to_string(),
        })?;
        Token::new(
            text.strip_suffix('\n')
                .unwrap_or(&text)
                .trim_end_matches('\r'),
        )
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest.ct_eq(&presented).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Middleware: 401 unless the request carries `Authorization: Bearer <token>`.
pub(crate) async fn require_token(
    State(token): State<Arc<Token>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(presented) if token.matches(presented.trim()) => next.run(request).await,
        Some(_) => unauthorized("the bearer token is not valid"),
        None => unauthorized("this server needs `Authorization: Bearer <token>`"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    // The request's body was never read, so the connection cannot carry another request:
    // say so, or a keep-alive client reuses it and meets a closed socket.
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_token_matches() {
        let token = Token::new("a-long-enough-secret-token").unwrap();
        assert!(token.matches("a-long-enough-secret-token"));
        assert!(!token.matches("a-long-enough-secret-tokeN"));
        assert!(!token.matches(""));
        assert!(!token.matches("a-long-enough-secret-token "));
    }

    #[test]
    fn short_or_unprintable_tokens_are_refused() {
        assert_eq!(
            Token::new("short").unwrap_err(),
            TokenError::TooShort { length: 5 }
        );
        assert_eq!(
            Token::new("sixteen bytes or more").unwrap_err(),
            TokenError::NotPrintable
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = Token::new("a-long-enough-secret-token").unwrap();
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
    }

    #[test]
    fn a_token_file_may_end_with_a_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "a-long-enough-secret-token\n").unwrap();
        assert!(
            Token::from_file(&path)
                .unwrap()
                .matches("a-long-enough-secret-token")
        );
    }
}
