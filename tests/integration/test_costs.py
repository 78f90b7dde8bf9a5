"""The cost ledger and budgets, end to end: API, worker, simulators over HTTP, S3.

The money rules under test (shared/money/ledger.py, shared/money/budgets.py,
shared/jobs/finish.py, shared/jobs/failure.py):
- parallel submissions of one tenant are admitted one after another, so
  together they never take it over its monthly budget;
- a provider call is charged once, in the transaction that records its
  outcome; attempts whose call the provider refunded (a 5xx submit, a 5xxx
  task) cost nothing;
- a job canceled while its call is out is followed until the call settles,
  and charged only if the call completed; one canceled while queued costs 0;
- under random faults, what editq recorded reconciles with what the
  simulators billed: the only gap is the submits whose outcome is unknown.

Everything runs on this module's own stack (both simulators, a worker and an
API), so that its faults, latencies and billing never reach other modules
(test_wavespeed_models compares the shared simulator's billing with editq's).
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from cli.stack import Child, Stack
from shared.config import Settings
from shared.db import get_engine, session_scope
from shared.errors import BudgetExceeded
from shared.formats import money as usd
from shared.jobs.states import new_job_id, succeed
from shared.models import Charge, Job, Tenant
from shared.money import budgets
from shared.money.ledger import charge
from shared.providers.catalog import load_catalog
from shared.storage import Storage, output_key
from shared.tenants import create_api_key, get_or_create_tenant, set_limits
from tests.api_client import ApiClient
from tests.conftest import SIM_KEY, db_kind, live_env, make_settings, redis_db, settings_of
from tests.helpers import b64, image_bytes, tenant_of, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

QWEN_PRICE = Decimal("0.02")


# --------------------------------------------------------------------------- helpers


def new_tenant(database_url: str, prefix: str, budget: Decimal | None = None) -> tuple[str, str]:
    """A fresh tenant (name, API key), with a monthly budget if given."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    with session_scope(database_url) as session:
        key = create_api_key(session, name)
        if budget is not None:
            tenant = session.scalar(select(Tenant).where(Tenant.name == name))
            assert tenant is not None
            set_limits(session, tenant, monthly_budget=budget)
    return name, key


def ledger_rows(database_url: str, job_id: str) -> list[Charge]:
    with session_scope(database_url) as session:
        return list(session.scalars(select(Charge).where(Charge.job_id == job_id)
                                    .order_by(Charge.id)))


def tenant_ledger_total(database_url: str, tenant: str) -> Decimal:
    with session_scope(database_url) as session:
        total = session.scalar(select(func.sum(Charge.amount))
                               .join(Tenant, Tenant.id == Charge.tenant_id)
                               .where(Tenant.name == tenant))
    return total if total is not None else Decimal(0)


def money(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


# --------------------------------------------------------------------------- 1. budgets


@pytest.mark.every_database
def test_concurrent_submissions_never_overspend_the_budget(costs: CostStack) -> None:
    # given a tenant with a monthly budget of 0.50 USD and qwen-edit at 0.02 a job
    db = costs.database_url
    tenant, key = new_tenant(db, "costs-budget", budget=Decimal("0.50"))
    image = b64(image_bytes())
    start = threading.Barrier(50)

    def post(n: int) -> httpx.Response:
        with httpx.Client(base_url=costs.api_url, timeout=60,
                          headers={"Authorization": f"Bearer {key}"}) as http:
            start.wait(timeout=30)
            return http.post("/v1/jobs", json={"image": image, "model": "qwen-edit",
                                               "prompt": f"budget race {n}"})

    # when 50 threads submit a job each, all at once, through the API
    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(post, range(50)))

    # then exactly 25 are accepted and 25 refused with budget_exceeded, none with a 5xx
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {202: 25, 402: 25}, (statuses, [r.text[:300] for r in responses
                                                       if r.status_code not in (202, 402)])
    for refused in (r for r in responses if r.status_code == 402):
        assert refused.headers["content-type"].startswith("application/problem+json")
        problem = refused.json()
        assert problem["code"] == "budget_exceeded"
        assert problem["scope"] == "tenant" and problem["currency"] == "USD"
        assert Decimal(problem["budget"]) == Decimal("0.50")
        assert Decimal(problem["estimate"]) == QWEN_PRICE
        # (each refusal saw the 25 admitted jobs, spent or still in flight, and nothing more)
        assert Decimal(problem["spent"]) + Decimal(problem["in_flight"]) == Decimal("0.50"), \
            problem
        assert Decimal(problem["remaining"]) == Decimal(0)
    accepted = [r.json() for r in responses if r.status_code == 202]
    assert all(Decimal(job["cost"]["estimated"]) == QWEN_PRICE for job in accepted)

    # and once every accepted job has finished, the ledger holds what the jobs say they cost
    client = ApiClient(costs.api_url, key)
    done = [client.wait(job["id"], timeout=60) for job in accepted]
    assert [j["status"] for j in done] == ["succeeded"] * 25, costs.worker.log_tail()
    actual = sum((Decimal(j["cost"]["actual"]) for j in done), Decimal(0))
    total = tenant_ledger_total(db, tenant)
    assert total == actual == Decimal("0.50")
    assert total <= Decimal("0.50")
    # and the month is now spent, not in flight: one more job is still refused
    again = client.http.post("/v1/jobs", json={"image": image, "model": "qwen-edit",
                                               "prompt": "one more"})
    assert again.status_code == 402, again.text
    assert (Decimal(again.json()["spent"]), Decimal(again.json()["in_flight"])) == (
        Decimal("0.50"), Decimal(0))


