"""`editq compare`: one photo on several models, the outputs saved, and one contact sheet.

The contact sheet is a PNG with one tile per model, side by side, each labelled with
the model, what it cost and how long it ran; the same labels are in the PNG's
`editq:tiles` text chunk, so a program can read what the picture shows.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import editq_client
from editq_client import Client, ComparisonResult
from PIL import Image, ImageDraw, PngImagePlugin
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cli.output import print_json, say
from cli.tables import row, table

TILE = 320  # each output is fitted into a TILE x TILE square
LABEL = 54  # the band under it holds three lines of text
GAP = 8
BACKGROUND = (255, 255, 255)


def _tile_labels(result: dict[str, Any]) -> list[str]:
    cost = result["cost"]["actual"] or result["cost"]["estimated"]
    seconds = result["run_seconds"]
    return [
        result["model"],
        f"{cost} {result['cost']['currency']}{'' if result['cost']['actual'] else ' (estimated)'}",
        f"{seconds:.1f} s" if seconds is not None else result["status"],
    ]


def contact_sheet(results: list[dict[str, Any]], images: dict[str, bytes]) -> bytes:
    """One tile per result, left to right: its output fitted in a square, labels below."""
    width = GAP + len(results) * (TILE + GAP)
    sheet = Image.new("RGB", (width, GAP + TILE + LABEL + GAP), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    tiles = []
    for n, result in enumerate(results):
        left = GAP + n * (TILE + GAP)
        data = images.get(result["model"])
        if data is not None:
            with Image.open(io.BytesIO(data)) as opened:
                img = opened.convert("RGB")
            img.thumbnail((TILE, TILE))
            sheet.paste(img, (left + (TILE - img.width) // 2, GAP + (TILE - img.height) // 2))
        else:
            draw.rectangle([left, GAP, left + TILE - 1, GAP + TILE - 1], outline=(180, 30, 30))
        labels = _tile_labels(result)
        for line, text in enumerate(labels):
            draw.text((left + 4, GAP + TILE + 4 + line * 16), text, fill=(20, 20, 20))
        tiles.append(
            {
                "model": result["model"],
                "left": left,
                "top": GAP,
                "size": TILE,
                "labels": labels,
                "has_output": data is not None,
            }
        )
    info = PngImagePlugin.PngInfo()
    info.add_text("editq:tiles", json.dumps(tiles))
    buf = io.BytesIO()
    sheet.save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def run_compare(
    client: Client,
    photo: Path,
    models: list[str],
    *,
    prompt: str | None,
    operation: str | None,
    options: dict[str, Any],
    out_dir: Path,
    timeout: float,
    console: Console,
    mask: bytes | None = None,
    as_json: bool = False,
) -> int:
    """Exit status 0 when every model succeeded, else 1. With `as_json`, the comparison as
    the API answers it (plus `saved` files and the `contact_sheet`) is all it prints."""
    comparison = client.comparisons.create(
        photo.read_bytes(), models, prompt=prompt, operation=operation, options=options, mask=mask
    )
    if not as_json:
        say(
            console,
            f"comparison {comparison.id}: {len(models)} models, estimated "
            f"{comparison.estimated_total} USD",
        )
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        TextColumn("{task.fields[detail]}", markup=False),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
    ) as progress:
        bar = progress.add_task(
            "models done", total=len(models), detail=_progress(comparison.results)
        )
        while comparison.status != "completed" and time.monotonic() < deadline:
            time.sleep(0.5)
            comparison = client.comparisons.get(comparison.id)
            progress.update(
                bar,
                completed=sum(
                    r.status in ("succeeded", "failed", "canceled") for r in comparison.results
                ),
                detail=_progress(comparison.results),
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}
    saved: dict[str, str] = {}
    for result in comparison.results:
        if result.outputs:
            output = result.outputs[0]
            data = output.read()
            ext = output.content_type.split("/")[-1].replace("jpeg", "jpg")
            path = out_dir / f"{result.model}.{ext}"
            path.write_bytes(data)
            images[result.model] = data
            saved[result.model] = path.name
    view = editq_client.as_json(comparison)  # as the API answered it
    sheet = out_dir / "contact-sheet.png"
    sheet.write_bytes(contact_sheet(view["results"], images))
    finished = comparison.status == "completed"
    if as_json:
        print_json(
            {
                **view,
                "saved": {m: str(out_dir / n) for m, n in saved.items()},
                "contact_sheet": str(sheet),
            }
        )
    else:
        made = table(
            "model",
            "status",
            "USD",
            "queued s",
            "run s",
            "output",
            title=f"comparison {comparison.id}",
            right=("USD", "queued s", "run s"),
            wrap=("output",),
        )
        for result in comparison.results:
            row(
                made,
                result.model,
                result.status,
                result.cost.actual or f"~{result.cost.estimated}",
                _num(result.queue_seconds),
                _num(result.run_seconds),
                saved.get(result.model, "-"),
            )
        console.print(made)
        say(console, f"outputs and contact sheet in {out_dir}{os.sep}", whole=True)
        if not finished:
            say(console, f"not finished after {timeout:.0f} s")
    if not finished:
        return 1
    return 0 if all(r.status == "succeeded" for r in comparison.results) else 1


def _progress(results: list[ComparisonResult]) -> str:
    """How the models stand, in a few words: "2 succeeded, 1 running"."""
    order = ("succeeded", "failed", "canceled", "running", "queued")
    counts = {s: sum(r.status == s for r in results) for s in order}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
