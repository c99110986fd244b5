//! The one error type every handler returns, and the JSON envelope it becomes:
//! `{"error": {"code": "snake_case", "message": "…"}}`.
//!
//! Codes are stable API: clients branch on them. Messages are for people and
//! never contain request input that could be a secret; internal causes are
//! logged server-side (with the request's span) and answered with a generic
//! `internal` error.

use std::time::Duration;
use tessera_core::ErrorCode;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::device::DeviceAuthError;
use crate::auth::lockout::Locked;
use crate::auth::login::LoginError;
use crate::auth::AuthError;
use crate::enrollment::EnrollmentError;
use crate::pairing::PairingError;
use crate::store::StoreError;
use crate::trust::TrustError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<Duration>,
}

/// The error envelope, as documented in the OpenAPI document.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case, machine-readable.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("{what} not found"),
        )
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn too_many_requests(code: ErrorCode, message: impl Into<String>, retry: Duration) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, code, message);
        e.retry_after = Some(retry);
        e
    }

    /// Logs `cause` and answers a generic 500. The cause never reaches the
    /// client: it may name tables, paths or values.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal server error; see the server log",
        )
    }

    /// `503 storage_unavailable` with `Retry-After`: the database cannot be
    /// reached. The driver's words stay in the log (they may name hosts and
    /// ports); the client is told only to come back.
    pub fn storage_unavailable() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageUnavailable,
            "the database cannot be reached; try again shortly",
        );
        e.retry_after = Some(STORAGE_RETRY_AFTER);
        e
    }
}

/// How long a client is told to wait before retrying while the database
/// is unreachable: long enough not to hammer a database on its way back,
/// short enough that an agent's events catch up soon after.
pub const STORAGE_RETRY_AFTER: Duration = Duration::from_secs(5);

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => ApiError::conflict(ErrorCode::Conflict, "already exists"),
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "the database is unreachable");
                ApiError::storage_unavailable()
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

// ---- auth, pairing, enrollment, trust

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let code = match e {
            AuthError::MissingToken => ErrorCode::Unauthenticated,
            AuthError::InvalidToken => ErrorCode::InvalidToken,
            AuthError::WrongCredentialType => ErrorCode::WrongCredentialType,
            AuthError::SessionRevoked => ErrorCode::SessionRevoked,
            AuthError::SessionExpired => ErrorCode::SessionExpired,
            AuthError::AccountDisabled => ErrorCode::AccountDisabled,
            AuthError::Forbidden(_) => return ApiError::forbidden(e.to_string()),
        };
        ApiError::unauthorized(code, e.to_string())
    }
}

impl From<DeviceAuthError> for ApiError {
    fn from(e: DeviceAuthError) -> Self {
        let code = match e {
            DeviceAuthError::MissingKey => ErrorCode::Unauthenticated,
            DeviceAuthError::InvalidKey => ErrorCode::InvalidToken,
            DeviceAuthError::WrongCredentialType => ErrorCode::WrongCredentialType,
            DeviceAuthError::DeviceRevoked => ErrorCode::DeviceRevoked,
            DeviceAuthError::KeyRevoked => ErrorCode::KeyRevoked,
            DeviceAuthError::KeyNotActive => ErrorCode::KeyNotActive,
            DeviceAuthError::SupportKeyScope => {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::SupportKeyScope,
                    e.to_string(),
                )
            }
        };
        ApiError::unauthorized(code, e.to_string())
    }
}

/// `429 locked_out`, the wait in words in the message and in seconds in
/// `Retry-After`.
impl From<Locked> for ApiError {
    fn from(l: Locked) -> Self {
        ApiError::too_many_requests(ErrorCode::LockedOut, l.to_string(), l.remaining)
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::LockedOut(locked) => locked.into(),
            LoginError::TooLong => ApiError::unprocessable(ErrorCode::InvalidField, e.to_string()),
            LoginError::AccountDisabled => {
                ApiError::unauthorized(ErrorCode::AccountDisabled, e.to_string())
            }
            LoginError::InvalidCredentials => {
                ApiError::unauthorized(ErrorCode::InvalidCredentials, e.to_string())
            }
            LoginError::Store(e) => e.into(),
        }
    }
}

