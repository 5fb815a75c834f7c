-- noreboot-server schema, version 7: the fleet's compliance figures, one
-- row per UTC day, for the printable compliance report's charts. The
-- server writes a day's row from the first fleet count it makes that day
-- and rewrites it with later counts at most hourly (src/history.rs); a
-- day on which it counted nothing has no row, and reports show it as
-- missing rather than inventing it.
CREATE TABLE compliance_days (
    day               BIGINT PRIMARY KEY,        -- Unix seconds / 86400 (UTC)
    recorded_at       BIGINT NOT NULL,           -- when the count was taken
    stale_hours       BIGINT NOT NULL,           -- the threshold `hosts_stale` used
    hosts_total       BIGINT NOT NULL,
    hosts_protected   BIGINT NOT NULL,
    hosts_exposed     BIGINT NOT NULL,
    hosts_unsupported BIGINT NOT NULL,
    hosts_stale       BIGINT NOT NULL,
    -- The exposed hosts by their longest exposure: a JSON array of
    -- [seconds, hosts] pairs, so that any policy's breaches can be counted
    -- afterwards (a fleet has few distinct values: one per fix publication).
    exposure          TEXT NOT NULL
);

-- Per day and CVE: hosts on kernels with a fix, with it applied or not.
CREATE TABLE compliance_day_cves (
    day           BIGINT NOT NULL,
    cve           TEXT NOT NULL,
    hosts_fixed   BIGINT NOT NULL,
    hosts_exposed BIGINT NOT NULL,
    PRIMARY KEY (day, cve)
);
