-- Viewer tokens are signed by each node's Ed25519 key, which lives in a file
-- outside the database; only the public halves are stored here, so a copy of
-- the database cannot mint a token. The shared HS256 secret goes away.
DROP TABLE server_keys;

CREATE TABLE node_keys (
    kid        TEXT PRIMARY KEY,
    public_key BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- Every minted viewer token, by its jti: a token that was never minted is
-- refused, and one opens at most one viewer.
CREATE TABLE viewer_tokens (
    jti        TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    session_id TEXT NOT NULL REFERENCES sessions (id),
    user_id    TEXT NOT NULL REFERENCES users (id),
    login_id   TEXT NOT NULL,
    access     TEXT NOT NULL CHECK (access IN ('view_only', 'control')),
    kid        TEXT NOT NULL REFERENCES node_keys (kid),
    minted_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX viewer_tokens_session ON viewer_tokens (session_id);
