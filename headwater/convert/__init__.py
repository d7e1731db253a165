"""`headwater convert`: target DDL from the source catalog (tables, then indexes and foreign
keys after the full load) and an honest list of what needs a person."""
