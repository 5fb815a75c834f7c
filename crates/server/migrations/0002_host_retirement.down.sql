-- Retired hosts become active again: their tokens work once more.
ALTER TABLE hosts DROP COLUMN retired_by;
ALTER TABLE hosts DROP COLUMN retired_at;
