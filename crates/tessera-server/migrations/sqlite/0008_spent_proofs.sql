-- Proofs of key possession already used (pairing, enrollment with a token,
-- support-code binding), so each is taken once. Keyed by the SHA-256 of the
-- proof's signature (public bytes: a proof is no secret, only single-use);
-- a row is kept until the proof could no longer pass the time check, then
-- swept.
CREATE TABLE spent_proofs (
    digest          TEXT PRIMARY KEY,
    spendable_until BIGINT NOT NULL
);
CREATE INDEX spent_proofs_spendable_until ON spent_proofs (spendable_until);
