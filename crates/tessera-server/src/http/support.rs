//! Support codes: an operator asks for one; the person at the machine
//! previews it and binds it with the one-time agent.

use std::net::IpAddr;
use std::time::Duration;
use tessera_core::kinds::{Consent, Origin, SupportCodeState};
use tessera_core::ErrorCode;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::Json;
use sha2::{Digest, Sha256};
use tessera_core::api::{
    BindSupportCodeRequest, BoundSupportCode, CreateSupportCodeRequest, CreatedSupportCode,
    SecretString, SupportCodePreview,
};
use tessera_core::codes::{display_support_code, new_support_code, normalise_support_code};
use tessera_core::identity::{IdentityDocument, ProofPurpose};
use tessera_core::roles::Permission;
use tessera_core::secret::{Secret, SecretKind};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ClientIp, ServerOrigin};
use super::ratelimit;
use crate::auth::lockout::{self, LockKey};
use crate::auth::Operator;
use crate::enrollment::{validate_device_fields, EnrollmentError, ProofError, ProofOffer};
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::support_codes::SupportCodeRow;
use crate::store::{self, StoreError};
use crate::{enrollment, tenancy, AppState};

pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let public = OpenApiRouter::new()
        .routes(routes!(preview))
        .routes(routes!(bind))
        .route_layer(from_fn_with_state(
            (state.clone(), state.limiters().support_code.clone()),
            ratelimit::enforce,
        ));
    OpenApiRouter::new().merge(public).routes(routes!(create))
}

/// What is stored for a code: SHA-256 under a label, looked up by equality.
pub fn code_hash(canonical: &str) -> [u8; 32] {
    Sha256::digest(format!("tessera/support-code/v1\0{canonical}")).into()
}

