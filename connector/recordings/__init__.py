"""Recording watcher: finished call recordings become outbox rows (see watcher.py, checks.py)."""