impl From<PairingError> for ApiError {
    fn from(e: PairingError) -> Self {
        match e {
            PairingError::Auth(e) => e.into(),
            PairingError::LockedOut(locked) => LoginError::LockedOut(locked).into(),
            PairingError::NotFound => ApiError::not_found("pending pairing with that user code"),
            PairingError::DeviceRevoked => {
                ApiError::conflict(ErrorCode::DeviceRevoked, e.to_string())
            }
            PairingError::AlreadyEnrolled => {
                ApiError::conflict(ErrorCode::AlreadyEnrolled, e.to_string())
            }
            PairingError::NotPending => {
                ApiError::conflict(ErrorCode::PairingNotPending, e.to_string())
            }
            PairingError::Store(e) => e.into(),
        }
    }
}

impl From<EnrollmentError> for ApiError {
    fn from(e: EnrollmentError) -> Self {
        let message = e.to_string();
        match e {
            EnrollmentError::InvalidField { .. } => {
                ApiError::unprocessable(ErrorCode::InvalidField, message)
            }
            EnrollmentError::InvalidIdentity(_) => {
                ApiError::unprocessable(ErrorCode::InvalidIdentity, message)
            }
            EnrollmentError::NotAToken | EnrollmentError::UnknownToken => {
                ApiError::unauthorized(ErrorCode::InvalidToken, message)
            }
            EnrollmentError::TokenRevoked => {
                ApiError::unauthorized(ErrorCode::TokenRevoked, message)
            }
            EnrollmentError::TokenExpired => {
                ApiError::unauthorized(ErrorCode::TokenExpired, message)
            }
            EnrollmentError::TokenExhausted => {
                ApiError::unauthorized(ErrorCode::TokenExhausted, message)
            }
            EnrollmentError::DeviceRevoked { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::DeviceRevoked, message)
            }
            EnrollmentError::Proof(_) => ApiError::unauthorized(ErrorCode::InvalidProof, message),
            EnrollmentError::AlreadyEnrolled => {
                ApiError::conflict(ErrorCode::AlreadyEnrolled, message)
            }
            EnrollmentError::Store(e) => e.into(),
        }
    }
}

impl From<TrustError> for ApiError {
    fn from(e: TrustError) -> Self {
        let message = e.to_string();
        match e {
            TrustError::NotFound(what) => ApiError::not_found(what),
            TrustError::NotYours(_) => ApiError::forbidden(message),
            TrustError::BadSignature => ApiError::unprocessable(ErrorCode::BadSignature, message),
            TrustError::OutOfTime => ApiError::unprocessable(ErrorCode::StaleStatement, message),
            TrustError::Superseded(_) => ApiError::conflict(ErrorCode::StaleStatement, message),
            TrustError::InvalidField(_) => {
                ApiError::unprocessable(ErrorCode::InvalidField, message)
            }
            TrustError::InvalidIdentity(_) => {
                ApiError::unprocessable(ErrorCode::InvalidIdentity, message)
            }
            TrustError::InvalidGrant => ApiError::unprocessable(ErrorCode::InvalidGrant, message),
            TrustError::ExchangeNotOpen(_) => {
                ApiError::conflict(ErrorCode::ExchangeNotOpen, message)
            }
            TrustError::Encode(_) => ApiError::internal(message),
            TrustError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(v) = self.retry_after.and_then(retry_after) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// A `Retry-After` value for `wait`, in whole seconds rounded up: a client
/// that waits this long will be let through.
pub fn retry_after(wait: Duration) -> Option<HeaderValue> {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from_str(&secs.max(1).to_string()).ok()
}

pub type ApiResult<T> = Result<T, ApiError>;

// ---- sessions, relay, control

impl From<crate::session::SessionError> for ApiError {
    fn from(e: crate::session::SessionError) -> Self {
        use crate::session::SessionError;
        match e {
            SessionError::NotActive | SessionError::EndedMeanwhile => {
                ApiError::conflict(ErrorCode::SessionNotActive, e.to_string())
            }
            SessionError::DeviceOffline | SessionError::DeviceUnresponsive => {
                ApiError::conflict(ErrorCode::DeviceOffline, e.to_string())
            }
            SessionError::ChannelUnsupported => {
                ApiError::conflict(ErrorCode::ChannelUnsupported, e.to_string())
            }
            SessionError::RelayUnavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::RelayUnavailable,
                e.to_string(),
            ),
            SessionError::Store(e) => e.into(),
        }
    }
}
