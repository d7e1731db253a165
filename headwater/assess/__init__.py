"""`headwater assess`: the premigration assessment. Source, tables, target and Kafka are
checked read-only (the target's write probe aside) and each check reports pass, warn or
fail with the fix; nothing fails means the task can start."""
