-- Undoes version 4: the paged lists' indexes.
DROP INDEX host_reports_host_received;
DROP INDEX host_reports_received;
DROP INDEX hosts_retired;
DROP INDEX hosts_active_kernel;
DROP INDEX hosts_active_build_name;
DROP INDEX hosts_active_feed_name;
DROP INDEX hosts_active_name;
