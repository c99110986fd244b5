-- Several nodes on one database (issue 15). Each running node holds a lease
-- it renews every heartbeat; a node whose lease lapsed is gone (killed, or
-- cut off), and the devices it held count as offline. `nats` says whether
-- the node routes through NATS: a node without it cannot reach devices on
-- other nodes, so it refuses to start beside a live node.
CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    advertise_url TEXT,
    nats          BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    lease_until   BIGINT NOT NULL
);

-- The node that holds the device's agent connection (set on connect): where
-- a viewer on another node finds the device's sessions.
ALTER TABLE devices ADD COLUMN node_id TEXT;

-- The cluster this database defines: one row, made by the first node that
-- starts. Its id scopes the NATS subjects, so that several clusters (or
-- test runs) can share one NATS server without hearing each other.
CREATE TABLE cluster (
    id         TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

-- The node relaying a live session (set when its relay starts): where a
-- viewer on another node finds it, and which sessions end as `node_lost`
-- when that node's lease lapses.
ALTER TABLE sessions ADD COLUMN node_id TEXT;
