DROP TABLE agent_packages;
