-- Signed checkpoints of the audit chain: a node signs (seq, hash of that
-- row, time, its kid) with its node key, which lives outside the database.
-- Whoever can write the database can re-chain rows but cannot sign the new
-- hashes, so a rewrite contradicts the checkpoints made before it.
CREATE TABLE audit_checkpoints (
    seq       BIGINT NOT NULL,
    hash      BLOB NOT NULL,
    signed_at BIGINT NOT NULL,
    kid       TEXT NOT NULL REFERENCES node_keys (kid),
    signature BLOB NOT NULL,
    PRIMARY KEY (seq, kid)
);

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;

CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;
