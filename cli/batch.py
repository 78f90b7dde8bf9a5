"""The bodies of `editq batch submit` and `editq reprocess` (cli/main.py declares them).

Both POST /v1/batches, print what was accepted (and which lines or parents were
not), and with --wait follow the batch with a progress bar until it is completed
or canceled, then print a summary. Every API or network problem ends the command
with a readable message and exit status 1, never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import httpx
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cli.client import BATCH_FINISHED, ApiClient, ApiError

STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
POLL_SECONDS = 1.0


def make_console() -> Console:
    # Outside a terminal (CI logs, pipes) rich would squeeze tables into 80 columns.
    return Console(width=None if sys.stdout.isatty() else 160, highlight=False)


def say(console: Console, text: str) -> None:
    """A plain line: never read as markup, never wrapped (ids and URLs stay whole)."""
    console.print(text, markup=False, soft_wrap=True)


@contextmanager
def api_calls(console: Console, api_url: str, doing: str) -> Iterator[None]:
    """API and network problems as one readable line (and the invalid items, if any)."""
    try:
        yield
    except ApiError as exc:
        problem = exc.problem
        if isinstance(problem.get("errors"), list) and problem.get("code") == "batch_invalid":
            print_invalid(console, problem["errors"], problem.get("invalid"))
        code = problem.get("code") or f"HTTP {exc.status}"
        detail = problem.get("detail") or problem.get("title") or "no detail"
        raise click.ClickException(f"{doing}: {detail} ({exc.status} {code})") from None
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"{doing}: cannot reach the API at {api_url} ({type(exc).__name__}: {exc})"
        ) from None
    except json.JSONDecodeError:
        raise click.ClickException(
            f"{doing}: the answer from {api_url} is not JSON; is EDITQ_API_URL editq's API?"
        ) from None


def parse_defaults(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--defaults") from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"operation\": \"grayscale\"}'",
                                 param_hint="--defaults")
    return value


def print_invalid(console: Console, errors: list[dict[str, Any]], count: Any = None) -> None:
    """The lines (or, reprocessing, the parent jobs) that are not valid jobs."""
    if not errors:
        return
    shown = f"{len(errors)}" if not count or count == len(errors) else (
        f"the first {len(errors)} of {count}")
    with_jobs = any("job_id" in e for e in errors)
    say(console, f"not valid jobs ({shown}):")
    table = Table(box=box.SIMPLE)
    table.add_column("line", justify="right")
    if with_jobs:
        table.add_column("job")
    table.add_column("code")
    table.add_column("message", overflow="fold")
    for error in errors:
        cells = [str(error.get("line", "")), *([str(error.get("job_id", ""))] if with_jobs
                                                else []),
                 str(error.get("code", "")), str(error.get("message", ""))]
        # Text: a message quoting the input is shown as it is, never read as markup.
        table.add_row(*(Text(c) for c in cells))
    console.print(table)


def print_accepted(console: Console, batch: dict[str, Any]) -> None:
    say(console, f"batch {batch['id']} accepted: {batch['total']} job(s), estimated "
                 f"{batch['cost']['estimated_total']} {batch['cost']['currency']} "
                 f"({batch['status']})")
    print_invalid(console, batch.get("invalid") or [])


def print_dry_run(console: Console, answer: dict[str, Any]) -> None:
    say(console, "dry run (nothing was created):")
    table = Table(box=box.SIMPLE)
    table.add_column("jobs", justify="right")
    table.add_column(f"estimated cost ({answer.get('currency', 'USD')})", justify="right")
    table.add_column("budget ok")
    table.add_row(str(answer["count"]), str(answer["estimated_cost"]),
                  "yes" if answer["budget_ok"] else "no")
    console.print(table)
    for budget in (answer.get("budget") or {}).get("budgets") or []:
        if not budget.get("ok", True):
            say(console, f"over the {budget['scope']} budget of {budget['budget']} USD: "
                         f"{budget['spent']} spent, {budget['in_flight']} in flight, "
                         f"{budget['remaining']} remaining")
    print_invalid(console, answer.get("invalid") or [])


def _detail(batch: dict[str, Any]) -> str:
    counts = batch.get("counts") or {}
    parts = [f"{s} {counts.get(s, 0)}" for s in STATUSES if counts.get(s)]
    if batch["status"] == "expanding":
        parts.insert(0, f"expanding {batch['expanded']}/{batch['total']}")
    cost = batch["cost"]
    parts.append(f"{cost['so_far']} of ~{cost['estimated_total']} {cost['currency']}")
    return " | ".join(parts)


def follow(client: ApiClient, batch: dict[str, Any], console: Console,
           timeout: float | None, poll_seconds: float = POLL_SECONDS,
           sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll the batch until it is completed or canceled, with a progress bar."""
    deadline = None if timeout is None else time.monotonic() + timeout
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}", markup=False), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(f"batch {batch['id']}", total=batch["total"],
                                detail=_detail(batch))
        while True:
            progress.update(bar, completed=batch["progress"]["done"],
                            total=batch["progress"]["total"], detail=_detail(batch))
            if batch["status"] in BATCH_FINISHED:
                return batch
            if deadline is not None and time.monotonic() > deadline:
                raise click.ClickException(
                    f"gave up waiting after {timeout:g}s; batch {batch['id']} goes on "
                    f"(GET /v1/batches/{batch['id']})")
            sleep(poll_seconds)
            batch = client.get_batch(batch["id"])


