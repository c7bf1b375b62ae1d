"""The durable outbox: the SQLite store, its schema and migrations, and the DATA_DIR lock."""
