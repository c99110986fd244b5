//! A device's signed trust in a peer, and its withdrawal.

use std::net::IpAddr;

use tessera_core::trust::{fingerprint, key_from_hex, Signed, TrustAttestation, Withdrawal};

use super::TrustError;
use super::{attestation_is_stale, hex, issued_by_me, peer, pins_current_key, subject};
use crate::auth::device::DevicePrincipal;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::devices::DeviceRow;
use crate::store::{self, Db};

/// Whether the pair trusts each other, to the keys each holds now.
pub async fn mutual(db: &Db, a: &DeviceRow, b: &DeviceRow) -> Result<bool, TrustError> {
    let mut conn = db.pool().acquire().await.map_err(store::StoreError::from)?;
    mutual_in(&mut conn, a, b).await
}

/// [`mutual`], read on `conn` (inside a write, it sees that write).
async fn mutual_in(
    conn: &mut sqlx::AnyConnection,
    a: &DeviceRow,
    b: &DeviceRow,
) -> Result<bool, TrustError> {
    let ab = store::trust::latest_attestation(&mut *conn, &a.id, &b.id).await?;
    let ba = store::trust::latest_attestation(&mut *conn, &b.id, &a.id).await?;
    Ok(pins_current_key(ab.as_ref(), &b.ed25519_public)
        && pins_current_key(ba.as_ref(), &a.ed25519_public))
}

/// A recorded attestation.
pub struct Attested {
    pub peer: DeviceRow,
    pub mutual: bool,
}

/// Records `me`'s signed trust in a peer, and audits it.
pub async fn attest(
    db: &Db,
    me: &DevicePrincipal,
    ip: IpAddr,
    signed: &Signed<TrustAttestation>,
) -> Result<Attested, TrustError> {
    let a = &signed.statement;
    let now = db.now();
    let why = "a device attests only for itself";
    issued_by_me(signed, &a.truster, a.issued_at, me, why, now)?;
    let peer = peer(db, me, &a.trusted).await?;
    if key_from_hex(&a.trusted_ed25519).is_none() || key_from_hex(&a.trusted_x25519).is_none() {
        return Err(TrustError::InvalidField(
            "pinned keys must be 64 hex digits".to_owned(),
        ));
    }
    let previous = store::trust::latest_attestation(db.pool(), &me.device_id, &peer.id).await?;
    if attestation_is_stale(a.issued_at, previous.as_ref()) {
        return Err(TrustError::Superseded(
            "a newer statement about this peer exists",
        ));
    }
    // One transaction: the attestation, the mutuality read after it (so it
    // counts), and the audit row commit together or not at all.
    let is_mutual = db
        .write(async |w| {
            store::trust::insert_attestation(
                w,
                store::trust::NewAttestation {
                    id: &uuid::Uuid::now_v7().to_string(),
                    tenant_id: &me.tenant_id,
                    truster: &me.device_id,
                    trusted: &peer.id,
                    trusted_ed25519: &a.trusted_ed25519,
                    trusted_x25519: &a.trusted_x25519,
                    issued_at: a.issued_at,
                    signature: &signed.signature,
                    now,
                },
            )
            .await?;
            let me_row = store::devices::by_id_any_tenant(w.conn(), &me.device_id)
                .await?
                .ok_or(TrustError::NotFound("device"))?;
            let is_mutual = mutual_in(w.conn(), &me_row, &peer).await?;
            w.audit(
                AuditEvent::new(
                    &me.tenant_id,
                    Actor::Device(me.device_id.clone()),
                    Action::TrustEstablished,
                )
                .ip(Some(ip))
                .target(format!("device:{}", peer.id))
                .detail(
                    "pinned_fingerprint",
                    fingerprint(&key_from_hex(&a.trusted_ed25519).unwrap_or_default()),
                )
                .detail(
                    "pin_matches_server",
                    a.trusted_ed25519 == hex(&peer.ed25519_public),
                )
                .detail("mutual", is_mutual),
            )
            .await?;
            Ok::<_, TrustError>(is_mutual)
        })
        .await?;
    Ok(Attested {
        peer,
        mutual: is_mutual,
    })
}

/// Withdraws `me`'s trust in a peer (`subject` = `trust:<device id>`).
pub async fn withdraw(
    db: &Db,
    me: &DevicePrincipal,
    ip: IpAddr,
    signed: &Signed<Withdrawal>,
) -> Result<(), TrustError> {
    let st = &signed.statement;
    let now = db.now();
    let why = "a device withdraws only its own statements";
    issued_by_me(signed, &st.issuer, st.issued_at, me, why, now)?;
    let peer = subject(&st.subject, "trust:", "subject must be trust:<device id>")?;
    db.write(async |w| {
        if !store::trust::withdraw_attestation(w, &me.device_id, peer, now).await? {
            return Err(TrustError::NotFound("attestation"));
        }
        w.audit(
            AuditEvent::new(
                &me.tenant_id,
                Actor::Device(me.device_id.clone()),
                Action::TrustRemoved,
            )
            .ip(Some(ip))
            .target(format!("device:{peer}")),
        )
        .await?;
        Ok(())
    })
    .await
}
