//! The one place errors become HTTP responses: a status and a JSON body
//! `{"error":{"code","message"}}`. Internal details go to the log, never to clients.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Invalid(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("email or password is incorrect")]
    InvalidCredentials,
    #[error("{0}")]
    Forbidden(String),
    /// An API token without the scope a route needs.
    #[error("this API token lacks the scope {0}")]
    MissingScope(&'static str),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too many failed authentications from this client (brute-force lockout).
    #[error("too many failed sign-in attempts; try again later")]
    LockedOut { retry_after_secs: u64 },
    #[error("{0} is unavailable, try again shortly")]
    Unavailable(&'static str),
    #[error("too many requests; try again in {} s", retry_after_secs(.0))]
    RateLimited(crate::rate_limit::Decision),
    /// Logged with its detail; the client only learns that something failed.
    #[error("internal error")]
    Internal(String),
    /// Existed, and no longer does (an expired or revoked share link).
    #[error("{0}")]
    Gone(String),
    /// A file flagged by the virus scanner: never served.
    #[error("this file is withheld: the virus scanner flagged it")]
    Infected,
    /// A `Range` past the end of a file of `size` bytes.
    #[error("the requested range is not within the file")]
    RangeNotSatisfiable { size: u64 },
}

fn retry_after_secs(decision: &crate::rate_limit::Decision) -> u64 {
    decision.retry_after.map_or(1, |wait| {
        wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
    })
}

/// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (seconds until a full
/// burst again), on every response a limit decided; nothing when limits are off.
pub struct RateHeaders(pub Option<crate::rate_limit::Decision>);

impl RateHeaders {
    pub(crate) fn insert(
        decision: &crate::rate_limit::Decision,
        headers: &mut axum::http::HeaderMap,
    ) {
        let reset = decision.reset_after;
        let reset_secs = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
        for (name, value) in [
            ("x-ratelimit-limit", u64::from(decision.limit)),
            ("x-ratelimit-remaining", u64::from(decision.remaining)),
            ("x-ratelimit-reset", reset_secs),
        ] {
            headers.insert(name, HeaderValue::from(value));
        }
    }
}

impl axum::response::IntoResponseParts for RateHeaders {
    type Error = std::convert::Infallible;

    fn into_response_parts(
        self,
        mut parts: axum::response::ResponseParts,
    ) -> Result<axum::response::ResponseParts, Self::Error> {
        if let Some(decision) = &self.0 {
            Self::insert(decision, parts.headers_mut());
        }
        Ok(parts)
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::MissingScope(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::LockedOut { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Gone(_) => StatusCode::GONE,
            Self::Infected => StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Invalid(_) => "invalid",
            Self::Unauthorized => "unauthorized",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden(_) => "forbidden",
            Self::MissingScope(_) => "insufficient_scope",
            Self::NotFound => "not_found",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::LockedOut { .. } => "locked_out",
            Self::Unavailable(_) => "unavailable",
            Self::RateLimited(_) => "rate_limited",
            Self::Internal(_) => "internal",
            Self::Gone(_) => "gone",
            Self::Infected => "infected",
            Self::RangeNotSatisfiable { .. } => "range_not_satisfiable",
        }
    }
}

/// A JSON error response for any status, used for errors raised outside handlers too.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        let mut response = error_response(self.status(), self.code(), &self.to_string());
        if self.status() == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::Unavailable(_) = &self {
            // Everything unavailable here is brief: a queue, a reconnect.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::RateLimited(decision) = &self {
            let headers = response.headers_mut();
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(decision)),
            );
            RateHeaders::insert(decision, headers);
        }
        if let Self::RangeNotSatisfiable { size } = &self {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
        }
        if let Self::LockedOut { retry_after_secs } = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs.max(1)),
            );
        }
        response
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::NotFound => Self::NotFound,
            DbError::Conflict(message) => Self::Conflict(message),
            unavailable if unavailable.is_unavailable() => Self::Unavailable("the database"),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::privacy::PrivacyError> for ApiError {
    fn from(error: crate::privacy::PrivacyError) -> Self {
        match error {
            ambiguous @ crate::privacy::PrivacyError::AmbiguousPhone(_) => {
                Self::Conflict(ambiguous.to_string())
            }
            crate::privacy::PrivacyError::Db(error) => error.into(),
        }
    }
}
