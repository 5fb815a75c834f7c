-- noreboot-server schema, version 2: retired hosts.
--
-- A decommissioned host is retired, not deleted: its row stays, so its
-- reports (host_reports.host_id) and the audit entries naming it keep
-- pointing at something. A retired host's token is refused and it is left
-- out of the host list and the compliance reports. Portable SQL, as in
-- version 1: a nullable timestamp says whether and when.
ALTER TABLE hosts ADD COLUMN retired_at BIGINT;
ALTER TABLE hosts ADD COLUMN retired_by TEXT;
