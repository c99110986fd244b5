//! SAS exchanges: committed → responded → revealed. The initiator commits
//! to its identity and nonce before it sees the responder's, so neither can
//! choose what the short authentication string will be.

use tessera_core::identity::DeviceId;

use super::{check_step, hex32, peer, TrustError, EXCHANGE_TTL};
use crate::auth::device::DevicePrincipal;
use crate::store::trust::ExchangeRow;
use crate::store::{self, Db};

/// Opens an exchange with a peer on the initiator's commitment; any
/// exchange this device opened with that peer before (an interrupted
/// attempt) ends, so the peer cannot answer a stale one.
pub async fn open(
    db: &Db,
    me: &DevicePrincipal,
    peer_id: &str,
    commitment: &str,
) -> Result<ExchangeRow, TrustError> {
    hex32(commitment, "commitment")?;
    let peer = peer(db, me, peer_id).await?;
    if peer.id == me.device_id {
        return Err(TrustError::InvalidField(
            "a device cannot trust itself".to_owned(),
        ));
    }
    let id = uuid::Uuid::now_v7().to_string();
    db.write(async |w| {
        let now = w.now();
        store::trust::supersede_exchanges(w, &me.device_id, &peer.id, now).await?;
        store::trust::insert_exchange(
            w,
            &store::trust::NewExchange {
                id: &id,
                tenant: &me.tenant_id,
                initiator: &me.device_id,
                responder: &peer.id,
                commitment,
            },
            now,
            now.plus(EXCHANGE_TTL),
        )
        .await?;
        Ok::<_, TrustError>(())
    })
    .await?;
    by_id(db, &id).await
}

async fn by_id(db: &Db, id: &str) -> Result<ExchangeRow, TrustError> {
    store::trust::exchange_by_id(db, id)
        .await?
        .ok_or(TrustError::NotFound("exchange"))
}

/// Open exchanges between `me` and `peer`, either way round; `None` if
/// `peer` is no device id.
pub async fn between(
    db: &Db,
    me: &DevicePrincipal,
    peer: &str,
) -> Result<Option<Vec<ExchangeRow>>, TrustError> {
    let Ok(peer) = DeviceId::parse(peer) else {
        return Ok(None);
    };
    let rows = store::trust::exchanges_between(db, &me.device_id, peer.as_str(), db.now()).await?;
    Ok(Some(rows))
}

/// The responder answers with its identity and nonce.
pub async fn respond(
    db: &Db,
    me: &DevicePrincipal,
    id: &str,
    identity: &str,
    nonce: &str,
) -> Result<ExchangeRow, TrustError> {
    check_step(identity, nonce, me)?;
    if !store::trust::respond(db, id, &me.device_id, identity, nonce, db.now()).await? {
        return Err(TrustError::ExchangeNotOpen(
            "no open exchange awaits this device's answer",
        ));
    }
    by_id(db, id).await
}

/// The initiator reveals what it committed to.
pub async fn reveal(
    db: &Db,
    me: &DevicePrincipal,
    id: &str,
    identity: &str,
    nonce: &str,
) -> Result<ExchangeRow, TrustError> {
    check_step(identity, nonce, me)?;
    if !store::trust::reveal(db, id, &me.device_id, identity, nonce, db.now()).await? {
        return Err(TrustError::ExchangeNotOpen(
            "no answered exchange awaits this device's reveal",
        ));
    }
    by_id(db, id).await
}

/// Either side ends an exchange (its `tessera trust add` was interrupted).
pub async fn withdraw(db: &Db, me: &DevicePrincipal, id: &str) -> Result<(), TrustError> {
    db.write(async |w| {
        let now = w.now();
        if store::trust::withdraw_exchange(w, id, &me.device_id, now).await? {
            Ok(())
        } else {
            Err(TrustError::NotFound("open exchange"))
        }
    })
    .await
}
