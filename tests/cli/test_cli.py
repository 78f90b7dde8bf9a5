"""The `editq` command, run as a user runs it: a subprocess with environment variables."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import create_engine, inspect, select

from shared.db import session_scope
from shared.migrate import current_head, upgrade
from shared.models import ModelBudget, Tenant
from shared.tenants import authenticate
from tests.conftest import Live
from tests.helpers import image_bytes, wait_for

pytestmark = pytest.mark.timeout(90)

EDITQ = [sys.executable, "-m", "cli.main"]


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 60,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`editq ARGS` as a user runs it, in an 80-column terminal's width (COLUMNS=80)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDITQ_")}
    return subprocess.run(EDITQ + args, env={**clean, "COLUMNS": "80", **(env or {})},
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def overflowing(output: str, columns: int = 80) -> list[str]:
    """The lines wider than `columns`, but for one whole value to copy (a path, URL or key
    longer than the rest of its line), which the CLI never breaks: the terminal wraps it."""
    return [line for line in output.splitlines()
            if len(line) > columns
            and len(line) - max(len(word) for word in line.split()) > columns // 2]


def test_db_upgrade_creates_the_schema_at_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = run(["db", "upgrade"], {"EDITQ_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"tenants", "api_keys", "jobs", "job_events", "alembic_version"} <= tables
    with create_engine(url).connect() as conn:
        from sqlalchemy import text

        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == \
            current_head()


def test_worker_nice_lowers_the_cpu_priority_of_the_worker_and_its_threads(
        tmp_path: Path) -> None:
    # given a worker started with --nice 7 (an in-memory broker: no job is needed)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDITQ_")}
    env = {**clean, "EDITQ_DATABASE_URL": f"sqlite:///{tmp_path / 'nice.db'}",
           "EDITQ_BROKER_URL": "memory://", "EDITQ_S3_ENDPOINT_URL": "http://127.0.0.1:9"}
    worker = subprocess.Popen([*EDITQ, "worker", "--nice", "7", "--concurrency", "2"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def nice_values() -> set[int] | None:
            """The nice value of each of its threads, once it runs several."""
            tasks = Path(f"/proc/{worker.pid}/task")
            values = set()
            for task in tasks.iterdir() if tasks.exists() else []:
                with contextlib.suppress(OSError):
                    stat = (task / "stat").read_text()
                    values.add(int(stat.rsplit(")", 1)[1].split()[16]))
            return values if len(list(tasks.iterdir())) > 1 else None

        # then every thread it runs is 7 nicer than this test (usually 0 -> 7)
        base = os.getpriority(os.PRIO_PROCESS, 0)
        assert wait_for(nice_values, 30, "the worker's threads") == {min(19, base + 7)}
    finally:
        worker.terminate()
        worker.wait(20)


def test_keys_create_prints_the_key_last_and_stores_only_its_hash(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    env = {"EDITQ_DATABASE_URL": url}
    upgrade(url)  # (`editq db upgrade` itself is tested above)
    result = run(["keys", "create", "--tenant", "acme"], env)
    assert result.returncode == 0, result.stderr
    key = result.stdout.split()[-1]
    with session_scope(url) as session:
        assert authenticate(session, key).tenant_name == "acme"
    assert key.encode() not in Path(url.removeprefix("sqlite:///")).read_bytes()


def test_keys_create_sets_the_tenants_budgets_and_plan(tmp_path: Path) -> None:
    # given a migrated database
    url = f"sqlite:///{tmp_path / 'budgets.db'}"
    env = {"EDITQ_DATABASE_URL": url}
    upgrade(url)  # (`editq db upgrade` itself is tested above)
    # when a key is created with a monthly budget, a model budget and a plan
    result = run(["keys", "create", "--tenant", "acme", "--monthly-budget", "50",
                  "--model-budget", "gpt-image-1-edit=10.5", "--plan", "pro"], env)
    # then the tenant has them, and the output says so before the key
    assert result.returncode == 0, result.stderr
    assert "plan pro, monthly budget 50 USD, gpt-image-1-edit 10.5 USD/month" in result.stdout
    with session_scope(url) as session:
        tenant = session.scalars(select(Tenant).where(Tenant.name == "acme")).one()
        model_budget = session.scalars(select(ModelBudget)).one()
        assert (tenant.plan, tenant.monthly_budget) == ("pro", Decimal("50"))
        assert (model_budget.model, model_budget.monthly_budget) == ("gpt-image-1-edit",
                                                                    Decimal("10.5"))
    # and a second key for the same tenant can remove the budget
    assert run(["keys", "create", "--tenant", "acme", "--monthly-budget", "none"],
               env).returncode == 0
    with session_scope(url) as session:
        assert session.scalar(select(Tenant.monthly_budget)
                              .where(Tenant.name == "acme")) is None


@pytest.mark.parametrize(("args", "message"), [
    (["--monthly-budget", "-1"], "--monthly-budget"),
    (["--monthly-budget", "lots"], "decimal"),
    (["--monthly-budget", "0.0000001"], "6 decimals"),
    (["--model-budget", "no-such-model=1"], "unknown model"),
    (["--model-budget", "qwen-edit"], "MODEL=USD"),
    (["--plan", "platinum"], "platinum"),
])
def test_keys_create_refuses_bad_limits(tmp_path: Path, args: list[str], message: str) -> None:
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    env = {"EDITQ_DATABASE_URL": url}
    upgrade(url)  # (`editq db upgrade` itself is tested above)
    result = run(["keys", "create", "--tenant", "acme", *args], env)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_unsafe_settings_are_refused_with_a_reason_and_no_traceback() -> None:
    result = run(["db", "upgrade"], {"EDITQ_DATABASE_URL": "mysql://db/editq"})
    assert result.returncode == 1
    assert "refusing to start" in result.stderr and "database_url" in result.stderr
    assert "Traceback" not in result.stderr
    result = run(["api"], {"EDITQ_WAVESPEED_BASE_URL": "http://api.example.com"})
    assert result.returncode == 1 and "https" in result.stderr


def test_submit_waits_and_saves_the_outputs(live: Live, tmp_path: Path) -> None:
    client = live.client("cli-submit")
    source = tmp_path / "in.png"
    source.write_bytes(image_bytes((50, 40)))
    out = tmp_path / "out"
    result = run(["submit", str(source), "--operation", "rotate", "--option", "angle=90",
                  "--out", str(out)],
                 {"EDITQ_API_URL": live.api_url,
                  "EDITQ_API_KEY": client.http.headers["authorization"].split()[1]})
    assert result.returncode == 0, result.stdout + result.stderr
    [saved] = list(out.iterdir())
    assert Image.open(saved).size == (40, 50)


def leftover_processes(marker: Path) -> list[str]:
    """Processes whose working folder or command line names `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cwd.startswith(str(marker)) or str(marker) in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_demo_runs_every_sample_and_leaves_no_process(tmp_path: Path) -> None:
    # given nothing running but what the demo starts
    workdir, out = tmp_path / "work", tmp_path / "out"
    # when the demo runs (on this machine it takes about 17 s; 100 s is a generous bound)
    result = run(["demo", "--workdir", str(workdir), "--out", str(out)], timeout=100)
    # then it finished, with every sample edited and saved, Stability's among them
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if "succeeded" in line.split()
            and line.split()[-1].endswith((".png", ".jpg", ".webp"))]
    assert len(rows) == 13 + 3, result.stdout  # 13 samples, 3 compared models
    assert {"stability-remove-background", "stability-upscale-fast"} <= {
        word for row in rows for word in row}
    # and its files in a folder of this run's own, each output named by its sample
    [run_folder] = list(out.iterdir())
    assert re.fullmatch(r"run-\d{8}-\d{6}", run_folder.name)
    summary = json.loads((run_folder / "summary.json").read_text())
    saved = sorted(p for p in run_folder.iterdir() if p.suffix in (".png", ".jpg", ".webp"))
    assert len(saved) == 13 == len(summary)
    assert {p.name for p in saved} == {name for job in summary for name in job["files"]}
    assert all(job["job"].startswith("job_") for job in summary)
    for path in saved:
        Image.open(path).verify()
    # and a comparison among its results, with its contact sheet
    compared = sorted(p.name for p in (run_folder / "comparison").iterdir())
    assert "contact-sheet.png" in compared and len(compared) == 4
    # and every line fits an 80-column terminal, but for whole paths and URLs
    assert overflowing(result.stdout) == [], result.stdout
    # and a finished batch and a delivered, signed webhook
    assert re.search(r"batch bat_\w+: completed, 3 of 3 succeeded", result.stdout)
    assert re.search(r"webhook: job.succeeded delivered to the receiver, signature verified",
                     result.stdout)
    # and nothing it started is still alive
    assert leftover_processes(workdir) == []


def test_demo_keep_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDITQ_")}
    proc = subprocess.Popen([*EDITQ, "demo", "--keep", "--workdir", str(workdir),
                             "--out", str(tmp_path / "out")],
                            env=clean, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("API key:"):
                break
        assert lines and lines[-1].startswith("API key: eq_"), "".join(lines)[-3000:]
        console = next(line for line in lines if line.startswith("Console: "))
        assert httpx.get(console.split()[1], timeout=10).status_code == 200
        assert leftover_processes(workdir)  # the stack is up
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: leftover_processes(workdir) == [], 10, "the demo's children to exit")
