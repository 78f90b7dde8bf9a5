"""What the CLI prints, as a user's terminal and scripts see it: every failure one line on
stderr with exit status 1 and no traceback, `--json` for scripts, and output that fits
80 columns (`run` sets COLUMNS=80). Against the shared live stack, as subprocesses."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from cli.stack import free_port
from tests.cli.test_cli import overflowing, run
from tests.conftest import Live
from tests.helpers import b64, image_bytes

pytestmark = pytest.mark.timeout(120)


def key_of(live: Live, tenant: str) -> str:
    return str(
        live.client(f"{tenant}-{uuid.uuid4().hex[:8]}").http.headers["authorization"].split()[1]
    )


def env_of(api_url: str, key: str) -> dict[str, str]:
    return {"EDITQ_API_URL": api_url, "EDITQ_API_KEY": key}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes((96, 72)))
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"image": b64(image_bytes((40 + n, 30))), "operation": "grayscale"}) + "\n"
            for n in range(3)
        )
    )
    return {"photo": photo, "jsonl": jsonl, "out": tmp_path / "out"}


def api_commands(files: dict[str, Path]) -> dict[str, list[str]]:
    """Every command that calls the API, with arguments it accepts."""
    return {
        "submit": [
            "submit",
            str(files["photo"]),
            "--operation",
            "grayscale",
            "--out",
            str(files["out"]),
        ],
        "models": ["models"],
        "compare": [
            "compare",
            str(files["photo"]),
            "--models",
            "qwen-edit,seededit-v3",
            "--prompt",
            "blue",
            "--out",
            str(files["out"]),
        ],
        "batch submit": ["batch", "submit", str(files["jsonl"])],
        "reprocess": [
            "reprocess",
            "--model",
            "local-pillow",
            "--to-model",
            "local-pillow",
            "--dry-run",
        ],
        "health": ["health"],
    }


def one_line_failure(result: object) -> str:
    """Then: exit status 1, no traceback, stdout empty, stderr exactly one line."""
    import subprocess

    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return str(lines[0])


@pytest.mark.parametrize(
    "command", ["submit", "models", "compare", "batch submit", "reprocess", "health"]
)
def test_an_api_that_is_not_there_is_one_line(command: str, files: dict[str, Path]) -> None:
    # given no API at the address
    nowhere = f"http://127.0.0.1:{free_port()}"
    # when a command calls it
    result = run(api_commands(files)[command], env_of(nowhere, "eq_x"))
    # then it says so in one line, with the address and what to check
    line = one_line_failure(result)
    assert f"cannot reach the API at {nowhere}" in line and "EDITQ_API_URL" in line, line


@pytest.mark.parametrize("command", ["submit", "models", "compare", "batch submit", "reprocess"])
def test_an_api_problem_is_one_line_with_its_code_and_what_to_do(
    live: Live, command: str, files: dict[str, Path]
) -> None:
    # given a key the API does not know
    # when a command calls the API with it (and with --json: stdout stays empty)
    args = api_commands(files)[command]
    result = run(
        [*args, *(["--json"] if command != "health" else [])], env_of(live.api_url, "eq_not-a-key")
    )
    # then the problem is one line: its detail, its status and code, and what to do
    line = one_line_failure(result)
    assert "(401 unauthorized)" in line and "EDITQ_API_KEY" in line, line


def test_a_refused_job_says_why_in_one_line(live: Live, files: dict[str, Path]) -> None:
    key = key_of(live, "cli-refused")
    result = run(
        ["submit", str(files["photo"]), "--model", "no-such-model"], env_of(live.api_url, key)
    )
    line = one_line_failure(result)
    assert "(422 unknown_model)" in line and "editq models" in line, line


def test_submit_json_prints_the_job_and_nothing_else(live: Live, files: dict[str, Path]) -> None:
    key = key_of(live, "cli-json")
    # when a job is submitted and waited for, with --json
    result = run(
        [
            "submit",
            str(files["photo"]),
            "--operation",
            "flip",
            "--json",
            "--out",
            str(files["out"]),
        ],
        env_of(live.api_url, key),
    )
    # then stdout is the finished job, with the files it saved
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded" and job["operation"] == "flip"
    assert [Path(p).exists() for p in job["saved"]] == [True]
    # and without waiting, the accepted job
    queued = run(
        ["submit", str(files["photo"]), "--operation", "blur", "--no-wait", "--json"],
        env_of(live.api_url, key),
    )
    assert json.loads(queued.stdout)["id"].startswith("job_")


def test_a_single_operation_model_needs_no_operation_from_the_cli(
    live: Live, files: dict[str, Path]
) -> None:
    key = key_of(live, "st-cli-single")  # ("st-": the Stability billing check counts it)
    result = run(
        [
            "submit",
            str(files["photo"]),
            "--model",
            "stability-remove-background",
            "--no-wait",
            "--json",
        ],
        env_of(live.api_url, key),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["operation"] == "remove_background"


def test_batch_json_prints_the_finished_batch(live: Live, files: dict[str, Path]) -> None:
    key = key_of(live, "cli-batch-json")
    dry = run(
        ["batch", "submit", str(files["jsonl"]), "--dry-run", "--json"], env_of(live.api_url, key)
    )
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["count"] == 3
    done = run(
        ["batch", "submit", str(files["jsonl"]), "--wait", "--timeout", "60", "--json"],
        env_of(live.api_url, key),
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    batch = json.loads(done.stdout)
    assert (batch["status"], batch["counts"]["succeeded"]) == ("completed", 3)


def test_batch_progress_and_summary_fit_80_columns(live: Live, files: dict[str, Path]) -> None:
    key = key_of(live, "cli-batch-80")
    result = run(
        ["batch", "submit", str(files["jsonl"]), "--wait", "--timeout", "60"],
        env_of(live.api_url, key),
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert overflowing(result.stdout) == [], result.stdout
    # the progress line says how the jobs stand in words
    assert "3/3" in result.stdout and "3 ok | 0 of ~0 USD" in result.stdout, result.stdout


def test_compare_json_and_its_table(live: Live, files: dict[str, Path]) -> None:
    key = key_of(live, "cli-compare-json")
    args = [
        "compare",
        str(files["photo"]),
        "--models",
        "qwen-edit,seededit-v3",
        "--prompt",
        "make it blue",
        "--out",
        str(files["out"]),
    ]
    as_json = run([*args, "--json"], env_of(live.api_url, key), timeout=90)
    assert as_json.returncode == 0, as_json.stderr
    comparison = json.loads(as_json.stdout)
    assert {r["model"] for r in comparison["results"]} == {"qwen-edit", "seededit-v3"}
    assert all(Path(p).exists() for p in comparison["saved"].values())
    assert Path(comparison["contact_sheet"]).exists()
    table = run(args, env_of(live.api_url, key), timeout=90)
    assert table.returncode == 0, table.stderr
    assert overflowing(table.stdout) == [], table.stdout
    assert "2 succeeded" in table.stdout  # the bar says how the models stand


def test_models_fits_80_columns_and_has_json(live: Live) -> None:
    key = key_of(live, "cli-models")
    listed = run(["models"], env_of(live.api_url, key))
    assert listed.returncode == 0, listed.stderr
    assert overflowing(listed.stdout) == [], listed.stdout
    as_json = json.loads(run(["models", "--json"], env_of(live.api_url, key)).stdout)
    ids = {m["id"] for m in as_json["data"]}
    # every model's id is on the table whole, on one line
    assert {word for line in listed.stdout.splitlines() for word in line.split()} >= ids
    ranked = run(["models", "--operation", "inpaint"], env_of(live.api_url, key))
    assert ranked.returncode == 0 and "stability-inpaint" in ranked.stdout

