"""The client's distribution, built offline as `pip install ./clients/python` would: a
program that uses it installs httpx and pydantic, and nothing of the service."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("client-wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out),
                    str(ROOT / "clients/python")], check=True, cwd=out, timeout=110)
    [built] = out.glob("editq_client-*.whl")
    return built


def test_the_client_requires_httpx_and_pydantic_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        [meta] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(archive.read(meta).decode())
    assert message["Name"] == "editq-client" and message["Version"] == "0.1.0"
    assert message["Requires-Python"] == ">=3.11"
    requires = message.get_all("Requires-Dist") or []
    names = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requires}
    assert names == {"httpx", "pydantic"}, requires


def test_the_wheel_holds_the_typed_package_and_its_models_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("editq_client/__init__.py", "editq_client/models.py",
                     "editq_client/py.typed", "editq_client/_core.py"):
        assert expected in names, expected
    assert not [n for n in names if n.split("/")[0] in ("api", "shared", "worker", "cli",
                                                         "tests", "simulators")]
    assert "generate.py" not in {Path(n).name for n in names}
