"""`editq batch submit` and `editq reprocess`, run as a user runs them (a subprocess with
EDITQ_API_URL and EDITQ_API_KEY) against the shared live stack: an API, a worker that
expands batches and runs their jobs, and beat, which feeds the bulk queue and finishes
batches."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cli.stack import free_port
from tests.api_client import ApiClient
from tests.cli.test_cli import run
from tests.conftest import Live
from tests.helpers import b64, image_bytes

# The first test also waits for the live stack to start.
pytestmark = pytest.mark.timeout(90)


def env_of(live: Live, key: str) -> dict[str, str]:
    return {"EDITQ_API_URL": live.api_url, "EDITQ_API_KEY": key}


def rows(output: str) -> list[list[str]]:
    """Every line, split into words (the tables have no vertical rules)."""
    return [line.split() for line in output.splitlines() if line.strip()]


def line_starting(output: str, prefix: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(prefix))


@dataclass
class Submitted:
    client: ApiClient
    key: str
    batch_id: str
    stdout: str
    stderr: str
    returncode: int


@pytest.fixture(scope="module")
def submitted(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Submitted:
    """A tenant's JSONL of six local-pillow grayscale items and one line that is not JSON,
    sent with `editq batch submit --on-error skip --wait`."""
    client = live.client(f"cli-batch-{uuid.uuid4().hex[:8]}")
    key = client.http.headers["authorization"].split()[1]
    lines = [json.dumps({"image": b64(image_bytes((40 + n, 30))), "metadata": {"n": n}})
             for n in range(6)]
    lines.insert(3, '{"image": oops}')  # line 4
    path = tmp_path_factory.mktemp("batch") / "items.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = run(["batch", "submit", str(path), "--on-error", "skip", "--wait",
                  "--timeout", "50", "--defaults",
                  '{"operation": "grayscale", "model": "local-pillow"}'],
                 env_of(live, key), timeout=60)
    accepted = line_starting(result.stdout, "batch bat_") if "batch bat_" in result.stdout \
        else ""
    return Submitted(client, key, accepted.split()[1] if accepted else "", result.stdout,
                     result.stderr, result.returncode)


def test_batch_submit_sends_an_idempotency_key_of_its_own(submitted: Submitted,
                                                          live: Live) -> None:
    # given the batch `editq batch submit` made (the fixture)
    from sqlalchemy import select

    from shared.db import session_scope
    from shared.models import Batch

    with session_scope(live.settings.database_url) as session:
        batch = session.scalars(select(Batch).where(Batch.id == submitted.batch_id)).one()
    # then it was sent with a key of the command's own, so its retry cannot make a second
    assert batch.idempotency_key is not None and batch.idempotency_key.startswith("cli-")


def test_batch_submit_waits_for_completion_and_prints_a_summary(submitted: Submitted) -> None:
    # given a JSONL of six valid items and an invalid line 4, sent with --on-error skip
    # when `editq batch submit --wait` runs (the fixture)
    out = submitted.stdout
    # then it exits 0, having printed the batch id, with the six valid lines
    assert submitted.returncode == 0, out + submitted.stderr
    assert "Traceback" not in submitted.stderr
    assert line_starting(out, f"batch {submitted.batch_id} accepted:").startswith(
        f"batch {submitted.batch_id} accepted: 6 job(s)")
    # and the line it left out, with its number and code
    assert any(r[:2] == ["4", "invalid_json"] for r in rows(out)), out
    # and a summary: completed, six succeeded, the cost against the estimate, the manifest
    assert f"batch {submitted.batch_id}: completed" in out
    assert ["succeeded", "6"] in rows(out) and ["failed", "0"] in rows(out)
    assert ["total", "6"] in rows(out)
    assert line_starting(out, "cost so far:") == "cost so far: 0 USD (estimated 0 USD)"
    manifest_url = line_starting(out, "manifest: ").removeprefix("manifest: ")
    # and the manifest it names has the six jobs, in the file's order
    manifest = httpx.get(manifest_url, timeout=10)
    assert manifest.status_code == 200, manifest.text
    lines = [json.loads(line) for line in manifest.text.splitlines()]
    assert [(r["index"], r["status"]) for r in lines] == [(n, "succeeded") for n in range(6)]
    # and the API agrees, results streamed in the same order
    assert submitted.client.get_batch(submitted.batch_id)["status"] == "completed"
    results = list(submitted.client.batch_results(submitted.batch_id))
    assert [r["id"] for r in results] == [r["id"] for r in lines]


def test_reprocess_dry_run_prints_the_count_and_creates_nothing(
        live: Live, submitted: Submitted) -> None:
    # given the tenant's six local-pillow jobs
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    before = [b["id"] for b in submitted.client.list_batches()["data"]]
    # when their reprocessing is dry-run
    result = run(["reprocess", "--model", "local-pillow", "--to-model", "local-pillow",
                  "--dry-run"], env_of(live, submitted.key))
    # then it prints the count, the estimate and the budget's verdict
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dry run" in result.stdout
    assert ["6", "0", "yes"] in rows(result.stdout), result.stdout
    # and no batch was made
    assert [b["id"] for b in submitted.client.list_batches()["data"]] == before


def test_reprocess_makes_children_of_the_stored_jobs_and_waits_for_them(
        live: Live, submitted: Submitted) -> None:
    # given the tenant's six local-pillow jobs (from the batch)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    # when they are reprocessed (created since 2000-01-01), waiting for the end
    result = run(["reprocess", "--model", "local-pillow", "--to-model", "local-pillow",
                  "--since", "2000-01-01", "--wait", "--timeout", "50"],
                 env_of(live, submitted.key), timeout=60)
    # then a batch of six children completes
    assert result.returncode == 0, result.stdout + result.stderr
    batch_id = line_starting(result.stdout, "batch bat_").split()[1]
    assert f"batch {batch_id}: completed" in result.stdout
    assert ["succeeded", "6"] in rows(result.stdout)
    # and each child names its parent, one of the first batch's jobs
    parents = {r["id"] for r in submitted.client.batch_results(submitted.batch_id)}
    children = list(submitted.client.batch_results(batch_id))
    assert {c["parent_job_id"] for c in children} == parents
    assert {c["status"] for c in children} == {"succeeded"}


def test_a_refused_batch_lists_its_invalid_lines_and_exits_1(live: Live,
                                                             tmp_path: Path) -> None:
    # given a JSONL whose second line is not an image
    client = live.client(f"cli-refused-{uuid.uuid4().hex[:8]}")
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"image": b64(image_bytes()), "operation": "grayscale"}) + "\n"
                    + json.dumps({"image": b64(b"not an image"), "operation": "grayscale"})
                    + "\n")
    # when it is submitted (on_error reject, the default)
    result = run(["batch", "submit", str(path)],
                 env_of(live, client.http.headers["authorization"].split()[1]))
    # then the command says why, lists line 2, exits 1, and no batch exists
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "(422 batch_invalid)" in result.stderr
    assert any(r[:2] == ["2", "invalid_image"] for r in rows(result.stdout)), result.stdout
    assert client.list_batches()["data"] == []


def test_api_problems_are_one_readable_line(live: Live, tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"image": b64(image_bytes()), "operation": "grayscale"}))
    # a key the API does not know
    bad_key = run(["batch", "submit", str(path)], env_of(live, "eq_not-a-key"))
    assert bad_key.returncode == 1 and "Traceback" not in bad_key.stderr
    assert "(401 unauthorized)" in bad_key.stderr, bad_key.stderr
    # an API that is not there
    nowhere = run(["reprocess", "--model", "a", "--to-model", "b", "--dry-run"],
                  {"EDITQ_API_URL": f"http://127.0.0.1:{free_port()}",
                   "EDITQ_API_KEY": "eq_x"})
    assert nowhere.returncode == 1 and "Traceback" not in nowhere.stderr
    assert "cannot reach the API" in nowhere.stderr, nowhere.stderr
    # a --defaults that is not a JSON object is a usage error
    bad_defaults = run(["batch", "submit", str(path), "--defaults", "[1]"],
                       env_of(live, "eq_x"))
    assert bad_defaults.returncode == 2 and "--defaults" in bad_defaults.stderr


def test_batch_submit_sends_local_files_inline_or_as_direct_uploads(
        live: Live, tmp_path: Path) -> None:
    # given a JSONL whose lines name local files: a small one, and one over 4 MiB
    from PIL import Image

    from shared.db import session_scope
    from shared.models import Job

    (tmp_path / "small.png").write_bytes(image_bytes((50, 40)))
    noise = Image.merge("RGB", [Image.effect_noise((1300, 1300), 90) for _ in range(3)])
    noise.save(tmp_path / "big.png")
    assert (tmp_path / "big.png").stat().st_size > ApiClient.upload_over
    path = tmp_path / "items.jsonl"
    path.write_text('{"image": "@small.png"}\n{"image": "@big.png"}\n')
    client = live.client(f"cli-files-{uuid.uuid4().hex[:8]}")
    key = client.http.headers["authorization"].split()[1]
    # when `editq batch submit --wait` sends it
    result = run(["batch", "submit", str(path), "--wait", "--timeout", "60", "--defaults",
                  '{"operation": "grayscale"}'], env_of(live, key), timeout=80)
    # then both jobs ran: the small file inline, the big one as a direct upload
    assert result.returncode == 0, result.stdout + result.stderr
    batch_id = line_starting(result.stdout, "batch bat_").split()[1]
    with session_scope(live.settings.database_url) as session:
        refs = [r for (r,) in session.query(Job.input_refs).filter(Job.batch_id == batch_id)
                .order_by(Job.batch_index)]
    assert refs[0] is None  # inline: stored at acceptance, by its keys
    assert list(refs[1]["images"][0]) == ["upload"]


def test_priority_is_said_by_submit_and_batch_submit(live: Live, tmp_path: Path) -> None:
    # given a tenant, an image and a JSONL of one item
    client = live.client(f"cli-priority-{uuid.uuid4().hex[:8]}")
    env = env_of(live, client.http.headers["authorization"].split()[1])
    (tmp_path / "in.png").write_bytes(image_bytes((30, 20)))
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"image": b64(image_bytes()), "operation": "grayscale"}) + "\n")
    # when a job is submitted at low priority, and the batch at normal
    job = run(["submit", str(tmp_path / "in.png"), "--operation", "grayscale",
               "--priority", "low", "--no-wait", "--json"], env)
    batch = run(["batch", "submit", str(path), "--priority", "normal", "--json"], env)
    # then each was made with it (a batch is low unless it says so)
    assert job.returncode == 0 and batch.returncode == 0, job.stderr + batch.stderr
    assert client.get(json.loads(job.stdout)["id"])["priority"] == "low"
    assert client.get_batch(json.loads(batch.stdout)["id"])["priority"] == "normal"
    # and a priority editq does not know is a usage error
    wrong = run(["batch", "submit", str(path), "--priority", "urgent"], env)
    assert wrong.returncode == 2 and "--priority" in wrong.stderr
