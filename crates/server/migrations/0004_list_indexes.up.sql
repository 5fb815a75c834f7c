-- noreboot-server schema, version 4: indexes for paged lists.
--
-- Every list is paged by keyset (src/page.rs): "the rows after this key,
-- in this order", which an index in that order answers by reading only
-- the page. The active-host indexes are partial (retired_at IS NULL, as
-- every active-host query says) and hold no column a check-in sets, so the
-- check-in's UPDATE does not touch them; the per-feed and per-build ones
-- serve the list's filters with the same order. Portable SQL, as in
-- version 1: both SQLite and PostgreSQL take partial indexes.
CREATE INDEX hosts_active_name ON hosts (hostname, id) WHERE retired_at IS NULL;
CREATE INDEX hosts_active_feed_name ON hosts (feed, hostname, id) WHERE retired_at IS NULL;
CREATE INDEX hosts_active_build_name ON hosts (build_id, hostname, id) WHERE retired_at IS NULL;
-- The fleet's grouped counts (compliance summary, builds hosts run) scan
-- this instead of the table, in its order (no sort): the columns they
-- group by, and nothing else. A check-in sets these columns only when
-- they change (src/checkin.rs).
CREATE INDEX hosts_active_kernel ON hosts (build_id, kernel_release, kernel_version, level)
    WHERE retired_at IS NULL;
CREATE INDEX hosts_retired ON hosts (retired_at, id) WHERE retired_at IS NOT NULL;
CREATE INDEX host_reports_received ON host_reports (received_at, id);
CREATE INDEX host_reports_host_received ON host_reports (host_id, received_at, id);
