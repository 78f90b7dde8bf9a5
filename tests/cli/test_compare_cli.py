"""`editq compare`, run as a user runs it, against the shared live stack."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from cli.compare import LABEL, TILE
from tests.cli.test_cli import run
from tests.conftest import Live
from tests.helpers import image_bytes

pytestmark = pytest.mark.timeout(120)

MODELS = ["qwen-edit", "seededit-v3", "flux-kontext-pro"]


def test_compare_saves_each_output_and_a_contact_sheet_with_one_labelled_tile_per_model(
        live: Live, tmp_path: Path) -> None:
    # given a tenant and a photo
    client = live.client(f"cli-compare-{uuid.uuid4().hex[:8]}")
    key = client.http.headers["authorization"].split()[1]
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes((200, 150)))
    out = tmp_path / "out"
    # when `editq compare` runs three models on it
    result = run(["compare", str(photo), "--models", ",".join(MODELS),
                  "--prompt", "make it a watercolour", "--out", str(out)],
                 env={"EDITQ_API_URL": live.api_url, "EDITQ_API_KEY": key}, timeout=100)
    # then it succeeds and prints a table row per model
    assert result.returncode == 0, result.stdout + result.stderr
    for model in MODELS:
        assert any(model in line.split() and "succeeded" in line.split()
                   for line in result.stdout.splitlines()), result.stdout
    # and each output is saved
    saved = {p.stem: p for p in out.iterdir() if p.name != "contact-sheet.png"}
    assert sorted(saved) == sorted(MODELS)
    # and the contact sheet holds one tile per model, side by side, labelled
    with Image.open(out / "contact-sheet.png") as sheet:
        sheet.load()
        tiles = json.loads(sheet.info["editq:tiles"])
        assert [t["model"] for t in tiles] == MODELS
        assert sheet.width >= len(MODELS) * TILE and sheet.height >= TILE + LABEL
        comparison = client.http.get("/v1/comparisons", params={"limit": 1}).json()["data"][0]
        for tile, row in zip(tiles, comparison["results"], strict=True):
            assert tile["labels"][0] == row["model"]
            assert tile["labels"][1] == f"{row['cost']['actual']} USD"
            assert tile["labels"][2].endswith(" s")
            # the tile shows that model's own output, fitted into its square
            with Image.open(io.BytesIO(saved[row["model"]].read_bytes())) as output:
                expected = output.convert("RGB")
                expected.thumbnail((TILE, TILE))
            x = tile["left"] + (TILE - expected.width) // 2
            y = tile["top"] + (TILE - expected.height) // 2
            shown = sheet.convert("RGB").crop((x, y, x + expected.width, y + expected.height))
            assert _close(ImageStat.Stat(shown).mean, ImageStat.Stat(expected).mean)
            # and its label band has text drawn in it
            band = sheet.convert("L").crop((tile["left"], tile["top"] + TILE,
                                            tile["left"] + TILE, tile["top"] + TILE + LABEL))
            assert band.getextrema()[0] < 100


def test_compare_says_which_models_cannot_take_the_request(live: Live, tmp_path: Path) -> None:
    client = live.client(f"cli-compare-bad-{uuid.uuid4().hex[:8]}")
    key = client.http.headers["authorization"].split()[1]
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes())
    result = run(["compare", str(photo), "--models", "qwen-edit,stability-upscale-fast",
                  "--prompt", "purple sky", "--out", str(tmp_path / "out")],
                 env={"EDITQ_API_URL": live.api_url, "EDITQ_API_KEY": key})
    assert result.returncode == 1
    assert "stability-upscale-fast: model 'stability-upscale-fast' does not support" in (
        result.stderr)


def _close(a: list[float], b: list[float]) -> bool:
    return all(abs(x - y) < 3 for x, y in zip(a, b, strict=True))
