-- Run once by the mariadb and mysql images on an empty data volume: the databases headwater's
-- examples and tests use as CDC source and migration target (same as `headwater stack up`).
CREATE DATABASE IF NOT EXISTS hw_source;
CREATE DATABASE IF NOT EXISTS hw_target;
