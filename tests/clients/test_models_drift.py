"""The client's models are generated from the API's OpenAPI document
(clients/python/generate.py): the committed file is what the live app's document gives
now, or the client parses answers the API no longer sends."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("editq_client_generate",
                                                  ROOT / "clients/python/generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_committed_models_are_what_the_live_openapi_document_generates(
        tmp_path: Path) -> None:
    # given the OpenAPI document of the app as it is now, and the committed models
    generate = generator()
    committed = ROOT / "clients/python/editq_client/models.py"
    # when the models are generated from it into a temporary file
    fresh = tmp_path / "models.py"
    fresh.write_text(generate.generate(generate.openapi_document()))
    # then they are the committed ones, byte for byte
    assert fresh.read_text() == committed.read_text(), (
        "clients/python/editq_client/models.py is stale: run "
        ".venv/bin/python clients/python/generate.py")


def test_the_models_say_how_to_regenerate_them() -> None:
    header = (ROOT / "clients/python/editq_client/models.py").read_text().splitlines()[:3]
    assert any("clients/python/generate.py" in line for line in header)
