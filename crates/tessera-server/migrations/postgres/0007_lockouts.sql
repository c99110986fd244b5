-- Failed attempts and lockouts, shared by every node on this database, so a
-- guesser cannot spread attempts over the nodes of a cluster. One row per
-- (purpose, subject): the subject is an address (IPv6 by /64) or an account
-- and an address, never a secret. Rows whose window and lock have both
-- passed are deleted as new failures are recorded.
CREATE TABLE lockouts (
    purpose      TEXT NOT NULL CHECK (purpose IN ('login_account', 'login_address', 'support_code', 'pairing_code')),
    subject      TEXT NOT NULL,
    failures     BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    locked_until BIGINT,
    PRIMARY KEY (purpose, subject)
);
CREATE INDEX lockouts_window_start ON lockouts (window_start);