def print_summary(console: Console, batch: dict[str, Any]) -> None:
    counts, cost = batch["counts"], batch["cost"]
    say(console, f"batch {batch['id']}: {batch['status']}")
    table = Table(box=box.SIMPLE, show_footer=True)
    table.add_column("status", footer="total")
    table.add_column("jobs", justify="right", footer=str(sum(counts.values())))
    for status in STATUSES:
        table.add_row(status, str(counts.get(status, 0)))
    console.print(table)
    say(console, f"cost so far: {cost['so_far']} {cost['currency']} "
                 f"(estimated {cost['estimated_total']} {cost['currency']})")
    say(console, f"manifest: {batch.get('manifest_url') or '(none yet)'}")


def _wait_and_summarize(client: ApiClient, batch: dict[str, Any], console: Console,
                        api_url: str, timeout: float | None) -> None:
    try:
        with api_calls(console, api_url, f"following batch {batch['id']}"):
            batch = follow(client, batch, console, timeout)
    except KeyboardInterrupt:
        raise click.ClickException(
            f"stopped waiting; batch {batch['id']} goes on (GET /v1/batches/{batch['id']}, "
            f"POST /v1/batches/{batch['id']}/cancel)") from None
    print_summary(console, batch)
    if batch["status"] != "completed":
        raise click.ClickException(f"batch {batch['id']} was {batch['status']}")


def submit_batch(*, path: Path, defaults: str | None, on_error: str, dry_run: bool,
                 wait: bool, timeout: float | None, api_url: str, api_key: str) -> None:
    """`editq batch submit`: upload a JSONL file of job requests as one batch."""
    fields = parse_defaults(defaults)
    console = make_console()
    client = ApiClient(api_url, api_key, timeout=300)
    with api_calls(console, api_url, f"submitting {path.name}"):
        answer = client.submit_batch(with_files(client, path), defaults=fields,
                                     on_error=on_error,
                                     dry_run=dry_run, filename=path.name,
                                     idempotency_key=_invocation_key())
    _follow(client, answer, console, api_url, dry_run=dry_run, wait=wait, timeout=timeout)


def with_files(client: ApiClient, path: Path) -> bytes:
    """The JSONL, its image fields that name a local file (`"@photos/1.jpg"`, relative to
    the JSONL's folder) replaced by the file: inline if small, else as a direct upload's
    id (ApiClient.image_field). Other lines are sent as they are."""
    lines = []
    for raw in path.read_bytes().splitlines():
        if b'"@' not in raw:
            lines.append(raw)
            continue
        item = json.loads(raw)

        def field(value: Any) -> Any:
            if isinstance(value, str) and value.startswith("@"):
                return client.image_field((path.parent / value[1:]).read_bytes())
            return value

        for name in ("image", "mask"):
            if name in item:
                item[name] = field(item[name])
        if isinstance(item.get("images"), list):
            item["images"] = [field(v) for v in item["images"]]
        lines.append(json.dumps(item).encode())
    return b"\n".join(lines) + b"\n"


def _invocation_key() -> str:
    """One Idempotency-Key per command run: its own retry never makes a second batch,
    and running the command again on purpose does make one."""
    return f"cli-{uuid.uuid4().hex}"


def _follow(client: ApiClient, answer: dict[str, Any], console: Console, api_url: str, *,
            dry_run: bool, wait: bool, timeout: float | None) -> None:
    """What both commands do with the API's answer: show it, and follow the batch."""
    if dry_run:
        print_dry_run(console, answer)
        return
    print_accepted(console, answer)
    if wait:
        _wait_and_summarize(client, answer, console, api_url, timeout)


def reprocess(*, model: str, to_model: str, since: str | None, prompt: str | None,
              on_error: str, dry_run: bool, wait: bool, timeout: float | None,
              api_url: str, api_key: str) -> None:
    """`editq reprocess`: run a model's stored jobs again on another model."""
    filters: dict[str, Any] = {"model": model}
    if since:
        filters["created_after"] = since
    override: dict[str, Any] = {"model": to_model}
    if prompt is not None:
        override["prompt"] = prompt
    body = {"reprocess": {"filter": filters, "override": override}, "on_error": on_error,
            "dry_run": dry_run}
    console = make_console()
    client = ApiClient(api_url, api_key, timeout=300)
    with api_calls(console, api_url, f"reprocessing {model} on {to_model}"):
        answer = client.create_batch(body, idempotency_key=_invocation_key())
    _follow(client, answer, console, api_url, dry_run=dry_run, wait=wait, timeout=timeout)
