//! Proofs of key possession already used: each is taken once, by the
//! transaction that acts on its request.

use tessera_core::Timestamp;

use super::{Db, StoreResult, Tx};
use crate::enrollment::SpendableProof;

/// Records `proof` as used. `false` when it already was: the caller refuses
/// the request (and its transaction writes nothing).
pub async fn spend(tx: &mut Tx, proof: &SpendableProof) -> StoreResult<bool> {
    // `ON CONFLICT DO NOTHING`: a repeat must not abort a PostgreSQL
    // transaction the caller goes on to roll back cleanly.
    let done = sqlx::query(
        "INSERT INTO spent_proofs (digest, spendable_until) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING",
    )
    .bind(&proof.digest)
    .bind(proof.spendable_until.as_millis())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets proofs that could no longer pass the time check before
/// `before`.
pub async fn purge_expired(db: &Db, before: Timestamp) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM spent_proofs WHERE spendable_until < $1")
        .bind(before.as_millis())
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected())
}
