//! Enrolling devices with enrollment tokens (trust on first use), and what
//! enrollment, pairing and support-code binding share: the key issuing and
//! the proof that the requester holds the identity key it names.

use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tessera_core::identity::{self, IdentityDocument, Label, PossessionClaim, ProofPurpose};
use tessera_core::secret::{Secret, SecretKind};
use tessera_core::Timestamp;

use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::enrollment::TokenRow;
use crate::store::{self, Db, StoreError, StoreResult, Write};

/// Why a device cannot enroll.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    #[error("`{field}` must be 1-{max} printable characters")]
    InvalidField { field: &'static str, max: usize },
    #[error("{0}")]
    InvalidIdentity(String),
    #[error("not a valid enrollment token")]
    NotAToken,
    #[error("unknown enrollment token")]
    UnknownToken,
    #[error("this enrollment token was revoked")]
    TokenRevoked,
    #[error("this enrollment token has expired")]
    TokenExpired,
    #[error("this enrollment token has no uses left")]
    TokenExhausted,
    #[error("this device identity was revoked ({reason}); it cannot enroll again")]
    DeviceRevoked { reason: String },
    #[error("this device identity is already enrolled")]
    AlreadyEnrolled,
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How far a proof's `issued_at` may be from the server's clock.
pub const PROOF_WINDOW: Duration = Duration::from_secs(300);

/// Why a request does not prove possession of its identity key. The words
/// are the same on every route that asks for the proof (pairing answers
/// them as RFC 6749 `invalid_request`, the JSON routes as `invalid_proof`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("missing `{0}`: a signature by the identity key proves the device holds it")]
    Missing(&'static str),
    #[error("`issued_at` must be Unix milliseconds")]
    BadTime,
    #[error("`issued_at` is more than five minutes from the server's clock")]
    Stale,
    #[error("`proof` must be base64url")]
    NotBase64,
    #[error("`proof` does not verify with the identity key")]
    BadSignature,
    #[error(
        "the proof was made for the server at {made_for}, not this one ({expected}): \
         point the agent at this server's address"
    )]
    WrongAudience { made_for: String, expected: String },
    #[error("this proof was already used: make a new one for each request")]
    Replayed,
}

/// A request's proof of key possession, as sent.
#[derive(Debug, Clone, Copy)]
pub struct ProofOffer<'a> {
    /// Unix ms when the proof was made.
    pub issued_at: i64,
    /// base64url of the identity key's signature.
    pub proof: &'a str,
    /// The origin of the server the device meant to reach.
    pub audience: &'a str,
}

impl<'a> ProofOffer<'a> {
    /// A JSON request's optional fields (absent is refused in the same
    /// words on every route).
    pub fn from_fields(
        issued_at: Option<i64>,
        proof: Option<&'a str>,
        audience: Option<&'a str>,
    ) -> Result<Self, ProofError> {
        Ok(ProofOffer {
            issued_at: issued_at.ok_or(ProofError::Missing("issued_at"))?,
            proof: proof.ok_or(ProofError::Missing("proof"))?,
            audience: audience.ok_or(ProofError::Missing("audience"))?,
        })
    }
}

/// A checked proof: what makes it single-use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendableProof {
    /// SHA-256 of the signature: the key under which its use is recorded.
    pub digest: String,
    /// When it could no longer pass the time check anyway.
    pub spendable_until: Timestamp,
}

/// The one proof of key possession that pairing, enrollment with a token
/// and support-code binding require: `proof` is the identity key's
/// signature under `pairing-request` over a [`PossessionClaim`] — the client
/// id, the name, hostname and OS the device reports, `issued_at` (Unix ms,
/// within [`PROOF_WINDOW`] of `now`), the route's `purpose` and the origin
/// of the server the device meant (`expected_audience`, this server's). The
/// identity document alone is public, so without this anyone could enroll
/// (and so block) someone else's DeviceId; without the purpose and the
/// audience, a proof seen by one route, or by a server the agent was
/// pointed at by mistake, could be replayed to another. The caller records
/// the returned digest in the transaction that acts on the request
/// ([`store::proofs::spend`]), so a proof is used once.
pub fn check_possession(
    doc: &IdentityDocument,
    (name, hostname, os): (&str, &str, &str),
    purpose: ProofPurpose,
    offer: ProofOffer<'_>,
    expected_audience: &str,
    now: Timestamp,
) -> Result<SpendableProof, ProofError> {
    // `abs_diff`: any i64 a client sends is compared without overflow.
    let skew = now.as_millis().abs_diff(offer.issued_at);
    if u128::from(skew) > PROOF_WINDOW.as_millis() {
        return Err(ProofError::Stale);
    }
    if offer.audience != expected_audience {
        return Err(ProofError::WrongAudience {
            made_for: printable(offer.audience),
            expected: expected_audience.to_owned(),
        });
    }
    let signature = data_encoding::BASE64URL_NOPAD
        .decode(offer.proof.as_bytes())
        .map_err(|_| ProofError::NotBase64)?;
    let claim = PossessionClaim {
        client_id: crate::pairing::CLIENT_ID,
        name,
        hostname,
        os,
        issued_at_ms: offer.issued_at,
        purpose,
        audience: offer.audience,
    };
    identity::verify(
        &doc.ed25519,
        Label::PairingRequest,
        &claim.body(),
        &signature,
    )
    .map_err(|_| ProofError::BadSignature)?;
    let issued = Timestamp::from_millis(offer.issued_at);
    Ok(SpendableProof {
        digest: data_encoding::HEXLOWER.encode(&Sha256::digest(&signature)),
        spendable_until: issued.plus(PROOF_WINDOW),
    })
}

