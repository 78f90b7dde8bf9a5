"""The worker supervisor: the part of a chaos run that breaks things on purpose.

It owns the Celery workers and the Redis child, because killing and replacing them
must go through the same object that restarts them and notices when something that
was not supposed to die has.
"""

from __future__ import annotations

import random
import time

from cli.stack import Child, Stack, redis_reachable


class Supervisor:
    """Keeps `count` Celery workers alive, kills them on demand, replaces Redis.

    Everything here runs on the main thread: children die with the thread that
    started them (PR_SET_PDEATHSIG), so they must not be started from a short-lived one.
    """

    def __init__(self, stack: Stack, count: int, concurrency: int, redis: Child,
                 redis_url: str, rng: random.Random) -> None:
        self.stack = stack
        self.concurrency = concurrency
        self.rng = rng
        self.redis = redis
        self.redis_url = redis_url
        self.generation = [0] * count
        self.workers: list[Child] = [self._start(slot) for slot in range(count)]
        self.kills = 0
        self.restarts = 0
        self.redis_restarts = 0
        self.essential: list[Child] = []  # pieces nobody should kill: the run stops without them

    def _start(self, slot: int) -> Child:
        self.generation[slot] += 1
        return self.stack.start_worker(name=f"worker-{slot + 1}-{self.generation[slot]}",
                                       concurrency=self.concurrency)

    def check(self) -> None:
        """Start a new worker in the place of any that has died; stop the run if a piece
        that is not supposed to die has."""
        for child in [*self.essential, self.redis]:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited unexpectedly; its log ends with:\n"
                                   f"{child.log_tail()}")
        for slot, child in enumerate(self.workers):
            if not child.alive():
                self.workers[slot] = self._start(slot)
                self.restarts += 1

    def kill_one(self) -> str | None:
        alive = [child for child in self.workers if child.alive()]
        if not alive:
            return None
        victim = self.rng.choice(alive)
        victim.kill()
        self.kills += 1
        return victim.name

    def restart_redis(self, downtime: float) -> None:
        """Kill Redis (-9) and start an empty one on the same port: every message, every
        countdown and every limiter counter it held is gone."""
        argv = [str(arg) for arg in self.redis.process.args]  # type: ignore[union-attr]
        self.redis.kill()
        time.sleep(downtime)
        self.redis_restarts += 1
        self.redis = self.stack.spawn(f"redis-{self.redis_restarts + 1}", argv)
        deadline = time.monotonic() + 20
        while not redis_reachable(self.redis_url):
            if time.monotonic() > deadline:
                raise RuntimeError("the restarted redis-server does not answer")
            time.sleep(0.05)

    def stop_all_workers(self) -> None:
        for child in self.workers:
            child.stop()
