"""generate_image_edit(): one edit in the caller's time, run as a job through the steps
the service runs (submission, an attempt, the in-flight engine, the finish), over a real
database and S3, and the WaveSpeed simulator over real HTTP."""

from __future__ import annotations

import io
from collections.abc import Iterator
from decimal import Decimal

import pytest
from PIL import Image
from sqlalchemy import select

from shared.config import Settings
from shared.db import session_scope
from shared.errors import ProviderError
from shared.inflight.generate import generate_image_edit
from shared.models import Charge, Job
from shared.providers.router import build_options
from shared.services import Services
from shared.storage import Storage
from simulators.common import RunningServer, serve_in_thread
from simulators.wavespeed import WaveSpeedSimConfig
from simulators.wavespeed import create_app as wavespeed_app
from tests.conftest import make_settings
from tests.helpers import image_bytes

pytestmark = [pytest.mark.timeout(60), pytest.mark.prefer_postgresql]

KEY = "generate-key"


@pytest.fixture(scope="module")
def wavespeed_sim() -> Iterator[RunningServer]:
    with serve_in_thread(wavespeed_app(WaveSpeedSimConfig(
            api_key=KEY, latency="0.3", seed=5))) as server:
        yield server


def services_for(database_url: str, s3_url: str, bucket: str, storage: Storage,
                 sim_url: str, **values: object) -> Services:
    settings: Settings = make_settings(
        database_url=database_url, s3_endpoint_url=s3_url, s3_bucket=bucket,
        wavespeed_api_key=KEY, wavespeed_base_url=sim_url, output_allowed_hosts="127.0.0.1",
        follow_initial_seconds=0.1, follow_max_seconds=0.3, stability_api_key="unused",
        **values)
    return Services(settings, storage=storage)


def job_and_charges(services: Services, job_id: str) -> tuple[Job, list[Charge]]:
    with session_scope(services.settings.database_url) as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        charges = list(session.scalars(select(Charge).where(Charge.job_id == job_id)))
    return job, charges


def test_a_local_edit_is_a_job_that_succeeds_at_its_price(
        database_url: str, s3_url: str, bucket: str, storage: Storage,
        wavespeed_sim: RunningServer) -> None:
    # given a grayscale edit with the offline model
    services = services_for(database_url, s3_url, bucket, storage, wavespeed_sim.url)
    options = build_options(images=[image_bytes((64, 48))], operation="grayscale",
                            model="local-pillow")
    # when it is generated
    result = generate_image_edit(options, services)
    # then the output is the edit, and it was a job of the scripts' tenant, charged once
    assert Image.open(io.BytesIO(result.images[0].data)).mode == "L"
    job, charges = job_and_charges(services, result.metadata["job_id"])
    assert (job.status, job.cost_actual, result.cost) == ("succeeded", Decimal(0), Decimal(0))
    assert len(charges) == 1


def test_a_wavespeed_edit_is_followed_by_the_engine_to_its_end(
        database_url: str, s3_url: str, bucket: str, storage: Storage,
        wavespeed_sim: RunningServer) -> None:
    # given an asynchronous provider (the simulator answers after 0.3 s)
    services = services_for(database_url, s3_url, bucket, storage, wavespeed_sim.url)
    options = build_options(images=[image_bytes((64, 48))], operation="general_edit",
                            model="qwen-edit", prompt="make it blue")
    # when it is generated
    result = generate_image_edit(options, services)
    # then it was submitted once, followed to its end, stored and charged the model's price
    job, charges = job_and_charges(services, result.metadata["job_id"])
    assert (job.status, job.attempts, job.provider_request_id) == (
        "succeeded", 1, result.provider_request_id)
    assert result.provider_request_id and len(result.images) == 1
    assert [c.amount for c in charges] == [Decimal("0.02")] == [result.cost]


def test_an_edit_that_fails_raises_its_jobs_error(
        database_url: str, s3_url: str, bucket: str, storage: Storage) -> None:
    # given a provider whose every task fails (WaveSpeed's 5003), and one attempt allowed
    with serve_in_thread(wavespeed_app(WaveSpeedSimConfig(
            api_key=KEY, latency="0.1", seed=3, faults="task-5003=1"))) as failing:
        services = services_for(database_url, s3_url, bucket, storage, failing.url,
                                job_max_attempts=1)
        options = build_options(images=[image_bytes((64, 48))], operation="general_edit",
                                model="qwen-edit", prompt="make it blue")
        # when it is generated, then the job's error is raised, with its code
        with pytest.raises(ProviderError) as caught:
            generate_image_edit(options, services)
    assert caught.value.code == "provider_unavailable"
