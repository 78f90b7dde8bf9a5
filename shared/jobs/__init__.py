"""A job's life: its state machine (`states`), how it is accepted (`submission`), run
(`pipeline`, with `fallback`), recovered when a worker dies (`recovery`), found and
canceled by its tenant (`lookup`) and shown (`views`)."""
