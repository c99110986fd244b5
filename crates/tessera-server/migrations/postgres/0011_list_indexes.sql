-- The console's lists at fleet size (10,000 devices, a million audit rows):
-- search, sort and paging happen in SQL, and these indexes let the sorted
-- pages be read in order instead of sorting the whole table.

-- Devices by name, case-insensitively, as the device list sorts them
-- (`ORDER BY lower(name), id`), and by last seen.
CREATE INDEX devices_list_name ON devices (tenant_id, ephemeral, lower(name), id);
CREATE INDEX devices_list_seen ON devices (tenant_id, ephemeral, last_seen_at);

-- Sessions paged newest first (live by creation, ended by end), with the
-- columns that decide who may see one, so the rows an offset skips are
-- read from the index alone.
CREATE INDEX sessions_list_live ON sessions (tenant_id, state, created_at, id, origin, consent, created_by);
CREATE INDEX sessions_list_ended ON sessions (tenant_id, state, ended_at, id, origin, consent, created_by);
