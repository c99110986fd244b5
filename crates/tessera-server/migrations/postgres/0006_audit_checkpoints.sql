-- Signed checkpoints of the audit chain: a node signs (seq, hash of that
-- row, time, its kid) with its node key, which lives outside the database.
-- Whoever can write the database can re-chain rows but cannot sign the new
-- hashes, so a rewrite contradicts the checkpoints made before it.
CREATE TABLE audit_checkpoints (
    seq       BIGINT NOT NULL,
    hash      BYTEA NOT NULL,
    signed_at BIGINT NOT NULL,
    kid       TEXT NOT NULL REFERENCES node_keys (kid),
    signature BYTEA NOT NULL,
    PRIMARY KEY (seq, kid)
);

CREATE FUNCTION audit_checkpoints_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_checkpoints is append-only';
END;
$$;

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_append_only();

CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoints_append_only();