/// Ask for a support code (`XXX-XXX-XXX`, shown once) for an attended session.
#[utoipa::path(post, path = "/api/v1/support-codes", tag = "support",
    security(("operator_token" = [])),
    request_body = CreateSupportCodeRequest,
    responses((status = 201, body = CreatedSupportCode), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    ApiJson(req): ApiJson<CreateSupportCodeRequest>,
) -> ApiResult<(StatusCode, Json<CreatedSupportCode>)> {
    let created = create_code(&state, ip, &op, &req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Creates a support code, audited by id; the code is in the result only.
/// The API and the console both call this.
pub async fn create_code(
    state: &AppState,
    ip: ClientIp,
    op: &Operator,
    req: &CreateSupportCodeRequest,
) -> ApiResult<CreatedSupportCode> {
    op.require(Permission::Control)?;
    let access = super::extract::session_access(req.access.as_deref())?;
    let channel = super::extract::session_channel(req.channel.as_deref())?;
    let ttl = req
        .ttl_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TTL);
    if ttl < Duration::from_secs(60) || ttl > MAX_TTL {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidField,
            "`ttl_seconds` must be between 60 and 86400",
        ));
    }
    let tenant = tenancy::of(op);
    let now = state.now();
    let id = uuid::Uuid::now_v7().to_string();
    let mut attempt = 0;
    loop {
        let code = new_support_code();
        let inserted: Result<(), StoreError> = state
            .db()
            .write(async |w| {
                store::support_codes::insert(
                    w,
                    store::support_codes::NewCode {
                        id: &id,
                        tenant_id: tenant,
                        code_hash: &code_hash(&code),
                        access,
                        channel,
                        created_by: &op.user_id,
                        now,
                        expires_at: now.plus(ttl),
                    },
                )
                .await?;
                w.audit(
                    AuditEvent::new(
                        tenant,
                        Actor::User(op.user_id.clone()),
                        Action::SupportCodeCreated,
                    )
                    .ip(Some(ip.0))
                    .target(format!("support_code:{id}"))
                    .detail("access", access.as_str())
                    .detail("channel", channel.as_str())
                    .detail("expires_at", now.plus(ttl).to_rfc3339()),
                )
                .await?;
                Ok(())
            })
            .await;
        match inserted {
            Ok(()) => {
                return Ok(CreatedSupportCode {
                    id,
                    code: SecretString::new(display_support_code(&code)),
                    access: access.to_string(),
                    expires_at: now.plus(ttl).to_rfc3339(),
                    channel: channel.to_string(),
                });
            }
            // 2^44.6 codes: a collision is astronomically rare, but harmless.
            Err(StoreError::Conflict) if attempt < 3 => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Finds a live code by what was typed. A code that never existed counts
/// toward the address's support-code lockout, so codes cannot be guessed;
/// a real code that was used, expired or withdrawn is no guess and says
/// which (the losers of an honest race for one code are not guessers).
async fn find_live(state: &AppState, ip: IpAddr, typed: &str) -> Result<SupportCodeRow, ApiError> {
    let key = LockKey::support_code(ip);
    if let Some(locked) = lockout::check(state.db(), std::slice::from_ref(&key)).await? {
        return Err(locked.into());
    }
    let found = match normalise_support_code(typed) {
        Some(code) => store::support_codes::by_hash(state.db().pool(), &code_hash(&code)).await?,
        None => None,
    };
    let now = state.now();
    match found {
        Some(c) if c.is_live(now) => Ok(c),
        Some(c) => Err(not_live(c.state)),
        None => {
            state
                .db()
                .write(async |w| lockout::record_failure(w, ip, std::slice::from_ref(&key)).await)
                .await?;
            Err(ApiError::not_found("active support code"))
        }
    }
}

/// Why a real code in `state` can no longer be bound.
fn not_live(state: SupportCodeState) -> ApiError {
    match state {
        SupportCodeState::Consumed => ApiError::conflict(
            ErrorCode::CodeUsed,
            "this support code was already used; ask for a new one",
        ),
        _ => ApiError::new(
            StatusCode::GONE,
            ErrorCode::CodeExpired,
            "this support code has expired or was withdrawn; ask for a new one",
        ),
    }
}

/// Public preview: is the code valid, and who asked for it? Never uses it.
#[utoipa::path(get, path = "/api/v1/support-codes/{code}", tag = "support",
    params(("code" = String, Path, description = "XXX-XXX-XXX")),
    responses(
        (status = 200, body = SupportCodePreview),
        (status = 404, description = "not_found: no such code", body = ErrorBody),
        (status = 409, description = "code_used", body = ErrorBody),
        (status = 410, description = "code_expired", body = ErrorBody),
        (status = 429, description = "rate_limited, locked_out", body = ErrorBody),
    ))]
async fn preview(
    State(state): State<AppState>,
    ip: ClientIp,
    Path(code): Path<String>,
) -> ApiResult<Json<SupportCodePreview>> {
    let c = find_live(&state, ip.0, &code).await?;
    Ok(Json(SupportCodePreview {
        valid: true,
        requested_by: c.created_by_name,
        access: c.access.to_string(),
        expires_at: c.expires_at.to_rfc3339(),
        channel: c.channel.to_string(),
    }))
}

/// The one-time agent binds the code: exactly one binder wins. It gets a
/// key for this one session; the session waits for the person's consent.
#[utoipa::path(post, path = "/api/v1/support-codes/bind", tag = "support",
    request_body = BindSupportCodeRequest,
    responses(
        (status = 201, body = BoundSupportCode),
        (status = 401, description = "invalid_proof", body = ErrorBody),
        (status = 404, description = "not_found: no such code", body = ErrorBody),
        (status = 409, description = "code_used: another binder won", body = ErrorBody),
        (status = 410, description = "code_expired: expired or withdrawn", body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ))]
