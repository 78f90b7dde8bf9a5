"""docker-compose.yml is checked by reading it, since Docker cannot run here.

Each check is a small function that takes the parsed compose file and returns its
problems (or raises); the tests run them on the real file, and feed them broken
copies to show that they would notice a mistake.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from pydantic import ValidationError

from cli.main import main as editq_cli
from shared.config import Settings

pytestmark = pytest.mark.timeout(30)

COMPOSE_PATH = Path(__file__).resolve().parents[1] / "docker-compose.yml"
EXPECTED_SERVICES = (
    "redis", "postgres", "minio", "createbucket", "migrations", "api", "worker",
    "worker-bulk", "beat",
)
EDITQ_SERVICES = ("migrations", "api", "worker", "worker-bulk", "beat")
ENV_PREFIX = "EDITQ_"

# `$$` (an escaped dollar), `${NAME}`, `${NAME:-default}` and `${NAME-default}`.
_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<sep>:?-)(?P<default>[^}]*))?\}")


# --- helpers: each takes the parsed compose file -------------------------------------------


def load_compose(path: Path = COMPOSE_PATH) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        compose = yaml.safe_load(handle)
    assert isinstance(compose, dict), f"{path} is not a YAML mapping"
    return compose


def services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose.get("services") or {})


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, whether written as a mapping or as a NAME=VALUE list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {name: value for name, _, value in pairs}
    return {name: "" if value is None else str(value) for name, value in env.items()}


def with_defaults(value: str) -> str:
    """`value` as compose would interpolate it with none of the referenced variables set."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return match.group("default") or ""

    return _INTERPOLATION.sub(substitute, value)


def unknown_editq_variables(compose: Mapping[str, Any]) -> list[str]:
    """`service: NAME` for every EDITQ_* variable that is not a field of Settings."""
    fields = set(Settings.model_fields)
    return [
        f"{name}: {variable}"
        for name, service in services(compose).items()
        for variable in environment_of(service)
        if variable.startswith(ENV_PREFIX)
        and variable.removeprefix(ENV_PREFIX).lower() not in fields
    ]


def shared_editq_environment(compose: Mapping[str, Any]) -> dict[str, str]:
    """The environment every editq process gets, interpolated with defaults only."""
    envs = {name: environment_of(services(compose)[name]) for name in EDITQ_SERVICES}
    first = envs[EDITQ_SERVICES[0]]
    differing = [name for name, env in envs.items() if env != first]
    assert not differing, f"{differing} do not share the environment of {EDITQ_SERVICES[0]}"
    return {name: with_defaults(value) for name, value in first.items()}


def settings_from(env: Mapping[str, str]) -> Settings:
    """Build Settings from EDITQ_* variables, passed as keyword arguments."""
    values = {
        name.removeprefix(ENV_PREFIX).lower(): value
        for name, value in env.items()
        if name.startswith(ENV_PREFIX)
    }
    return Settings(**values)


