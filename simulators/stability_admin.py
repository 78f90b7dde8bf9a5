"""The Stability simulator's own `/_sim` endpoints: what tests and benchmarks ask of it.

They are not part of Stability's API, need no key, are never rate limited and
never meet injected faults, so a test can always read the truth (what was
billed, what was submitted) even while the provider side misbehaves. The
common handlers are the shared ones (admin.py), read in Stability's fault
vocabulary; the rate-limit endpoints are Stability's own.
"""

from __future__ import annotations

from aiohttp import web

from simulators.admin import AdminState, SimAdmin, bad, read_json
from simulators.stability_state import STABILITY_FAULTS, STATE


def _state(request: web.Request) -> AdminState:
    return request.app[STATE]


ADMIN = SimAdmin(_state, STABILITY_FAULTS)


def _limit_json(request: web.Request) -> web.Response:
    limiter = request.app[STATE].limiter
    return web.json_response({"rate_limit": limiter.limit, "rate_window": limiter.window,
                              "lockout": limiter.lockout})


async def get_rate_limit(request: web.Request) -> web.Response:
    return _limit_json(request)


async def set_rate_limit(request: web.Request) -> web.Response:
    """Any of rate_limit, rate_window, lockout; the window and any lockout start afresh."""
    limiter = request.app[STATE].limiter
    body = await read_json(request)
    if not isinstance(body, dict) or not body or set(body) - {"rate_limit", "rate_window",
                                                               "lockout"}:
        return bad('expected JSON with any of "rate_limit", "rate_window", "lockout"')
    try:
        limit = body.get("rate_limit", limiter.limit)
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise ValueError("rate_limit must be an integer")
        limiter.configure(limit, float(body.get("rate_window", limiter.window)),
                          float(body.get("lockout", limiter.lockout)))
    except (ValueError, TypeError) as exc:
        return bad(str(exc))
    return _limit_json(request)


def add_admin_routes(app: web.Application) -> None:
    ADMIN.add_routes(app)
    r = app.router
    r.add_get("/_sim/rate-limit", get_rate_limit, name="admin-rate-limit")
    r.add_put("/_sim/rate-limit", set_rate_limit, name="admin-rate-limit-set")
