"""What a source catalog holds beyond columns and primary keys (foreign keys, indexes,
constraints, defaults, triggers, views, routines): read by `headwater convert` to write
target DDL and by `headwater validate` for referential integrity. Read-only."""
