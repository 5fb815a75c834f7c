-- noreboot-server schema, version 5: state that several server processes
-- on one database share, so that any of them can answer any request.
--
-- Bundles: on PostgreSQL the server keeps the published bundle files here
-- instead of in one machine's data directory, in chunks of 1 MiB (a row
-- per chunk: no statement carries a whole bundle). A bundle's chunks and
-- its bundle_blobs row are written in one transaction; readers look the
-- row up first. SQLite deployments keep their files on disk and leave
-- these tables empty. BYTEA is PostgreSQL's type; SQLite takes the name
-- and stores blobs as they are.
CREATE TABLE bundle_blobs (
    sha256 TEXT PRIMARY KEY,                     -- of the whole file
    size   BIGINT NOT NULL,                      -- bytes
    chunks BIGINT NOT NULL                       -- rows in bundle_chunks
);
CREATE TABLE bundle_chunks (
    sha256 TEXT NOT NULL,
    seq    BIGINT NOT NULL,                      -- 0, 1, ...
    data   BYTEA NOT NULL,
    PRIMARY KEY (sha256, seq)
);

-- Rate limits of every process on the database: requests per (limit,
-- subject) in fixed one-minute windows. A subject is an address, or a
-- hash of an address and the registration key presented (never the key).
-- Rows of past windows are deleted as new windows start.
CREATE TABLE rate_limits (
    name    TEXT NOT NULL,                       -- which limit
    subject TEXT NOT NULL,
    minute  BIGINT NOT NULL,                     -- Unix seconds / 60
    used    BIGINT NOT NULL,
    PRIMARY KEY (name, subject, minute)
);
CREATE INDEX rate_limits_minute ON rate_limits (minute);

-- Settings every serve process must agree on, recorded by the last one
-- that started: the trusted keys' ids. A process whose own differ refuses
-- to publish until its configuration matches again.
CREATE TABLE shared_settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL,
    set_at BIGINT NOT NULL,
    set_by TEXT NOT NULL                         -- host name and pid of that process
);
