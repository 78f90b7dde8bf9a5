"""The console in a real browser: Debian's Chromium driven by Playwright, against the
live stack (uvicorn, a Celery worker, beat, the WaveSpeed and Stability simulators).

Each step is a screenshot at 1280 and at 390 px wide, under test-output/console/
(EDITQ_TEST_OUTPUT moves it). Without a Chromium these tests are skipped with the
line that enables them; .ci/run installs it and sets EDITQ_REQUIRE_BROWSER, so in CI
they always run (and fail if they cannot).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from shared.db import session_scope
from shared.models import Job
from shared.tenants import create_api_key, get_or_create_tenant, set_limits
from tests.api_client import ApiClient
from tests.conftest import Live
from tests.helpers import b64, image_bytes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CHROMIUM = next((p for p in (os.environ.get("EDITQ_CHROMIUM"), shutil.which("chromium"),
                             "/usr/bin/chromium") if p and Path(p).exists()), None)
SKIP = "no Chromium: `apt-get install -y chromium` to run the console's browser tests"
OUT = Path(os.environ.get("EDITQ_TEST_OUTPUT", Path(__file__).parents[2] / "test-output"))
WAIT = 60_000  # ms: a step waits on a condition, never a fixed sleep


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        if os.environ.get("EDITQ_REQUIRE_BROWSER"):  # .ci/run: they must run there
            pytest.fail(SKIP)
        pytest.skip(SKIP)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # As root (CI), Chromium's sandbox cannot start.
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        yield browser
        browser.close()


def key_for(live: Live, name: str, budget: Decimal | None = None) -> str:
    with session_scope(live.settings.database_url) as session:
        tenant = get_or_create_tenant(session, name)
        if budget is not None:
            set_limits(session, tenant, monthly_budget=budget)
        return create_api_key(session, name)


class Walk:
    """One browser page at one width, and a numbered screenshot per step."""

    def __init__(self, page: Any, live: Live, width: int) -> None:
        self.page, self.live, self.width = page, live, width
        self.folder = OUT / "console" / f"{width}px"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def shot(self, name: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(self.folder / f"{self.count:02d}-{name}.png"),
                             full_page=True)

    def open(self, view: str) -> None:
        self.page.evaluate(f"location.hash = '#{view}'")
        self.page.wait_for_selector(f"#view[data-ready='{view}']", timeout=WAIT)

    def sign_in(self, key: str) -> None:
        self.page.goto(f"{self.live.api_url}/console/")
        self.page.fill("#api-key", key)
        self.page.click("#sign-in-form button[type=submit]")
        self.page.wait_for_selector("#view[data-ready='models']", timeout=WAIT)

    def upload(self, selector: str, size: tuple[int, int] = (160, 120)) -> None:
        self.page.set_input_files(selector, {"name": "photo.png", "mimeType": "image/png",
                                             "buffer": image_bytes(size)})


def input_refs(live: Live, job_id: str) -> dict[str, Any]:
    with session_scope(live.settings.database_url) as session:
        refs: dict[str, Any] = session.query(Job.input_refs).filter(Job.id == job_id).scalar()
    return refs


@contextmanager
def opened(browser: Any, live: Live, width: int = 1280) -> Iterator[Walk]:
    """A browser page of its own at `width`, closed on the way out; a script error on the
    page fails the test."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield Walk(page, live, width)
    finally:
        context.close()
    assert errors == [], f"the page raised: {errors}"


@pytest.fixture(params=[1280, 390], ids=["1280px", "390px"])
def steps(request: pytest.FixtureRequest, browser: Any, live: Live) -> Iterator[Walk]:
    with opened(browser, live, request.param) as made:
        yield made


