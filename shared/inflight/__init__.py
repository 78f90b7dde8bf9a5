"""Following submitted provider requests in each worker process (see engine.py)."""
