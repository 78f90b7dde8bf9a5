"""Regenerate `editq_client/models.py` from editq's OpenAPI document.

    .venv/bin/python clients/python/generate.py            # rewrite the models
    .venv/bin/python clients/python/generate.py --check    # exit 1 if they are stale

The document is the API's own (`api.app.create_app(...).openapi()`, what
`GET /openapi.json` answers), built in-process: nothing needs to be running. The
generator is `datamodel-code-generator`, pinned by the repository's uv.lock (the `dev`
extra), so the same document always gives the same file; tests/clients/
test_models_drift.py fails when the committed file differs from what this writes.

Only the components' schemas (the API's answers) become models; request bodies are
built by the client from keyword arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODELS = HERE / "editq_client" / "models.py"

HEADER = """\
# Generated from editq's OpenAPI document by datamodel-code-generator: do not edit.
# Regenerate with `.venv/bin/python clients/python/generate.py` (from the repository's
# root); tests/clients/test_models_drift.py fails while this file is stale.
# ruff: noqa: E501
"""


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document, as `GET /openapi.json` answers it.

    The settings only shape query parameters (the longest `wait`, the catalog's
    operations), never the components' schemas that the models come from."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from api.app import create_app
    from shared.config import Settings

    settings = Settings(environment="test", database_url="sqlite://",
                        broker_url="memory://", s3_access_key_id="generate",
                        s3_secret_access_key="generate")
    document: dict[str, Any] = create_app(settings).openapi()
    return document


def generate(document: dict[str, Any]) -> str:
    """The models module's text for `document`."""
    from datamodel_code_generator import (
        DataModelType,
        Formatter,
        InputFileType,
        PythonVersion,
    )
    from datamodel_code_generator import generate as codegen

    text = codegen(
        json.dumps(document),
        input_file_type=InputFileType.OpenAPI,
        output_model_type=DataModelType.PydanticV2BaseModel,
        target_python_version=PythonVersion.PY_311,
        use_standard_collections=True,
        use_union_operator=True,
        field_constraints=True,
        use_schema_description=True,
        use_field_description=True,
        use_double_quotes=True,
        disable_timestamp=True,
        # An answer may carry members a model does not name yet: kept, not refused.
        extra_fields="allow",
        # Strings rather than Enum classes: `job.status == "succeeded"` reads as the API.
        enum_field_as_literal="all",
        # ruff with the repository's configuration (pyproject.toml), whatever the cwd.
        formatters=[Formatter.RUFF_FORMAT, Formatter.RUFF_CHECK],
        settings_path=ROOT,
        custom_file_header=HEADER,
    )
    assert isinstance(text, str)
    return text.rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed file instead of writing it")
    parser.add_argument("--output", type=Path, default=MODELS,
                        help=f"where to write (default {MODELS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    text = generate(openapi_document())
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run .venv/bin/python clients/python/generate.py",
                  file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
