//! Identity key rotation: a statement signed by a device's current key names
//! the next one. Grants pinned to the old key stop working until the
//! granting devices re-verify.

use std::net::IpAddr;

use tessera_core::identity::IdentityDocument;
use tessera_core::trust::{fingerprint, KeyRotation, Signed};

use super::{fresh, hex, verified, TrustError};
use crate::auth::device::DevicePrincipal;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::{self, Db};

/// Moves `me` to the key its signed rotation names, and audits it.
pub async fn rotate(
    db: &Db,
    me: &DevicePrincipal,
    ip: IpAddr,
    signed: &Signed<KeyRotation>,
) -> Result<(), TrustError> {
    let r = &signed.statement;
    if r.device != me.device_id || r.old_ed25519 != hex(&me.ed25519_public) {
        return Err(TrustError::NotYours(
            "a device rotates only its own current key",
        ));
    }
    verified(signed, &me.ed25519_public)?;
    let now = db.now();
    fresh(r.issued_at, now)?;
    let doc = IdentityDocument::decode(&r.new_identity)
        .map_err(|e| TrustError::InvalidIdentity(e.to_string()))?;
    let statement = serde_json::to_string(r).map_err(|e| TrustError::Encode(e.to_string()))?;
    db.write(async |w| {
        let moved = store::trust::rotate_identity(
            w,
            store::trust::Rotation {
                device_id: &me.device_id,
                epoch: r.epoch,
                old_ed25519: &me.ed25519_public,
                new_ed25519: &doc.ed25519,
                new_x25519: &doc.x25519,
                new_signature: &doc.signature,
                statement: &statement,
                signature: &signed.signature,
                now,
            },
        )
        .await?;
        if !moved {
            return Err(TrustError::Superseded(
                "the epoch or the old key does not match the device's current key",
            ));
        }
        w.audit(
            AuditEvent::new(
                &me.tenant_id,
                Actor::Device(me.device_id.clone()),
                Action::IdentityKeyRotated,
            )
            .ip(Some(ip))
            .target(format!("device:{}", me.device_id))
            .detail("epoch", r.epoch)
            .detail("old_fingerprint", fingerprint(&me.ed25519_public))
            .detail("new_fingerprint", fingerprint(&doc.ed25519)),
        )
        .await?;
        Ok(())
    })
    .await
}

/// A device's rotations, oldest first, as signed statements; a row that no
/// longer parses is left out.
pub async fn chain(db: &Db, device: &str) -> Result<Vec<Signed<KeyRotation>>, TrustError> {
    let rows = store::trust::rotations_of(db, device).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(statement, signature)| {
            serde_json::from_str(&statement)
                .ok()
                .map(|statement| Signed {
                    statement,
                    signature,
                })
        })
        .collect())
}
