"""The simulator's own `/_sim` endpoints: what tests and benchmarks ask of it.

They are not part of WaveSpeed's API, need no key and never meet injected
faults, so a test can always read the truth (what was billed, what was
submitted) even while the provider side is made to misbehave. The handlers
are the shared ones (admin.py), read in WaveSpeed's fault vocabulary; the
request log holds the submits that got past injected faults.
"""

from __future__ import annotations

from aiohttp import web

from simulators.admin import AdminState, SimAdmin
from simulators.common import WAVESPEED_FAULTS
from simulators.wavespeed_tasks import STATE


def _state(request: web.Request) -> AdminState:
    return request.app[STATE]


ADMIN = SimAdmin(_state, WAVESPEED_FAULTS)


def add_admin_routes(app: web.Application) -> None:
    ADMIN.add_routes(app)
