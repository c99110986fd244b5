-- Sessions, support codes, per-tenant policy, server signing keys.

ALTER TABLE tenants ADD COLUMN require_consent_for_managed BIGINT NOT NULL DEFAULT 0;

-- Devices may now also join for one attended session (support codes):
-- `enrolled_via` gains 'support_code' and `ephemeral` marks such devices.
ALTER TABLE devices DROP CONSTRAINT devices_enrolled_via_check;
ALTER TABLE devices ADD CONSTRAINT devices_enrolled_via_check
    CHECK (enrolled_via IN ('pairing', 'enrollment_token', 'support_code'));
ALTER TABLE devices ADD COLUMN ephemeral BIGINT NOT NULL DEFAULT 0;

CREATE TABLE support_codes (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id),
    -- SHA-256 of the canonical code; the code itself is shown once.
    code_hash    BYTEA NOT NULL UNIQUE,
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
    secret     BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
