"""The bodies of `editq batch submit` and `editq reprocess` (cli/main.py declares them).

Both POST /v1/batches, print what was accepted (and which lines or parents were
not), and with --wait follow the batch with a progress bar until it is completed
or canceled, then print a summary; with --json, the API's answers instead. An API or
network problem ends the command in one line and exit status 1 (cli/output.py).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import click
import editq_client
import httpx
from editq_client import UPLOAD_OVER, Client, EditqError, Priority
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.output import CliError, explain, make_console, print_json, say
from cli.tables import row, table

STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
BATCH_FINISHED = ("completed", "canceled")
OnError = Literal["reject", "skip"]
POLL_SECONDS = 1.0


@contextmanager
def api_calls(console: Console, doing: str, as_json: bool = False) -> Iterator[None]:
    """A refused batch lists its invalid lines (a table on stdout) before the one line that
    says why; every problem's line says what was being done."""
    try:
        yield
    except (EditqError, httpx.HTTPError) as exc:
        problem = exc.problem if isinstance(exc, EditqError) else {}
        if (
            isinstance(problem.get("errors"), list)
            and problem.get("code") == "batch_invalid"
            and not as_json
        ):
            print_invalid(console, problem["errors"], problem.get("invalid"))
        raise CliError(f"{doing}: {explain(exc) or exc}") from None


