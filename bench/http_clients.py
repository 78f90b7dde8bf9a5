"""What one look costs the worker in CPU, by HTTP client: why the in-flight engine looks
with aiohttp (shared/providers/looks.py) while editq's other calls use httpx.

Starts the WaveSpeed simulator in its own process on 127.0.0.1 and GETs an unknown task's
result 1,000 times per client and pool size, at most `gate` requests out at once, as the
engine does. Reports this process's CPU per GET (user + system, `time.process_time`).

    .venv/bin/python bench/http_clients.py
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).parent))
from wavespeed_inflight import machine

from cli.stack import embedded_stack

PATH, HEADERS, N = "/api/v3/predictions/nope/result", {"Authorization": "Bearer k"}, 1000


async def with_httpx(url: str, connections: int, gate: int) -> float:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    sem = asyncio.Semaphore(gate)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        async def one() -> None:
            async with sem:
                await client.get(PATH, headers=HEADERS)
        await asyncio.gather(*(one() for _ in range(50)))  # warm the pool
        began = time.process_time()
        await asyncio.gather(*(one() for _ in range(N)))
        return (time.process_time() - began) / N * 1000


async def with_aiohttp(url: str, connections: int, gate: int) -> float:
    sem = asyncio.Semaphore(gate)
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=connections),
                                     headers=HEADERS) as client:
        async def one() -> None:
            async with sem, client.get(PATH) as response:
                await response.read()
        await asyncio.gather(*(one() for _ in range(50)))
        began = time.process_time()
        await asyncio.gather(*(one() for _ in range(N)))
        return (time.process_time() - began) / N * 1000


def main() -> int:
    rows = []
    with embedded_stack(None) as stack:
        url = stack.start_wavespeed_sim(latency="0", extra=["--api-key", "k"])
        for connections, gate in ((1, 1), (4, 4), (16, 16), (64, 64)):
            for name, run in (("httpx.AsyncClient", with_httpx), ("aiohttp", with_aiohttp)):
                ms = asyncio.run(run(url, connections, gate))
                rows.append({"client": name, "connections": connections, "in_flight": gate,
                             "cpu_ms_per_get": round(ms, 3)})
                print(f"{name:18} {connections:3} connections: {ms:.3f} ms of CPU per GET")
    out = Path("bench/results/http_clients.json")
    out.write_text(json.dumps({"benchmark": "http_clients", "gets": N, "machine": machine(),
                               "date": datetime.now(UTC).isoformat(timespec="seconds"),
                               "results": rows}, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
