//! The one API error type: Prometheus's error envelope, `errorType` and HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::json;
use crate::promql::EvalError;

/// Prometheus 2.42's `errorType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    BadData,
    Execution,
    Timeout,
    Canceled,
    Internal,
    Unavailable,
    NotFound,
    /// Not Prometheus types: ingest refusals (401, 408, 413, 415) keep the envelope.
    Unauthorized,
    TooLarge,
    RequestTimeout,
    UnsupportedMedia,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadData
            | ErrorType::TooLarge
            | ErrorType::RequestTimeout
            | ErrorType::UnsupportedMedia => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Timeout => "timeout",
            ErrorType::Canceled => "canceled",
            ErrorType::Internal => "internal",
            ErrorType::Unavailable => "unavailable",
            ErrorType::NotFound => "not_found",
            ErrorType::Unauthorized => "unauthorized",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            ErrorType::BadData => StatusCode::BAD_REQUEST,
            ErrorType::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Canceled | ErrorType::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Internal | ErrorType::Unavailable => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::NotFound => StatusCode::NOT_FOUND,
            ErrorType::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorType::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorType::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct ApiError {
    pub kind: ErrorType,
    pub msg: String,
}

impl ApiError {
    pub fn bad_data(msg: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::BadData,
            msg: msg.into(),
        }
    }

    pub fn new(kind: ErrorType, msg: impl Into<String>) -> Self {
        Self {
            kind,
            msg: msg.into(),
        }
    }

    /// `invalid parameter "<name>": <why>`, as Prometheus wraps parameter errors.
    pub fn param(name: &str, why: impl std::fmt::Display) -> Self {
        Self::bad_data(format!("invalid parameter {name:?}: {why}"))
    }
}

impl From<EvalError> for ApiError {
    fn from(e: EvalError) -> Self {
        let kind = match &e {
            EvalError::Timeout(_) => ErrorType::Timeout,
            EvalError::BadData(_) => ErrorType::BadData,
            EvalError::Execution(_) | EvalError::TooManySamples(_) => ErrorType::Execution,
        };
        Self {
            kind,
            msg: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = format!(
            "{{\"status\":\"error\",\"errorType\":{},\"error\":{}}}",
            json::string(self.kind.as_str()),
            json::string(&self.msg)
        );
        (
            self.kind.status(),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}
