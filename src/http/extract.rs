//! Extractors that turn request parts into validated values or a JSON 4xx:
//! bodies, path ids, and the two authenticated principals.

use agentry_actors::{OperatorId, TenantId, UserId};
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use chrono::Utc;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;
use super::json_body;
use super::AppState;
use crate::db::sessions;
use crate::db::tenants::Role;
use crate::tokens::TokenPurpose;

/// A JSON body whose every rejection is a JSON 4xx; every body passes the
/// rules of [`super::json_body`] (objects only, no NUL, length limits).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest(rejection.body_text())
                }
            })?;
        json_body::parse(&bytes).map(Self).map_err(|error| {
            if error.syntax {
                ApiError::BadRequest(error.to_string())
            } else {
                ApiError::Invalid(error.to_string())
            }
        })
    }
}

/// `application/json` or any `application/*+json`, as axum's `Json` accepts.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// One id from the path; a malformed id names no resource, so it is a 404.
pub struct IdPath<T>(pub T);

impl<T: From<Uuid> + Send, S: Send + Sync> FromRequestParts<S> for IdPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(id) = axum::extract::Path::<Uuid>::from_request_parts(parts, state)
            .await
            .map_err(path_rejection)?;
        Ok(Self(T::from(id)))
    }
}

/// Two ids from the path (parent, child).
pub struct IdPair<A, B>(pub A, pub B);

impl<A: From<Uuid> + Send, B: From<Uuid> + Send, S: Send + Sync> FromRequestParts<S>
    for IdPair<A, B>
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path((a, b)) =
            axum::extract::Path::<(Uuid, Uuid)>::from_request_parts(parts, state)
                .await
                .map_err(path_rejection)?;
        Ok(Self(A::from(a), B::from(b)))
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    match rejection {
        PathRejection::FailedToDeserializePathParams(_) => ApiError::NotFound,
        other => ApiError::Internal(other.body_text()),
    }
}

fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A signed-in tenant user; every dashboard handler takes one.
#[derive(Clone, Copy, Debug)]
pub struct TenantUser {
    pub tenant: TenantId,
    pub user: UserId,
    pub role: Role,
    pub session_id: Uuid,
}

impl TenantUser {
    pub fn require_manager(&self) -> Result<(), ApiError> {
        if self.role.can_manage() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "your role can read but not change this tenant's configuration".into(),
            ))
        }
    }
}

impl FromRequestParts<AppState> for TenantUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session_id = signed_session(parts, state, TokenPurpose::Dashboard)?;
        let session = sessions::find_dashboard(&state.store, session_id)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        require_live(session.revoked_at, session.expires_at)?;
        let role =
            Role::parse(&session.role).ok_or_else(|| ApiError::Internal("unknown role".into()))?;
        Ok(Self {
            tenant: session.tenant(),
            user: session.user(),
            role,
            session_id,
        })
    }
}

/// The session id of a bearer token signed for `purpose` and not expired.
pub fn signed_session(
    parts: &Parts,
    state: &AppState,
    purpose: TokenPurpose,
) -> Result<Uuid, ApiError> {
    let token = bearer_token(parts).ok_or(ApiError::Unauthorized)?;
    state
        .signer
        .verify(purpose, token, Utc::now())
        .map(|verified| verified.session_id)
        .map_err(|_| ApiError::Unauthorized)
}

/// A session row still counts if it was neither revoked nor has expired.
fn require_live(
    revoked_at: Option<chrono::DateTime<Utc>>,
    expires_at: chrono::DateTime<Utc>,
) -> Result<(), ApiError> {
    if revoked_at.is_some() || expires_at <= Utc::now() {
        return Err(ApiError::Unauthorized);
    }
    Ok(())
}

/// A signed-in site operator; a tenant user's token never becomes one.
#[derive(Clone, Copy, Debug)]
pub struct Operator {
    pub operator: OperatorId,
    pub session_id: Uuid,
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session_id = signed_session(parts, state, TokenPurpose::Operator)?;
        let session = sessions::find_operator(&state.store, session_id)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        require_live(session.revoked_at, session.expires_at)?;
        Ok(Self {
            operator: OperatorId::from_uuid(session.operator_id),
            session_id,
        })
    }
}
