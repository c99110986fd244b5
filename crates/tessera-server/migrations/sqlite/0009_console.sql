-- The web console's audit page filters by target (`device:<id>`,
-- `session:<id>`, …), newest first: an index like the action and actor ones.
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target, seq);
