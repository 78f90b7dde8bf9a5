"""Who changed: a job, a batch or a comparison, said on Redis after the commit that changed
it, so an API process can wake exactly the streams that watch it.

The database stays the truth. A message says only *what* changed ("job:job_...",
"batch:bat_...", "cmp:cmp_..."); a stream that hears it reads what is new from the
database (the job's events after the last one it sent), once per change, never on a
timer. A message lost (Redis restarting, a listener reconnecting) costs latency, not an
event: every listener that (re)subscribes wakes all of its streams to read again.

Publishing happens after the commit, from the session's own `after_commit` hook, so a
listener never reads before the change is visible. The session finds its process's
publisher by its database URL in `PUBLISHERS`: sessions are opened in many places by URL
alone (`session_scope(url)` keeps the URL in the session's info), and the publisher is
registered once, when a process builds its services (`Services`), never at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable

import redis
import redis.asyncio as aioredis
from sqlalchemy import event
from sqlalchemy.orm import Session

from shared.redis_keys import changes_channel

log = logging.getLogger(__name__)

_CHANGED = "editq.changed"
_HOOKED = "editq.changes_hooked"


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def batch_key(batch_id: str) -> str:
    return f"batch:{batch_id}"


def comparison_key(comparison_id: str) -> str:
    return f"cmp:{comparison_id}"


def queue_key(queue: str) -> str:
    """A job left this queue (started or canceled): the queued ones behind it moved up."""
    return f"queue:{queue}"


class Publisher:
    """One Redis client per process, for every commit's one PUBLISH.

    While Redis is away a commit must not wait on it: after a failed PUBLISH the next ones
    are skipped for `pause` seconds. What is lost then costs latency only (the listeners
    wake every stream when they subscribe again), and the API's listener is the one that
    warns of the outage, so a failure here is said once, at INFO."""

    def __init__(self, redis_url: str, pause: float = 5.0) -> None:
        self.channel = changes_channel(redis_url)
        self._client = redis.Redis.from_url(redis_url, socket_timeout=2,
                                            socket_connect_timeout=2, retry_on_timeout=False)
        self._pause = pause
        self._skip_until = 0.0
        self._failing = False

    def publish(self, keys: Iterable[str]) -> None:
        message = " ".join(sorted(keys))
        if not message or time.monotonic() < self._skip_until:
            return
        try:
            self._client.publish(self.channel, message)
            self._failing = False
        except redis.RedisError as exc:
            self._skip_until = time.monotonic() + self._pause
            if not self._failing:
                log.info("changes not published while Redis is unavailable (%s)",
                         type(exc).__name__)
            self._failing = True

    def close(self) -> None:
        self._client.close()


PUBLISHERS: dict[str, Publisher] = {}
"""Database URL -> the publisher of the process that writes to it (see the module's doc)."""


def register(database_url: str, publisher: Publisher) -> None:
    PUBLISHERS[database_url] = publisher


def note(session: Session, *keys: str) -> None:
    """Say, once this session commits, that these changed."""
    if not session.info.get(_HOOKED):
        event.listen(session, "after_commit", _publish)
        event.listen(session, "after_rollback", _forget)
        session.info[_HOOKED] = True
    session.info.setdefault(_CHANGED, set()).update(keys)


def _publish(session: Session) -> None:
    # SQLAlchemy fires after_commit (and after_rollback) for a SAVEPOINT too: published
    # then, a job's end was heard before it was visible, and read as still running; with
    # the keys gone, its long polls then slept to their deadline (a job with a webhook,
    # whose outbox row is written in a savepoint, waited 30 s).
    if session.in_nested_transaction():
        return
    keys = session.info.pop(_CHANGED, None)
    if not keys:
        return
    publisher = PUBLISHERS.get(session.info.get("editq.url", ""))
    if publisher is not None:
        publisher.publish(keys)


def _forget(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint undone: what the transaction changed before it still changed
    session.info.pop(_CHANGED, None)


class Listener:
    """The API's half: one subscription per process, fanned out to the streams waiting
    on each key. `watch(*keys)` gives an asyncio.Event set at each change of any of them."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.channel = changes_channel(redis_url)
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        """Cancel the subscription, waiting a little for it: a cancel that lands inside
        the Redis client can come back as a connection error (it then sees `_stopping`)
        or not at all, and a process stopping must not hang on it."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=2)
            if not done:
                log.info("the change listener did not stop within 2 s; leaving it")

    @contextlib.asynccontextmanager
    async def watch(self, *keys: str) -> AsyncIterator[asyncio.Event]:
        changed = asyncio.Event()
        for key in keys:
            self.add(key, changed)
        try:
            yield changed
        finally:
            for key in keys:
                self.discard(key, changed)

    def add(self, key: str, changed: asyncio.Event) -> None:
        """Set `changed` at each change of `key` too (until `discard`)."""
        self._watchers.setdefault(key, set()).add(changed)

    def discard(self, key: str, changed: asyncio.Event) -> None:
        watchers = self._watchers.get(key)
        if watchers is not None:
            watchers.discard(changed)
            if not watchers:
                del self._watchers[key]

    @property
    def watching(self) -> int:
        return sum(len(w) for w in self._watchers.values())

    def _wake(self, keys: Iterable[str]) -> None:
        for key in keys:
            for changed in self._watchers.get(key, ()):
                changed.set()

    def _wake_all(self) -> None:
        self._wake(list(self._watchers))

    async def _listen(self) -> None:
        pause = 0.1
        while not self._stopping:
            client = aioredis.Redis.from_url(self.redis_url, socket_connect_timeout=2)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    self.subscribed.set()
                    self._wake_all()  # whatever changed while no one listened
                    pause = 0.1
                    # get_message with a timeout, not listen(): a cancel that lands
                    # inside listen() can be swallowed by the client and hang a stop
                    while not self._stopping:
                        message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                           timeout=1.0)
                        if message and message.get("type") == "message":
                            data = message["data"]
                            text = data.decode() if isinstance(data, bytes) else str(data)
                            self._wake(text.split())
            except (redis.RedisError, OSError) as exc:
                self.subscribed.clear()
                if self._stopping:
                    return
                log.warning("change stream unavailable (%s); retrying in %.1f s",
                            type(exc).__name__, pause)
                await asyncio.sleep(pause)
                pause = min(5.0, pause * 2)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.aclose(), 1)
