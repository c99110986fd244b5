//! RFC 8628 OAuth 2.0 Device Authorization Grant, to the letter:
//! form-encoded requests; success is HTTP 200 JSON; errors are HTTP 400
//! `{"error": …}` with the RFC's codes; every answer is `no-store`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tessera_core::api::{
    DeviceAuthorizationResponse, DeviceTokenResponse, OAuthError, SecretString,
};
use tessera_core::codes::{display_user_code, new_user_code};
use tessera_core::identity::IdentityDocument;
use tessera_core::secret::{Secret, SecretKind};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{form_has_nul, ClientIp, ServerOrigin};
use super::ratelimit;
use crate::enrollment::{self, validate_device_fields, ProofError, ProofOffer, SpendableProof};
use crate::pairing::{poll_outcome, redeem, PollOutcome, CLIENT_ID};
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::{self, StoreError};
use crate::{tenancy, AppState};

pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let authorize = OpenApiRouter::new()
        .routes(routes!(device_authorization))
        .route_layer(from_fn_with_state(
            (state.clone(), state.limiters().device_authorization.clone()),
            ratelimit::enforce,
        ));
    OpenApiRouter::new().merge(authorize).routes(routes!(token))
}

/// An RFC 6749 §5.2 error.
struct OAuthFailure {
    status: StatusCode,
    body: OAuthError,
}

fn fail(error: &str, description: Option<&str>) -> OAuthFailure {
    OAuthFailure {
        status: StatusCode::BAD_REQUEST,
        body: OAuthError {
            error: error.to_owned(),
            error_description: description.map(str::to_owned),
        },
    }
}

fn no_store(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

impl IntoResponse for OAuthFailure {
    fn into_response(self) -> Response {
        no_store((self.status, Json(self.body)).into_response())
    }
}

/// An OAuth endpoint's answer: its JSON, never cached, or its error.
fn answer<T: Serialize>(result: Result<T, OAuthFailure>) -> Response {
    match result {
        Ok(resp) => no_store(Json(resp).into_response()),
        Err(f) => f.into_response(),
    }
}

fn body_failure(e: BytesRejection) -> OAuthFailure {
    let mut f = fail(
        "invalid_request",
        Some("the request body could not be read"),
    );
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        f.status = StatusCode::PAYLOAD_TOO_LARGE;
        f.body.error_description = Some("the request body is too large".into());
    }
    f
}

/// Parses a form body, refusing repeated parameters (RFC 6749 §3.1).
fn parse_form(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, OAuthFailure> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(fail(
            "invalid_request",
            Some("expected Content-Type: application/x-www-form-urlencoded"),
        ));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| fail("invalid_request", Some("the body is not a valid form")))?;
    if form_has_nul(&pairs) {
        return Err(fail(
            "invalid_request",
            Some("text may not contain NUL characters"),
        ));
    }
    let mut names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(fail("invalid_request", Some("a parameter is repeated")));
    }
    // Parameters sent without a value are treated as omitted.
    Ok(pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect())
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn required<'a>(form: &'a [(String, String)], name: &str) -> Result<&'a str, OAuthFailure> {
    param(form, name).ok_or_else(|| fail("invalid_request", Some(&format!("missing `{name}`"))))
}

/// The form of a device authorization request (for the OpenAPI document).
#[derive(Deserialize, Serialize, ToSchema)]
pub struct DeviceAuthorizationForm {
    /// Must be `tessera-agent`.
    #[schema(pattern = "^tessera-agent$")]
    client_id: String,
    /// The device's identity document (base64url, docs/PROTOCOL.md §1).
    #[schema(
        min_length = 172,
        max_length = 172,
        pattern = r"^A[Q-Za-f][A-Za-z0-9_-]{170}$"
    )]
    identity: String,
    /// 1–128 characters, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    name: String,
    /// 1–255 characters, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    hostname: String,
    /// 1–128 characters, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    os: String,
    /// Unix milliseconds when `proof` was made; within five minutes of the
    /// server's clock.
    issued_at: String,
    /// base64url of the identity key's signature under `pairing-request`
    /// over the client id, name, hostname, os, `issued_at`, the purpose
    /// `pairing` and `audience` (docs/PROTOCOL.md §3.1). Single-use.
    proof: String,
    /// The origin (`scheme://host[:port]`) of the server the proof is meant
    /// for; it must be this server's.
    audience: String,
    /// Ignored.
    scope: Option<String>,
}

/// RFC 8628 §3.1: a device asks to be paired.
#[utoipa::path(post, path = "/oauth/device_authorization", tag = "pairing",
    request_body(content = DeviceAuthorizationForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = DeviceAuthorizationResponse),
        (status = 400, description = "invalid_request, invalid_client", body = OAuthError),
        (status = 413, description = "invalid_request: the body is too large", body = OAuthError),
        (status = 429, description = "rate_limited", body = super::error::ErrorBody),
    ))]
