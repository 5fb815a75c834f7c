-- noreboot-server schema, version 6: the agent packages the server's APT
-- repository serves (/apt/). Each row is one uploaded .deb; its bytes are
-- in the bundle store under their sha256 (files on SQLite, bundle_blobs
-- on PostgreSQL), its fields are read from the package's own control
-- file. Several versions are kept: the repository lists them all, and
-- APT picks the newest. The repository's signing key and the time the
-- package set last changed (its Release file's Date) are shared_settings
-- rows, so that every server process serves the same repository.
CREATE TABLE agent_packages (
    sha256       TEXT PRIMARY KEY,               -- of the .deb
    package      TEXT NOT NULL,
    version      TEXT NOT NULL,
    architecture TEXT NOT NULL,
    size         BIGINT NOT NULL,                -- bytes
    filename     TEXT NOT NULL UNIQUE,           -- its path in the pool
    control      TEXT NOT NULL,                  -- the control paragraph
    uploaded_at  BIGINT NOT NULL,
    uploaded_by  TEXT NOT NULL,
    UNIQUE (package, version, architecture)
);