/// An audience as it may be shown back: at most 200 characters of those
/// a URL origin is made of (printable ASCII without `"` or `\`, which an
/// OAuth `error_description` may not hold); anything else becomes `?`.
fn printable(audience: &str) -> String {
    audience
        .chars()
        .take(200)
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Where an enrollment token is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Active,
    Revoked,
    Expired,
    Exhausted,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Revoked => "revoked",
            TokenState::Expired => "expired",
            TokenState::Exhausted => "exhausted",
        }
    }

    /// The refusal a token in this state earns; `None` while it is active.
    pub fn refusal(self) -> Option<EnrollmentError> {
        match self {
            TokenState::Active => None,
            TokenState::Revoked => Some(EnrollmentError::TokenRevoked),
            TokenState::Expired => Some(EnrollmentError::TokenExpired),
            TokenState::Exhausted => Some(EnrollmentError::TokenExhausted),
        }
    }
}

/// The state of a token, as listed and as enrollment explains a refusal.
pub fn token_state(t: &TokenRow, now: Timestamp) -> TokenState {
    if t.revoked_at.is_some() {
        TokenState::Revoked
    } else if t.expires_at <= now {
        TokenState::Expired
    } else if t.uses_remaining <= 0 {
        TokenState::Exhausted
    } else {
        TokenState::Active
    }
}

/// Inserts an active key for a device and audits it, in `w`.
pub async fn issue_key(
    w: &mut Write,
    tenant: &str,
    device_id: &str,
    key: &Secret,
    created_by: &str,
    reason: &str,
) -> StoreResult<String> {
    let key_id = uuid::Uuid::now_v7().to_string();
    let now = w.now();
    store::devices::insert_key(
        w,
        store::devices::NewKey {
            id: &key_id,
            tenant_id: tenant,
            device_id,
            key_hash: &key.hash(),
            key_prefix: &key.prefix(),
            created_by,
            active: true,
            now,
        },
    )
    .await?;
    let actor = match created_by.strip_prefix("user:") {
        Some(u) => Actor::User(u.to_owned()),
        None => Actor::System,
    };
    let event = AuditEvent::new(tenant, actor, Action::KeyIssued)
        .target(format!("device:{device_id}"))
        .detail("key_id", key_id.clone())
        .detail("key", key.prefix())
        .detail("reason", reason);
    w.audit(event).await?;
    Ok(key_id)
}

/// What a device sends to enroll.
pub struct Enrollment<'a> {
    pub token: &'a str,
    pub identity: &'a str,
    pub name: &'a str,
    pub hostname: &'a str,
    pub os: &'a str,
    pub issued_at: Option<i64>,
    pub proof: Option<&'a str>,
    pub audience: Option<&'a str>,
    /// This server's origin, which the proof must name.
    pub expected_audience: &'a str,
    pub ip: IpAddr,
}

/// Validates the descriptive fields a device reports about itself.
pub fn validate_device_fields(name: &str, hostname: &str, os: &str) -> Result<(), EnrollmentError> {
    for (field, value, max) in [
        ("name", name, 128),
        ("hostname", hostname, 255),
        ("os", os, 128),
    ] {
        if value.trim().is_empty()
            || value.chars().count() > max
            || value.chars().any(char::is_control)
        {
            return Err(EnrollmentError::InvalidField { field, max });
        }
    }
    Ok(())
}

