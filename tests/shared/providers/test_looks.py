"""The engine's looks (aiohttp), the only way editq waits on a provider: the simulators
over real HTTP, read by the providers' own readers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from shared.errors import ProviderError
from shared.images import sniff_content_type
from shared.providers.catalog import ModelSpec, load_catalog
from shared.providers.router import build_options
from shared.providers.stability import StabilityEditProvider
from shared.providers.stability_client import StabilityClient
from shared.providers.wavespeed import WaveSpeedEditProvider
from shared.providers.wavespeed_client import WaveSpeedClient
from simulators.common import RunningServer, serve_in_thread
from simulators.stability import StabilitySimConfig
from simulators.stability import create_app as stability_app
from simulators.wavespeed import WaveSpeedSimConfig
from simulators.wavespeed import create_app as wavespeed_app
from tests.helpers import image_bytes

pytestmark = pytest.mark.timeout(60)

KEY = "looks-key"


@pytest.fixture(scope="module")
def wavespeed_sim() -> Iterator[RunningServer]:
    with serve_in_thread(wavespeed_app(WaveSpeedSimConfig(api_key=KEY, latency="0.3",
                                                          seed=3))) as server:
        yield server


@pytest.fixture(scope="module")
def failing_sim() -> Iterator[RunningServer]:
    with serve_in_thread(wavespeed_app(WaveSpeedSimConfig(
            api_key=KEY, latency="0.1", seed=3, faults="task-5003=1"))) as server:
        yield server


@pytest.fixture(scope="module")
def stability_sim() -> Iterator[RunningServer]:
    with serve_in_thread(stability_app(StabilitySimConfig(api_key=KEY, latency="0.3",
                                                          seed=3))) as server:
        yield server


def wavespeed(url: str) -> WaveSpeedEditProvider:
    return WaveSpeedEditProvider(WaveSpeedClient(url, KEY), max_output_bytes=8 << 20)


def looks_until_done(provider: Any, request_id: str) -> tuple[int, Any]:
    """Look (on a loop of its own, as the engine does) until an answer; (looks, answer)."""
    async def run() -> tuple[int, Any]:
        looker = provider.looker(4)
        try:
            for n in range(1, 200):
                answer = await looker.look(request_id)
                if answer is not None:
                    return n, answer
                await asyncio.sleep(0.05)
            raise AssertionError("never done")
        finally:
            await looker.aclose()
    return asyncio.run(run())


def submit_edit(provider: WaveSpeedEditProvider, prompt: str) -> tuple[ModelSpec, str]:
    """A qwen-edit task at the simulator; (its model, its request id)."""
    spec = load_catalog().get("qwen-edit")
    submitted = provider.submit(spec, build_options(images=[image_bytes()],
                                                    operation="general_edit",
                                                    model=spec.id, prompt=prompt))
    assert submitted.request_id is not None
    return spec, submitted.request_id


def test_a_wavespeed_look_answers_none_while_running_then_what_collect_turns_into_outputs(
        wavespeed_sim: RunningServer) -> None:
    # given a task submitted to the simulator
    provider = wavespeed(wavespeed_sim.url)
    spec, request_id = submit_edit(provider, "make it blue")
    # when the engine's looker looks until it is done
    looks, answer = looks_until_done(provider, request_id)
    # then it saw it running first, and its answer collects into the task's output
    assert looks > 1 and answer["status"] == "completed"
    result = provider.collect(spec, request_id, answer)
    assert len(result.images) == 1
    assert sniff_content_type(result.images[0].data) in ("image/jpeg", "image/png")


def test_a_failed_wavespeed_task_raises_its_classified_error_from_a_look(
        failing_sim: RunningServer) -> None:
    # given a task the simulator fails with WaveSpeed's code 5003
    provider = wavespeed(failing_sim.url)
    _, request_id = submit_edit(provider, "fail")
    # when the engine's looker looks until it ends
    with pytest.raises(ProviderError) as from_look:
        looks_until_done(provider, request_id)
    # then the task failed (a new attempt, not another look) as the classification says
    assert (from_look.value.code, from_look.value.task_failed) == ("provider_unavailable",
                                                                   True)
    assert from_look.value.retryable


def test_a_look_at_a_provider_that_is_not_there_is_a_retryable_transport_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ProviderError) as caught:
        looks_until_done(wavespeed(f"http://127.0.0.1:{port}"), "nope")
    assert caught.value.retryable and not caught.value.task_failed


def test_a_stability_look_answers_the_artifact_that_collect_makes_the_result(
        stability_sim: RunningServer) -> None:
    provider = StabilityEditProvider(StabilityClient(stability_sim.url, KEY),
                                     filtered_is_success=False, look_interval=0.05)
    spec = load_catalog().get("stability-upscale-creative")
    submitted = provider.submit(spec, build_options(
        images=[image_bytes((64, 64))], operation="upscale_creative", model=spec.id,
        prompt="a sharper photo"))
    assert submitted.request_id is not None
    looks, artifact = looks_until_done(provider, submitted.request_id)
    result = provider.collect(spec, submitted.request_id, artifact)
    assert looks > 1 and result.images[0].data == artifact.data
    assert result.metadata["content_filtered"] is False
