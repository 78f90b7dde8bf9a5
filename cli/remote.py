"""The commands that talk to a running API, as a user's scripts do: submit, models,
compare, batch submit, reprocess, health. Each takes --api-url and --api-key (from
EDITQ_API_URL and EDITQ_API_KEY); a problem the API answers, or an API that is not
there, ends the command in one line (cli/output.py, through cli/main.py)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

if TYPE_CHECKING:  # (editq_client is imported when a command runs)
    from editq_client import Priority


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


def image_argument(value: str, hint: str = "IMAGE") -> bytes | str:
    """A file's bytes, or an https:// URL or upload id (upl_...) as given."""
    if value.startswith(("https://", "http://", "upl_")):
        return value
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(
            f"{value!r} is neither a file nor an https:// URL or upload id", param_hint=hint
        )
    return path.read_bytes()


def _api_options(command: Any) -> Any:
    """--api-url and --api-key, from EDITQ_API_URL and EDITQ_API_KEY."""
    command = click.option(
        "--api-key",
        envvar="EDITQ_API_KEY",
        required=True,
        help="a key from `editq keys create` (EDITQ_API_KEY)",
    )(command)
    return click.option(
        "--api-url",
        envvar="EDITQ_API_URL",
        default="http://127.0.0.1:8000",
        show_default=True,
        help="(EDITQ_API_URL)",
    )(command)


as_json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="print the API's answer as JSON on stdout, and nothing else",
)


def _priority_option(default: Priority, help: str) -> Callable[[Any], Any]:
    return click.option("--priority", type=click.Choice(["normal", "low"]), default=default,
                        show_default=True, help=help)


_operation = click.option(
    "--operation", default=None, help="default: the model's only operation, else general_edit"
)


@click.command()
@click.argument("image")
@click.option("--prompt", default=None)
@_operation
@click.option("--model", default=None, help="model id (`editq models`)")
@click.option("--mask", default=None, help="a mask: a file, an https:// URL or an upload id")
@click.option("--option", "options", multiple=True, help="NAME=VALUE, repeatable")
@click.option("--wait/--no-wait", default=True, show_default=True)
@_priority_option("normal", "low: bulk work, which yields to interactive jobs for the "
                  "providers' limits")
@click.option("--out", "out_dir", default=".", type=click.Path(file_okay=False, path_type=Path))
@as_json_option
@_api_options
def submit(
    image: str,
    prompt: str | None,
    operation: str | None,
    model: str | None,
    mask: str | None,
    options: tuple[str, ...],
    wait: bool,
    priority: Priority,
    out_dir: Path,
    as_json: bool,
    api_url: str,
    api_key: str,
) -> None:
    """Submit IMAGE (a file, an https:// URL or an upload id) for editing; with --wait,
    save the outputs into --out. A file over 4 MiB is sent as a direct upload.

    Exits 0 when the job was accepted (and, with --wait, succeeded), 1 otherwise."""
    import editq_client

    from cli.output import CliError, print_json

    with editq_client.Client(api_url, api_key, timeout=90) as client:
        job = client.submit(
            image_argument(image),
            prompt=prompt,
            operation=operation,
            model=model,
            mask=image_argument(mask, "--mask") if mask else None,
            options=_parse_options(options),
            priority=priority,
        )
        if not as_json:
            click.echo(f"submitted {job.id} ({job.model}, {job.status})")
        saved: list[Path] = []
        if wait:
            try:
                job = client.wait(job.id, timeout=600)
            except editq_client.JobTimeout as exc:  # said below, as a job that did not succeed
                job = exc.job or client.get(job.id)
            if job.status == "succeeded":
                out_dir.mkdir(parents=True, exist_ok=True)
                # each output as <job id>-<n>.<ext>
                saved = [output.save(out_dir) for output in job.outputs]
    if as_json:
        answer = editq_client.as_json(job)  # the job as the API answered it
        if wait and job.status == "succeeded":
            answer["saved"] = [str(path) for path in saved]
        print_json(answer)
    else:
        for path in saved:
            click.echo(f"saved {path}")
    if wait and job.status != "succeeded":
        error = job.error
        raise CliError(
            f"job {job.id} {job.status}: {(error and error.message) or 'no reason'}"
            f" ({(error and error.code) or job.status})"
        )


@click.command()
@click.option("--operation", default=None, help="rank the models that serve it, cheapest first")
@as_json_option
@_api_options
def models(operation: str | None, as_json: bool, api_url: str, api_key: str) -> None:
    """The models: id, tier, provider, price and operations (GET /v1/models)."""
    import editq_client

    from cli.output import make_console, print_json
    from cli.tables import models_table

    with editq_client.Client(api_url, api_key, timeout=90) as client:
        answer = editq_client.as_json(client.models(operation))
    if as_json:
        print_json(answer)
        return
    make_console().print(models_table(answer["data"], ranked=operation is not None))


