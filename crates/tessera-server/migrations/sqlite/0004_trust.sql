-- Trust between devices: SAS exchanges, attestations, automatic-join
-- grants, identity key rotations, and the members of automatic sessions.

-- Identity keys can rotate; the DeviceId names the device's first key.
ALTER TABLE devices ADD COLUMN key_epoch BIGINT NOT NULL DEFAULT 0;

CREATE TABLE trust_exchanges (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id),
    initiator       TEXT NOT NULL REFERENCES devices (id),
    responder       TEXT NOT NULL REFERENCES devices (id),
    commitment      TEXT NOT NULL,
    responder_identity TEXT,
    responder_nonce TEXT,
    initiator_identity TEXT,
    initiator_nonce TEXT,
    state           TEXT NOT NULL CHECK (state IN ('committed', 'responded', 'revealed')),
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX trust_exchanges_pair ON trust_exchanges (initiator, responder);

CREATE TABLE trust_attestations (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id),
    truster         TEXT NOT NULL REFERENCES devices (id),
    trusted         TEXT NOT NULL REFERENCES devices (id),
    trusted_ed25519 TEXT NOT NULL,
    trusted_x25519  TEXT NOT NULL,
    issued_at       BIGINT NOT NULL,
    signature       TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    withdrawn_at    BIGINT
);
CREATE INDEX trust_attestations_pair ON trust_attestations (truster, trusted);

CREATE TABLE grants (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001' REFERENCES tenants (id),
    granter             TEXT NOT NULL REFERENCES devices (id),
    grantee             TEXT NOT NULL REFERENCES devices (id),
    grantee_fingerprint TEXT NOT NULL,
    scopes              TEXT NOT NULL,
    issued_at           BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    signature           TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    superseded_by       TEXT,
    revoked_at          BIGINT,
    revoked_by          TEXT,
    revoked_reason      TEXT,
    expiry_recorded     BIGINT NOT NULL DEFAULT 0,
    last_used_at        BIGINT
);
CREATE INDEX grants_pair ON grants (granter, grantee);

CREATE TABLE key_rotations (
    id           TEXT PRIMARY KEY,
    device_id    TEXT NOT NULL REFERENCES devices (id),
    epoch        BIGINT NOT NULL,
    old_ed25519  BLOB NOT NULL,
    new_ed25519  BLOB NOT NULL,
    statement    TEXT NOT NULL,
    signature    TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (device_id, epoch)
);

CREATE TABLE session_members (
    session_id   TEXT NOT NULL REFERENCES sessions (id),
    device_id    TEXT NOT NULL,
    member_index BIGINT NOT NULL,
    outcome      TEXT NOT NULL,
    joined_at    BIGINT,
    left_at      BIGINT,
    PRIMARY KEY (session_id, device_id)
);