def test_the_console_end_to_end(steps: Walk, live: Live) -> None:
    page = steps.page
    tenant = f"console-{steps.width}-{uuid.uuid4().hex[:6]}"
    key = key_for(live, tenant)
    api = ApiClient(live.api_url, key)

    # given the sign-in page, when a key is pasted, then the model picker shows
    page.goto(f"{live.api_url}/console/")
    page.wait_for_selector("#api-key")
    steps.shot("sign-in")
    steps.sign_in(key)
    assert page.evaluate("sessionStorage.getItem('editq.apiKey')") == key
    assert key not in page.url
    # every model, grouped by tier
    tiers = page.eval_on_selector_all("section.tier", "els => els.map(e => e.dataset.tier)")
    assert tiers == ["budget", "mid", "premium", "variable", "specialized"]
    assert page.locator(".model-card").count() == 25
    steps.shot("models")

    # when a premium model is picked, its price range and a live quote show
    page.click("section[data-tier=premium] .model-card[data-model='ideogram-character']")
    page.wait_for_selector("#model-quote:has-text('Quote: $0.15')", timeout=WAIT)
    assert page.inner_text("#model-price") == "Price: $0.10 to $0.20 by rendering speed"
    # and choosing another option re-quotes
    page.select_option("#detail-options select[name=rendering_speed]", "Quality")
    page.wait_for_selector("#model-quote:has-text('Quote: $0.2')", timeout=WAIT)
    steps.shot("model-quote")

    # when the operation changes in the edit form, the recommendations change with it
    steps.open("edit")
    page.select_option("#operation", "general_edit")
    page.wait_for_selector("#recs-for:has-text('general_edit')", timeout=WAIT)
    cheapest = page.inner_text("#recommendations li[data-pick=cheapest]")
    assert "local-pillow" not in cheapest and "qwen-edit" in cheapest
    page.select_option("#operation", "grayscale")
    page.wait_for_selector("#recs-for:has-text('grayscale')", timeout=WAIT)
    assert "local-pillow" in page.inner_text("#recommendations li[data-pick=cheapest]")
    steps.shot("recommendations")

    # when an edit is submitted, its output image appears in the page
    page.select_option("#operation", "general_edit")
    page.select_option("#model", "qwen-edit")
    steps.upload("#image")
    page.fill("#prompt", "replace the sky with a sunset")
    page.wait_for_selector("#edit-quote:has-text('Quote: $0.02')", timeout=WAIT)
    page.click("#submit-edit")
    page.wait_for_selector("#job-result[data-status=succeeded] img.output", timeout=WAIT)
    assert page.eval_on_selector("#job-result img.output",
                                 "img => img.complete && img.naturalWidth > 0")
    steps.shot("edit-output")
    # and the file went straight to storage as a direct upload, never through the API
    first = page.inner_text("#job-result code")
    assert list(input_refs(live, first)["images"][0]) == ["upload"]

    # when an image is given by its URL instead, the worker fetches it
    page.select_option("#operation", "grayscale")
    page.fill("#image-url", f"{live.image_url}/img/console-{steps.width}.png?w=90&h=60")
    page.click("#submit-edit")
    page.wait_for_function(
        "id => { const r = document.querySelector('#job-result');"
        " return r && r.dataset.status === 'succeeded' && !r.innerText.includes(id); }",
        arg=first, timeout=WAIT)
    by_url = page.inner_text("#job-result code")
    assert input_refs(live, by_url)["images"][0]["url"].startswith(live.image_url)
    page.fill("#image-url", "")
    steps.shot("edit-by-url")

    # when three models are compared, the grid fills in, and a vote is recorded
    steps.open("compare")
    page.select_option("#cmp-operation", "general_edit")
    steps.upload("#cmp-image")
    page.fill("#cmp-prompt", "make it a watercolour")
    for model in ("qwen-edit", "seededit-v3", "flux-kontext-pro"):
        page.check(f"#cmp-models input[value='{model}']")
    page.click("#run-compare")
    page.wait_for_selector("#comparison[data-status=completed]", timeout=WAIT)
    assert page.locator("#comparison article[data-status=succeeded] img.output").count() == 3
    page.click("#comparison article[data-model='seededit-v3'] button")
    page.wait_for_selector("#comparison article[data-model='seededit-v3'].selected",
                           timeout=WAIT)
    comparison_id = page.get_attribute("#comparison", "data-id")
    voted = api.http.get(f"/v1/comparisons/{comparison_id}").json()
    assert voted["vote"]["model"] == "seededit-v3"
    steps.shot("compare")

    # when the costs view opens, the chart shows the charges just made
    steps.open("costs")
    report = api.http.get("/v1/costs", params={"group_by": "model"}).json()
    charged = {r["model"]: r["amount"] for r in report["rows"]}
    assert set(charged) == {"qwen-edit", "seededit-v3", "flux-kontext-pro", "local-pillow"}
    drawn = page.eval_on_selector_all(
        "#chart-models li", "els => els.map(e => [e.dataset.key, e.dataset.amount])")
    assert dict(drawn) == charged
    assert page.locator("#chart-days li").count() == 1
    # and its text is as large as the page's at every width (an SVG scaled to a phone made
    # it 6 px)
    sizes = page.eval_on_selector_all(
        "#chart-models li span", "els => els.map(e => parseFloat(getComputedStyle(e).fontSize))")
    assert min(sizes) >= 12
    # and a range of days before any charge shows none
    page.fill("#cost-from", "2020-01-01")
    page.fill("#cost-to", "2020-01-31")
    page.click("#cost-range button[type=submit]")
    page.wait_for_selector("#costs-total:has-text('2020-01-01 to 2020-01-31: $0 charged')",
                           timeout=WAIT)
    assert page.locator("#chart-models li").count() == 0
    steps.shot("costs")

    # the jobs view lists them, filters by model, and shows a job's timeline
    steps.open("jobs")
    page.select_option("#f-model", "seededit-v3")
    page.click("#job-filters button[type=submit]")
    page.wait_for_function(
        "document.querySelectorAll('#jobs-table tbody tr').length === 1", timeout=WAIT)
    page.click("#jobs-table tbody tr button.open-job")
    page.wait_for_selector("#job-detail .timeline li", timeout=WAIT)
    # then the timeline says what happened in words, each event a line timed from the first
    lines = page.eval_on_selector_all("#job-detail .timeline li",
                                      "els => els.map(e => e.innerText)")
    assert lines[0].startswith("+0.00 s Accepted and queued for seededit-v3"), lines
    assert lines[-1].split(" s ", 1)[1] == "Succeeded with 1 output", lines
    detail = page.inner_text("#job-detail")
    assert "null" not in detail and "{" not in detail and "->" not in detail
    # and each output has a download link to its own image
    link = page.get_attribute("#job-detail a.download", "href")
    assert link == page.get_attribute("#job-detail img.output", "src")
    # and the detail is where the user looks, and holds the focus
    assert in_viewport(page, "#job-detail h3")
    assert page.evaluate("document.getElementById('job-detail').contains(document.activeElement)")
    # and nothing on the page scrolls sideways, at 390 px as at 1280
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    steps.shot("jobs")

    # the batches view shows a batch's progress
    made = api.create_batch({"items": [{"image": b64(image_bytes()), "operation": "grayscale"},
                                       {"image": b64(image_bytes()), "operation": "flip"}]})
    steps.open("batches")
    page.wait_for_selector(f"article[data-batch='{made['id']}']", timeout=WAIT)
    steps.shot("batches")

    # and a tenant over its budget is refused in words
    poor = key_for(live, f"{tenant}-poor", budget=Decimal("0.01"))
    page.click("#sign-out")
    page.wait_for_selector("#api-key")
    steps.sign_in(poor)
    steps.open("edit")
    page.select_option("#operation", "general_edit")
    page.select_option("#model", "flux-kontext-max")
    steps.upload("#image")
    page.fill("#prompt", "make it night")
    page.click("#submit-edit")
    page.wait_for_selector("#message:has-text('Over budget')", timeout=WAIT)
    assert "budget of 0.01 USD" in page.inner_text("#message")
    steps.shot("over-budget")
    assert httpx.get(f"{live.api_url}/console/js/app.js").status_code == 200