@click.command()
@click.argument("photo", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--models", required=True, help="2 to 6 model ids, comma-separated")
@click.option("--prompt", default=None)
@_operation
@click.option("--mask", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--option", "options", multiple=True, help="NAME=VALUE, repeatable")
@click.option(
    "--out",
    "out_dir",
    default="compare-output",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--timeout", type=float, default=600, show_default=True, metavar="SECONDS")
@as_json_option
@_api_options
def compare(
    photo: Path,
    models: str,
    prompt: str | None,
    operation: str | None,
    mask: Path | None,
    options: tuple[str, ...],
    out_dir: Path,
    timeout: float,
    as_json: bool,
    api_url: str,
    api_key: str,
) -> None:
    """Run PHOTO on several models side by side; save each output and a contact sheet.

    Exits 0 when every model succeeded, 1 otherwise."""
    from editq_client import Client

    from cli.compare import run_compare
    from cli.output import make_console

    with Client(api_url, api_key, timeout=90) as client:
        code = run_compare(
            client,
            photo,
            [m.strip() for m in models.split(",") if m.strip()],
            prompt=prompt,
            operation=operation,
            options=_parse_options(options),
            mask=mask.read_bytes() if mask else None,
            out_dir=out_dir,
            timeout=timeout,
            console=make_console(),
            as_json=as_json,
        )
    sys.exit(code)


def _batch_options(command: Any) -> Any:
    command = _api_options(command)
    for option in reversed(
        (
            click.option(
                "--on-error",
                type=click.Choice(["reject", "skip"]),
                default="reject",
                show_default=True,
                help="reject: any invalid item refuses the batch; "
                "skip: accept the valid ones and list the others",
            ),
            click.option(
                "--dry-run",
                is_flag=True,
                help="only count and price it, and check the budget; create nothing",
            ),
            click.option(
                "--wait",
                is_flag=True,
                help="follow the batch with a progress bar until it is completed or "
                "canceled, then print a summary",
            ),
            click.option(
                "--timeout",
                type=float,
                default=None,
                metavar="SECONDS",
                help="with --wait, give up waiting after this long (the batch goes on)",
            ),
            _priority_option("low", "normal: the jobs compete with interactive ones for the "
                             "providers' limits; low keeps them to bulk's share"),
            as_json_option,
        )
    ):
        command = option(command)
    return command


@click.group()
def batch() -> None:
    """Batches: many jobs under one id (POST /v1/batches)."""


@batch.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--defaults",
    default=None,
    metavar="JSON",
    help='fields every line takes unless it sets them, e.g. \'{"operation": "grayscale"}\'',
)
@_batch_options
def batch_submit(
    file: Path,
    defaults: str | None,
    on_error: Literal["reject", "skip"],
    dry_run: bool,
    wait: bool,
    timeout: float | None,
    priority: Priority,
    as_json: bool,
    api_url: str,
    api_key: str,
) -> None:
    """Upload FILE, JSONL with one POST /v1/jobs body per line, as one batch.

    An image field may name a local file as "@photos/1.jpg" (relative to FILE's folder):
    it is sent inline, or as a direct upload when over 4 MiB. Prints the batch id and
    the lines that are not valid jobs (line, code, message).
    Exits 0 when the batch was accepted (and, with --wait, completed), 1 otherwise."""
    from cli.batch import submit_batch

    submit_batch(
        path=file,
        defaults=defaults,
        on_error=on_error,
        dry_run=dry_run,
        wait=wait,
        timeout=timeout,
        priority=priority,
        api_url=api_url,
        api_key=api_key,
        as_json=as_json,
    )


@click.command()
@click.option("--model", required=True, help="reprocess the stored jobs of this model")
@click.option("--to-model", required=True, help="the model their new jobs run on")
@click.option(
    "--since",
    default=None,
    metavar="DATE",
    help="only jobs created at or after this ISO date or date-time (UTC)",
)
@click.option("--prompt", default=None, help="the new jobs' prompt (default: each job's own)")
@_batch_options
def reprocess(
    model: str,
    to_model: str,
    since: str | None,
    prompt: str | None,
    on_error: Literal["reject", "skip"],
    dry_run: bool,
    wait: bool,
    timeout: float | None,
    priority: Priority,
    as_json: bool,
    api_url: str,
    api_key: str,
) -> None:
    """Run a model's stored jobs again on another model, reusing their stored inputs.

    With --dry-run, prints how many jobs it would make, their estimated cost and whether
    the budget allows it. Exits 0 when accepted (and, with --wait, completed), 1 otherwise."""
    from cli.batch import reprocess as run_reprocess

    run_reprocess(
        model=model,
        to_model=to_model,
        since=since,
        prompt=prompt,
        on_error=on_error,
        dry_run=dry_run,
        wait=wait,
        timeout=timeout,
        priority=priority,
        api_url=api_url,
        api_key=api_key,
        as_json=as_json,
    )


@click.command()
@click.option("--api-url", envvar="EDITQ_API_URL", default="http://127.0.0.1:8000")
def health(api_url: str) -> None:
    """Ask a running API whether it is ready."""
    import httpx

    started = time.monotonic()
    answer = httpx.get(api_url.rstrip("/") + "/readyz", timeout=10)
    click.echo(f"{answer.status_code} in {time.monotonic() - started:.2f}s: {answer.text}")
    sys.exit(0 if answer.status_code == 200 else 1)


COMMANDS = [submit, models, compare, batch, reprocess, health]
