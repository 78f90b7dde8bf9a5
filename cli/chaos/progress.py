"""What a chaos run tells while it goes: its clock and a periodic status line."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from cli.chaos.audit import status_counts
from cli.chaos.config import TERMINAL, console
from cli.chaos.supervisor import Supervisor
from cli.chaos.workload import Submissions


@dataclass
class Clock:
    started: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic()

    def since(self, name: str, until: str | None = None) -> float:
        end = self.marks.get(until, time.monotonic()) if until else time.monotonic()
        return round(end - self.marks.get(name, self.started), 2)


class Progress:
    """A status line every few seconds, and the job counts it read."""

    def __init__(self, clock: Clock, database_url: str, submissions: Submissions,
                 supervisor: Supervisor, total: int, every: float = 5.0) -> None:
        self.clock = clock
        self.database_url = database_url
        self.submissions = submissions
        self.supervisor = supervisor
        self.total = total
        self.every = every
        self.next_print = time.monotonic() + every
        self.next_read = 0.0

    def maybe_print(self) -> Counter[str] | None:
        """Job counts by status, read at most once a second (None when not read now)."""
        now = time.monotonic()
        if now < self.next_read:
            return None
        self.next_read = now + 1.0
        try:
            counts = status_counts(self.database_url)
        except Exception as exc:  # a busy database: read again next time
            console.print(f"(could not read job counts: {type(exc).__name__})")
            return None
        if now >= self.next_print:
            self.next_print = now + self.every
            s, sup = self.submissions, self.supervisor
            terminal = sum(counts[name] for name in TERMINAL)
            console.print(
                f"[{self.clock.since('submit'):6.1f}s] submitted {len(s.job_ids)}/{self.total}"
                f" | queued {counts['queued']} running {counts['running']} terminal "
                f"{terminal} (succeeded {counts['succeeded']}, failed {counts['failed']})"
                f" | kills {sup.kills} restarts {sup.restarts} redis {sup.redis_restarts}")
        return counts
