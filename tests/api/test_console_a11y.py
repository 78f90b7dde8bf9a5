"""The console's accessibility, checked by axe-core in Chromium on every view.

axe-core (tests/api/vendor/axe-core/, vendored: see its README) is injected into the page
by the test, never served by the console. At 1280 and at 390 px wide, each view (the
sign-in page, the models, a model chosen, edit, compare, the jobs, a job's detail, the
costs, the batches) is audited; a violation of impact "serious" or "critical" fails the
test, listed by view with its rule, help text and the elements it names. Each view's
screenshot and axe's full findings (every impact) are kept under
test-output/console/a11y/<width>px/.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_console import OUT, WAIT, Walk, browser, key_for, opened
from tests.api_client import ApiClient
from tests.conftest import Live
from tests.helpers import image_bytes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

__all__ = ["browser"]  # the fixture, imported so that this module's test can use it

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")

# What axe finds, reduced to what a report needs (the page's own objects stay there).
RUN_AXE = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl, tags: v.tags,
    nodes: v.nodes.map((n) => ({
      target: n.target.map((t) => Array.isArray(t) ? t.join(" >>> ") : String(t)),
      html: n.html, impact: n.impact, failureSummary: n.failureSummary })),
  }));
}"""

QUOTED = """() => { const q = document.querySelector('#model-quote');
  return q !== null && !q.textContent.startsWith('Quoting'); }"""


class Audit:
    """axe's violations per view, and a screenshot of each view, at one width."""

    def __init__(self, steps: Walk) -> None:
        self.steps = steps
        steps.folder = OUT / "console" / "a11y" / f"{steps.width}px"
        steps.folder.mkdir(parents=True, exist_ok=True)
        self.found: dict[str, list[dict[str, Any]]] = {}

    def check(self, view: str) -> None:
        page = self.steps.page
        self.steps.shot(view)
        page.add_script_tag(path=str(AXE))
        page.wait_for_function("typeof window.axe?.run === 'function'", timeout=WAIT)
        self.found[view] = page.evaluate(RUN_AXE)

    def blocking(self) -> dict[str, list[dict[str, Any]]]:
        return {view: [v for v in found if v["impact"] in BLOCKING]
                for view, found in self.found.items()
                if any(v["impact"] in BLOCKING for v in found)}

    def save(self) -> None:
        (self.steps.folder / "axe.json").write_text(json.dumps(self.found, indent=2))

    def report(self) -> str:
        lines = [f"axe-core found serious or critical violations at {self.steps.width} px "
                 f"(all findings: {self.steps.folder / 'axe.json'}):"]
        for view, violations in self.blocking().items():
            lines.append(f"  view {view}:")
            for v in violations:
                targets = ", ".join(" ".join(n["target"]) for n in v["nodes"][:3])
                more = len(v["nodes"]) - 3
                lines.append(f"    {v['id']} ({v['impact']}): {v['help']}")
                lines.append(f"      at {targets}" + (f" and {more} more" if more > 0 else ""))
                if v["nodes"]:
                    lines.append(f"      first: {v['nodes'][0]['html'][:200]}")
        return "\n".join(lines)


@pytest.mark.parametrize("width", [1280, 390], ids=["1280px", "390px"])
def test_every_view_passes_axe(width: int, browser: Any, live: Live) -> None:
    # given a tenant with one job ended, so the jobs and the costs views have something
    key = key_for(live, f"a11y-{width}-{uuid.uuid4().hex[:6]}")
    api = ApiClient(live.api_url, key)
    job = api.wait(api.submit(image_bytes((160, 120)), operation="grayscale")["id"], 60)
    assert job["status"] == "succeeded", job

    with opened(browser, live, width) as steps:
        page = steps.page
        audit = Audit(steps)
        try:
            # when each view is audited: the sign-in page first
            page.goto(f"{live.api_url}/console/")
            page.wait_for_selector("#api-key", timeout=WAIT)
            audit.check("sign-in")
            steps.sign_in(key)
            audit.check("models")
            page.locator(".model-card").first.click()
            page.wait_for_selector(".model-card.selected", timeout=WAIT)
            page.wait_for_function(QUOTED, timeout=WAIT)
            audit.check("model-chosen")
            steps.open("edit")
            page.wait_for_selector("#recs-for", timeout=WAIT)
            audit.check("edit")
            steps.open("compare")
            audit.check("compare")
            steps.open("jobs")
            page.wait_for_selector("#jobs-table tbody tr", timeout=WAIT)
            audit.check("jobs")
            page.locator("#jobs-table tbody tr button.open-job").first.click()
            page.wait_for_selector("#job-detail .timeline li", timeout=WAIT)
            audit.check("job-detail")
            steps.open("costs")
            audit.check("costs")
            steps.open("batches")
            audit.check("batches")
        finally:
            audit.save()

    # then none has a serious or critical violation, and the page raised nothing
    assert audit.blocking() == {}, audit.report()
