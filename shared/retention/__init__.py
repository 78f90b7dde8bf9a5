"""Retention: how long a tenant's stored images are kept (policy), which inputs each job
uses and when an input may go (uses), the periodic deletion of what is due (sweep), the
deletion a tenant asks for (erase), and the move of an older store into tenant prefixes
(layout)."""
