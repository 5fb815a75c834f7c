DROP TABLE shared_settings;
DROP INDEX rate_limits_minute;
DROP TABLE rate_limits;
DROP TABLE bundle_chunks;
DROP TABLE bundle_blobs;
