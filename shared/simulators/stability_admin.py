"""The Stability simulator's own `/_sim` endpoints: what tests and benchmarks ask of it.

They are not part of Stability's API, need no key, are never rate limited and
never meet injected faults, so a test can always read the truth (what was
billed, what was submitted) even while the provider side misbehaves.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shared.simulators.common import Fault, Latency
from shared.simulators.stability_state import STABILITY_FAULTS, STATE, parse_faults


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
    """The last N submits, oldest first, without credentials."""
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
            script = [Fault(str(step["fault"]), str(step.get("endpoint", "any")),
                            vocabulary=STABILITY_FAULTS) for step in body["script"]]
        rates = parse_faults(str(body["rates"])) if "rates" in body else None
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
    """Forget results, counters, billing and the log; latency, faults and the rate limit go
    back to the configuration's."""
    request.app[STATE].reset()
    return web.json_response({"reset": True})


async def get_latency(request: web.Request) -> web.Response:
    return web.json_response({"latency": str(request.app[STATE].latency)})


async def set_latency(request: web.Request) -> web.Response:
    """Applies to requests from now on; running generations keep their sampled latency."""
    body = await _json(request)
    if not isinstance(body, dict) or "latency" not in body:
        return _bad('expected JSON {"latency": "SPEC"}')
    try:
        request.app[STATE].latency = Latency.parse(str(body["latency"]))
    except ValueError as exc:
        return _bad(str(exc))
    return web.json_response({"latency": str(request.app[STATE].latency)})


def _limit_json(request: web.Request) -> web.Response:
    limiter = request.app[STATE].limiter
    return web.json_response({"rate_limit": limiter.limit, "rate_window": limiter.window,
                              "lockout": limiter.lockout})


async def get_rate_limit(request: web.Request) -> web.Response:
    return _limit_json(request)


async def set_rate_limit(request: web.Request) -> web.Response:
    """Any of rate_limit, rate_window, lockout; the window and any lockout start afresh."""
    limiter = request.app[STATE].limiter
    body = await _json(request)
    if not isinstance(body, dict) or not body or set(body) - {"rate_limit", "rate_window",
                                                               "lockout"}:
        return _bad('expected JSON with any of "rate_limit", "rate_window", "lockout"')
    try:
        limit = body.get("rate_limit", limiter.limit)
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise ValueError("rate_limit must be an integer")
        limiter.configure(limit, float(body.get("rate_window", limiter.window)),
                          float(body.get("lockout", limiter.lockout)))
    except (ValueError, TypeError) as exc:
        return _bad(str(exc))
    return _limit_json(request)


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
    r.add_get("/_sim/rate-limit", get_rate_limit, name="admin-rate-limit")
    r.add_put("/_sim/rate-limit", set_rate_limit, name="admin-rate-limit-set")
