"""The official WaveSpeed SDK (the reference client) works against the simulator unchanged.

If the SDK and the simulator disagree, the simulator is wrong about the
provider, and editq's client tests against it would prove nothing.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from wavespeed import Client

from simulators.common import RunningServer, serve_in_thread
from simulators.wavespeed import WaveSpeedSimConfig, create_app
from tests.helpers import b64, image_bytes, wait_for

pytestmark = pytest.mark.timeout(60)

KEY = "sdk-key"
IMG = "data:image/png;base64," + b64(image_bytes((64, 48)))


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningServer]:
    config = WaveSpeedSimConfig(api_key=KEY, latency="0.2", sync_timeout=1.0, seed=3)
    with serve_in_thread(create_app(config)) as server:
        yield server


@pytest.fixture
def admin(sim: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as c:
        c.post("/_sim/reset").raise_for_status()
        c.put("/_sim/latency", json={"latency": "0.2"}).raise_for_status()
        yield c


@pytest.fixture
def sdk(sim: RunningServer, admin: httpx.Client) -> Client:
    return Client(api_key=KEY, base_url=sim.url, retry_interval=0.05)


def assert_images(outputs: list[str]) -> None:
    assert outputs
    for url in outputs:
        response = httpx.get(url)
        assert response.status_code == 200
        Image.open(io.BytesIO(response.content)).verify()


@pytest.mark.parametrize(("model", "inputs"), [
    ("wavespeed-ai/qwen-image/edit", {"prompt": "teal sky", "image": IMG, "size": "512*512"}),
    ("wavespeed-ai/flux-kontext-pro", {"prompt": "add a hat", "image": IMG,
                                       "safety_tolerance": "3"}),
    ("openai/gpt-image-1", {"prompt": "watercolour", "image": IMG, "quality": "low"}),
    ("google/nano-banana-pro/edit-ultra", {"prompt": "night", "images": [IMG, IMG]}),
])
def test_sdk_run_gets_outputs_that_are_images(sdk: Client, admin: httpx.Client, model: str,
                                              inputs: dict[str, Any]) -> None:
    result = sdk.run(model, inputs, timeout=30, poll_interval=0.05)
    assert_images(result["outputs"])
    assert admin.get("/_sim/stats").json()["submits_by_model"] == {model: 1}


def test_sdk_upload_then_run_on_the_uploaded_url(sdk: Client, tmp_path: Path) -> None:
    path = tmp_path / "input.png"
    path.write_bytes(image_bytes((90, 60)))
    url = sdk.upload(str(path))
    assert httpx.get(url).content == path.read_bytes()
    result = sdk.run("wavespeed-ai/image-zoom-out", {"image": url, "width": 400, "height": 300},
                     timeout=30, poll_interval=0.05)
    assert_images(result["outputs"])
    assert Image.open(io.BytesIO(httpx.get(result["outputs"][0]).content)).size == (400, 300)


def test_sdk_sync_mode_and_its_server_side_timeout(sdk: Client, admin: httpx.Client) -> None:
    result = sdk.run("wavespeed-ai/step1x-edit", {"prompt": "p", "image": IMG},
                     enable_sync_mode=True)
    assert_images(result["outputs"])
    assert admin.get("/_sim/stats").json()["polls"] == 0
    # given tasks slower than the sync timeout, the SDK reports "processing" with the task id
    admin.put("/_sim/latency", json={"latency": "2"})
    outcome = sdk.run_no_throw("wavespeed-ai/step1x-edit", {"prompt": "p", "image": IMG},
                               enable_sync_mode=True)
    assert outcome["status"] == "processing" and outcome["outputs"] is None
    task_id = outcome["task_id"]
    assert len(task_id) == 32

    def completed() -> dict[str, Any] | None:
        data: dict[str, Any] = sdk.get_result(task_id)["data"]
        return data if data["status"] == "completed" else None
    assert_images(wait_for(completed, 10, "the sync-timed-out task")["outputs"])


def test_sdk_raises_on_a_failed_task(sdk: Client, admin: httpx.Client) -> None:
    admin.post("/_sim/faults", json={"script": [{"endpoint": "submit", "fault": "task-1403"}]})
    with pytest.raises(RuntimeError, match=r"Prediction failed \(task_id: [0-9a-f]{32}\)"):
        sdk.run("wavespeed-ai/hidream-e1-full", {"prompt": "p", "image": IMG}, timeout=30,
                poll_interval=0.05)


def test_sdk_retries_result_polls_through_server_errors(sdk: Client,
                                                        admin: httpx.Client) -> None:
    admin.post("/_sim/faults", json={"script": [
        {"endpoint": "poll", "fault": "500"}, {"endpoint": "poll", "fault": "503"},
        {"endpoint": "poll", "fault": "drop"}]})
    result = sdk.run("bytedance/seededit-v3", {"prompt": "p", "image": IMG}, timeout=30,
                     poll_interval=0.05)
    assert_images(result["outputs"])
    assert admin.get("/_sim/stats").json()["faults_injected"] == {"500": 1, "503": 1, "drop": 1}


@pytest.mark.parametrize(("fault", "tasks"), [("drop", 0), ("drop-after", 1)])
def test_sdk_never_resubmits_after_an_ambiguous_submit(sdk: Client, admin: httpx.Client,
                                                       fault: str, tasks: int) -> None:
    admin.post("/_sim/faults", json={"script": [{"endpoint": "submit", "fault": fault}]})
    with pytest.raises(RuntimeError, match="did not return a response"):
        sdk.run("wavespeed-ai/qwen-image/edit", {"prompt": "p", "image": IMG}, timeout=30)
    figures = admin.get("/_sim/stats").json()
    assert (figures["submits"], figures["tasks_created"]) == (1, tasks)
