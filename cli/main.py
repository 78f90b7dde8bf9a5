"""The `editq` command: serve, work, migrate, manage keys, submit, batches, demo.

(Over 300 lines: one click declaration per command, each a few lines over the
domain; the larger commands have modules of their own: cli/keys.py, cli/compare.py,
cli/demo.py, cli/chaos/.)
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from cli.database import load_settings, require_database
from cli.remote import COMMANDS, as_json_option


class LazyGroup(click.Group):
    """Command groups imported when they are used, not at every start: `editq api`,
    `editq worker` and each test's CLI call need none of `keys`, `sim` or `chaos`
    (importing them all doubled the command's start-up, 2.2 s)."""

    lazy = {
        "keys": ("cli.keys", "keys"),
        "sim": ("cli.sim", "sim"),
        "chaos": ("cli.chaos", "chaos"),
        "budget": ("cli.budget", "budget"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module, attribute = self.lazy[name]
        try:
            command: click.Command = getattr(importlib.import_module(module), attribute)
        except ModuleNotFoundError as exc:
            if name != "sim" or not (exc.name or "").startswith("simulators"):
                raise
            return _missing_simulators
        return command

    def invoke(self, ctx: click.Context) -> Any:
        """Every command: a failure a user can meet is one line on stderr and exit status 1
        (cli/output.py), never a traceback."""
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            from cli.output import CliError, explain

            line = explain(exc)
            if line is None:
                raise
            raise CliError(line) from None


@click.command("sim", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def _missing_simulators() -> None:
    """Provider simulators (not installed here: a production install has none)."""
    from cli.stack import MissingSimulators

    raise MissingSimulators() from None


@click.group(cls=LazyGroup)
def main() -> None:
    """editq: asynchronous image-edit jobs."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="uvicorn's level (info: an access log line per request, without its query)",
)
def api(host: str, port: int, log_level: str) -> None:
    """Serve the HTTP API with uvicorn, with limits on each request's head."""
    from api.server import serve

    serve(load_settings(), host, port, log_level)


@main.command()
@click.option(
    "--concurrency", "-c", type=int, default=None, help="threads (default EDITQ_WORKER_CONCURRENCY)"
)
@click.option("--queues", "-Q", default="interactive,bulk", show_default=True)
@click.option(
    "--nice",
    type=click.IntRange(0, 19),
    default=0,
    show_default=True,
    help="lower this worker's CPU priority (docker-compose's bulk worker: 10)",
)
@click.option("--loglevel", default="INFO", show_default=True)
def worker(concurrency: int | None, queues: str, nice: int, loglevel: str) -> None:
    """Run a Celery worker (threads pool) on the given queues.

    A bulk worker sharing a machine with interactive work runs best with --nice: it
    then gets the CPU time interactive jobs leave, not half of it."""
    settings = load_settings()
    if nice:
        os.nice(nice)  # before Celery starts its threads, which inherit it
    from worker.celery_app import app

    app.worker_main(
        [
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency or settings.worker_concurrency),
            "--queues",
            queues,
            "--loglevel",
            loglevel,
            "--without-gossip",
            "--without-mingle",
        ]
    )


@main.command()
@click.option("--loglevel", default="INFO", show_default=True)
def beat(loglevel: str) -> None:
    """Run Celery beat, which dispatches editq's periodic tasks."""
    load_settings()
    from worker.celery_app import app

    app.start(["beat", "--loglevel", loglevel])


@main.command()
@click.option(
    "--once",
    is_flag=True,
    required=True,
    help="one pass (beat runs it every EDITQ_REAPER_INTERVAL_SECONDS as editq.reap)",
)
def reaper(once: bool) -> None:
    """Resend lost messages of queued jobs; resume jobs whose worker has gone."""
    from shared.jobs.recovery import recover, send
    from shared.queue import make_celery
    from shared.storage import Storage

    settings = load_settings()
    require_database(settings)
    found = recover(settings, Storage(settings))
    send(make_celery(settings), found)
    click.echo(
        f"messages resent: {len(found.resent)}, following resumed: {len(found.following)}, "
        f"requeued: {len(found.requeued)}, failed as outcome unknown: "
        f"{len(found.failed)}, settled: {len(found.settled)}, expansions resumed: "
        f"{len(found.expansions)}"
    )


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations to EDITQ_DATABASE_URL."""
    from shared.migrate import upgrade

    settings = load_settings()
    upgrade(settings.database_url, revision)
    click.echo(f"database at revision {revision}")


@main.group()
def storage() -> None:
    """Object storage."""


@storage.command("migrate")
@click.option(
    "--chunk",
    default=100,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="jobs moved per transaction",
)
def storage_migrate(chunk: int) -> None:
    """Move a store written before tenant prefixes into them: copy, verify, switch the rows,
    then delete the old objects. Safe to stop and run again: it resumes where it was."""
    from shared.retention.layout import migrate
    from shared.storage import Storage

    settings = load_settings()
    require_database(settings)
    done = migrate(settings, Storage(settings), chunk=chunk, say=click.echo)
    if done["missing"]:
        click.echo(
            f"{len(done['missing'])} object(s) the rows named were already missing "
            f"(first: {done['missing'][0]})",
            err=True,
        )


@main.command()
@click.option("--keep", is_flag=True, help="stay up afterwards and print the API URL and a key")
@click.option(
    "--out",
    "out_dir",
    default="demo-output",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option(
    "--workdir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="keep the database and logs here (default: a temporary folder)",
)
def demo(keep: bool, out_dir: Path, workdir: Path | None) -> None:
    """Start every embedded piece, run sample edits, save the outputs, print a table."""
    from cli.demo import run_demo
    from cli.stack import require_simulators

    require_simulators()  # before anything starts
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    # Ctrl-C (and SIGTERM) stop everything the demo started, even when a parent shell
    # started it with SIGINT ignored (as a non-interactive shell does for `cmd &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        sys.exit(run_demo(out_dir=out_dir, keep=keep, workdir=workdir))
    except KeyboardInterrupt:
        click.echo("interrupted; everything the demo started has been stopped")
        sys.exit(130)


@main.command()
@click.option(
    "--group-by",
    "group_by",
    default="model",
    show_default=True,
    help="model, provider, operation, day or tenant",
)
@click.option(
    "--from",
    "start",
    default=None,
    help="ISO date or date-time, UTC (default: the first day of this month)",
)
@click.option(
    "--to", "end", default=None, help="ISO date or date-time, UTC, excluded (default: now)"
)
@click.option("--tenant", default=None, help="one tenant's name (default: every tenant)")
@click.option("--csv", "as_csv", is_flag=True, help="print CSV instead of a table")
@as_json_option
def costs(
    group_by: str,
    start: str | None,
    end: str | None,
    tenant: str | None,
    as_csv: bool,
    as_json: bool,
) -> None:
    """What the ledger charged, grouped, read from EDITQ_DATABASE_URL (as GET /v1/costs)."""
    from cli.output import make_console, print_json, say
    from cli.tables import row, table
    from shared.db import session_scope
    from shared.errors import InvalidInput, NotFound
    from shared.formats import money
    from shared.money.reports import (
        cost_report,
        report_range,
        report_view,
        tenant_id_for,
        to_csv,
    )

    settings = load_settings()
    require_database(settings)
    try:
        first, last = report_range(start, end)
        with session_scope(settings.database_url) as session:
            tenant_id = tenant_id_for(session, tenant) if tenant is not None else None
            report = cost_report(
                session, tenant_id=tenant_id, group_by=group_by, start=first, end=last
            )
    except InvalidInput as exc:
        field = str(exc.extra.get("field", "")).replace("_", "-")
        raise click.BadParameter(exc.message, param_hint=f"--{field}" if field else None) from None
    except NotFound as exc:
        raise click.ClickException(exc.message) from None
    if as_csv:
        click.echo(to_csv(report), nl=False)
        return
    if as_json:
        print_json(report_view(report))
        return
    iso = "%Y-%m-%dT%H:%M:%SZ"
    console = make_console()
    say(
        console,
        f"Costs by {group_by} of {tenant or 'every tenant'}, "
        f"from {first.strftime(iso)} to {last.strftime(iso)} (excluded)",
    )
    made = table(group_by, "jobs", f"amount ({report.currency})", right=("jobs",), wrap=(group_by,))
    made.columns[2].justify = "right"
    made.show_footer = True
    for column, footer in zip(
        made.columns, ("total", str(report.jobs), money(report.total)), strict=True
    ):
        column.footer = footer
    for line in report.rows:
        row(made, line.key, line.jobs, money(line.amount))
    console.print(made)


for command in COMMANDS:
    main.add_command(command)


if __name__ == "__main__":
    main()
