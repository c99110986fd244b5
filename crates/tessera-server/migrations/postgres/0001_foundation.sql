-- Foundation: tenants, operators, their login sessions, the audit chain.
-- Times are BIGINT milliseconds since the Unix epoch (UTC); ids are UUIDv7 text.

CREATE TABLE tenants (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    -- Set once, by the one process that creates the bootstrap admin.
    bootstrapped_at BIGINT
);

INSERT INTO tenants (id, name, created_at)
VALUES ('00000000-0000-0000-0000-000000000001', 'default', 0);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id),
    username      TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    disabled_at   BIGINT,
    UNIQUE (tenant_id, username)
);

CREATE TABLE operator_sessions (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id),
    user_id        TEXT NOT NULL REFERENCES users (id),
    token_hash     BYTEA NOT NULL UNIQUE,
    token_prefix   TEXT NOT NULL,
    source_ip      TEXT,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoked_reason TEXT
);
CREATE INDEX operator_sessions_user ON operator_sessions (user_id);

CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    occurred_at BIGINT NOT NULL,
    tenant_id   TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    source_ip   TEXT,
    details     TEXT NOT NULL,
    prev_hash   BYTEA NOT NULL,
    hash        BYTEA NOT NULL
);
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_time ON audit_log (occurred_at);

-- The chain head. Appenders take its row lock first, which makes every
-- append one link of a single linear chain, across processes too.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

CREATE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
