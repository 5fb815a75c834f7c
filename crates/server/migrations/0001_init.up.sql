-- noreboot-server schema, version 1.
--
-- Portable SQL: it runs unchanged on SQLite and PostgreSQL. Hence no
-- AUTOINCREMENT/SERIAL (ids are made by the server), no BOOLEAN (a
-- nullable timestamp says whether and when), times as BIGINT seconds since
-- the Unix epoch (UTC), and JSON kept in TEXT columns.

-- A kernel build, known once a level for it is published.
CREATE TABLE kernels (
    build_id           TEXT PRIMARY KEY,   -- GNU build-id, lowercase hex
    release            TEXT NOT NULL,      -- uname -r
    version            TEXT,               -- distribution package version
    first_published_at BIGINT NOT NULL
);

-- A cumulative patch level for one kernel build: one signed bundle.
CREATE TABLE levels (
    build_id          TEXT NOT NULL REFERENCES kernels (build_id),
    level             BIGINT NOT NULL,
    name              TEXT NOT NULL,       -- patch (module) name
    sha256            TEXT NOT NULL,       -- of the bundle file; its key in the blob store
    size              BIGINT NOT NULL,     -- of the bundle file
    effective_version TEXT,
    description       TEXT NOT NULL,
    signer            TEXT NOT NULL,       -- minisign key id
    created           TEXT NOT NULL,       -- the manifest's creation time (RFC 3339)
    published_at      BIGINT NOT NULL,
    published_by      TEXT NOT NULL,
    PRIMARY KEY (build_id, level)
);
CREATE INDEX levels_sha256 ON levels (sha256);

CREATE TABLE level_cves (
    build_id    TEXT NOT NULL,
    level       BIGINT NOT NULL,
    cve         TEXT NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (build_id, level, cve),
    FOREIGN KEY (build_id, level) REFERENCES levels (build_id, level)
);
CREATE INDEX level_cves_cve ON level_cves (cve);

-- A channel hosts follow. A delayed feed releases a level delay_hours
-- after its publication (and never before it was released to the feed).
CREATE TABLE feeds (
    name        TEXT PRIMARY KEY,
    delay_hours BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);
INSERT INTO feeds (name, delay_hours, created_at) VALUES ('test', 0, 0);
INSERT INTO feeds (name, delay_hours, created_at) VALUES ('stable', 0, 0);

-- A level released (published or promoted) to a feed; a rollback withdraws
-- it, a later promotion releases it again.
CREATE TABLE releases (
    feed         TEXT NOT NULL REFERENCES feeds (name),
    build_id     TEXT NOT NULL,
    level        BIGINT NOT NULL,
    released_at  BIGINT NOT NULL,
    released_by  TEXT NOT NULL,
    withdrawn_at BIGINT,
    withdrawn_by TEXT,
    PRIMARY KEY (feed, build_id, level),
    FOREIGN KEY (build_id, level) REFERENCES levels (build_id, level)
);

-- A feed's pin (exactly this level) or hold (no newer level than the one
-- served when it was set; NULL: none) for one kernel build.
CREATE TABLE feed_kernel_state (
    feed       TEXT NOT NULL REFERENCES feeds (name),
    build_id   TEXT NOT NULL REFERENCES kernels (build_id),
    mode       TEXT NOT NULL CHECK (mode IN ('pin', 'hold')),
    level      BIGINT,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (feed, build_id)
);

-- Registration keys; only a hash of the secret is kept.
CREATE TABLE registration_keys (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL UNIQUE,
    feed        TEXT NOT NULL REFERENCES feeds (name),
    note        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  BIGINT,
    revoked_by  TEXT
);

-- Registered hosts, as of their last check-in; only a hash of the token.
CREATE TABLE hosts (
    id                TEXT PRIMARY KEY,
    hostname          TEXT NOT NULL,
    feed              TEXT NOT NULL REFERENCES feeds (name),
    kernel_release    TEXT NOT NULL,
    kernel_version    TEXT NOT NULL,
    build_id          TEXT NOT NULL,
    level             BIGINT NOT NULL,
    effective_version TEXT NOT NULL,
    skipped           TEXT NOT NULL,       -- JSON array of levels
    agent_version     TEXT NOT NULL,
    tags              TEXT NOT NULL,       -- JSON array of strings
    token_hash        TEXT NOT NULL UNIQUE,
    registration_key  TEXT NOT NULL REFERENCES registration_keys (id),
    registered_at     BIGINT NOT NULL,
    last_checkin      BIGINT
);
CREATE INDEX hosts_build_id ON hosts (build_id);
CREATE INDEX hosts_feed ON hosts (feed);

-- What hosts reported after acting on a level.
CREATE TABLE host_reports (
    id            TEXT PRIMARY KEY,
    host_id       TEXT NOT NULL REFERENCES hosts (id),
    received_at   BIGINT NOT NULL,
    action        TEXT NOT NULL,
    level         BIGINT NOT NULL,
    result        TEXT NOT NULL,
    reason        TEXT NOT NULL,
    stalled_tasks TEXT NOT NULL,           -- JSON array of strings
    duration_ms   BIGINT NOT NULL,
    active_level  BIGINT NOT NULL
);
CREATE INDEX host_reports_host ON host_reports (host_id, received_at);

-- Bearer tokens of the admin API; only a hash of the token.
CREATE TABLE admin_tokens (
    name       TEXT PRIMARY KEY,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'read-only')),
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at BIGINT
);

-- Every admin action: who (token name or CLI user), what, when.
CREATE TABLE audit (
    id     BIGINT PRIMARY KEY,                 -- max + 1, in the action's transaction
    at     BIGINT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL                       -- JSON object
);
