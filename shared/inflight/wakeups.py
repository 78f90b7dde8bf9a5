"""Provider webhooks wake the request they are about, in whichever worker follows it.

The API publishes the job id on a Redis channel; every worker listens and wakes the
job if its engine holds it. Pub/sub rather than a queued message because only the
holder can act, and a wake that is lost (Redis restarting, nobody listening) costs
latency only: the engine's own schedule looks at the request anyway.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from shared.redis_keys import wake_channel

log = logging.getLogger(__name__)


class WakePublisher:
    """The API's half: one client per process, made at start."""

    def __init__(self, redis_url: str) -> None:
        self.channel = wake_channel(redis_url)
        self._client = redis.Redis.from_url(redis_url, socket_timeout=2,
                                            socket_connect_timeout=2,
                                            retry_on_timeout=False)

    def wake(self, job_id: str) -> bool:
        """Answers whether any worker heard it (one that does not hold the job ignores it)."""
        try:
            return bool(self._client.publish(self.channel, job_id))
        except redis.RedisError as exc:
            log.warning("could not publish a wake for %s (%s): its next look finds it",
                        job_id, type(exc).__name__)
            return False

    def close(self) -> None:
        self._client.close()


class WakeListener:
    """The worker's half: a thread that hands each job id it hears to `wake`, and comes
    back after a Redis outage on its own."""

    def __init__(self, redis_url: str, wake: Callable[[str], None]) -> None:
        self.redis_url = redis_url
        self.channel = wake_channel(redis_url)
        self._wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="editq-wakeups",
                                        daemon=True)
        self.subscribed = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(3.0)

    def _listen(self) -> None:
        pause = 0.1
        while not self._stop.is_set():
            client = redis.Redis.from_url(self.redis_url, socket_timeout=5,
                                          socket_connect_timeout=2)
            try:
                with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.subscribe(self.channel)
                    self.subscribed.set()
                    pause = 0.1
                    while not self._stop.is_set():
                        message = pubsub.get_message(timeout=1.0)
                        if message and message.get("type") == "message":
                            data = message["data"]
                            self._wake(data.decode() if isinstance(data, bytes) else str(data))
            except redis.RedisError as exc:
                self.subscribed.clear()
                log.warning("wake-ups unavailable (%s); retrying in %.1f s",
                            type(exc).__name__, pause)
                self._stop.wait(pause)
                pause = min(5.0, pause * 2)
            finally:
                client.close()
