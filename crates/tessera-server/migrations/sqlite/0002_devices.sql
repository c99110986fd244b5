-- Devices: identities, per-device keys, enrollment tokens, RFC 8628
-- pairings, and ingested events.

CREATE TABLE devices (
    id                 TEXT PRIMARY KEY, -- DeviceId: base32 SHA-256 of the Ed25519 key
    tenant_id          TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id),
    ed25519_public     BLOB NOT NULL,
    x25519_public      BLOB NOT NULL,
    identity_signature BLOB NOT NULL,
    name               TEXT NOT NULL,
    hostname           TEXT NOT NULL,
    os                 TEXT NOT NULL,
    agent_version      TEXT,
    tags               TEXT NOT NULL DEFAULT '[]',
    enrolled_via       TEXT NOT NULL CHECK (enrolled_via IN ('pairing', 'enrollment_token')),
    enrolled_by        TEXT NOT NULL,
    owner_user_id      TEXT NOT NULL REFERENCES users (id),
    created_at         BIGINT NOT NULL,
    connected_at       BIGINT,
    disconnected_at    BIGINT,
    last_seen_at       BIGINT,
    last_ip            TEXT,
    revoked_at         BIGINT,
    revoked_reason     TEXT,
    revoked_by         TEXT
);
CREATE INDEX devices_tenant ON devices (tenant_id, name);

CREATE TABLE device_keys (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id),
    device_id      TEXT NOT NULL REFERENCES devices (id),
    key_hash       BLOB NOT NULL UNIQUE,
    key_prefix     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    -- NULL while a rotation waits for the device to confirm it stored the key.
    activated_at   BIGINT,
    last_used_at   BIGINT,
    revoked_at     BIGINT,
    revoked_reason TEXT
);
CREATE INDEX device_keys_device ON device_keys (device_id);

CREATE TABLE enrollment_tokens (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id),
    token_hash     BLOB NOT NULL UNIQUE,
    token_prefix   TEXT NOT NULL,
    uses_total     BIGINT NOT NULL CHECK (uses_total > 0),
    uses_remaining BIGINT NOT NULL CHECK (uses_remaining >= 0),
    tags           TEXT NOT NULL DEFAULT '[]',
    created_by     TEXT NOT NULL REFERENCES users (id),
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    last_used_at   BIGINT,
    revoked_at     BIGINT,
    revoked_by     TEXT
);

CREATE TABLE pairings (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id),
    device_code_hash   BLOB NOT NULL UNIQUE,
    user_code          TEXT NOT NULL,
    client_id          TEXT NOT NULL,
    device_id          TEXT NOT NULL,
    ed25519_public     BLOB NOT NULL,
    x25519_public      BLOB NOT NULL,
    identity_signature BLOB NOT NULL,
    name               TEXT NOT NULL,
    hostname           TEXT NOT NULL,
    os                 TEXT NOT NULL,
    source_ip          TEXT,
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL,
    interval_ms        BIGINT NOT NULL,
    last_poll_at       BIGINT,
    state              TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'consumed')),
    decided_by         TEXT,
    decided_at         BIGINT
);
-- A user code names at most one pending pairing.
CREATE UNIQUE INDEX pairings_pending_user_code ON pairings (user_code) WHERE state = 'pending';

CREATE TABLE events (
    tenant_id     TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    owner_user_id TEXT NOT NULL,
    kind          TEXT NOT NULL,
    subject       TEXT NOT NULL,
    occurred_at   BIGINT NOT NULL,
    attributes    TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    received_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX events_received ON events (tenant_id, received_at);