def command_words(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command")
    assert command, "the service has no command"
    return shlex.split(command) if isinstance(command, str) else [str(w) for w in command]


def _pending_args(ctx: click.Context) -> list[str]:
    # click 8.2+ keeps the sub-command name in `_protected_args` (the public
    # `protected_args` is deprecated); click 8.1 only has `protected_args`.
    protected = ctx.__dict__.get("_protected_args")
    if protected is None:
        protected = ctx.protected_args
    return [*protected, *ctx.args]


def parse_editq_command(words: list[str]) -> click.Context:
    """Parse `editq ...` with the real CLI, without running it; the innermost context.

    Unknown commands, unknown options, bad values and extra arguments raise
    click.UsageError (or a subclass).
    """
    if not words or words[0] != "editq":
        raise click.UsageError(f"{words!r} does not start with 'editq'")
    ctx = editq_cli.make_context("editq", list(words[1:]), resilient_parsing=False)
    while isinstance(ctx.command, click.Group):
        pending = _pending_args(ctx)
        if not pending:
            raise click.UsageError(f"{ctx.command_path} needs a sub-command", ctx=ctx)
        name, *rest = pending
        sub = ctx.command.get_command(ctx, name)
        if sub is None:
            raise click.UsageError(f"no such command {name!r} in {ctx.command_path}", ctx=ctx)
        ctx = sub.make_context(name, rest, parent=ctx)
    return ctx


def dependency_problems(compose: Mapping[str, Any]) -> list[str]:
    """depends_on naming a missing service; api/workers not waiting for the migrations."""
    known = services(compose)
    problems: list[str] = []
    for name, service in known.items():
        depends = service.get("depends_on") or {}
        for dependency in depends:
            if dependency not in known:
                problems.append(f"{name} depends on unknown service {dependency!r}")
    for name in ("api", "worker", "worker-bulk"):
        depends = known.get(name, {}).get("depends_on") or {}
        condition = depends.get("migrations", {}) if isinstance(depends, dict) else {}
        if condition.get("condition") != "service_completed_successfully":
            problems.append(f"{name} does not wait for migrations to complete successfully")
    return problems


def undeclared_volumes(compose: Mapping[str, Any]) -> list[str]:
    declared = set(compose.get("volumes") or {})
    problems = []
    for name, service in services(compose).items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/", "~")) and source not in declared:
                problems.append(f"{name} uses undeclared volume {source!r}")
    return problems


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture()
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture()
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EDITQ_* variable of the host may leak into Settings."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


# --- the real file -------------------------------------------------------------------------


def test_every_expected_service_is_defined(compose: dict[str, Any]) -> None:
    # Given the compose file / When its services are listed
    defined = set(services(compose))

    # Then the whole stack is there
    assert set(EXPECTED_SERVICES) <= defined, set(EXPECTED_SERVICES) - defined


def test_every_editq_variable_names_a_settings_field(compose: dict[str, Any]) -> None:
    # Given every service's environment / When EDITQ_* names are matched to Settings fields
    unknown = unknown_editq_variables(compose)

    # Then none is misspelled or stale (Settings would silently ignore it)
    assert unknown == []
    assert "EDITQ_DATABASE_URL" in environment_of(services(compose)["api"])


def test_shared_environment_builds_valid_production_settings(
    compose: dict[str, Any], clean_environ: None
) -> None:
    # Given the environment of migrations/api/worker/beat, with ${VAR:-default} resolved
    env = shared_editq_environment(compose)

    # When Settings is built from it
    settings = settings_from(env)

    # Then it is a production configuration pointing at the compose services
    assert settings.environment == "production"
    assert settings.database_url == "postgresql+psycopg://editq:editq@postgres:5432/editq"
    assert settings.broker_url == "redis://redis:6379/0"
    assert settings.redis_url == "redis://redis:6379/1"
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.s3_public_endpoint_url == "http://localhost:9000"
    assert settings.s3_bucket == "editq"
    # And the provider endpoints keep their https defaults
    assert settings.wavespeed_base_url.startswith("https://")
    assert settings.stability_base_url.startswith("https://")


def test_provider_keys_come_from_the_users_environment(compose: dict[str, Any]) -> None:
    # Given the raw (uninterpolated) shared environment
    raw = environment_of(services(compose)["api"])

    # Then provider keys are references with an empty default, never literal secrets
    for name in ("EDITQ_WAVESPEED_API_KEY", "EDITQ_STABILITY_API_KEY"):
        assert raw[name] == f"${{{name}:-}}"
    # And provider base URLs are left to their https defaults
    assert "EDITQ_WAVESPEED_BASE_URL" not in raw
    assert "EDITQ_STABILITY_BASE_URL" not in raw


def test_s3_credentials_match_the_minio_root_user(compose: dict[str, Any]) -> None:
    # Given MinIO, the bucket creator and the editq environment
    minio = environment_of(services(compose)["minio"])
    createbucket = services(compose)["createbucket"]
    editq = shared_editq_environment(compose)

    # Then editq signs with the same credentials MinIO was started with
    assert editq["EDITQ_S3_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert editq["EDITQ_S3_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert environment_of(createbucket) == minio
    # And the bucket created is the bucket editq uses
    script = " ".join(createbucket["entrypoint"])
    assert "http://minio:9000" in script
    assert f"mc mb --ignore-existing local/{editq['EDITQ_S3_BUCKET']}" in script


@pytest.mark.parametrize("name", EDITQ_SERVICES)
def test_command_is_a_valid_editq_invocation(compose: dict[str, Any], name: str) -> None:
    # Given the service's command
    words = command_words(services(compose)[name])

    # When the editq CLI parses it (without running it)
    ctx = parse_editq_command(words)

    # Then it resolves to a leaf command, with nothing left over
    assert not isinstance(ctx.command, click.Group)
    assert ctx.args == []


def test_commands_resolve_to_the_intended_editq_commands(compose: dict[str, Any]) -> None:
    # Given the editq services / When their commands are parsed
    paths = {
        name: parse_editq_command(command_words(services(compose)[name])).command_path
        for name in EDITQ_SERVICES
    }

    # Then each runs what its name says
    assert paths == {
        "migrations": "editq db upgrade",
        "api": "editq api",
        "worker": "editq worker",
        "worker-bulk": "editq worker",
        "beat": "editq beat",
    }


def test_interactive_and_bulk_queues_run_in_workers_of_their_own(
        compose: dict[str, Any]) -> None:
    # Given the two worker services / When their commands are parsed
    queues = {name: parse_editq_command(command_words(services(compose)[name])).params
              for name in ("worker", "worker-bulk")}

    # Then each consumes one queue, with 16 threads, and bulk work yields the CPU
    assert {name: (p["queues"], p["concurrency"], p["nice"])
            for name, p in queues.items()} == {
        "worker": ("interactive", 16, 0), "worker-bulk": ("bulk", 16, 10)}


def test_dependencies_exist_and_wait_for_migrations(compose: dict[str, Any]) -> None:
    # Given the compose file / When depends_on is checked
    problems = dependency_problems(compose)

    # Then every dependency exists and api/worker start after the migrations
    assert problems == []
    for name in ("api", "worker", "worker-bulk"):
        depends = services(compose)[name]["depends_on"]
        assert depends["createbucket"] == {"condition": "service_completed_successfully"}
        assert depends["redis"] == {"condition": "service_healthy"}


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    assert undeclared_volumes(compose) == []


def test_api_publishes_the_port_it_listens_on(compose: dict[str, Any]) -> None:
    # Given the api service
    api = services(compose)["api"]

    # When its command is parsed
    ctx = parse_editq_command(command_words(api))

    # Then it listens on 0.0.0.0:8000, and 8000 is published
    assert (ctx.params["host"], ctx.params["port"]) == ("0.0.0.0", 8000)
    published = {str(port).rsplit(":", 1)[-1] for port in api["ports"]}
    assert "8000" in published
    assert "8000:8000" in [str(port) for port in api["ports"]]
    # And its healthcheck asks that port for /healthz
    assert "http://127.0.0.1:8000/healthz" in " ".join(api["healthcheck"]["test"])


# --- the checks catch mistakes -------------------------------------------------------------


def _break(compose: dict[str, Any], edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    broken = copy.deepcopy(compose)
    edit(broken)
    return broken


def test_checker_catches_a_misspelled_variable(compose: dict[str, Any]) -> None:
    # Given a copy whose worker has a misspelled variable
    def misspell(c: dict[str, Any]) -> None:
        c["services"]["worker"]["environment"] = {
            **environment_of(c["services"]["worker"]),
            "EDITQ_DATABSE_URL": "postgresql://x@y/z",
        }

    broken = _break(compose, misspell)

    # When / Then the unknown name is reported, and the real file is untouched
    assert unknown_editq_variables(broken) == ["worker: EDITQ_DATABSE_URL"]
    assert unknown_editq_variables(compose) == []


def test_checker_catches_an_environment_settings_refuses(
    compose: dict[str, Any], clean_environ: None
) -> None:
    # Given a shared environment with SQLite in production and a lone S3 key id
    env = shared_editq_environment(compose)
    sqlite = {**env, "EDITQ_DATABASE_URL": "sqlite:///./editq.db"}
    lone_key = {k: v for k, v in env.items() if k != "EDITQ_S3_SECRET_ACCESS_KEY"}

    # When / Then Settings refuses both
    with pytest.raises(ValidationError, match="SQLite"):
        settings_from(sqlite)
    with pytest.raises(ValidationError, match="set together"):
        settings_from(lone_key)


def test_checker_catches_services_with_different_environments(compose: dict[str, Any]) -> None:
    def diverge(c: dict[str, Any]) -> None:
        c["services"]["beat"]["environment"] = {"EDITQ_ENVIRONMENT": "production"}

    with pytest.raises(AssertionError, match="beat"):
        shared_editq_environment(_break(compose, diverge))


@pytest.mark.parametrize(
    "command",
    [
        "editq worker --concurency 16",  # misspelled option
        "editq wroker",  # unknown command
        "editq db migrate",  # unknown sub-command
        "editq db",  # group without a sub-command
        "editq api --port eighty",  # bad value
        "editq beat extra",  # unexpected argument
        "celery -A worker.celery_app worker",  # not the editq CLI
    ],
)
def test_checker_catches_a_bad_command(command: str) -> None:
    with pytest.raises(click.UsageError):
        parse_editq_command(shlex.split(command))


def test_checker_catches_broken_dependencies(compose: dict[str, Any]) -> None:
    # Given a copy where the worker waits for a missing service and not for migrations
    def rewire(c: dict[str, Any]) -> None:
        c["services"]["worker"]["depends_on"] = {"redsi": {"condition": "service_healthy"}}

    broken = _break(compose, rewire)

    # When / Then both mistakes are reported
    assert dependency_problems(broken) == [
        "worker depends on unknown service 'redsi'",
        "worker does not wait for migrations to complete successfully",
    ]


def test_with_defaults_resolves_compose_interpolation() -> None:
    assert with_defaults("${EDITQ_WAVESPEED_API_KEY:-}") == ""
    assert with_defaults("${A:-fallback}/${B-x}") == "fallback/x"
    assert with_defaults("${UNSET}") == ""
    assert with_defaults("cost $$5") == "cost $5"
