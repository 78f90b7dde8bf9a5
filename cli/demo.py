"""`editq demo`: the whole service on one machine with nothing installed but the package."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import editq_client
from editq_client import Client, Job
from PIL import Image, ImageDraw
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cli.output import make_console, say
from cli.stack import embedded_stack
from cli.tables import row, table
from cli.webhook_receiver import WebhookReceiver


@dataclass(frozen=True)
class SampleEdit:
    label: str
    operation: str
    prompt: str | None = None
    options: dict[str, Any] | None = None
    model: str | None = None


SAMPLES = [
    SampleEdit(
        "prompted", "general_edit", "make it black and white and rotate 90", model="local-pillow"
    ),
    SampleEdit(
        "sepia", "general_edit", "give it a warm sepia look, then mirror it", model="local-pillow"
    ),
    SampleEdit("blur", "blur", options={"radius": 4}),
    SampleEdit("zoom-out", "zoom_out", options={"factor": 1.6}),
    SampleEdit("flip", "flip", options={"direction": "vertical", "output_format": "webp"}),
    SampleEdit("resize", "resize", options={"width": 96, "output_format": "jpeg"}),
    # WaveSpeed models, served by the project's simulator of WaveSpeed's v3 API.
    SampleEdit(
        "qwen",
        "general_edit",
        "replace the sky with a sunset",
        model="qwen-edit",
        options={"width": 512, "height": 384},
    ),
    SampleEdit("kontext", "text_edit", "write EDITQ on the red box", model="flux-kontext-pro"),
    SampleEdit(
        "character",
        "character",
        "the same character, reading a book",
        model="ideogram-character",
        options={"rendering_speed": "Quality"},
    ),
    SampleEdit(
        "gpt-image",
        "general_edit",
        "make it a watercolour",
        model="gpt-image-1-edit",
        options={"quality": "high", "size": "1024*1536"},
    ),
    SampleEdit(
        "outpaint", "outpaint", model="image-zoom-out", options={"width": 640, "height": 480}
    ),
    # Stability models, served by the project's simulator of Stability's v2beta API.
    SampleEdit("cutout", "remove_background", model="stability-remove-background"),
    SampleEdit("upscale", "upscale_fast", model="stability-upscale-fast"),
]
# Run side by side on one sample in the demo's comparison.
COMPARED = ["qwen-edit", "seededit-v3", "flux-kontext-pro"]


def sample_image(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A small picture with enough structure that each edit is visible."""
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    w, h = size
    for y in range(h):
        draw.line([(0, y), (w, y)], fill=(40 + y * 200 // h, 90 + seed * 30 % 120, 200 - y // 2))
    draw.ellipse([w // 5, h // 5, w // 2, h * 3 // 4], fill=(250, 200, 40), outline="black")
    draw.rectangle([w * 3 // 5, h // 3, w * 9 // 10, h * 4 // 5], fill=(200, 40, 60))
    draw.text((10, 10), f"editq #{seed}", fill="white")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _follow(client: Client, job_ids: list[str], timeout: float) -> Iterator[Job]:
    """Yield each job once it is terminal, polling the ones still going."""
    pending = set(job_ids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for job_id in sorted(pending):
            job = client.get(job_id)
            if job.done:
                pending.discard(job_id)
                yield job
        time.sleep(0.1)
    if pending:
        raise TimeoutError(f"{len(pending)} job(s) did not finish in {timeout:.0f}s")


def run_folder(out_dir: Path) -> Path:
    """A folder of this run's own under `out_dir` (run-YYYYmmdd-HHMMSS, UTC): runs never
    mix their files."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for n in range(100):
        folder = out_dir / (f"run-{stamp}" + (f"-{n}" if n else ""))
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"{out_dir}: 100 runs started in the same second")


def run_demo(out_dir: Path, keep: bool = False, workdir: Path | None = None) -> int:
    from shared.db import session_scope
    from shared.tenants import create_api_key

    # SIGTERM should unwind like Ctrl-C, so the stack's children are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    console = make_console()
    out_dir = run_folder(out_dir.resolve())
    with contextlib.ExitStack() as exits:
        stack = exits.enter_context(embedded_stack(workdir.resolve() if workdir else None))
        receiver = exits.enter_context(WebhookReceiver())
        with console.status(
            "starting redis-server, the S3 server, SQLite and the "
            "WaveSpeed and Stability simulators..."
        ):
            sim_url = stack.start_wavespeed_sim(latency="1-2.5", extra=["--api-key", "demo"])
            stability_url = stack.start_sim("stability", latency="1-2", extra=["--api-key", "demo"])
            image_url = stack.start_image_host()
            settings = stack.embed(
                "editq-demo",
                {
                    # Images by reference: the image host's URLs (loopback, allowed by name),
                    # the console's direct uploads, and WaveSpeed's simulator fetching the
                    # stored inputs from the S3 server itself.
                    "EDITQ_INPUT_ALLOWED_HOSTS": image_url.removeprefix("http://"),
                    "EDITQ_S3_CORS_ORIGINS": "*",
                    "EDITQ_PROVIDER_FETCHES_INPUTS": "true",
                    "EDITQ_WAVESPEED_BASE_URL": sim_url,
                    "EDITQ_WAVESPEED_API_KEY": "demo",
                    "EDITQ_STABILITY_BASE_URL": stability_url,
                    "EDITQ_STABILITY_API_KEY": "demo",
                    "EDITQ_STABILITY_LOOK_INTERVAL": "0.5",
                    "EDITQ_FOLLOW_INITIAL_SECONDS": "0.5",
                    # The demo's own webhook receiver listens on loopback, which the address
                    # guard refuses unless allowed by name.
                    "EDITQ_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
                    "EDITQ_WEBHOOK_DISPATCH_INTERVAL_SECONDS": "0.5",
                    "EDITQ_BULK_FEED_INTERVAL_SECONDS": "0.25",
                },
            )
            redis_url = settings.redis_url
            s3_url = settings.s3_endpoint_url
            with session_scope(settings.database_url) as session:
                key = create_api_key(session, "demo")
        with console.status("starting the API, a worker and beat..."):
            stack.start_worker(concurrency=4)
            stack.spawn("beat", [sys.executable, "-m", "cli.main", "beat", "--loglevel", "WARNING"])
            _, api_url = stack.start_api()
        say(console, "up:")
        for name, url in (
            ("API", api_url),
            ("Redis", redis_url),
            ("S3", s3_url),
            ("WaveSpeed simulator", sim_url),
            ("Stability simulator", stability_url),
            ("webhook receiver", receiver.url),
        ):
            say(console, f"  {name:<20} {url}", whole=True)

        client = exits.enter_context(Client(api_url, key, timeout=90))
        started: dict[str, float] = {}
        labels: dict[str, str] = {}
        for n, sample in enumerate(SAMPLES):
            job = client.submit(
                sample_image(n),
                prompt=sample.prompt,
                operation=sample.operation,
                options=sample.options,
                model=sample.model,
                metadata={"demo": sample.label},
                # one job tells the demo's receiver when it is done
                webhook_url=receiver.url if sample.label == "qwen" else None,
            )
            started[job.id] = time.monotonic()
            labels[job.id] = sample.label

        rows = []
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            bar = progress.add_task("running edits", total=len(started))
            for job in _follow(client, list(started), timeout=45):
                seconds = time.monotonic() - started[job.id]
                files = (
                    save_outputs(job, out_dir, labels[job.id]) if job.status == "succeeded" else []
                )
                rows.append((job, seconds, files))
                progress.advance(bar)
        rows.sort(key=lambda r: r[0].created_at)
        _print_jobs(console, rows, labels, out_dir)
        _print_costs(console, rows)
        failed = [job for job, _, _ in rows if job.status != "succeeded"]
        extras_ok = all(
            [
                _comparison(console, client, out_dir),
                _batch(console, client, image_url),
                _webhook(console, client, receiver),
            ]
        )

        if keep:
            say(console, "")
            say(console, f"Console: {api_url}/console/", whole=True)
            say(console, f"API: {api_url}  docs: {api_url}/docs", whole=True)
            say(
                console,
                "The database (for `editq costs`, `editq keys list`, `editq budget "
                "show demo`)"
                + (
                    ""
                    if workdir
                    else ", in a temporary folder removed when the demo stops (--workdir keeps it)"
                )
                + ":",
            )
            say(console, f"export EDITQ_DATABASE_URL={settings.database_url}", whole=True)
            say(console, "Paste the key into the console to sign in. Ctrl-C stops everything.")
            say(console, f"API key: {key}", whole=True)
            while all(child.alive() for child in stack.children):
                time.sleep(0.5)
            say(console, "a piece of the stack exited")
            return 1
    return 1 if failed or not extras_ok else 0


def save_outputs(job: Job, out_dir: Path, stem: str) -> list[Path]:
    """Each output as `<stem>.<ext>`, then `<stem>-1.<ext>`...: named by its sample."""
    return [
        output.save(out_dir / f"{stem}{f'-{n}' if n else ''}{output.extension}")
        for n, output in enumerate(job.outputs)
    ]


def _comparison(console: Console, client: Client, out_dir: Path) -> bool:
    """Three models side by side on one sample, the outputs and a contact sheet saved."""
    from cli.compare import run_compare

    photo = out_dir.parent / f".{out_dir.name}-compare-input.png"
    photo.write_bytes(sample_image(99))
    try:
        code = run_compare(
            client,
            photo,
            COMPARED,
            prompt="turn it into a watercolour",
            operation="general_edit",
            options={},
            out_dir=out_dir / "comparison",
            timeout=60,
            console=console,
        )
    finally:
        photo.unlink(missing_ok=True)
    return code == 0


def _batch(console: Console, client: Client, image_url: str) -> bool:
    """A batch of three edits, fed by beat on the bulk queue, followed to its end: one
    image inline, one by URL (the image host), one as a direct upload."""
    images: list[bytes | str] = [
        sample_image(20),  # bytes: the client sends them inline, as base64
        f"{image_url}/img/demo.png",
        client.uploads.create(sample_image(22)),
    ]
    batch = client.batches.create(
        [
            {"image": image, "operation": op}
            for image, op in zip(images, ("grayscale", "flip", "blur"), strict=True)
        ],
        metadata={"demo": "batch"},
    )
    deadline = time.monotonic() + 60
    while not batch.done and time.monotonic() < deadline:
        time.sleep(0.25)
        batch = client.batches.get(batch.id)
    done = int(batch.counts.get("succeeded", 0))
    say(
        console,
        f"batch {batch.id}: {batch.status}, {done} of {batch.total} "
        f"succeeded, {batch.cost['so_far']} USD",
    )
    return bool(batch.status == "completed" and done == batch.total)


def _webhook(console: Console, client: Client, receiver: WebhookReceiver) -> bool:
    """The qwen sample's job.succeeded, delivered to the receiver and signed."""
    deadline = time.monotonic() + 30
    delivered: list[editq_client.Delivery] = []
    while not delivered and time.monotonic() < deadline:
        time.sleep(0.25)
        delivered = client.webhooks.deliveries(status="delivered").data
    secret = client.webhooks.secret().secret
    verified = [m for m in receiver.received if m.verified(secret)]
    if delivered and verified:
        say(
            console,
            f"webhook: {delivered[0].event_type} delivered to the receiver, "
            f"signature verified ({len(verified)} received)",
        )
        return True
    say(console, "webhook: nothing delivered to the receiver")
    return False


def _print_jobs(
    console: Console,
    rows: list[tuple[Job, float, list[Path]]],
    labels: dict[str, str],
    out_dir: Path,
) -> None:
    """A line per edit, and the same in the run's summary.json (with job ids and costs)."""
    made = table(
        "edit",
        "model",
        "status",
        "seconds",
        "output",
        title="editq demo",
        right=("seconds",),
        wrap=("model", "output"),
    )
    summary = []
    for job, seconds, files in rows:
        row(
            made,
            labels[job.id],
            job.model,
            job.status,
            f"{seconds:.2f}",
            ", ".join(p.name for p in files) or "-",
        )
        summary.append(
            {
                "edit": labels[job.id],
                "job": job.id,
                "model": job.model,
                "status": job.status,
                "seconds": round(seconds, 3),
                "cost": editq_client.as_json(job.cost),
                "files": [p.name for p in files],
            }
        )
    console.print(made)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    say(console, "job ids and costs in summary.json; outputs in:")
    say(console, f"{out_dir}{os.sep}", whole=True)


def _print_costs(console: Console, rows: list[tuple[Job, float, list[Path]]]) -> None:
    per_model: dict[str, tuple[int, Decimal]] = {}
    for job, _, _ in rows:
        count, amount = per_model.get(job.model, (0, Decimal("0")))
        actual = Decimal(job.cost.actual or "0")
        per_model[job.model] = (count + 1, amount + actual)
    made = table(
        "model",
        "jobs",
        "cost (USD)",
        title="cost per model (simulated calls)",
        right=("jobs", "cost (USD)"),
    )
    for model, (count, amount) in sorted(per_model.items()):
        row(made, model, count, f"{amount:.3f}")
    console.print(made)
