DROP TABLE policy_breaches;
DROP INDEX webhook_deliveries_open;
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
