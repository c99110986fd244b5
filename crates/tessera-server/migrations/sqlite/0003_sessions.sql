-- Sessions, support codes, per-tenant policy, server signing keys.

-- Devices may now also join for one attended session (support codes):
-- `enrolled_via` gains 'support_code' and `ephemeral` marks such devices.
-- SQLite cannot alter a CHECK constraint, so the table is rebuilt inside
-- the migration's transaction. Foreign keys stay on: deferred, the rows
-- referring to devices are orphaned by the DROP and adopted again by the
-- re-INSERT, and the commit checks that none is left orphaned.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE devices_copy AS SELECT * FROM devices;
DROP TABLE devices;
CREATE TABLE devices (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id),
    ed25519_public     BLOB NOT NULL,
    x25519_public      BLOB NOT NULL,
    identity_signature BLOB NOT NULL,
    name               TEXT NOT NULL,
    hostname           TEXT NOT NULL,
    os                 TEXT NOT NULL,
    agent_version      TEXT,
    tags               TEXT NOT NULL DEFAULT '[]',
    enrolled_via       TEXT NOT NULL CHECK (enrolled_via IN ('pairing', 'enrollment_token', 'support_code')),
    enrolled_by        TEXT NOT NULL,
    owner_user_id      TEXT NOT NULL REFERENCES users (id),
    created_at         BIGINT NOT NULL,
    connected_at       BIGINT,
    disconnected_at    BIGINT,
    last_seen_at       BIGINT,
    last_ip            TEXT,
    revoked_at         BIGINT,
    revoked_reason     TEXT,
    revoked_by         TEXT,
    ephemeral          BIGINT NOT NULL DEFAULT 0
);
INSERT INTO devices (id, tenant_id, ed25519_public, x25519_public, identity_signature,
    name, hostname, os, agent_version, tags, enrolled_via, enrolled_by, owner_user_id, created_at,
    connected_at, disconnected_at, last_seen_at, last_ip, revoked_at, revoked_reason, revoked_by)
SELECT id, tenant_id, ed25519_public, x25519_public, identity_signature,
    name, hostname, os, agent_version, tags, enrolled_via, enrolled_by, owner_user_id, created_at,
    connected_at, disconnected_at, last_seen_at, last_ip, revoked_at, revoked_reason, revoked_by
FROM devices_copy;
DROP TABLE devices_copy;
CREATE INDEX devices_tenant ON devices (tenant_id, name);

ALTER TABLE tenants ADD COLUMN require_consent_for_managed BIGINT NOT NULL DEFAULT 0;

CREATE TABLE support_codes (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id),
    -- SHA-256 of the canonical code; the code itself is shown once.
    code_hash    BLOB NOT NULL UNIQUE,
    access       TEXT NOT NULL CHECK (access IN ('view', 'control')),
    created_by   TEXT NOT NULL REFERENCES users (id),
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('active', 'consumed', 'expired', 'revoked')),
    consumed_at  BIGINT,
    session_id   TEXT
);

CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id),
    origin           TEXT NOT NULL CHECK (origin IN ('attended', 'managed', 'automatic')),
    device_id        TEXT NOT NULL REFERENCES devices (id),
    created_by       TEXT NOT NULL,
    access           TEXT NOT NULL CHECK (access IN ('view', 'control')),
    consent          TEXT NOT NULL CHECK (consent IN ('not_required', 'pending', 'granted', 'denied')),
    state            TEXT NOT NULL CHECK (state IN ('pending', 'active', 'ended')),
    support_code_id  TEXT,
    created_at       BIGINT NOT NULL,
    consent_deadline BIGINT,
    started_at       BIGINT,
    ended_at         BIGINT,
    end_code         TEXT,
    end_reason       TEXT
);
CREATE INDEX sessions_tenant_state ON sessions (tenant_id, state, created_at);
CREATE INDEX sessions_device ON sessions (device_id, state);

CREATE TABLE server_keys (
    name       TEXT PRIMARY KEY,
    secret     BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
