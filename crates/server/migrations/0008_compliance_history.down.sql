DROP TABLE compliance_day_cves;
DROP TABLE compliance_days;
