"""How the CLI speaks: an error is one line on stderr with the problem's code and what to do;
tables fit the terminal; `--json` prints the API's answer for scripts, and nothing else.

Every command runs inside `Main.invoke` (cli/main.py), which turns the failures a user
meets (an API problem, an API that is not there, a file that cannot be written) into
`explain`'s one line and exit status 1, never a traceback.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console

# What to do about a problem, by its code: the API's `detail` says what went wrong.
HINTS = {
    "unauthorized": "check EDITQ_API_KEY (`editq keys create --tenant NAME` makes a key)",
    "forbidden": "this needs an admin key (`editq keys create --admin`)",
    "budget_exceeded": "raise the budget with `editq budget set`, or wait for next month",
    "plan_limit_exceeded": "wait until the period resets, or move the tenant to another "
    "plan (`editq keys create --existing --plan`)",
    "provider_not_configured": "set the provider's API key (EDITQ_WAVESPEED_API_KEY or "
    "EDITQ_STABILITY_API_KEY) where the API and workers run",
    "unknown_model": "`editq models` lists the models",
    "unsupported_operation": "`editq models` lists each model's operations",
    "image_too_large": "send a smaller image",
    "request_too_large": "send large images by URL, or as a file (the CLI uploads files "
    "over 4 MiB itself)",
    "database_unavailable": "retry in a moment",
    "storage_unavailable": "retry in a moment",
    "rate_limited": "retry in a moment",
}


class CliError(click.ClickException):
    """An error said in one line (newlines in a message become "; ")."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(part.strip() for part in message.splitlines() if part.strip()))


def make_console(stderr: bool = False) -> Console:
    """A console as wide as the terminal (COLUMNS, else 80 when it is not a terminal)."""
    return Console(highlight=False, stderr=stderr)


def say(console: Console, text: str, whole: bool = False) -> None:
    """A plain line (never read as markup), wrapped to the terminal; `whole`: a value to
    copy (a key, a URL, a command) is never broken, the terminal wraps it as it likes."""
    if whole:
        console.print(text, markup=False, soft_wrap=True)
    else:
        console.print(text, markup=False, overflow="fold")


def print_json(value: Any) -> None:
    """An answer as the API gave it: indented JSON on stdout, one document per command."""
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def problem_line(status: int, problem: dict[str, Any]) -> str:
    """An API problem as one line: what went wrong, (status code), what to do."""
    code = problem.get("code") or f"http_{status}"
    detail = str(problem.get("detail") or problem.get("title") or "no detail")
    refusals = problem.get("refusals") or []
    if refusals:
        detail += ": " + "; ".join(f"{r.get('model')}: {r.get('detail')}" for r in refusals)
    hint = HINTS.get(str(code))
    return f"{detail} ({status} {code})" + (f"; {hint}" if hint else "")


def explain(exc: BaseException) -> str | None:
    """The one line for a failure a user can meet, or None for a bug (which keeps its
    traceback: that one is for us). The API's problems and the connection errors come as
    editq_client raises them (cli/remote.py, cli/batch.py, cli/compare.py, cli/demo.py)."""
    import httpx
    from editq_client import APIConnectionError, APIStatusError, EditqError

    if isinstance(exc, APIStatusError):
        return problem_line(exc.status or 0, exc.problem)
    if isinstance(exc, APIConnectionError):
        # the client's last try failed: say it as that try's httpx error
        if isinstance(exc.__cause__, httpx.RequestError):
            return explain(exc.__cause__)
        return f"cannot reach the API ({exc.detail}); is it running, and is EDITQ_API_URL right?"
    if isinstance(exc, EditqError):
        # on this side (storage refusing an image, a wait past its time, no key...)
        where = f"{exc.status} {exc.code}" if exc.status else exc.code
        return f"{exc.detail} ({where})"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"{exc.request.method} {_where(exc.request)} answered {exc.response.status_code}"
    if isinstance(exc, httpx.RequestError):
        reason = str(exc) or type(exc).__name__
        return (
            f"cannot reach the API at {_where(exc.request, base=True)} ({reason}); is it "
            "running, and is EDITQ_API_URL right?"
        )
    if isinstance(exc, json.JSONDecodeError):
        return "the answer is not JSON: is EDITQ_API_URL editq's API?"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    return None


def _where(request: Any, base: bool = False) -> str:
    try:
        url = request.url
    except RuntimeError:  # (an error raised before its request was made)
        return "the API"
    return f"{url.scheme}://{url.netloc.decode()}" if base else str(url.copy_with(query=None))
