"""The model catalog: every model editq offers, as validated data.

A new model is an entry in `catalog.toml`, not a new class. The file is
loaded and checked once per process; a malformed entry stops start-up.
"""

from __future__ import annotations

import math
import tomllib
from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.errors import (
    InvalidInput,
    PromptRequired,
    UnknownModel,
    UnsupportedOperation,
    UnsupportedOption,
)

CATALOG_FILE = Path(__file__).with_name("catalog.toml")

Tier = Literal["budget", "mid", "premium", "variable", "specialized"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(_Strict):
    """One option a model takes in `options{}`, with its range or choices."""

    type: Literal["int", "number", "string", "bool"]
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    default: Any = None
    description: str = ""

    def check(self, name: str, model_id: str, value: Any) -> Any:
        where = f"option {name!r} of model {model_id!r}"
        if self.type == "bool":
            if not isinstance(value, bool):
                raise InvalidInput(f"{where} must be true or false", option=name)
            return value
        if self.type in ("int", "number"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"{where} must be a number", option=name)
            if not math.isfinite(value):
                raise InvalidInput(f"{where} must be a finite number", option=name)
            if self.type == "int" and not float(value).is_integer():
                raise InvalidInput(f"{where} must be a whole number", option=name)
            if self.min is not None and value < self.min:
                raise InvalidInput(f"{where} must be at least {self.min:g}", option=name)
            if self.max is not None and value > self.max:
                raise InvalidInput(f"{where} must be at most {self.max:g}", option=name)
            return int(value) if self.type == "int" else value
        if not isinstance(value, str):
            raise InvalidInput(f"{where} must be a string", option=name)
        if self.choices is not None and value not in self.choices:
            raise InvalidInput(f"{where} must be one of {', '.join(self.choices)}",
                               option=name)
        return value


class ImageInputs(_Strict):
    min: int = 1
    max: int = 1


class Pricing(_Strict):
    rule: Literal["flat"]
    per_image: Decimal
    currency: str = "USD"
    taken: date


class ModelSpec(_Strict):
    id: str
    provider: str
    model_path: str
    tier: Tier
    description: str = ""
    operations: tuple[str, ...]
    prompt_required: tuple[str, ...] = ()
    images: ImageInputs = ImageInputs()
    mask: Literal["none", "optional", "required"] = "none"
    negative_prompt: bool = False
    max_resolution: tuple[int, int]
    pricing: Pricing
    params: dict[str, ParamSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _prompt_ops_are_operations(self) -> ModelSpec:
        unknown = set(self.prompt_required) - set(self.operations)
        if unknown:
            raise ValueError(f"model {self.id}: prompt_required names unknown {sorted(unknown)}")
        return self

    def estimate(self, outputs: int = 1) -> Decimal:
        return self.pricing.per_image * outputs

    def check_request(self, *, operation: str, prompt: str | None, image_count: int,
                      has_mask: bool, has_negative_prompt: bool,
                      options: dict[str, Any]) -> dict[str, Any]:
        """Refuse what this model cannot take; answer the options, type-checked."""
        if operation not in self.operations:
            raise UnsupportedOperation(
                f"model {self.id!r} does not support operation {operation!r}; "
                f"it supports: {', '.join(self.operations)}",
                model=self.id, operation=operation,
            )
        if operation in self.prompt_required and not (prompt and prompt.strip()):
            raise PromptRequired(f"operation {operation!r} on model {self.id!r} needs a prompt",
                                 model=self.id, operation=operation)
        if not self.images.min <= image_count <= self.images.max:
            raise InvalidInput(
                f"model {self.id!r} takes {self.images.min} to {self.images.max} images, "
                f"got {image_count}", model=self.id,
            )
        if has_mask and self.mask == "none":
            raise UnsupportedOption(f"model {self.id!r} does not take a mask",
                                    model=self.id, option="mask")
        if not has_mask and self.mask == "required":
            raise InvalidInput(f"model {self.id!r} needs a mask", model=self.id)
        if has_negative_prompt and not self.negative_prompt:
            raise UnsupportedOption(f"model {self.id!r} does not take a negative_prompt",
                                    model=self.id, option="negative_prompt")
        checked: dict[str, Any] = {}
        for name, value in options.items():
            spec = self.params.get(name)
            if spec is None:
                accepted = ", ".join(sorted(self.params)) or "none"
                raise UnsupportedOption(
                    f"model {self.id!r} does not take option {name!r} (it takes: {accepted})",
                    model=self.id, option=name,
                )
            checked[name] = spec.check(name, self.id, value)
        return checked


class Catalog(_Strict):
    defaults: dict[str, str]
    models: tuple[ModelSpec, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        ids = [m.id for m in self.models]
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            raise ValueError(f"duplicate model ids: {sorted(dupes)}")
        for operation, model_id in self.defaults.items():
            spec = next((m for m in self.models if m.id == model_id), None)
            if spec is None or operation not in spec.operations:
                raise ValueError(f"default for {operation!r} ({model_id}) does not serve it")
        return self

    def get(self, model_id: str) -> ModelSpec:
        for spec in self.models:
            if spec.id == model_id:
                return spec
        raise UnknownModel(f"unknown model {model_id!r}; see GET /v1/models", model=model_id)

    def resolve(self, model_id: str | None, operation: str) -> ModelSpec:
        """The named model, or the default for the operation when none is named."""
        if model_id:
            return self.get(model_id)
        default = self.defaults.get(operation)
        if default is None:
            raise UnsupportedOperation(f"no model serves operation {operation!r}",
                                       operation=operation)
        return self.get(default)

    def for_operation(self, operation: str | None) -> list[ModelSpec]:
        models = [m for m in self.models if operation is None or operation in m.operations]
        return sorted(models, key=lambda m: (m.pricing.per_image, m.id))


def load_catalog(path: Path = CATALOG_FILE) -> Catalog:
    with path.open("rb") as fh:
        raw: dict[str, Any] = tomllib.load(fh)
    return Catalog.model_validate(raw)


@lru_cache(maxsize=1)
def get_catalog() -> Catalog:
    return load_catalog()