def parse_defaults(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--defaults") from None
    if not isinstance(value, dict):
        raise click.BadParameter(
            'must be a JSON object, e.g. \'{"operation": "grayscale"}\'', param_hint="--defaults"
        )
    return value


def print_invalid(console: Console, errors: list[dict[str, Any]], count: Any = None) -> None:
    """The lines (or, reprocessing, the parent jobs) that are not valid jobs."""
    if not errors:
        return
    shown = (
        f"{len(errors)}"
        if not count or count == len(errors)
        else (f"the first {len(errors)} of {count}")
    )
    with_jobs = any("job_id" in e for e in errors)
    say(console, f"not valid jobs ({shown}):")
    made = table(
        "line",
        *(["job"] if with_jobs else []),
        "code",
        "message",
        right=("line",),
        wrap=("job", "message"),
    )
    for error in errors:
        row(
            made,
            error.get("line", ""),
            *([error.get("job_id", "")] if with_jobs else []),
            error.get("code", ""),
            error.get("message", ""),
        )
    console.print(made)


def print_accepted(console: Console, batch: dict[str, Any]) -> None:
    say(
        console,
        f"batch {batch['id']} accepted: {batch['total']} job(s), estimated "
        f"{batch['cost']['estimated_total']} {batch['cost']['currency']} "
        f"({batch['status']})",
    )
    print_invalid(console, batch.get("invalid") or [])


def print_dry_run(console: Console, answer: dict[str, Any]) -> None:
    say(console, "dry run (nothing was created):")
    made = table(
        "jobs", f"estimated cost ({answer.get('currency', 'USD')})", "budget ok", right=("jobs",)
    )
    row(made, answer["count"], answer["estimated_cost"], "yes" if answer["budget_ok"] else "no")
    console.print(made)
    for budget in (answer.get("budget") or {}).get("budgets") or []:
        if not budget.get("ok", True):
            say(
                console,
                f"over the {budget['scope']} budget of {budget['budget']} USD: "
                f"{budget['spent']} spent, {budget['in_flight']} in flight, "
                f"{budget['remaining']} remaining",
            )
    print_invalid(console, answer.get("invalid") or [])


def progress_detail(batch: dict[str, Any]) -> str:
    """How a batch stands, short enough for an 80-column line beside its bar:
    "7 ok, 1 failed, 2 running | 0.07 of ~0.10 USD"."""
    counts = batch.get("counts") or {}
    words = {
        "succeeded": "ok",
        "failed": "failed",
        "canceled": "canceled",
        "running": "running",
        "queued": "queued",
    }
    parts = [f"{counts[s]} {word}" for s, word in words.items() if counts.get(s)]
    if batch["status"] == "expanding":
        parts.insert(0, f"expanding {batch['expanded']}/{batch['total']}")
    cost = batch["cost"]
    return (", ".join(parts) or batch["status"]) + (
        f" | {cost['so_far']} of ~{cost['estimated_total']} {cost['currency']}"
    )


def follow(
    client: Client,
    batch: dict[str, Any],
    console: Console,
    timeout: float | None,
    poll_seconds: float = POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    quiet: bool = False,
) -> dict[str, Any]:
    """Poll the batch until it is completed or canceled, with a progress bar (the batch's
    id is on the line printed above it)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    columns = (
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}", markup=False),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=quiet) as progress:
        bar = progress.add_task("batch", total=batch["total"], detail=progress_detail(batch))
        while True:
            progress.update(
                bar,
                completed=batch["progress"]["done"],
                total=batch["progress"]["total"],
                detail=progress_detail(batch),
            )
            if batch["status"] in BATCH_FINISHED:
                return batch
            if deadline is not None and time.monotonic() > deadline:
                raise CliError(
                    f"gave up waiting after {timeout:g}s; batch {batch['id']} goes on "
                    f"(GET /v1/batches/{batch['id']})"
                )
            sleep(poll_seconds)
            batch = editq_client.as_json(client.batches.get(batch["id"]))


def print_summary(console: Console, batch: dict[str, Any]) -> None:
    counts, cost = batch["counts"], batch["cost"]
    say(console, f"batch {batch['id']}: {batch['status']}")
    made = table("status", "jobs", right=("jobs",))
    made.show_footer = True
    made.columns[0].footer, made.columns[1].footer = "total", str(sum(counts.values()))
    for status in STATUSES:
        row(made, status, counts.get(status, 0))
    console.print(made)
    say(
        console,
        f"cost so far: {cost['so_far']} {cost['currency']} "
        f"(estimated {cost['estimated_total']} {cost['currency']})",
    )
    say(console, f"manifest: {batch.get('manifest_url') or '(none yet)'}", whole=True)


def _wait_and_summarize(
    client: Client, batch: dict[str, Any], console: Console, timeout: float | None, as_json: bool
) -> None:
    try:
        with api_calls(console, f"following batch {batch['id']}"):
            batch = follow(client, batch, console, timeout, quiet=as_json)
    except KeyboardInterrupt:
        raise CliError(
            f"stopped waiting; batch {batch['id']} goes on (GET /v1/batches/{batch['id']}, "
            f"POST /v1/batches/{batch['id']}/cancel)"
        ) from None
    if as_json:
        print_json(batch)
    else:
        print_summary(console, batch)
    if batch["status"] != "completed":
        raise CliError(f"batch {batch['id']} was {batch['status']}")


def submit_batch(
    *,
    path: Path,
    defaults: str | None,
    on_error: OnError,
    dry_run: bool,
    wait: bool,
    timeout: float | None,
    api_url: str,
    api_key: str,
    priority: Priority = "low",
    as_json: bool = False,
) -> None:
    """`editq batch submit`: upload a JSONL file of job requests as one batch."""
    fields = parse_defaults(defaults) or None
    console = make_console()
    with Client(api_url, api_key, timeout=300) as client:
        with api_calls(console, f"submitting {path.name}", as_json):
            jsonl = with_files(client, path)
            made = (
                client.batches.estimate(jsonl=jsonl, defaults=fields, on_error=on_error)
                if dry_run
                else client.batches.create(
                    jsonl=jsonl,
                    defaults=fields,
                    on_error=on_error,
                    priority=priority,
                    idempotency_key=_invocation_key(),
                )
            )
        answer = editq_client.as_json(made)
        _follow(
            client, answer, console, dry_run=dry_run, wait=wait, timeout=timeout, as_json=as_json
        )


def with_files(client: Client, path: Path) -> bytes:
    """The JSONL, its image fields that name a local file (`"@photos/1.jpg"`, relative to
    the JSONL's folder) replaced by the file: inline if small, else as a direct upload's
    id (`image_field`). Other lines are sent as they are."""
    lines = []
    for raw in path.read_bytes().splitlines():
        if b'"@' not in raw:
            lines.append(raw)
            continue
        item = json.loads(raw)

        def field(value: Any) -> Any:
            if isinstance(value, str) and value.startswith("@"):
                return image_field(client, (path.parent / value[1:]).read_bytes())
            return value

        for name in ("image", "mask"):
            if name in item:
                item[name] = field(item[name])
        if isinstance(item.get("images"), list):
            item["images"] = [field(v) for v in item["images"]]
        lines.append(json.dumps(item).encode())
    return b"\n".join(lines) + b"\n"


def image_field(client: Client, data: bytes) -> str:
    """A file as an image field, as editq_client sends a job's images: base64 up to 4 MiB,
    else sent to storage first (POST /v1/uploads) and named by its upload id."""
    if len(data) > UPLOAD_OVER:
        return client.uploads.create(data)
    return base64.b64encode(data).decode()


def _invocation_key() -> str:
    """One Idempotency-Key per command run: its own retry never makes a second batch,
    and running the command again on purpose does make one."""
    return f"cli-{uuid.uuid4().hex}"


def _follow(
    client: Client,
    answer: dict[str, Any],
    console: Console,
    *,
    dry_run: bool,
    wait: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """What both commands do with the API's answer: show it, and follow the batch. With
    --json: the answer, or with --wait only the finished batch."""
    follows = wait and not dry_run
    if as_json and not follows:
        print_json(answer)
    elif dry_run:
        print_dry_run(console, answer)
    elif not as_json:
        print_accepted(console, answer)
    if follows:
        _wait_and_summarize(client, answer, console, timeout, as_json)


def reprocess(
    *,
    model: str,
    to_model: str,
    since: str | None,
    prompt: str | None,
    on_error: OnError,
    dry_run: bool,
    wait: bool,
    timeout: float | None,
    api_url: str,
    api_key: str,
    priority: Priority = "low",
    as_json: bool = False,
) -> None:
    """`editq reprocess`: run a model's stored jobs again on another model."""
    filters: dict[str, Any] = {"model": model}
    if since:
        filters["created_after"] = since
    override: dict[str, Any] = {"model": to_model}
    if prompt is not None:
        override["prompt"] = prompt
    stored = {"filter": filters, "override": override}
    console = make_console()
    with Client(api_url, api_key, timeout=300) as client:
        with api_calls(console, f"reprocessing {model} on {to_model}", as_json):
            made = (
                client.batches.estimate(reprocess=stored, on_error=on_error)
                if dry_run
                else client.batches.create(
                    reprocess=stored,
                    on_error=on_error,
                    priority=priority,
                    idempotency_key=_invocation_key(),
                )
            )
        answer = editq_client.as_json(made)
        _follow(
            client, answer, console, dry_run=dry_run, wait=wait, timeout=timeout, as_json=as_json
        )
