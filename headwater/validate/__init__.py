"""`headwater validate`: source and target compared in the databases (row counts, chunk
checksums narrowed to the differing rows, numeric totals, referential integrity), with a
recheck of differing rows once a running task's lag allows."""
