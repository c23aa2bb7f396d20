//! The error format of the HTTP API: a status and `{"error": {"code", "message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use caxton_core::AgentError;
use caxton_host::{HostError, SendError};

/// A refused or failed request, as the API reports it. A refused request changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with this status, stable `code` and message for people.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `invalid_request`, naming the field that is wrong.
    pub fn invalid(field: impl std::fmt::Display, message: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("{field}: {message}"),
        )
    }

    /// 404 `unknown_agent`.
    pub fn unknown_agent(agent: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_agent",
            format!("agent `{agent}` is not known here"),
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable, snake_case code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<HostError> for ApiError {
    fn from(error: HostError) -> Self {
        let status = match &error {
            HostError::InvalidRequest { .. } | HostError::Strategy { .. } => {
                StatusCode::BAD_REQUEST
            }
            HostError::Runtime(agent) if agent.is_agent_fault() => {
                return ApiError::new(StatusCode::BAD_GATEWAY, "agent_failed", error.to_string());
            }
            HostError::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
            _ if error.is_not_found() => StatusCode::NOT_FOUND,
            _ if error.is_conflict() => StatusCode::CONFLICT,
            HostError::Unloadable { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(code = error.code(), %error, "request failed");
        }
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl From<SendError> for ApiError {
    fn from(error: SendError) -> Self {
        let code = error.code();
        let status = match code {
            "unknown_agent" | "not_found" => StatusCode::NOT_FOUND,
            "no_production" | "not_routable" | "not_ready" => StatusCode::SERVICE_UNAVAILABLE,
            "not_running" => StatusCode::CONFLICT,
            "agent_failed" => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<AgentError> for ApiError {
    fn from(error: AgentError) -> Self {
        ApiError::from(SendError::from(error))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {"code": self.code, "message": self.message}
        });
        (self.status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_documented_error_object() {
        let response = ApiError::invalid("label", "too long").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let error = ApiError::invalid("label", "too long");
        assert_eq!(error.code(), "invalid_request");
        assert_eq!(error.message(), "label: too long");
    }
}