/// Enrolls a device with an enrollment token: one use is taken atomically,
/// and the device and its first key are created in the same transaction.
pub async fn enroll(db: &Db, e: Enrollment<'_>) -> Result<(String, Secret), EnrollmentError> {
    validate_device_fields(e.name, e.hostname, e.os)?;
    let doc = IdentityDocument::decode(e.identity)
        .map_err(|err| EnrollmentError::InvalidIdentity(err.to_string()))?;
    let device_id = doc
        .device_id()
        .map_err(|err| EnrollmentError::InvalidIdentity(err.to_string()))?;
    let token = match SecretKind::of(e.token) {
        Some(SecretKind::EnrollmentToken) => {
            Secret::parse(SecretKind::EnrollmentToken, e.token).ok()
        }
        _ => None,
    }
    .ok_or(EnrollmentError::NotAToken)?;
    let offer = ProofOffer::from_fields(e.issued_at, e.proof, e.audience)?;
    let proof = check_possession(
        &doc,
        (e.name, e.hostname, e.os),
        ProofPurpose::Enroll,
        offer,
        e.expected_audience,
        db.now(),
    )?;

    let enrolled = db
        .write(async |w| {
            let now = w.now();
            // First, so a replay is refused as one whatever else has
            // changed. A request refused for its token commits with its
            // proof spent: harmless, since a retry makes a new proof.
            if !store::proofs::spend(w, &proof).await? {
                return Err(ProofError::Replayed.into());
            }
            let Some(used) = store::enrollment::consume(w, &token.hash(), now).await? else {
                return Ok(None);
            };
            if let Some(existing) =
                store::devices::by_id_any_tenant(w.conn(), device_id.as_str()).await?
            {
                return Err(if existing.revoked_at.is_some() {
                    EnrollmentError::DeviceRevoked {
                        reason: existing
                            .revoked_reason
                            .unwrap_or_else(|| "no reason given".to_owned()),
                    }
                } else {
                    EnrollmentError::AlreadyEnrolled
                });
            }
            store::devices::insert(
                w,
                store::devices::NewDevice {
                    id: device_id.as_str(),
                    tenant_id: &used.tenant_id,
                    ed25519_public: &doc.ed25519,
                    x25519_public: &doc.x25519,
                    identity_signature: &doc.signature,
                    name: e.name.trim(),
                    hostname: e.hostname.trim(),
                    os: e.os.trim(),
                    tags: &used.tags,
                    enrolled_via: "enrollment_token",
                    enrolled_by: &format!("token:{}", used.id),
                    owner_user_id: &used.created_by,
                    ephemeral: false,
                    now,
                },
            )
            .await
            .map_err(|err| match err {
                StoreError::Conflict => EnrollmentError::AlreadyEnrolled,
                other => other.into(),
            })?;
            let key = Secret::generate(SecretKind::DeviceKey);
            issue_key(
                w,
                &used.tenant_id,
                device_id.as_str(),
                &key,
                &format!("token:{}", used.id),
                "enrollment",
            )
            .await?;
            let device_actor = Actor::Device(device_id.to_string());
            w.audit(
                AuditEvent::new(
                    &used.tenant_id,
                    device_actor.clone(),
                    Action::DeviceEnrolled,
                )
                .ip(Some(e.ip))
                .target(format!("device:{device_id}"))
                .detail("via", "enrollment_token")
                .detail("token_id", used.id.clone())
                .detail("device_name", e.name.trim()),
            )
            .await?;
            w.audit(
                AuditEvent::new(
                    &used.tenant_id,
                    device_actor.clone(),
                    Action::EnrollmentTokenUsed,
                )
                .ip(Some(e.ip))
                .target(format!("enrollment_token:{}", used.id))
                .detail("device_id", device_id.to_string())
                .detail("uses_remaining", used.uses_remaining),
            )
            .await?;
            if used.uses_remaining == 0 {
                w.audit(
                    AuditEvent::new(
                        &used.tenant_id,
                        device_actor,
                        Action::EnrollmentTokenExhausted,
                    )
                    .target(format!("enrollment_token:{}", used.id)),
                )
                .await?;
            }
            Ok(Some(key))
        })
        .await?;
    match enrolled {
        Some(key) => Ok((device_id.to_string(), key)),
        None => Err(refusal(db, &token, e.ip).await),
    }
}

