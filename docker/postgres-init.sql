-- Run once by the postgres image on an empty data volume: the databases headwater's
-- examples and tests use as CDC source and migration target (same as `headwater stack up`).
CREATE DATABASE hw_source;
CREATE DATABASE hw_target;
