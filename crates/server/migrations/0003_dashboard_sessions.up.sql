-- noreboot-server schema, version 3: dashboard sessions.
--
-- Signing in to the dashboard with an admin or read-only API token opens a
-- session; the browser's cookie carries the session's random id, never the
-- token. Only a hash of the id is kept (as for every secret), so a stolen
-- database opens no session. Sessions live here, not in a server's memory,
-- so that every server process on one database honours a sign-in and a
-- sign-out made through any of them. A session ends at expires_at, at
-- sign-out (revoked_at), or when its token is revoked (admin_tokens). The
-- role is the token's, read at each request. Portable SQL, as in version 1.
CREATE TABLE dashboard_sessions (
    id_hash    TEXT PRIMARY KEY,                 -- sha256 of the cookie's session id
    token_name TEXT NOT NULL REFERENCES admin_tokens (name),
    address    TEXT NOT NULL,                    -- the client's address at sign-in
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT                            -- signed out
);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);
