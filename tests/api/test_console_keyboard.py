"""The console by keyboard alone, and what it does when its key stops working.

A keyboard user signs in, chooses a model, uploads, submits, reads the job's timeline and
cancels a job, with nothing but Tab, Shift+Tab, Enter and Space, and can always see where
the focus is. (The file chooser is the operating system's dialog, which no page can drive:
the test reaches the file input by keyboard and then sets its file as that dialog would.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared.db import session_scope, utcnow
from shared.models import ApiKey
from tests.api.test_console import WAIT, browser, in_viewport, key_for, opened
from tests.api_client import ApiClient
from tests.conftest import Live
from tests.helpers import image_bytes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
__all__ = ["browser"]  # the fixture, shared with test_console

FOCUSED = """() => { const e = document.activeElement;
  if (!e || e === document.body) return null;
  const style = getComputedStyle(e);
  return { id: e.id, tag: e.tagName, text: (e.innerText || e.value || "").slice(0, 60),
           model: e.dataset.model || null, job: e.closest("tr")?.dataset.job || null,
           outline: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2 }; }"""


class Keys:
    """Tab through the page until the focus is where a user wants it, checking on every
    stop that the focus can be seen."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.stops = 0

    def focused(self) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.page.evaluate(FOCUSED)
        return found

    def tab_to(self, wanted: str, limit: int = 80, back: bool = False) -> dict[str, Any]:
        """Press Tab (Shift+Tab if `back`) until the focused element matches `wanted`."""
        for _ in range(limit):
            self.page.keyboard.press("Shift+Tab" if back else "Tab")
            self.stops += 1
            now = self.focused()
            assert now is not None, "the focus fell to the page's body"
            assert now["outline"], f"the focus cannot be seen on {now}"
            if self.page.evaluate("s => document.activeElement.matches(s)", wanted):
                return now
        raise AssertionError(f"{wanted} was not reached in {limit} presses of Tab")


@pytest.fixture
def slow_provider(live: Live) -> Iterator[None]:
    """WaveSpeed's simulator answering slowly, so a job is still running when cancelled."""
    with live.wavespeed_latency("8"):
        yield


def test_keyboard_only_from_sign_in_to_cancel(browser: Any, live: Live,
                                              slow_provider: None) -> None:
    key = key_for(live, f"keyboard-{uuid.uuid4().hex[:6]}")
    with opened(browser, live) as steps:
        page = steps.page
        steps.folder = steps.folder.parent / "keyboard"
        steps.folder.mkdir(parents=True, exist_ok=True)
        keys = Keys(page)
        # given the sign-in page: the focus is already in the key's field
        page.goto(f"{live.api_url}/console/")
        page.wait_for_selector("#api-key")
        assert (keys.focused() or {}).get("id") == "api-key"
        # when the key is typed and Enter pressed, the models show and hold the focus
        page.keyboard.type(key)
        page.keyboard.press("Enter")
        page.wait_for_selector("#view[data-ready='models']", timeout=WAIT)
        assert (keys.focused() or {}).get("text") == "Models"
        steps.shot("signed-in")

        # when a model card is reached by Tab and chosen with Space, its detail opens
        keys.tab_to(".model-card[data-model='qwen-edit']")
        page.keyboard.press(" ")
        page.wait_for_selector("#model-quote:has-text('Quote:')", timeout=WAIT)
        assert (keys.focused() or {}).get("text") == "qwen-edit"  # the detail's heading
        # and Enter chooses another just as well (Shift+Tab goes back among the cards)
        keys.tab_to(".model-card[data-model='seededit-v3']", back=True)
        page.keyboard.press("Enter")
        page.wait_for_selector("#model-detail h3:has-text('seededit-v3')", timeout=WAIT)
        keys.tab_to("#use-model")
        page.keyboard.press("Enter")
        page.wait_for_selector("#view[data-ready='edit']", timeout=WAIT)
        assert page.input_value("#model") == "seededit-v3"
        steps.shot("edit")

        # when the image input is reached (its file set as the system's dialog would) and
        # a prompt typed, Enter on Submit starts the job, and its progress shows
        keys.tab_to("#image")
        page.set_input_files("#image", {"name": "photo.png", "mimeType": "image/png",
                                        "buffer": image_bytes((160, 120))})
        keys.tab_to("#prompt")
        page.keyboard.type("make it a watercolour")
        keys.tab_to("#submit-edit")
        page.keyboard.press("Enter")
        page.wait_for_selector("#job-result[data-status]", timeout=WAIT)
        job_id = page.inner_text("#job-result code")
        steps.shot("submitted")

        # when the jobs view is reached from the navigation by keyboard
        keys.tab_to("nav a[href='#jobs']", back=True)
        page.keyboard.press("Enter")
        page.wait_for_selector("#view[data-ready='jobs']", timeout=WAIT)
        # then the job's row opens with Enter, and its timeline and Cancel are in view
        now = keys.tab_to(f"tr[data-job='{job_id}'] button.open-job")
        assert now["job"] == job_id
        page.keyboard.press("Enter")
        page.wait_for_selector("#job-detail #cancel-job", timeout=WAIT)
        assert in_viewport(page, "#job-detail h3")
        assert page.locator("#job-detail .timeline li").count() >= 1
        # and Cancel, reached by Tab and pressed with Space, cancels it
        keys.tab_to("#cancel-job", limit=20)
        page.keyboard.press(" ")
        page.wait_for_selector("#job-detail .timeline li[data-type=canceled]", timeout=WAIT)
        assert ApiClient(live.api_url, key).get(job_id)["status"] == "canceled"
        steps.shot("canceled")
        assert keys.stops < 250  # and it took a reasonable number of key presses


def test_a_key_revoked_mid_session_signs_out_and_clears_the_page(browser: Any,
                                                                 live: Live) -> None:
    # given a signed-in console showing a tenant's jobs
    name = f"revoked-{uuid.uuid4().hex[:6]}"
    key = key_for(live, name)
    ApiClient(live.api_url, key).submit(image_bytes(), operation="grayscale")
    with opened(browser, live) as steps:
        page = steps.page
        steps.sign_in(key)
        steps.open("jobs")
        assert page.locator("#jobs-table tbody tr").count() == 1
        # when the key is revoked and the user moves on
        with session_scope(live.settings.database_url) as session:
            session.query(ApiKey).filter(ApiKey.prefix == key[:10]).update(
                {ApiKey.revoked_at: utcnow()})
            session.commit()
        page.evaluate("location.hash = '#costs'")
        # then the console is back at sign-in, says why, and shows none of the tenant's data
        page.wait_for_selector("#api-key", timeout=WAIT)
        assert "API key was refused" in page.inner_text("#message")
        assert page.locator("#jobs-table").count() == 0
        assert page.evaluate("sessionStorage.getItem('editq.apiKey')") is None
        assert page.is_hidden("#nav")
