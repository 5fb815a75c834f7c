-- Sessions are gone: every dashboard user signs in again (the older
-- dashboard takes the token itself as its cookie).
DROP TABLE dashboard_sessions;
