"""The model catalog: every model editq offers, as validated data.

A new model is an entry in `catalog.toml`, not a new class. The file is
loaded and checked once per process; a malformed entry stops start-up.
Parameter names are the provider's own field names, so a request's options
travel to the provider unchanged once checked.

(About 300 lines: the schema of an entry and the checks of a request against it
are one contract, read together.)
"""

from __future__ import annotations

import math
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.errors import (
    ImageTooLarge,
    InvalidInput,
    PromptRequired,
    UnknownModel,
    UnsupportedOperation,
    UnsupportedOption,
)
from shared.images import ImageInfo
from shared.providers.input_rules import ImageLimits, ImageOutOfLimits, MaskRequired, Requirement
from shared.providers.pricing import Price, PricingRule

CATALOG_FILE = Path(__file__).with_name("catalog.toml")

Tier = Literal["budget", "mid", "premium", "variable", "specialized"]

# Provider-neutral option names a request may use instead of a model's own.
ALIASES = {"steps": "num_inference_steps"}
_SIZE = re.compile(r"^(\d{1,5})\*(\d{1,5})$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(_Strict):
    """One option a model takes in `options{}`, with its range or choices.

    `size` is the provider's "W*H" text: `min`/`max` bound each side, and
    `choices` (when given) lists the only sizes accepted.
    """

    type: Literal["int", "number", "string", "bool", "size"]
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
            return self._check_number(where, name, value)
        if not isinstance(value, str):
            raise InvalidInput(f"{where} must be a string", option=name)
        if self.choices is not None and value not in self.choices:
            raise InvalidInput(f"{where} must be one of {', '.join(self.choices)}",
                               option=name)
        if self.type == "size" and self.choices is None:
            match = _SIZE.match(value)
            if not match:
                raise InvalidInput(f"{where} must be \"W*H\", e.g. \"1024*1024\"", option=name)
            for side in (int(match.group(1)), int(match.group(2))):
                if (self.min is not None and side < self.min) or (
                        self.max is not None and side > self.max):
                    raise InvalidInput(f"{where}: each side must be {self.min:g} to "
                                       f"{self.max:g} pixels", option=name)
        return value

    def _check_number(self, where: str, name: str, value: Any) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{where} must be a number", option=name)
        if isinstance(value, int) and abs(value) > 2**53:  # (float() of it would overflow)
            raise InvalidInput(f"{where} is out of range", option=name)
        if not math.isfinite(value):
            raise InvalidInput(f"{where} must be a finite number", option=name)
        if self.type == "int" and not float(value).is_integer():
            raise InvalidInput(f"{where} must be a whole number", option=name)
        if self.min is not None and value < self.min:
            raise InvalidInput(f"{where} must be at least {self.min:g}", option=name)
        if self.max is not None and value > self.max:
            raise InvalidInput(f"{where} must be at most {self.max:g}", option=name)
        return int(value) if self.type == "int" else value


class ImageInputs(_Strict):
    """How a model takes images: one `image`, an `images[]` list, or a first image under
    `field` and the next ones under `extra_fields`, in order (Stability's references)."""

    min: int = 1
    max: int = 1
    field: str = "image"
    extra_fields: tuple[str, ...] = ()


class ModelSpec(_Strict):
    id: str
    provider: str
    model_path: str
    # "async": submit answers an id to poll; "sync": the submit answers the result.
    mode: Literal["async", "sync"] = "async"
    tier: Tier
    description: str = ""
    # An offline model for demos and tests: labelled as such, never recommended for an
    # edit a prompt drives.
    demo: bool = False
    operations: tuple[str, ...]
    prompt_required: tuple[str, ...] = ()
    takes_prompt: bool = True
    images: ImageInputs = ImageInputs()
    mask: Literal["none", "optional", "required"] = "none"
    mask_field: str = "mask_image"
    negative_prompt: bool = False
    max_resolution: tuple[int, int]
    pricing: Annotated[PricingRule, Field(discriminator="rule")]
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    # Finer input rules, where the provider publishes them.
    limits: ImageLimits | None = None
    requires: tuple[Requirement, ...] = ()
    # Without a mask the image's own alpha channel says what to edit.
    mask_or_alpha: bool = False
    # The provider refuses requests larger than this (all files together).
    max_request_bytes: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        unknown = set(self.prompt_required) - set(self.operations)
        if unknown:
            raise ValueError(f"model {self.id}: prompt_required names unknown {sorted(unknown)}")
        if self.prompt_required and not self.takes_prompt:
            raise ValueError(f"model {self.id}: requires a prompt it does not take")
        if self.images.extra_fields and self.images.max > 1 + len(self.images.extra_fields):
            raise ValueError(f"model {self.id}: more images allowed than fields to carry them")
        priced_by = getattr(self.pricing, "param", None)
        if priced_by is not None and priced_by not in self.params:
            raise ValueError(f"model {self.id}: priced by unknown param {priced_by!r}")
        return self

    def estimate(self, options: dict[str, Any] | None = None, outputs: int = 1) -> Decimal:
        """What `outputs` images cost with these options, before any call is made."""
        return self.price(options, outputs).amount

    def price(self, options: dict[str, Any] | None = None, outputs: int = 1) -> Price:
        return self.pricing.price(options or {}, outputs)

    def price_range(self) -> dict[str, Any]:
        """What one image can cost across its options, in words as the console shows it."""
        low, high, varies_by = self.pricing.spread()
        words = ("free" if high == 0 else f"${low} per image" if low == high else
                 f"${low} to ${high} by {(varies_by or 'options').replace('_', ' ')}")
        return {"min": low, "max": high, "varies_by": varies_by if low != high else None,
                "text": words}

    def normalize_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Map provider-neutral names onto this model's own: steps, width and height."""
        out = {ALIASES.get(k, k) if ALIASES.get(k) in self.params else k: v
               for k, v in options.items()}
        if "size" in self.params and "size" not in out and (
                "width" in out or "height" in out) and "width" not in self.params:
            width, height = out.pop("width", None), out.pop("height", None)
            if width is None or height is None:
                raise InvalidInput(f"model {self.id!r} takes a size: give both width and "
                                   "height, or options.size as \"W*H\"", model=self.id)
            out["size"] = f"{width}*{height}"
        return out

    def check_request(self, *, operation: str, prompt: str | None, image_count: int,
                      has_mask: bool, has_negative_prompt: bool,
                      options: dict[str, Any]) -> dict[str, Any]:
        """Refuse what this model cannot take; answer the options, normalized and checked."""
        if operation not in self.operations:
            raise UnsupportedOperation(
                f"model {self.id!r} does not support operation {operation!r}; "
                f"it supports: {', '.join(self.operations)}",
                model=self.id, operation=operation,
            )
        if prompt and not self.takes_prompt:
            raise UnsupportedOption(f"model {self.id!r} takes no prompt", model=self.id,
                                    option="prompt")
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
        if not has_mask and self.mask == "required" and not self.mask_or_alpha:
            raise MaskRequired(f"model {self.id!r} needs a mask (white: the area to edit)",
                               model=self.id, field="mask")
        if has_negative_prompt and not self.negative_prompt:
            raise UnsupportedOption(f"model {self.id!r} does not take a negative_prompt",
                                    model=self.id, option="negative_prompt")
        checked: dict[str, Any] = {}
        for name, value in self.normalize_options(options).items():
            spec = self.params.get(name)
            if spec is None:
                accepted = ", ".join(sorted(self.params)) or "none"
                raise UnsupportedOption(
                    f"model {self.id!r} does not take option {name!r} (it takes: {accepted})",
                    model=self.id, option=name,
                )
            checked[name] = spec.check(name, self.id, value)
        for requirement in self.requires:
            requirement.check(self.id, checked, image_count)
        return checked

    def check_images(self, images: list[ImageInfo], mask: ImageInfo | None) -> None:
        """The rules that need the decoded images: limits, alpha, request size."""
        max_w, max_h = self.max_resolution
        for n, info in enumerate(images):
            field = "image" if len(images) == 1 else f"images[{n}]"
            if info.width > max_w or info.height > max_h:
                raise ImageTooLarge(f"{field} is {info.width}x{info.height}; model "
                                    f"{self.id!r} takes at most {max_w}x{max_h}", model=self.id)
            if self.limits is not None and n == 0:
                self.limits.check(self.id, field, info.width, info.height)
        if self.mask_or_alpha and mask is None and not images[0].has_alpha:
            raise MaskRequired(f"model {self.id!r} needs a mask, or an image with an alpha "
                               "channel marking the area to edit", model=self.id, field="mask")
        if self.max_request_bytes is not None:
            total = sum(len(i.data) for i in images) + (len(mask.data) if mask else 0)
            if total > self.max_request_bytes:
                raise ImageOutOfLimits(
                    f"the images add up to {total:,} bytes; model {self.id!r} takes requests "
                    f"of at most {self.max_request_bytes:,} bytes", model=self.id)

    def fits(self, width: int | None, height: int | None) -> bool:
        max_w, max_h = self.max_resolution
        return (width or 0) <= max_w and (height or 0) <= max_h


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
        return sorted(models, key=lambda m: (m.estimate(), m.id))


def load_catalog(path: Path = CATALOG_FILE,
                 price_overrides: dict[str, dict[str, Any]] | None = None) -> Catalog:
    """The catalog file, with configured prices in place of its own.

    An override for the same rule replaces only the fields it names (and must give
    its own `taken` date); one naming another `rule` replaces the rule whole.
    """
    with path.open("rb") as fh:
        raw: dict[str, Any] = tomllib.load(fh)
    models = {m["id"]: m for m in raw.get("models", [])}
    for model_id, override in (price_overrides or {}).items():
        if model_id not in models:
            raise ValueError(f"price override for unknown model {model_id!r}")
        current = models[model_id]["pricing"]
        same_rule = override.get("rule", current["rule"]) == current["rule"]
        models[model_id]["pricing"] = ({**current, "source": "configuration", **override}
                                       if same_rule else dict(override))
    return Catalog.model_validate(raw)