async fn device_authorization(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(authorize(&state, ip, &headers, body).await)
}

async fn authorize(
    state: &AppState,
    ip: ClientIp,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<DeviceAuthorizationResponse, OAuthFailure> {
    let form = parse_form(headers, &body.map_err(body_failure)?)?;
    if required(&form, "client_id")? != CLIENT_ID {
        return Err(fail("invalid_client", Some("unknown client_id")));
    }
    let doc = IdentityDocument::decode(required(&form, "identity")?)
        .map_err(|e| fail("invalid_request", Some(&format!("identity: {e}"))))?;
    let device_id = doc
        .device_id()
        .map_err(|e| fail("invalid_request", Some(&format!("identity: {e}"))))?;
    let (name, hostname, os) = (
        required(&form, "name")?,
        required(&form, "hostname")?,
        required(&form, "os")?,
    );
    validate_device_fields(name, hostname, os)
        .map_err(|e| fail("invalid_request", Some(&e.to_string())))?;
    let now = state.now();
    let origin = ServerOrigin::of(state, headers);
    let proof = check_proof(&doc, &form, (name, hostname, os), &origin, now)?;

    let cfg = state.config();
    let device_code = Secret::generate(SecretKind::DeviceCode);
    let id = uuid::Uuid::now_v7().to_string();
    let interval_ms = i64::try_from(cfg.pairing_interval.as_millis()).unwrap_or(5000);
    let ip_text = ip.0.to_string();
    let mut user_code = new_user_code();
    let mut attempt = 0;
    loop {
        let outcome: Result<Option<OAuthFailure>, StoreError> = state
            .db()
            .write(async |w| {
                if let Some(refusal) = pairing_refusal(w, device_id.as_str()).await? {
                    return Ok(Some(refusal));
                }
                if !store::proofs::spend(w, &proof).await? {
                    let replayed = ProofError::Replayed.to_string();
                    return Ok(Some(fail("invalid_request", Some(&replayed))));
                }
                // An interrupted enroll retried: the identity holder (it
                // signed this request) replaces its pending pairing, whose
                // user code stops working at once.
                for old in store::pairings::replace_pending(w, device_id.as_str(), now).await? {
                    w.audit(
                        AuditEvent::new(
                            tenancy::for_anonymous(),
                            Actor::Anonymous,
                            Action::PairingReplaced,
                        )
                        .ip(Some(ip.0))
                        .target(format!("device:{device_id}"))
                        .detail("pairing_id", old)
                        .detail("replaced_by", id.clone()),
                    )
                    .await?;
                }
                store::pairings::insert(
                    w,
                    store::pairings::NewPairing {
                        id: &id,
                        tenant_id: tenancy::for_anonymous(),
                        device_code_hash: &device_code.hash(),
                        user_code: &user_code,
                        client_id: CLIENT_ID,
                        device_id: device_id.as_str(),
                        ed25519_public: &doc.ed25519,
                        x25519_public: &doc.x25519,
                        identity_signature: &doc.signature,
                        name: name.trim(),
                        hostname: hostname.trim(),
                        os: os.trim(),
                        source_ip: &ip_text,
                        now,
                        expires_at: now.plus(cfg.pairing_ttl),
                        interval_ms,
                    },
                )
                .await?;
                w.audit(
                    AuditEvent::new(
                        tenancy::for_anonymous(),
                        Actor::Anonymous,
                        Action::PairingRequested,
                    )
                    .ip(Some(ip.0))
                    .target(format!("device:{device_id}"))
                    .detail("pairing_id", id.clone())
                    .detail("device_name", name.trim())
                    .detail("hostname", hostname.trim()),
                )
                .await?;
                Ok(None)
            })
            .await;
        match outcome {
            Ok(None) => break,
            Ok(Some(refusal)) => return Err(refusal),
            // Another pending pairing drew the same user code: draw again.
            Err(StoreError::Conflict) if attempt < 5 => {
                attempt += 1;
                user_code = new_user_code();
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store a pairing");
                return Err(OAuthFailure {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    body: OAuthError {
                        error: "server_error".into(),
                        error_description: None,
                    },
                });
            }
        }
    }
    let base = origin.base;
    let shown = display_user_code(&user_code);
    Ok(DeviceAuthorizationResponse {
        device_code: SecretString::new(device_code.expose()),
        verification_uri: format!("{base}/device"),
        verification_uri_complete: format!("{base}/device?user_code={shown}"),
        user_code: shown,
        expires_in: cfg.pairing_ttl.as_secs(),
        interval: cfg.pairing_interval.as_secs().max(1),
    })
}

/// The requester must hold the identity key: the one proof that
/// enrollment and support-code binding require too
/// ([`enrollment::check_possession`]), refused here as `invalid_request`.
fn check_proof(
    doc: &IdentityDocument,
    form: &[(String, String)],
    fields: (&str, &str, &str),
    origin: &ServerOrigin,
    now: tessera_core::Timestamp,
) -> Result<SpendableProof, OAuthFailure> {
    let refuse = |e: ProofError| fail("invalid_request", Some(&e.to_string()));
    let issued_at: i64 = required(form, "issued_at")?
        .parse()
        .map_err(|_| refuse(ProofError::BadTime))?;
    let offer = ProofOffer {
        issued_at,
        proof: required(form, "proof")?,
        audience: required(form, "audience")?,
    };
    let purpose = tessera_core::identity::ProofPurpose::Pairing;
    enrollment::check_possession(doc, fields, purpose, offer, &origin.audience(), now)
        .map_err(refuse)
}

/// Why this identity may not start a pairing, if it may not: it is already
/// enrolled (new keys for it come from an operator or a rotation), or it
/// was revoked (with the operator's reason).
async fn pairing_refusal(
    tx: &mut store::Tx,
    device_id: &str,
) -> Result<Option<OAuthFailure>, StoreError> {
    if let Some(d) = store::devices::by_id_any_tenant(&mut **tx, device_id).await? {
        let why = match (d.revoked_at, d.revoked_reason) {
            (Some(_), Some(reason)) => format!("this device identity was revoked ({reason})"),
            (Some(_), None) => "this device identity was revoked".to_owned(),
            (None, _) => "this device is already enrolled".to_owned(),
        };
        return Ok(Some(fail("access_denied", Some(&why))));
    }
    Ok(None)
}

/// The form of a token request (for the OpenAPI document).
#[derive(Deserialize, Serialize, ToSchema)]
pub struct TokenForm {
    /// `urn:ietf:params:oauth:grant-type:device_code`
    #[schema(pattern = "^urn:ietf:params:oauth:grant-type:device_code$")]
    grant_type: String,
    /// The `device_code` of the device authorization response.
    #[schema(min_length = 1)]
    device_code: String,
    /// Must be `tessera-agent`.
    #[schema(pattern = "^tessera-agent$")]
    client_id: String,
}

/// RFC 8628 §3.4: the device polls for its key.
#[utoipa::path(post, path = "/oauth/token", tag = "pairing",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = DeviceTokenResponse),
        (status = 400, description = "authorization_pending, slow_down, access_denied, expired_token, invalid_grant, invalid_request, unsupported_grant_type", body = OAuthError),
        (status = 413, description = "invalid_request: the body is too large", body = OAuthError),
    ))]
