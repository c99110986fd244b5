-- The console's lists at fleet size (10,000 devices, a million audit rows):
-- search, sort and paging happen in SQL, and these indexes let the sorted
-- pages be read in order instead of sorting the whole table.

-- Devices by name, case-insensitively, as the device list sorts them
-- (`ORDER BY lower(name), id`), and by last seen.
CREATE INDEX devices_list_name ON devices (tenant_id, ephemeral, lower(name), id);
CREATE INDEX devices_list_seen ON devices (tenant_id, ephemeral, last_seen_at);

-- Ended sessions, newest first, paged.
CREATE INDEX sessions_tenant_ended ON sessions (tenant_id, state, ended_at, id);
