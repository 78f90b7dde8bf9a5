"""The `editq` command: serve, work, migrate, manage keys, submit, demo."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx
from pydantic import ValidationError

from shared.config import Settings


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; a bad value ends the command with a readable reason."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        reasons = "\n".join(f"  - {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                            for e in exc.errors())
        raise click.ClickException(
            f"refusing to start, the settings are not safe:\n{reasons}") from None


@click.group()
def main() -> None:
    """editq: asynchronous image-edit jobs."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def api(host: str, port: int) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    load_settings()
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port)


@main.command()
@click.option("--concurrency", "-c", type=int, default=None,
              help="threads (default EDITQ_WORKER_CONCURRENCY)")
@click.option("--queues", "-Q", default="interactive,bulk", show_default=True)
@click.option("--loglevel", default="INFO", show_default=True)
def worker(concurrency: int | None, queues: str, loglevel: str) -> None:
    """Run a Celery worker (threads pool) on the given queues."""
    settings = load_settings()
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
              help="one pass (beat runs it every 30 s as the task editq.reap)")
def reaper(once: bool) -> None:
    """Resume running jobs whose worker has gone (expired lease)."""
    from shared.queue import CeleryScheduler, make_celery
    from shared.recovery import recover_expired_leases

    settings = load_settings()
    found = recover_expired_leases(settings, CeleryScheduler(make_celery(settings)))
    click.echo(f"polling resumed: {len(found.polling)}, requeued: {len(found.requeued)}, "
               f"failed as outcome unknown: {len(found.failed)}")


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
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--tenant", required=True, help="tenant name; created if new")
@click.option("--admin", is_flag=True, help="the key may see every tenant")
def keys_create(tenant: str, admin: bool) -> None:
    """Create an API key. It is shown once, as the last word of the output."""
    from shared.db import session_scope
    from shared.tenants import create_api_key

    settings = load_settings()
    with session_scope(settings.database_url) as session:
        key = create_api_key(session, tenant, admin=admin)
    click.echo(f"API key for tenant {tenant} (shown once, store it now): {key}")


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


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--prompt", default=None)
@click.option("--operation", default="general_edit", show_default=True)
@click.option("--model", default=None, help="model id (GET /v1/models)")
@click.option("--option", "options", multiple=True, help="NAME=VALUE, repeatable")
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--out", "out_dir", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--api-url", envvar="EDITQ_API_URL", default="http://127.0.0.1:8000",
              show_default=True)
@click.option("--api-key", envvar="EDITQ_API_KEY", required=True)
def submit(image: Path, prompt: str | None, operation: str, model: str | None,
           options: tuple[str, ...], wait: bool, out_dir: Path, api_url: str,
           api_key: str) -> None:
    """Submit IMAGE for editing; with --wait, save the outputs into --out."""
    from cli.client import ApiClient

    client = ApiClient(api_url, api_key)
    job = client.submit(image.read_bytes(), prompt=prompt, operation=operation, model=model,
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
@click.option("--keep", is_flag=True, help="stay up afterwards and print the API URL and a key")
@click.option("--out", "out_dir", default="demo-output", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--workdir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="keep the database and logs here (default: a temporary folder)")
def demo(keep: bool, out_dir: Path, workdir: Path | None) -> None:
    """Start every embedded piece, run sample edits, save the outputs, print a table."""
    from cli.demo import run_demo

    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        sys.exit(run_demo(out_dir=out_dir, keep=keep, workdir=workdir))
    except KeyboardInterrupt:
        click.echo("interrupted; everything the demo started has been stopped")
        sys.exit(130)


@main.command()
@click.option("--api-url", envvar="EDITQ_API_URL", default="http://127.0.0.1:8000")
def health(api_url: str) -> None:
    """Ask a running API whether it is ready."""
    started = time.monotonic()
    answer = httpx.get(api_url.rstrip("/") + "/readyz", timeout=10)
    click.echo(f"{answer.status_code} in {time.monotonic() - started:.2f}s: {answer.text}")
    sys.exit(0 if answer.status_code == 200 else 1)


def _register_simulators() -> None:
    from cli.sim import sim

    main.add_command(sim)


_register_simulators()

if __name__ == "__main__":
    main()