async fn bind(
    State(state): State<AppState>,
    ip: ClientIp,
    origin: ServerOrigin,
    ApiJson(req): ApiJson<BindSupportCodeRequest>,
) -> ApiResult<(StatusCode, Json<BoundSupportCode>)> {
    let code = req.code.expose();
    validate_device_fields(&req.name, &req.hostname, &req.os)?;
    let doc = IdentityDocument::decode(&req.identity)
        .map_err(|e| ApiError::unprocessable(ErrorCode::InvalidIdentity, e.to_string()))?;
    let device_id = doc
        .device_id()
        .map_err(|e| ApiError::unprocessable(ErrorCode::InvalidIdentity, e.to_string()))?;
    let c = find_live(&state, ip.0, code).await?;
    let now = state.now();
    // Whoever binds must hold the identity key it names (the pairing
    // proof), checked before the code is used: a refused bind uses nothing.
    let offer =
        ProofOffer::from_fields(req.issued_at, req.proof.as_deref(), req.audience.as_deref())
            .map_err(EnrollmentError::from)?;
    let proof = enrollment::check_possession(
        &doc,
        (&req.name, &req.hostname, &req.os),
        ProofPurpose::SupportBind,
        offer,
        &origin.audience(),
        now,
    )
    .map_err(EnrollmentError::from)?;
    let session_id = uuid::Uuid::now_v7().to_string();
    let key = Secret::generate(SecretKind::DeviceKey);
    let ip_addr = ip.0;
    state
        .db()
        .write(async |w| {
            if !store::proofs::spend(w, &proof).await? {
                return Err(EnrollmentError::from(ProofError::Replayed).into());
            }
            if !store::support_codes::consume(w, &c.id, &session_id, now).await? {
                // Another binder won the race (or the code lapsed this
                // instant): an honest loss, not a guess.
                return Err(not_live(if c.expires_at <= now {
                    SupportCodeState::Expired
                } else {
                    SupportCodeState::Consumed
                }));
            }
            let owner = c.created_by.clone();
            store::devices::insert(
                w,
                store::devices::NewDevice {
                    id: device_id.as_str(),
                    tenant_id: &c.tenant_id,
                    ed25519_public: &doc.ed25519,
                    x25519_public: &doc.x25519,
                    identity_signature: &doc.signature,
                    name: req.name.trim(),
                    hostname: req.hostname.trim(),
                    os: req.os.trim(),
                    tags: &["attended".to_owned()],
                    enrolled_via: "support_code",
                    enrolled_by: &format!("support_code:{}", c.id),
                    owner_user_id: &owner,
                    ephemeral: true,
                    now,
                },
            )
            .await
            .map_err(|e| match e {
                StoreError::Conflict => ApiError::conflict(
                    ErrorCode::AlreadyEnrolled,
                    "use a fresh identity for each support session",
                ),
                other => other.into(),
            })?;
            enrollment::issue_key(
                w,
                &c.tenant_id,
                device_id.as_str(),
                &key,
                &format!("support_code:{}", c.id),
                "support_code",
            )
            .await?;
            store::sessions::insert(
                w,
                store::sessions::NewSession {
                    id: &session_id,
                    tenant_id: &c.tenant_id,
                    origin: Origin::Attended,
                    device_id: device_id.as_str(),
                    created_by: &owner,
                    access: c.access,
                    channel: c.channel,
                    consent: Consent::initial(Origin::Attended, true),
                    support_code_id: Some(&c.id),
                    now,
                    consent_deadline: Some(now.plus(state.config().consent_timeout)),
                },
            )
            .await?;
            let actor = Actor::Device(device_id.to_string());
            for (action, target) in [
                (
                    Action::SupportCodeConsumed,
                    format!("support_code:{}", c.id),
                ),
                (Action::SessionCreated, format!("session:{session_id}")),
                (Action::ConsentRequested, format!("session:{session_id}")),
            ] {
                w.audit(
                    AuditEvent::new(&c.tenant_id, actor.clone(), action)
                        .ip(Some(ip_addr))
                        .target(target)
                        .detail("origin", Origin::Attended.as_str())
                        .detail("device_id", device_id.to_string())
                        .detail("technician", c.created_by_name.clone())
                        .detail("access", c.access.as_str())
                        .detail("channel", c.channel.as_str()),
                )
                .await?;
            }
            Ok(())
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(BoundSupportCode {
            session_id,
            device_id: device_id.to_string(),
            device_key: SecretString::new(key.expose()),
            technician: c.created_by_name,
            access: c.access.to_string(),
        }),
    ))
}