def test_a_mask_is_quoted_and_compared(browser: Any, live: Live) -> None:
    with opened(browser, live) as steps:
        page = steps.page
        # ("st-": the Stability billing check counts this tenant's calls, see
        # tests/integration/test_stability_operations.py)
        steps.sign_in(key_for(live, f"st-console-mask-{uuid.uuid4().hex[:6]}"))
        # given the edit view on a model that needs a mask, its quote says so
        steps.open("edit")
        page.select_option("#operation", "inpaint")
        page.select_option("#model", "z-image-turbo-inpaint")
        steps.upload("#image")
        page.fill("#prompt", "a red balloon")
        page.wait_for_selector("#edit-quote:has-text('mask')", timeout=WAIT)
        assert not page.inner_text("#edit-quote").startswith("Quote:")
        # when a mask is chosen, then the quote is made again, with it
        steps.upload("#mask")
        page.wait_for_selector("#edit-quote:has-text('Quote: $')", timeout=WAIT)
        assert "one price per image" in page.inner_text("#edit-quote")  # not `flat`

        # when compare opens, it keeps an operation of its own, not the edit view's
        steps.open("compare")
        assert page.input_value("#cmp-operation") == "general_edit"
        # and two inpainting models, one of which needs a mask, compare with one
        page.select_option("#cmp-operation", "inpaint")
        assert page.is_visible("#cmp-mask")
        steps.upload("#cmp-image")
        steps.upload("#cmp-mask")
        page.fill("#cmp-prompt", "a red balloon")
        for model in ("z-image-turbo-inpaint", "stability-inpaint"):
            page.check(f"#cmp-models input[value='{model}']")
        page.click("#run-compare")
        page.wait_for_selector("#comparison[data-status=completed]", timeout=WAIT)
        assert page.locator("#comparison article[data-status=succeeded]").count() == 2
        steps.shot("compare-with-mask")
        # and going back to edit finds its own operation as it was left
        steps.open("edit")
        assert page.input_value("#operation") == "inpaint"