/// Explains why a token could not be used, and audits refusals of real
/// tokens (an unknown string is not worth a row).
async fn refusal(db: &Db, token: &Secret, ip: IpAddr) -> EnrollmentError {
    let found = match store::enrollment::by_hash(db.pool(), &token.hash()).await {
        Ok(found) => found,
        Err(e) => return e.into(),
    };
    let Some(t) = found else {
        return EnrollmentError::UnknownToken;
    };
    let token_state = token_state(&t, db.now());
    let audited = db
        .write(async |w| {
            w.audit(
                AuditEvent::new(&t.tenant_id, Actor::Anonymous, Action::EnrollmentRefused)
                    .ip(Some(ip))
                    .target(format!("enrollment_token:{}", t.id))
                    .detail("reason", token_state.as_str()),
            )
            .await?;
            Ok::<_, StoreError>(())
        })
        .await;
    if let Err(e) = audited {
        tracing::warn!(error = %e, "cannot audit an enrollment refusal");
    }
    // `consume` found no use to take, so the token is not active; should
    // it have become usable since, it is reported as out of uses.
    token_state
        .refusal()
        .unwrap_or(EnrollmentError::TokenExhausted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::identity::DeviceKeys;

    const HERE: &str = "https://tessera.example";

    fn offer(issued_at: i64, proof: &str) -> ProofOffer<'_> {
        ProofOffer {
            issued_at,
            proof,
            audience: HERE,
        }
    }

    fn proof_for(keys: &DeviceKeys, purpose: ProofPurpose, audience: &str, at: i64) -> String {
        let claim = PossessionClaim {
            client_id: crate::pairing::CLIENT_ID,
            name: "n",
            hostname: "h",
            os: "o",
            issued_at_ms: at,
            purpose,
            audience,
        };
        data_encoding::BASE64URL_NOPAD.encode(&keys.sign(Label::PairingRequest, &claim.body()))
    }

    #[test]
    fn a_proof_dated_at_any_i64_is_refused_as_stale_without_overflow() {
        let keys = DeviceKeys::generate();
        let doc = keys.document();
        let now = Timestamp::from_millis(1_700_000_000_000);
        let fields = ("n", "h", "o");
        for at in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX] {
            assert_eq!(
                check_possession(
                    &doc,
                    fields,
                    ProofPurpose::Enroll,
                    offer(at, "x"),
                    HERE,
                    now
                ),
                Err(ProofError::Stale),
                "{at}"
            );
        }
        let at = now.as_millis();
        let proof = proof_for(&keys, ProofPurpose::Enroll, HERE, at);
        let ok = check_possession(
            &doc,
            fields,
            ProofPurpose::Enroll,
            offer(at, &proof),
            HERE,
            now,
        )
        .expect("accepted");
        assert_eq!(ok.spendable_until, now.plus(PROOF_WINDOW));
        assert_eq!(ok.digest.len(), 64);
        assert_eq!(
            check_possession(
                &doc,
                ("n", "h", "other"),
                ProofPurpose::Enroll,
                offer(at, &proof),
                HERE,
                now
            ),
            Err(ProofError::BadSignature)
        );
    }

    #[test]
    fn a_proof_is_taken_only_by_its_own_route_and_server() {
        let keys = DeviceKeys::generate();
        let doc = keys.document();
        let now = Timestamp::from_millis(1_700_000_000_000);
        let at = now.as_millis();
        let fields = ("n", "h", "o");
        // Made for pairing: enrollment and support binding refuse it.
        let pairing = proof_for(&keys, ProofPurpose::Pairing, HERE, at);
        for purpose in [ProofPurpose::Enroll, ProofPurpose::SupportBind] {
            assert_eq!(
                check_possession(&doc, fields, purpose, offer(at, &pairing), HERE, now),
                Err(ProofError::BadSignature),
                "{purpose:?}"
            );
        }
        // Made for another server, and said so: refused by name.
        let elsewhere = "https://evil.example";
        let theirs = proof_for(&keys, ProofPurpose::Pairing, elsewhere, at);
        let sent = ProofOffer {
            issued_at: at,
            proof: &theirs,
            audience: elsewhere,
        };
        let refused = check_possession(&doc, fields, ProofPurpose::Pairing, sent, HERE, now);
        assert_eq!(
            refused,
            Err(ProofError::WrongAudience {
                made_for: elsewhere.into(),
                expected: HERE.into()
            })
        );
        // Made for another server, passed off as made for this one.
        let relabelled = ProofOffer {
            issued_at: at,
            proof: &theirs,
            audience: HERE,
        };
        assert_eq!(
            check_possession(&doc, fields, ProofPurpose::Pairing, relabelled, HERE, now),
            Err(ProofError::BadSignature)
        );
    }
}
