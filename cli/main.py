"""The `editq` command: serve, work, migrate, manage keys, submit, batches, demo.

(Over 300 lines: one click declaration per command, each a few lines over the
domain; the larger commands have modules of their own: cli/keys.py, cli/compare.py,
cli/demo.py, cli/chaos/.)
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from cli.database import load_settings, require_database


class LazyGroup(click.Group):
    """Command groups imported when they are used, not at every start: `editq api`,
    `editq worker` and each test's CLI call need none of `keys`, `sim` or `chaos`
    (importing them all doubled the command's start-up, 2.2 s)."""

    lazy = {"keys": ("cli.keys", "keys"), "sim": ("cli.sim", "sim"),
            "chaos": ("cli.chaos", "chaos")}

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


@click.command("sim", context_settings={"ignore_unknown_options": True,
                                       "allow_extra_args": True})
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
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]),
              help="uvicorn's level (info: an access log line per request, without its query)")
def api(host: str, port: int, log_level: str) -> None:
    """Serve the HTTP API with uvicorn, with limits on each request's head."""
    from api.server import serve

    serve(load_settings(), host, port, log_level)


@main.command()
@click.option("--concurrency", "-c", type=int, default=None,
              help="threads (default EDITQ_WORKER_CONCURRENCY)")
@click.option("--queues", "-Q", default="interactive,bulk", show_default=True)
@click.option("--nice", type=click.IntRange(0, 19), default=0, show_default=True,
              help="lower this worker's CPU priority (docker-compose's bulk worker: 10)")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(concurrency: int | None, queues: str, nice: int, loglevel: str) -> None:
    """Run a Celery worker (threads pool) on the given queues.

    A bulk worker sharing a machine with interactive work runs best with --nice: it
    then gets the CPU time interactive jobs leave, not half of it."""
    settings = load_settings()
    if nice:
        os.nice(nice)  # before Celery starts its threads, which inherit it
    from worker.celery_app import app

    app.worker_main(["worker", "--pool", "threads", "--concurrency",
                     str(concurrency or settings.worker_concurrency), "--queues", queues,
                     "--loglevel", loglevel, "--without-gossip", "--without-mingle"])


@main.command()
@click.option("--loglevel", default="INFO", show_default=True)
def beat(loglevel: str) -> None:
    """Run Celery beat, which dispatches editq's periodic tasks."""
    load_settings()
    from worker.celery_app import app

    app.start(["beat", "--loglevel", loglevel])


@main.command()
@click.option("--once", is_flag=True, required=True,
              help="one pass (beat runs it every EDITQ_REAPER_INTERVAL_SECONDS as editq.reap)")
def reaper(once: bool) -> None:
    """Resend lost messages of queued jobs; resume jobs whose worker has gone."""
    from shared.jobs.recovery import recover
    from shared.queue import CeleryScheduler, enqueue_expansion, make_celery
    from shared.storage import Storage

    settings = load_settings()
    require_database(settings)
    app = make_celery(settings)
    found = recover(settings, CeleryScheduler(app), Storage(settings))
    for batch_id in found.expansions:
        enqueue_expansion(app, batch_id)
    click.echo(f"messages resent: {len(found.resent)}, polling resumed: {len(found.polling)}, "
               f"requeued: {len(found.requeued)}, failed as outcome unknown: "
               f"{len(found.failed)}, settled: {len(found.settled)}, expansions resumed: "
               f"{len(found.expansions)}")


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
@click.option("--chunk", default=100, show_default=True, type=click.IntRange(1, 10_000),
              help="jobs moved per transaction")
def storage_migrate(chunk: int) -> None:
    """Move a store written before tenant prefixes into them: copy, verify, switch the rows,
    then delete the old objects. Safe to stop and run again: it resumes where it was."""
    from shared.retention.layout import migrate
    from shared.storage import Storage

    settings = load_settings()
    require_database(settings)
    done = migrate(settings, Storage(settings), chunk=chunk, say=click.echo)
    if done["missing"]:
        click.echo(f"{len(done['missing'])} object(s) the rows named were already missing "
                   f"(first: {done['missing'][0]})", err=True)


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--option")
        try:
            options[name] = json.loads(raw)
        except json.JSONDecodeError:
            options[name] = raw
    return options


def image_argument(value: str) -> bytes | str:
    """A file's bytes, or an https:// URL or upload id (upl_...) as given."""
    if value.startswith(("https://", "http://", "upl_")):
        return value
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(f"{value!r} is neither a file nor an https:// URL or "
                                 "upload id", param_hint="IMAGE")
    return path.read_bytes()