def test_the_edit_view_follows_a_job_by_its_stream(browser: Any, live: Live) -> None:
    # given a provider that takes a while, and a log of every request the page makes
    requests: list[str] = []
    with live.wavespeed_latency("2"), opened(browser, live) as steps:
        page = steps.page
        page.on("request", lambda request: requests.append(request.url))
        steps.sign_in(key_for(live, f"console-stream-{uuid.uuid4().hex[:6]}"))
        steps.open("edit")
        page.select_option("#operation", "general_edit")
        page.select_option("#model", "qwen-edit")
        steps.upload("#image")
        page.fill("#prompt", "make it blue")
        # when an edit is submitted
        page.click("#submit-edit")
        # then its status changes on the page as the job moves, to its end
        page.wait_for_selector("#job-result[data-status=running]", timeout=WAIT)
        page.wait_for_selector("#job-result[data-status=succeeded] img.output", timeout=WAIT)
        job_id = page.inner_text("#job-result code")
    # and all of that came from the job's stream: the job was never asked for again
    paths = [urlsplit(url).path for url in requests]
    assert paths.count(f"/v1/jobs/{job_id}/stream") == 1
    assert f"/v1/jobs/{job_id}" not in paths


def in_viewport(page: Any, selector: str) -> bool:
    return bool(page.eval_on_selector(selector, """e => { const r = e.getBoundingClientRect();
        return r.top >= 0 && r.bottom <= window.innerHeight; }"""))


def test_every_problem_is_shown_in_words(browser: Any, live: Live) -> None:
    # given the console's own error wording, loaded in the browser as the page loads it
    page = browser.new_page()
    page.goto(f"{live.api_url}/console/")
    shown = page.evaluate("""async () => {
        const { ApiError, describe } = await import('./js/api.js');
        const say = (status, problem, retry) => describe(new ApiError(status, problem, retry));
        return {
          402: say(402, {detail: "the estimate of 0.08 USD would take ... over 0.01 USD"}),
          413: say(413, {detail: "the request body is over 100 bytes"}),
          422: say(422, {detail: "prompt is longer than 10000 characters", field: "prompt"}),
          refused: say(422, {detail: "1 of 2", refusals: [{model: "m", detail: "no mask"}]}),
          429: say(429, {detail: "plan 'free' allows 5 edits per month"}, "30"),
          down: describe(new TypeError("Failed to fetch")),
        };
    }""")
    page.close()
    # then each says what happened and what to do, with the field or the wait
    assert shown["402"].startswith("Over budget: the estimate of 0.08 USD")
    assert shown["413"] == "Too large: the request body is over 100 bytes"
    assert shown["422"] == "Check prompt: prompt is longer than 10000 characters"
    assert shown["refused"] == "Some models cannot take this request: m: no mask"
    assert shown["429"].endswith("Try again in 30 s.")
    assert shown["down"] == "Could not reach the API: Failed to fetch"


def test_docs_and_redoc_work_offline(browser: Any, live: Live) -> None:
    # given a browser that may reach nothing but the API itself
    page = browser.new_page()
    outside: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(live.api_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    # when /docs and /redoc are opened, they render every operation from the package's assets
    page.goto(f"{live.api_url}/docs")
    page.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=WAIT)
    assert page.locator(".swagger-ui .opblock").count() >= 20
    page.goto(f"{live.api_url}/redoc")
    page.wait_for_function("document.querySelectorAll('li[data-item-id]').length >= 20",
                           timeout=WAIT)
    assert "Create Comparison" in page.inner_text("body")
    page.close()
    # (ReDoc's bundle links its own logo, in the page's footer, from cdn.redoc.ly: with
    # it refused, as offline, the page is whole; nothing else is asked for)
    assert [u for u in outside if u != "https://cdn.redoc.ly/redoc/logo-mini.svg"] == []