@pytest.mark.every_database
def test_a_charge_committed_during_admission_is_counted_once(database_url: str) -> None:
    """The race above, made deterministic: a worker charges a job while a submission is
    being checked (in flight until that commit, spent after it)."""
    if db_kind(database_url) == "sqlite":
        pytest.skip("on SQLite the admission holds the write lock: nothing commits meanwhile")
    # given a budget of 0.04, used up by two running jobs of 0.02
    settings = make_settings(database_url=database_url)
    with session_scope(database_url) as session:
        tenant = get_or_create_tenant(session, f"costs-admission-{uuid.uuid4().hex[:10]}")
        set_limits(session, tenant, monthly_budget=Decimal("0.04"))
        tenant_id = tenant.id
        running = [Job(id=new_job_id(), tenant_id=tenant_id, status="running",
                       operation="general_edit", model="qwen-edit", provider="wavespeed",
                       attempts=1, cost_estimated=QWEN_PRICE) for _ in range(2)]
        session.add_all(running)
    finished: list[str] = []

    def worker_finishes_a_job(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        # (right after the admission has read the ledger, and only once)
        if finished or "ledger" not in statement:
            return
        finished.append(running[0].id)
        with session_scope(database_url) as session:
            assert succeed(session, running[0].id, [])
            charge(session, running[0], load_catalog().get("qwen-edit").price({}),
                   reason="succeeded")

    # when a job of 0.02 is submitted while the first of them is charged
    engine = get_engine(database_url)
    event.listen(engine, "after_cursor_execute", worker_finishes_a_job)
    try:
        with pytest.raises(BudgetExceeded) as refused, session_scope(database_url) as session:
            budgets.admit(session, settings, tenant_id, "qwen-edit", QWEN_PRICE)
    finally:
        event.remove(engine, "after_cursor_execute", worker_finishes_a_job)
    # then it is refused: the finished job counted once, as spent or as in flight
    assert finished
    extra = refused.value.extra
    assert Decimal(extra["spent"]) + Decimal(extra["in_flight"]) == Decimal("0.04"), extra
    assert tenant_ledger_total(database_url, tenant.name) == QWEN_PRICE
    with session_scope(database_url) as session:  # (leave no job running behind)
        assert succeed(session, running[1].id, [])


# --------------------------------------------------------------------------- the stack


@dataclass
class CostStack:
    """Both simulators, a worker and an API of this module's own, on one database."""

    api_url: str
    sim_url: str
    stability_url: str
    database_url: str
    settings: Settings
    stack: Stack
    worker: Child

    def client(self, prefix: str) -> tuple[str, ApiClient]:
        name, key = new_tenant(self.database_url, prefix)
        return name, ApiClient(self.api_url, key)

    def wavespeed(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, self.sim_url + path, timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def stability(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, self.stability_url + path, timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def billed(self) -> tuple[Decimal, Decimal]:
        """What each simulator has billed so far: (WaveSpeed, Stability), in USD."""
        return (Decimal(self.wavespeed("GET", "/_sim/stats")["billed_usd"]),
                Decimal(self.stability("GET", "/_sim/stats")["billed_usd"]))

    def ws_counters(self) -> dict[str, int]:
        stats = self.wavespeed("GET", "/_sim/stats")
        return {name: int(stats[name]) for name in ("submits", "tasks_created")}

    def request_id(self, job_id: str) -> str | None:
        with session_scope(self.database_url) as session:
            return session.scalar(select(Job.provider_request_id).where(Job.id == job_id))


@pytest.fixture(scope="module")
def costs(stack: Stack, database_url: str, redis_base: str, s3_url: str,
          bucket: str) -> Iterator[CostStack]:
    sub = Stack(workdir=stack.workdir)
    kind = db_kind(database_url)
    try:
        sim_url = sub.start_wavespeed_sim(latency="0.2", extra=["--api-key", SIM_KEY])
        stability_url = sub.start_sim("stability", latency="0.2", extra=["--api-key", SIM_KEY])
        sub.env = {
            **live_env(database_url, redis_db(redis_base, "costs"), s3_url, bucket, sim_url,
                       stability_url),
            "EDITQ_PROVIDER_SUBMIT_TIMEOUT_SECONDS": "5",
            "EDITQ_PROVIDER_LOOK_TIMEOUT_SECONDS": "2",
            "EDITQ_STABILITY_TIMEOUT_SECONDS": "10",
            # A filtered result fails the job as a billed failure (it must still be charged).
            "EDITQ_STABILITY_FILTERED_IS_SUCCESS": "false",
        }
        settings = settings_of(sub.env)
        worker = sub.start_worker(name=f"worker-costs-{kind}", concurrency=8)
        _, api_url = sub.start_api()
        yield CostStack(api_url, sim_url, stability_url, database_url, settings, sub, worker)
    finally:
        sub.stop()


# --------------------------------------------------------------------------- 2. retries


def test_job_retried_twice_is_charged_once(costs: CostStack) -> None:
    # given WaveSpeed answering the first submit with a 500 (nothing created) and failing
    # the task of the second with 5003 (created, then refunded)
    cs = costs
    cs.wavespeed("POST", "/_sim/faults", json={"script": [
        {"endpoint": "submit", "fault": "500"}, {"endpoint": "submit", "fault": "task-5003"}]})
    billed_before, _ = cs.billed()
    before = cs.ws_counters()
    _, client = cs.client("costs-retried")
    # when a qwen-edit job runs into both
    job = client.submit(image_bytes(), prompt="retried twice", model="qwen-edit")
    done = client.wait(job["id"], timeout=45)
    # then its third attempt succeeded
    assert done["status"] == "succeeded", (done["error"], cs.worker.log_tail())
    assert done["attempts"] == 3
    assert cs.wavespeed("GET", "/_sim/faults")["script"] == []  # both faults struck
    after = cs.ws_counters()
    assert (after["submits"] - before["submits"],
            after["tasks_created"] - before["tasks_created"]) == (3, 2)
    # and it was charged once, for the call that completed
    [row] = ledger_rows(cs.database_url, job["id"])
    assert (row.attempt, row.reason, row.units, row.unit, row.unit_price, row.amount) == (
        3, "succeeded", Decimal(1), "image", QWEN_PRICE, QWEN_PRICE)
    assert row.provider_request_id == cs.request_id(job["id"])
    assert done["cost"]["actual"] == "0.02"
    # and the provider billed exactly that one call
    billed_after, _ = cs.billed()
    assert billed_after - billed_before == QWEN_PRICE


# --------------------------------------------------------------------------- 3. cancel


def _cancel_once_submitted(cs: CostStack, client: ApiClient, prompt: str
                           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Submit a qwen-edit job, wait for its provider request id, cancel it: (job, canceled)."""
    job = client.submit(image_bytes(), prompt=prompt, model="qwen-edit")
    wait_for(lambda: cs.request_id(job["id"]), 20, "the provider request id to be saved")
    response = client.http.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    return job, response.json()


def _settled(client: ApiClient, job_id: str) -> dict[str, Any] | None:
    view = client.get(job_id)
    return view if view["cost"]["actual"] is not None else None


@pytest.fixture
def slow_wavespeed(costs: CostStack) -> Iterator[CostStack]:
    """WaveSpeed tasks that take 3 s, long enough to cancel one while it runs."""
    costs.wavespeed("PUT", "/_sim/latency", json={"latency": "3"})
    try:
        yield costs
    finally:
        costs.wavespeed("PUT", "/_sim/latency", json={"latency": "0.2"})
        costs.wavespeed("DELETE", "/_sim/faults")


def test_canceled_job_whose_call_completes_is_charged_for_it(
        slow_wavespeed: CostStack) -> None:
    # given a job whose WaveSpeed task is running (its request id is saved)
    cs = slow_wavespeed
    billed_before, _ = cs.billed()
    _, client = cs.client("costs-cancel-completed")
    # when it is canceled
    job, canceled = _cancel_once_submitted(cs, client, "canceled, completes anyway")
    # then it is canceled at once, its cost unknown while the call is out
    assert canceled["status"] == "canceled"
    assert canceled["cost"]["actual"] is None
    # and once the task completes, the call settles at the model's price
    done = wait_for(lambda: _settled(client, job["id"]), 20, "the canceled call to settle")
    assert done["status"] == "canceled"
    assert done["cost"]["actual"] == "0.02"
    [row] = ledger_rows(cs.database_url, job["id"])
    assert (row.attempt, row.reason, row.units, row.unit_price, row.amount) == (
        1, "canceled", Decimal(1), QWEN_PRICE, QWEN_PRICE)
    # and nothing of its result was kept
    assert done["outputs"] == []
    storage = Storage(cs.settings)
    tenant_id = tenant_of(cs.database_url, client.http.headers["authorization"].split()[1])
    assert not any(storage.exists(output_key(tenant_id, job["id"], 0, ext))
                   for ext in ("jpeg", "png", "webp"))
    events = [e["type"] for e in client.http.get(f"/v1/jobs/{job['id']}/events").json()["data"]]
    assert "call_settled" in events and "succeeded" not in events
    # and the provider billed exactly that call
    billed_after, _ = cs.billed()
    assert billed_after - billed_before == QWEN_PRICE


def test_canceled_job_whose_call_is_refunded_costs_nothing(slow_wavespeed: CostStack) -> None:
    # given a job whose WaveSpeed task will fail with 5003 (refunded) when it ends
    cs = slow_wavespeed
    cs.wavespeed("POST", "/_sim/faults",
                 json={"script": [{"endpoint": "submit", "fault": "task-5003"}]})
    billed_before, _ = cs.billed()
    before = cs.ws_counters()
    _, client = cs.client("costs-cancel-refunded")
    # when it is canceled while that task runs
    job, canceled = _cancel_once_submitted(cs, client, "canceled, then refunded")
    assert cs.wavespeed("GET", "/_sim/faults")["script"] == []  # the fault is on its task
    assert (canceled["status"], canceled["cost"]["actual"]) == ("canceled", None)
    # then, once the task has failed, the call settles at 0, uncharged and not retried
    done = wait_for(lambda: _settled(client, job["id"]), 20, "the canceled call to settle")
    assert (done["status"], done["cost"]["actual"]) == ("canceled", "0")
    assert done["attempts"] == 1 and done["outputs"] == []
    assert ledger_rows(cs.database_url, job["id"]) == []
    after = cs.ws_counters()
    assert (after["submits"] - before["submits"],
            after["tasks_created"] - before["tasks_created"]) == (1, 1)
    billed_after, _ = cs.billed()
    assert billed_after - billed_before == Decimal(0)


def test_job_canceled_while_queued_costs_nothing_and_is_never_submitted(
        costs: CostStack) -> None:
    # given the worker paused (SIGSTOP), so that a job stays queued for certain
    cs = costs
    before = cs.ws_counters()
    billed_before, _ = cs.billed()
    _, client = cs.client("costs-cancel-queued")
    os.killpg(cs.worker.process.pid, signal.SIGSTOP)
    try:
        job = client.submit(image_bytes(), prompt="canceled while queued", model="qwen-edit")
        # when it is canceled before any worker has taken it
        response = client.http.post(f"/v1/jobs/{job['id']}/cancel")
    finally:
        os.killpg(cs.worker.process.pid, signal.SIGCONT)
    # then it is canceled with a cost known at once: nothing
    assert response.status_code == 200, response.text
    canceled = response.json()
    assert (canceled["status"], canceled["cost"]["actual"]) == ("canceled", "0")
    # and the worker, once it takes the message, drops it without calling the provider
    wait_for(lambda: f"job {job['id']}: skipped" in cs.worker.log_path.read_text(
        errors="replace"), 20, "the worker to skip the canceled job")
    assert cs.ws_counters() == before
    assert cs.billed()[0] == billed_before
    done = client.get(job["id"])
    assert (done["status"], done["attempts"], done["cost"]["actual"]) == ("canceled", 0, "0")
    assert ledger_rows(cs.database_url, job["id"]) == []


# --------------------------------------------------------------------------- 4. chaos

WAVESPEED_FAULTS = "500=0.1,429=0.05,drop-after=0.03,task-5003=0.05"
STABILITY_FAULTS = ("500=0.08,429=0.04,drop-after=0.04@submit,moderation=0.05,"
                    "filtered=0.05")
UNKNOWN = "provider_outcome_unknown"


@dataclass(frozen=True)
class Edit:
    model: str
    count: int
    operation: str = "general_edit"
    prompt: str | None = "make the sky purple"
    options: dict[str, Any] | None = None
    mask: bool = False
    size: tuple[int, int] = (96, 64)


CHAOS = [
    Edit("qwen-edit", 12),
    Edit("flux-kontext-pro", 7),
    Edit("gpt-image-1-edit", 4, options={"quality": "low"}),
    Edit("gpt-image-1-edit", 3, options={"quality": "medium", "size": "auto"}),
    Edit("gpt-image-1-edit", 2, options={"quality": "high", "size": "1024*1536"}),
    Edit("ideogram-character", 3, "character", options={"rendering_speed": "Turbo"}),
    Edit("ideogram-character", 3, "character", options={"rendering_speed": "Quality"}),
    Edit("stability-erase", 8, "erase", prompt=None, mask=True, size=(128, 96)),
    Edit("stability-upscale-fast", 8, "upscale_fast", prompt=None, size=(64, 48)),
    Edit("stability-search-replace", 8, "search_replace", prompt="a dog",
         options={"search_prompt": "cat"}, size=(128, 96)),
    Edit("stability-upscale-creative", 2, "upscale_creative", prompt="detailed",
         size=(128, 96)),
]


@pytest.fixture
def chaos(costs: CostStack) -> Iterator[CostStack]:
    """Both simulators faulting at random, with varied latencies."""
    costs.wavespeed("PUT", "/_sim/latency", json={"latency": "0.2-0.8"})
    costs.stability("PUT", "/_sim/latency", json={"latency": "0.1-0.4"})
    costs.wavespeed("POST", "/_sim/faults", json={"script": [], "rates": WAVESPEED_FAULTS})
    costs.stability("POST", "/_sim/faults", json={"script": [], "rates": STABILITY_FAULTS})
    try:
        yield costs
    finally:
        costs.wavespeed("DELETE", "/_sim/faults")
        costs.stability("DELETE", "/_sim/faults")
        costs.wavespeed("PUT", "/_sim/latency", json={"latency": "0.2"})
        costs.stability("PUT", "/_sim/latency", json={"latency": "0.2"})


def _faults_struck(cs: CostStack) -> int:
    return sum(sum(sim("GET", "/_sim/stats")["faults_injected"].values())
               for sim in (cs.wavespeed, cs.stability))


def _idle(cs: CostStack) -> bool:
    """No task or generation still running at either simulator (so all is billed)."""
    return (cs.wavespeed("GET", "/_sim/stats")["in_flight"] == 0
            and cs.stability("GET", "/_sim/stats")["in_flight"] == 0)


def test_fault_injection_run_reconciles_with_what_the_providers_billed(
        chaos: CostStack) -> None:
    # given both simulators faulting at random, and a tenant of its own
    cs = chaos
    billed_before = cs.billed()
    faults_before = _faults_struck(cs)
    tenant, client = cs.client("costs-chaos")
    edits = [(edit, n) for edit in CHAOS for n in range(edit.count)]

    def submit(item: tuple[Edit, int]) -> dict[str, Any]:
        edit, n = item
        image = image_bytes(edit.size, color=(10 + n, 120, 200))
        mask = image_bytes(edit.size, color=(255, 255, 255)) if edit.mask else None
        return client.submit(image, prompt=edit.prompt, operation=edit.operation,
                             model=edit.model, options=edit.options, mask=mask)

    # when ~60 jobs across both providers and several prices run through the faults
    with ThreadPoolExecutor(max_workers=8) as pool:
        submitted = list(pool.map(submit, edits))
    assert len(submitted) == 60
    done = [client.wait(job["id"], timeout=60) for job in submitted]
    assert all(j["status"] in ("succeeded", "failed") for j in done), \
        [(j["id"], j["status"]) for j in done if j["status"] not in ("succeeded", "failed")]
    wait_for(lambda: _idle(cs), 30, "both simulators to finish every task they started")
    billed_after = cs.billed()
    faults = _faults_struck(cs) - faults_before

    with session_scope(cs.database_url) as session:
        rows = list(session.scalars(select(Charge).join(Tenant, Tenant.id == Charge.tenant_id)
                                    .where(Tenant.name == tenant)))
        jobs = {job.id: job for job in session.scalars(
            select(Job).join(Tenant, Tenant.id == Job.tenant_id).where(Tenant.name == tenant))}
    by_job: dict[str, list[Charge]] = {}
    for row in rows:
        by_job.setdefault(row.job_id, []).append(row)
    providers = ("wavespeed", "stability")
    billed = {p: billed_after[i] - billed_before[i] for i, p in enumerate(providers)}
    recorded = {p: sum((r.amount for r in rows if r.provider == p), Decimal(0))
                for p in providers}
    ambiguous = {p: sum((j.cost_estimated for j in jobs.values()
                         if j.provider == p and j.error_code == UNKNOWN), Decimal(0))
                 for p in providers}
    outcomes = Counter((j["provider"], j["status"], (j["error"] or {}).get("code"))
                       for j in done)
    summary = "\n".join(
        [f"chaos run: {len(done)} jobs, {faults} faults struck; by provider, status, code"]
        + [f"  {p:<9} {s:<9} {c or '-':<28} {n}" for (p, s, c), n in sorted(
            outcomes.items(), key=lambda item: tuple(str(x) for x in item[0]))]
        + [f"  {p:<9} billed {usd(billed[p])} recorded {usd(recorded[p])} gap "
           f"{usd(billed[p] - recorded[p])} (ambiguous submits' estimates {usd(ambiguous[p])})"
           for p in providers])
    print(summary)

    assert faults > 0, summary  # the run did meet faults
    # then every job's cost is what the ledger holds for it, and unknown only when the
    # outcome of its submit is
    assert set(jobs) == {j["id"] for j in done}
    for job in done:
        actual = money(job["cost"]["actual"])
        charged = by_job.get(job["id"], [])
        code = (job["error"] or {}).get("code")
        estimate = Decimal(job["cost"]["estimated"])
        if code == UNKNOWN:
            assert actual is None and charged == [], (job, summary)
            continue
        assert actual == sum((r.amount for r in charged), Decimal(0)), (job, summary)
        # each charge is one call, at the price quoted for the job
        assert all(r.amount == estimate and r.attempt <= job["attempts"] for r in charged), \
            (job, summary)
        if job["status"] == "succeeded":
            assert [r.reason for r in charged] == ["succeeded"], (job, summary)
        elif code == "content_filtered":  # a billed failure
            assert [r.reason for r in charged] == ["content_filtered"], (job, summary)
        else:
            assert charged == [], (job, summary)
    # and no call was charged twice
    attempts = Counter((r.job_id, r.attempt) for r in rows)
    assert all(n == 1 for n in attempts.values()), attempts
    # and the ledger total is the sum of the jobs' actual costs
    total = sum((r.amount for r in rows), Decimal(0))
    assert total == sum((money(j["cost"]["actual"]) or Decimal(0) for j in done), Decimal(0))
    # and the providers billed what was recorded, plus at most the ambiguous submissions
    for p in providers:
        assert Decimal(0) <= billed[p] - recorded[p] <= ambiguous[p], summary
    gap = sum(billed.values(), Decimal(0)) - total
    assert Decimal(0) <= gap <= sum(ambiguous.values(), Decimal(0)), summary
