"""A job's life: its state machine (`states`), how it is accepted (`submission`), an
attempt (`attempt`, with `fallback`) and its end (`finish`, `failure`, with the `retry`
policy and the follow `schedule`), recovered when a worker dies (`recovery`), found and
canceled by its tenant (`lookup`) and shown (`views`)."""