async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(exchange(&state, &headers, body).await)
}

async fn exchange(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<DeviceTokenResponse, OAuthFailure> {
    let form = parse_form(headers, &body.map_err(body_failure)?)?;
    if required(&form, "grant_type")? != DEVICE_CODE_GRANT {
        return Err(fail("unsupported_grant_type", None));
    }
    let code = required(&form, "device_code")?;
    let client_id = required(&form, "client_id")?;
    let secret =
        Secret::parse(SecretKind::DeviceCode, code).map_err(|_| fail("invalid_grant", None))?;
    let row = store::pairings::by_device_code(state.db().pool(), &secret.hash())
        .await
        .map_err(|_| fail("invalid_grant", None))?
        .ok_or_else(|| fail("invalid_grant", None))?;
    let now = state.now();
    let outcome = poll_outcome(&row, client_id, now);
    let pairing_id = row.id.as_str();
    let record = |interval_ms: i64| async move {
        if let Err(e) = store::pairings::record_poll(state.db(), pairing_id, now, interval_ms).await
        {
            tracing::warn!(error = %e, "cannot record a poll");
        }
    };
    match outcome {
        PollOutcome::Ready => {
            let (device_id, key) = redeem(state.db(), &row)
                .await
                .map_err(|_| fail("invalid_grant", None))?;
            Ok(DeviceTokenResponse {
                access_token: SecretString::new(key.expose()),
                token_type: "Bearer".into(),
                device_id,
            })
        }
        PollOutcome::SlowDown { interval_ms } => {
            record(interval_ms).await;
            Err(fail("slow_down", None))
        }
        PollOutcome::AuthorizationPending => {
            record(row.interval_ms).await;
            Err(fail("authorization_pending", None))
        }
        PollOutcome::AccessDenied => Err(fail("access_denied", None)),
        PollOutcome::ExpiredToken => Err(fail("expired_token", None)),
        PollOutcome::InvalidGrant => Err(fail("invalid_grant", None)),
    }
}
