"""`editq chaos`: many jobs through the whole stack while its pieces fail, then an audit.

The run starts a private stack on loopback (its own redis-server, moto S3, a
database, both provider simulators injecting faults, the API, a supervisor
keeping `--workers` Celery workers alive, and beat running the reaper),
submits `--jobs` edits over HTTP across both providers, and meanwhile kills
workers with SIGKILL and (with `--redis-restart`) replaces Redis with an empty
one. Once every job is terminal (or `--drain-timeout` passes) and the
simulators have nothing in flight, it audits what happened against the
invariants of ../shared/DESIGN.md:

- no job is lost (every one reaches succeeded, failed or canceled);
- no job has two results (two `succeeded` events, or stray objects in S3);
- no provider call is charged twice;
- what the ledger recorded is what the jobs say they cost, and what the
  providers billed is that plus at most the estimates of the jobs whose
  billing cannot be known (`cost.actual` null).

The harness only observes and breaks things: it never repairs a job (no
re-enqueueing, no database writes besides creating its API key).
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cli.chaos.config import ChaosConfig
from cli.chaos.run import run_chaos

__all__ = ["ChaosConfig", "chaos", "run_chaos"]


F = TypeVar("F", bound=Callable[..., Any])


def _rate_option(name: str, default: float, what: str) -> Callable[[F], F]:
    return click.option(name, default=default, show_default=True,
                        type=click.FloatRange(0, 1), help=what)


@click.command()
@click.option("--jobs", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--kill-every", default=0.0, show_default=True, type=click.FloatRange(min=0),
              metavar="SECONDS", help="kill -9 a random worker this often (0: never)")
@click.option("--kills", "max_kills", default=None, type=click.IntRange(min=0),
              help="at most this many worker kills (default: no limit)")
@click.option("--redis-restart", is_flag=True,
              help="once a third of the jobs are submitted, replace Redis by an empty one")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Celery worker processes, kept alive by a supervisor")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(min=1),
              help="threads per worker")
@_rate_option("--http-5xx", 0.10, "rate of 500/502/503 answers, at every endpoint")
@_rate_option("--rate-limited", 0.05, "rate of 429 answers (with Retry-After)")
@_rate_option("--hang", 0.02, "rate of requests that are never answered")
@_rate_option("--task-failures", 0.02,
              "rate of WaveSpeed tasks failing (5000/5003) and Stability moderations")
@click.option("--drain-timeout", default=300.0, show_default=True,
              type=click.FloatRange(min=1), metavar="SECONDS",
              help="how long to wait for every job to be terminal")
@click.option("--database", default="sqlite", show_default=True,
              help="'sqlite', or a PostgreSQL URL under which a temporary database is made")
@click.option("--seed", default=None, type=int, help="seed of the job mix, kills and faults")
@click.option("--out", "out", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="also write the JSON report here")
@click.option("--workdir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="keep the database and every child's log here (default: a temporary folder)")
def chaos(jobs: int, kill_every: float, max_kills: int | None, redis_restart: bool,
          workers: int, concurrency: int, http_5xx: float, rate_limited: float, hang: float,
          task_failures: float, drain_timeout: float, database: str, seed: int | None,
          out: Path | None, workdir: Path | None) -> None:
    """Run many jobs through a private stack while workers are killed, Redis is wiped and
    the providers fail; then check that nothing was lost, done twice or charged twice.

    The last line of the output is the report as one JSON object. Exit status 0 when
    the report is ok.
    """
    if database != "sqlite" and not database.startswith("postgresql"):
        raise click.BadParameter("expected 'sqlite' or a postgresql:// URL",
                                 param_hint="--database")
    if http_5xx + rate_limited + hang > 1:
        raise click.BadParameter("--http-5xx, --rate-limited and --hang add up to more than 1")
    if workdir is not None:
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    cfg = ChaosConfig(jobs=jobs, kill_every=kill_every, max_kills=max_kills,
                      redis_restart=redis_restart, workers=workers, concurrency=concurrency,
                      http_5xx=http_5xx, rate_limited=rate_limited, hang=hang,
                      task_failures=task_failures, drain_timeout=drain_timeout,
                      database=database, seed=seed, workdir=workdir)
    # SIGTERM unwinds like Ctrl-C, so every child is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        report, code = run_chaos(cfg)
    except (RuntimeError, TimeoutError) as exc:
        raise click.ClickException(f"the chaos run could not go on: {exc}") from None
    except KeyboardInterrupt:
        click.echo("interrupted; everything the chaos run started has been stopped", err=True)
        sys.exit(130)
    line = json.dumps(report, separators=(",", ":"), default=str)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    sys.stdout.flush()
    click.echo(line)
    sys.exit(code)
