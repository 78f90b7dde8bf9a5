"""The simulator's own `/_sim` endpoints: what tests and benchmarks ask of it.

They are not part of WaveSpeed's API, need no key and never meet injected
faults, so a test can always read the truth (what was billed, what was
submitted) even while the provider side is made to misbehave.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shared.simulators.common import Fault, Latency, parse_fault_rates
from shared.simulators.wavespeed_tasks import STATE


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


async def requests_log(request: web.Request) -> web.Response:
    """The last N submits that got past injected faults, oldest first, without credentials."""
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        return _bad("limit must be an integer")
    entries = list(request.app[STATE].requests)
    return web.json_response(entries[-limit:] if limit > 0 else [])


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].faults.as_json())


async def set_faults(request: web.Request) -> web.Response:
    """`script` replaces the scripted steps and `rates` the random rules, each if given."""
    plan = request.app[STATE].faults
    body = await _json(request)
    if not isinstance(body, dict):
        return _bad('expected JSON {"script": [{"endpoint", "fault"}...], "rates": "SPEC"}')
    try:
        script = None
        if "script" in body:
            if not isinstance(body["script"], list):
                raise ValueError("script must be a list")
            script = [Fault(str(step["fault"]), str(step.get("endpoint", "any")))
                      for step in body["script"]]
        rates = parse_fault_rates(str(body["rates"])) if "rates" in body else None
    except (ValueError, KeyError, TypeError) as exc:
        return _bad(f"invalid faults: {exc}")
    if script is not None:
        plan.script.clear()
        plan.script.extend(script)
    if rates is not None:
        plan.rates = rates
    return web.json_response(plan.as_json())


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE].faults.clear()
    return web.json_response(request.app[STATE].faults.as_json())


async def reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.json_response({"reset": True})


async def get_latency(request: web.Request) -> web.Response:
    return web.json_response({"latency": str(request.app[STATE].latency)})


async def set_latency(request: web.Request) -> web.Response:
    """Applies to tasks submitted from now on; running tasks keep their sampled latency."""
    body = await _json(request)
    if not isinstance(body, dict) or "latency" not in body:
        return _bad('expected JSON {"latency": "SPEC"}')
    try:
        request.app[STATE].latency = Latency.parse(str(body["latency"]))
    except ValueError as exc:
        return _bad(str(exc))
    return web.json_response({"latency": str(request.app[STATE].latency)})


def add_admin_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/_sim/stats", stats, name="admin-stats")
    r.add_get("/_sim/requests", requests_log, name="admin-requests")
    r.add_get("/_sim/faults", get_faults, name="admin-faults")
    r.add_post("/_sim/faults", set_faults, name="admin-faults-set")
    r.add_delete("/_sim/faults", clear_faults, name="admin-faults-clear")
    r.add_post("/_sim/reset", reset, name="admin-reset")
    r.add_get("/_sim/latency", get_latency, name="admin-latency")
    r.add_put("/_sim/latency", set_latency, name="admin-latency-set")