@main.command()
@click.argument("image")
@click.option("--prompt", default=None)
@click.option("--operation", default="general_edit", show_default=True)
@click.option("--model", default=None, help="model id (GET /v1/models)")
@click.option("--option", "options", multiple=True, help="NAME=VALUE, repeatable")
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--out", "out_dir", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--api-url", envvar="EDITQ_API_URL", default="http://127.0.0.1:8000",
              show_default=True)
@click.option("--api-key", envvar="EDITQ_API_KEY", required=True)
def submit(image: str, prompt: str | None, operation: str, model: str | None,
           options: tuple[str, ...], wait: bool, out_dir: Path, api_url: str,
           api_key: str) -> None:
    """Submit IMAGE (a file, an https:// URL or an upload id) for editing; with --wait,
    save the outputs into --out. A file over 4 MiB is sent as a direct upload."""
    from cli.client import ApiClient

    client = ApiClient(api_url, api_key)
    job = client.submit(image_argument(image), prompt=prompt, operation=operation, model=model,
                        options=_parse_options(options))
    click.echo(f"submitted {job['id']} ({job['model']}, {job['status']})")
    if not wait:
        return
    job = client.wait(job["id"], timeout=600)
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        raise click.ClickException(f"job {job['id']} {job['status']}: "
                                   f"{error.get('code')}: {error.get('message')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in client.save_outputs(job, out_dir):
        click.echo(f"saved {path}")


@main.command()
@click.argument("photo", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--models", required=True, help="2 to 6 model ids, comma-separated")
@click.option("--prompt", default=None)
@click.option("--operation", default="general_edit", show_default=True)
@click.option("--option", "options", multiple=True, help="NAME=VALUE, repeatable")
@click.option("--out", "out_dir", default="compare-output", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--timeout", type=float, default=600, show_default=True, metavar="SECONDS")
@click.option("--api-url", envvar="EDITQ_API_URL", default="http://127.0.0.1:8000",
              show_default=True)
@click.option("--api-key", envvar="EDITQ_API_KEY", required=True)
def compare(photo: Path, models: str, prompt: str | None, operation: str,
            options: tuple[str, ...], out_dir: Path, timeout: float, api_url: str,
            api_key: str) -> None:
    """Run PHOTO on several models side by side; save each output and a contact sheet.

    Exits 0 when every model succeeded, 1 otherwise."""
    from rich.console import Console

    from cli.client import ApiClient, ApiError
    from cli.compare import run_compare

    try:
        code = run_compare(ApiClient(api_url, api_key), photo,
                           [m.strip() for m in models.split(",") if m.strip()], prompt=prompt,
                           operation=operation, options=_parse_options(options),
                           out_dir=out_dir, timeout=timeout,
                           # outside a terminal rich would squeeze the table into 80 columns
                           console=Console(width=None if sys.stdout.isatty() else 200))
    except ApiError as exc:
        refusals = exc.problem.get("refusals") or []
        detail = "".join(f"\n  {r['model']}: {r['detail']}" for r in refusals)
        raise click.ClickException(f"{exc}{detail}") from exc
    sys.exit(code)


def _api_options(command: Any) -> Any:
    """--api-url and --api-key, from EDITQ_API_URL and EDITQ_API_KEY like `editq submit`."""
    command = click.option("--api-key", envvar="EDITQ_API_KEY", required=True)(command)
    return click.option("--api-url", envvar="EDITQ_API_URL", default="http://127.0.0.1:8000",
                        show_default=True)(command)


def _batch_options(command: Any) -> Any:
    command = _api_options(command)
    for option in reversed((
            click.option("--on-error", type=click.Choice(["reject", "skip"]), default="reject",
                         show_default=True, help="reject: any invalid item refuses the batch; "
                         "skip: accept the valid ones and list the others"),
            click.option("--dry-run", is_flag=True,
                         help="only count and price it, and check the budget; create nothing"),
            click.option("--wait", is_flag=True,
                         help="follow the batch with a progress bar until it is completed or "
                              "canceled, then print a summary"),
            click.option("--timeout", type=float, default=None, metavar="SECONDS",
                         help="with --wait, give up waiting after this long (the batch goes on)"),
    )):
        command = option(command)
    return command


@main.group()
def batch() -> None:
    """Batches: many jobs under one id (POST /v1/batches)."""


@batch.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--defaults", default=None, metavar="JSON",
              help="fields every line takes unless it sets them, e.g. "
                   "'{\"operation\": \"grayscale\"}'")
@_batch_options
def batch_submit(file: Path, defaults: str | None, on_error: str, dry_run: bool, wait: bool,
                 timeout: float | None, api_url: str, api_key: str) -> None:
    """Upload FILE, JSONL with one POST /v1/jobs body per line, as one batch.

    An image field may name a local file as "@photos/1.jpg" (relative to FILE's folder):
    it is sent inline, or as a direct upload when over 4 MiB. Prints the batch id and
    the lines that are not valid jobs (line, code, message).
    Exits 0 when the batch was accepted (and, with --wait, completed), 1 otherwise."""
    from cli.batch import submit_batch

    submit_batch(path=file, defaults=defaults, on_error=on_error, dry_run=dry_run, wait=wait,
                 timeout=timeout, api_url=api_url, api_key=api_key)


@main.command()
@click.option("--model", required=True, help="reprocess the stored jobs of this model")
@click.option("--to-model", required=True, help="the model their new jobs run on")
@click.option("--since", default=None, metavar="DATE",
              help="only jobs created at or after this ISO date or date-time (UTC)")
@click.option("--prompt", default=None, help="the new jobs' prompt (default: each job's own)")
@_batch_options
def reprocess(model: str, to_model: str, since: str | None, prompt: str | None, on_error: str,
              dry_run: bool, wait: bool, timeout: float | None, api_url: str,
              api_key: str) -> None:
    """Run a model's stored jobs again on another model, reusing their stored inputs.

    With --dry-run, prints how many jobs it would make, their estimated cost and whether
    the budget allows it. Exits 0 when accepted (and, with --wait, completed), 1 otherwise."""
    from cli.batch import reprocess as run_reprocess

    run_reprocess(model=model, to_model=to_model, since=since, prompt=prompt,
                  on_error=on_error, dry_run=dry_run, wait=wait, timeout=timeout,
                  api_url=api_url, api_key=api_key)


@main.command()
@click.option("--keep", is_flag=True, help="stay up afterwards and print the API URL and a key")
@click.option("--out", "out_dir", default="demo-output", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--workdir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="keep the database and logs here (default: a temporary folder)")
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
@click.option("--group-by", "group_by", default="model", show_default=True,
              help="model, provider, operation, day or tenant")
@click.option("--from", "start", default=None,
              help="ISO date or date-time, UTC (default: the first day of this month)")
@click.option("--to", "end", default=None,
              help="ISO date or date-time, UTC, excluded (default: now)")
@click.option("--tenant", default=None, help="one tenant's name (default: every tenant)")
@click.option("--csv", "as_csv", is_flag=True, help="print CSV instead of a table")
def costs(group_by: str, start: str | None, end: str | None, tenant: str | None,
          as_csv: bool) -> None:
    """What the ledger charged, grouped, read from EDITQ_DATABASE_URL (as GET /v1/costs)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from shared.db import session_scope
    from shared.errors import InvalidInput, NotFound
    from shared.formats import money
    from shared.money.reports import cost_report, report_range, tenant_id_for, to_csv

    settings = load_settings()
    require_database(settings)
    try:
        first, last = report_range(start, end)
        with session_scope(settings.database_url) as session:
            tenant_id = tenant_id_for(session, tenant) if tenant is not None else None
            report = cost_report(session, tenant_id=tenant_id, group_by=group_by,
                                 start=first, end=last)
    except InvalidInput as exc:
        field = str(exc.extra.get("field", "")).replace("_", "-")
        raise click.BadParameter(exc.message,
                                 param_hint=f"--{field}" if field else None) from None
    except NotFound as exc:
        raise click.ClickException(exc.message) from None
    if as_csv:
        click.echo(to_csv(report), nl=False)
        return
    iso = "%Y-%m-%dT%H:%M:%SZ"
    click.echo(f"Costs by {group_by} of {tenant or 'every tenant'}, "
               f"from {first.strftime(iso)} to {last.strftime(iso)} (excluded)")
    table = Table(box=box.SIMPLE, show_footer=True)
    table.add_column(group_by, footer="total")
    table.add_column("jobs", justify="right", footer=str(report.jobs))
    table.add_column(f"amount ({report.currency})", justify="right",
                     footer=money(report.total))
    for row in report.rows:
        # Text: a name is shown as it is, never read as rich markup.
        table.add_row(Text(row.key), str(row.jobs), money(row.amount))
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@main.command()
@click.option("--api-url", envvar="EDITQ_API_URL", default="http://127.0.0.1:8000")
def health(api_url: str) -> None:
    """Ask a running API whether it is ready."""
    import httpx

    started = time.monotonic()
    answer = httpx.get(api_url.rstrip("/") + "/readyz", timeout=10)
    click.echo(f"{answer.status_code} in {time.monotonic() - started:.2f}s: {answer.text}")
    sys.exit(0 if answer.status_code == 200 else 1)


if __name__ == "__main__":
    main()
