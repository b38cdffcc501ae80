//! Extractors that turn request parts into validated values or a JSON 4xx:
//! bodies, path ids, and the two authenticated principals.

use std::net::{IpAddr, SocketAddr};

use agentry_actors::{OperatorId, TenantId, UserId};
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use chrono::Utc;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;
use super::json_body;
use super::AppState;
use crate::api_tokens::{self, Scope};
use crate::db::api_tokens as db_api_tokens;
use crate::db::sessions;
use crate::db::tenants::Role;
use crate::rate_limit::Tier;
use crate::tokens::{TokenError, TokenPurpose};

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

/// A signed-in tenant user (dashboard login); the dashboard's own handlers
/// take one. An API token presented here is refused with 403: automation
/// reaches only the routes that take a [`Principal`].
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
        match authenticate(parts, state).await? {
            Principal::User(user) => Ok(user),
            Principal::Token(_) => Err(ApiError::Forbidden(
                "API tokens cannot use this route; it needs a dashboard sign-in".into(),
            )),
        }
    }
}

/// An API token that authenticated: its tenant and what it may do.
#[derive(Clone, Debug)]
pub struct TokenUser {
    pub tenant: TenantId,
    pub token_id: Uuid,
    pub scopes: Vec<Scope>,
}

/// Whoever calls a route open to automation: a dashboard user or an API token.
#[derive(Clone, Debug)]
pub enum Principal {
    User(TenantUser),
    Token(TokenUser),
}

impl Principal {
    pub fn tenant(&self) -> TenantId {
        match self {
            Self::User(user) => user.tenant,
            Self::Token(token) => token.tenant,
        }
    }

    /// A token must hold the scope; a dashboard user needs the role the
    /// scope stands for (a manager for configuration, anyone for leads and reads).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        match self {
            Self::Token(token) if token.scopes.contains(&scope) => Ok(()),
            Self::Token(_) => Err(ApiError::MissingScope(scope.as_str())),
            Self::User(user) if scope.needs_manager() => user.require_manager(),
            Self::User(_) => Ok(()),
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await
    }
}

/// The client's IP, for the limits and the lockout: the socket's peer, or
/// what a trusted proxy forwarded (see [`crate::http::client_ip`]).
pub fn client_ip(parts: &Parts, state: &AppState) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| state.client_ip(*address, &parts.headers))
}

/// A client IP as a rate-limit subject (`unknown` only off a socket, as in unit tests).
pub fn ip_subject(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

/// The client's IP as a handler argument (logins, widget calls).
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(client_ip(parts, state)))
    }
}

/// 429 while `ip` is locked out.
pub async fn refuse_if_locked(state: &AppState, ip: Option<IpAddr>) -> Result<(), ApiError> {
    match state.lockout.locked_for(ip).await {
        Some(left) => Err(ApiError::LockedOut {
            retry_after_secs: left.as_secs(),
        }),
        None => Ok(()),
    }
}

/// Why a bearer credential was refused.
enum Refusal {
    /// Looks like guessing (garbage, forged, unknown, revoked or expired API
    /// token): counts toward the lockout.
    Counted,
    /// A dashboard session of ours that ended: a browser left open, not an
    /// attack, so it does not lock the office out.
    Ended,
    Failed(ApiError),
}

impl From<crate::db::DbError> for Refusal {
    fn from(error: crate::db::DbError) -> Self {
        Self::Failed(error.into())
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let token = bearer_token(parts).ok_or(ApiError::Unauthorized)?;
    let ip = client_ip(parts, state);
    refuse_if_locked(state, ip).await?;
    let outcome = if token.starts_with(api_tokens::PREFIX) {
        api_token(state, token).await.map(Principal::Token)
    } else {
        dashboard(state, token).await.map(Principal::User)
    };
    match outcome {
        Ok(principal) => {
            // Automation gets its own burst throttle per token; the
            // dashboard's users share their tenant's standard tier.
            let (tier, subject) = match &principal {
                Principal::Token(token) => (Tier::ApiTokens, token.token_id.to_string()),
                Principal::User(user) => (Tier::Standard, user.tenant.to_string()),
            };
            state
                .limit_request(parts, tier, Some(principal.tenant()), &subject)
                .await?;
            Ok(principal)
        }
        Err(Refusal::Counted) => {
            state.lockout.record_failure(ip).await;
            Err(ApiError::Unauthorized)
        }
        Err(Refusal::Ended) => Err(ApiError::Unauthorized),
        Err(Refusal::Failed(error)) => Err(error),
    }
}

async fn dashboard(state: &AppState, token: &str) -> Result<TenantUser, Refusal> {
    let session_id = match state
        .signer
        .verify(TokenPurpose::Dashboard, token, Utc::now())
    {
        Ok(verified) => verified.session_id,
        Err(TokenError::Expired) => return Err(Refusal::Ended),
        Err(_) => return Err(Refusal::Counted),
    };
    let session = sessions::find_dashboard(&state.store, session_id)
        .await?
        .ok_or(Refusal::Counted)?;
    require_live(session.revoked_at, session.expires_at).map_err(|_| Refusal::Ended)?;
    let role = Role::parse(&session.role)
        .ok_or_else(|| Refusal::Failed(ApiError::Internal("unknown role".into())))?;
    Ok(TenantUser {
        tenant: session.tenant(),
        user: session.user(),
        role,
        session_id,
    })
}

/// Checked in PostgreSQL on every use, so a revocation holds on every instance at once.
async fn api_token(state: &AppState, token: &str) -> Result<TokenUser, Refusal> {
    let hash = api_tokens::lookup_hash(token).ok_or(Refusal::Counted)?;
    let found = db_api_tokens::find_by_hash(&state.store, &hash)
        .await?
        .ok_or(Refusal::Counted)?;
    let now = Utc::now();
    if found.revoked_at.is_some() || found.expires_at <= now {
        return Err(Refusal::Counted);
    }
    let tenant = TenantId::from_uuid(found.tenant_id);
    // At most one write a minute per token, not one per request.
    if found
        .last_used_at
        .is_none_or(|used| now - used >= chrono::Duration::seconds(60))
    {
        let touched = async {
            let mut tx = state.store.tenant(tenant).await?;
            db_api_tokens::touch(&mut tx, found.id).await?;
            tx.commit().await
        };
        if let Err(error) = touched.await {
            tracing::warn!(%error, "API token last use not recorded");
        }
    }
    Ok(TokenUser {
        tenant,
        token_id: found.id,
        scopes: found
            .scopes
            .iter()
            .filter_map(|name| Scope::parse(name))
            .collect(),
    })
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
        // The operator realm's tier, per client IP, before any lookup.
        let ip = client_ip(parts, state);
        state
            .limit_request(parts, Tier::Admin, None, &ip_subject(ip))
            .await?;
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
