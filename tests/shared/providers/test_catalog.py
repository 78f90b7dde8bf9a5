"""shared.providers.catalog: the shipped catalog, catalog validation, and request checks."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.errors import (
    InvalidInput,
    PromptRequired,
    UnknownModel,
    UnsupportedOperation,
    UnsupportedOption,
)
from shared.providers.catalog import CATALOG_FILE, Catalog, ModelSpec, load_catalog

pytestmark = pytest.mark.timeout(60)


def model_toml(model_id: str, operations: list[str], price: str = "0.01",
               extra: str = "") -> str:
    ops = ", ".join(f'"{op}"' for op in operations)
    return f"""
[[models]]
id = "{model_id}"
provider = "local"
model_path = "path/{model_id}"
tier = "mid"
operations = [{ops}]
max_resolution = [1024, 1024]
pricing = {{ rule = "flat", usd = "{price}", taken = 2026-01-01 }}
{extra}
"""


def write_catalog(tmp_path: Path, defaults: dict[str, str], *models: str) -> Path:
    lines = ["[defaults]", *(f'{op} = "{model}"' for op, model in defaults.items())]
    path = tmp_path / "catalog.toml"
    path.write_text("\n".join(lines) + "\n" + "\n".join(models))
    return path


def spec(**overrides: Any) -> ModelSpec:
    """A model with one parameter of each type, taking one or two images and no mask."""
    raw: dict[str, Any] = {
        "id": "m1", "provider": "local", "model_path": "p", "tier": "mid",
        "operations": ["general_edit", "blur"], "prompt_required": ["general_edit"],
        "images": {"min": 1, "max": 2}, "mask": "none", "max_resolution": [512, 512],
        "pricing": {"rule": "flat", "usd": "0.04", "taken": "2026-01-01"},
        "params": {
            "steps": {"type": "int", "min": 1, "max": 50},
            "strength": {"type": "number", "min": 0, "max": 1},
            "style": {"type": "string", "choices": ["photo", "anime"]},
            "upscale": {"type": "bool"},
        },
    }
    return ModelSpec.model_validate({**raw, **overrides})


def check(model: ModelSpec, options: dict[str, Any] | None = None, *,
          operation: str = "blur", prompt: str | None = None, image_count: int = 1,
          has_mask: bool = False, has_negative_prompt: bool = False) -> dict[str, Any]:
    return model.check_request(operation=operation, prompt=prompt, image_count=image_count,
                               has_mask=has_mask, has_negative_prompt=has_negative_prompt,
                               options=options or {})


class TestShippedCatalog:
    def test_it_loads(self) -> None:
        # given the catalog.toml shipped with the package
        # when it is loaded
        catalog = load_catalog(CATALOG_FILE)
        # then it offers at least the offline model
        assert "local-pillow" in [m.id for m in catalog.models]

    def test_every_default_serves_its_operation(self) -> None:
        # given the shipped catalog
        catalog = load_catalog()
        assert catalog.defaults
        # when each default is looked up
        # then it names a model that serves the operation it is the default for
        for operation, model_id in catalog.defaults.items():
            assert operation in catalog.get(model_id).operations, operation

    def test_prices_are_exact_decimals(self) -> None:
        # given the shipped catalog
        # when its prices are read
        # then they are Decimals, never floats
        for model in load_catalog().models:
            assert isinstance(model.pricing.per_image({}), Decimal), model.id
            assert isinstance(model.estimate({}, 3), Decimal), model.id


class TestCatalogValidation:
    def test_a_minimal_catalog_loads(self, tmp_path: Path) -> None:
        # given a small valid catalog (the base every refusal below changes by one thing)
        path = write_catalog(tmp_path, {"blur": "a"}, model_toml("a", ["blur"], price="0.1"))
        # when it is loaded
        catalog = load_catalog(path)
        # then its model and price are read exactly
        assert catalog.get("a").pricing.per_image({}) == Decimal("0.1")
        assert catalog.get("a").estimate({}, 3) == Decimal("0.3")

    def test_duplicate_ids_are_refused(self, tmp_path: Path) -> None:
        # given two models with the same id
        path = write_catalog(tmp_path, {"blur": "a"}, model_toml("a", ["blur"]),
                             model_toml("a", ["rotate"]))
        # when the catalog is loaded
        with pytest.raises(ValidationError) as info:
            load_catalog(path)
        # then it is refused, naming the id
        assert "duplicate model ids" in str(info.value)
        assert "'a'" in str(info.value)

    def test_default_lacking_the_operation_is_refused(self, tmp_path: Path) -> None:
        # given a default for rotate pointing at a model that only blurs
        path = write_catalog(tmp_path, {"rotate": "a"}, model_toml("a", ["blur"]))
        # when the catalog is loaded
        with pytest.raises(ValidationError) as info:
            load_catalog(path)
        # then it is refused, naming the operation
        assert "default for 'rotate'" in str(info.value)

    def test_default_naming_no_model_is_refused(self, tmp_path: Path) -> None:
        # given a default pointing at a model not in the catalog
        path = write_catalog(tmp_path, {"blur": "ghost"}, model_toml("a", ["blur"]))
        # when the catalog is loaded
        with pytest.raises(ValidationError) as info:
            load_catalog(path)
        # then it is refused, naming the missing model
        assert "ghost" in str(info.value)

    def test_prompt_required_for_unknown_operation_is_refused(self, tmp_path: Path) -> None:
        # given a model requiring a prompt for an operation it does not have
        path = write_catalog(tmp_path, {"blur": "a"},
                             model_toml("a", ["blur"], extra='prompt_required = ["inpaint"]'))
        # when the catalog is loaded
        with pytest.raises(ValidationError) as info:
            load_catalog(path)
        # then it is refused, naming the operation
        assert "prompt_required" in str(info.value)
        assert "inpaint" in str(info.value)

    def test_unknown_key_in_an_entry_is_refused(self, tmp_path: Path) -> None:
        # given a model entry with a misspelt key
        path = write_catalog(tmp_path, {"blur": "a"},
                             model_toml("a", ["blur"], extra="negative_promt = true"))
        # when the catalog is loaded
        with pytest.raises(ValidationError) as info:
            load_catalog(path)
        # then it is refused, naming the key
        assert "negative_promt" in str(info.value)

    def test_unknown_key_in_a_param_is_refused(self, tmp_path: Path) -> None:
        # given a parameter with a misspelt key
        extra = '[models.params]\nradius = { type = "number", maximum = 5 }'
        path = write_catalog(tmp_path, {"blur": "a"}, model_toml("a", ["blur"], extra=extra))
        # when the catalog is loaded
        with pytest.raises(ValidationError) as info:
            load_catalog(path)
        # then it is refused, naming the key
        assert "maximum" in str(info.value)


class TestParamChecks:
    def test_unknown_option_is_refused_naming_option_and_model(self) -> None:
        # given a model that does not take `seed`
        # when a request passes seed
        with pytest.raises(UnsupportedOption) as info:
            check(spec(), {"seed": 1})
        # then it is refused, naming the option, the model and what it does take
        assert "'seed'" in info.value.message
        assert "'m1'" in info.value.message
        assert "steps" in info.value.message
        assert info.value.extra == {"model": "m1", "option": "seed"}

    @pytest.mark.parametrize(("options", "words"), [
        ({"steps": 0}, "at least 1"),
        ({"steps": 51}, "at most 50"),
        ({"strength": -0.01}, "at least 0"),
        ({"strength": 1.5}, "at most 1"),
    ])
    def test_out_of_range_is_refused(self, options: dict[str, Any], words: str) -> None:
        # given a value outside its parameter's range
        # when the request is checked
        with pytest.raises(InvalidInput) as info:
            check(spec(), options)
        # then it is refused, saying the bound
        assert words in info.value.message
        assert info.value.extra["option"] == next(iter(options))

    @pytest.mark.parametrize("options", [{"steps": "10"}, {"strength": "0.5"},
                                         {"style": 3}, {"upscale": "true"}, {"upscale": 1},
                                         {"steps": [1]}])
    def test_wrong_type_is_refused(self, options: dict[str, Any]) -> None:
        # given a value of the wrong type for its parameter
        # when the request is checked
        # then it is refused
        with pytest.raises(InvalidInput):
            check(spec(), options)

    @pytest.mark.parametrize("options", [{"steps": True}, {"strength": False}])
    def test_bool_is_not_a_number(self, options: dict[str, Any]) -> None:
        # given a bool where a number is expected (bool is an int in Python)
        # when the request is checked
        with pytest.raises(InvalidInput) as info:
            check(spec(), options)
        # then it is refused as not a number
        assert "must be a number" in info.value.message

    def test_fraction_for_an_int_is_refused(self) -> None:
        # given 2.5 steps
        # when the request is checked
        with pytest.raises(InvalidInput) as info:
            check(spec(), {"steps": 2.5})
        # then it is refused as not whole
        assert "whole number" in info.value.message

    def test_whole_float_is_coerced_to_int(self) -> None:
        # given 5.0 steps (as JSON numbers often arrive)
        # when the request is checked
        checked = check(spec(), {"steps": 5.0})
        # then it comes back as the int 5
        assert checked == {"steps": 5}
        assert type(checked["steps"]) is int

    def test_valid_options_come_back_unchanged(self) -> None:
        # given one valid value of each type
        options = {"steps": 10, "strength": 0.5, "style": "anime", "upscale": True}
        # when the request is checked
        checked = check(spec(), options)
        # then all come back as given
        assert checked == options

    def test_choice_outside_the_list_is_refused(self) -> None:
        # given a style the model does not offer
        # when the request is checked
        with pytest.raises(InvalidInput) as info:
            check(spec(), {"style": "oil"})
        # then it is refused, listing the choices
        assert "photo, anime" in info.value.message

    def test_nan_is_refused(self) -> None:
        # given NaN for a bounded number (Python's json, hence the API, parses `NaN`)
        # when the request is checked
        # then it is refused rather than reaching a provider
        with pytest.raises(InvalidInput):
            check(spec(), {"strength": math.nan})


class TestRequestChecks:
    @pytest.mark.parametrize("count", [0, 3])
    def test_wrong_image_count_is_refused(self, count: int) -> None:
        # given a model taking one to two images
        # when a request brings another number of images
        with pytest.raises(InvalidInput) as info:
            check(spec(), image_count=count)
        # then it is refused, saying the range and the count
        assert f"1 to 2 images, got {count}" in info.value.message

    def test_image_count_within_range_is_accepted(self) -> None:
        # given a model taking one to two images
        # when a request brings two
        # then it is accepted
        assert check(spec(), image_count=2) == {}

    def test_mask_is_refused_when_the_model_takes_none(self) -> None:
        # given a model with mask = "none"
        # when a request brings a mask
        with pytest.raises(UnsupportedOption) as info:
            check(spec(), has_mask=True)
        # then it is refused as an unsupported mask option
        assert info.value.extra["option"] == "mask"

    def test_missing_mask_is_refused_when_required(self) -> None:
        # given a model that requires a mask
        # when a request brings none
        # then it is refused
        with pytest.raises(InvalidInput, match="needs a mask"):
            check(spec(mask="required"))

    def test_negative_prompt_is_refused_when_not_taken(self) -> None:
        # given a model without negative prompts
        # when a request brings one
        with pytest.raises(UnsupportedOption) as info:
            check(spec(), has_negative_prompt=True)
        # then it is refused naming the option
        assert info.value.extra["option"] == "negative_prompt"

    def test_unsupported_operation_is_refused(self) -> None:
        # given a model that does not rotate
        # when a request asks it to rotate
        with pytest.raises(UnsupportedOperation) as info:
            check(spec(), operation="rotate")
        # then it is refused, listing what it does
        assert "general_edit, blur" in info.value.message

    @pytest.mark.parametrize("prompt", [None, "", "   "])
    def test_blank_prompt_is_refused_where_required(self, prompt: str | None) -> None:
        # given an operation that needs a prompt
        # when a request has no real prompt
        # then it is refused
        with pytest.raises(PromptRequired):
            check(spec(), operation="general_edit", prompt=prompt)


def three_model_catalog() -> Catalog:
    def entry(model_id: str, price: str, operations: list[str]) -> dict[str, Any]:
        return {"id": model_id, "provider": "local", "model_path": model_id, "tier": "mid",
                "operations": operations, "max_resolution": [64, 64],
                "pricing": {"rule": "flat", "usd": price, "taken": "2026-01-01"}}

    return Catalog.model_validate({
        "defaults": {"blur": "pricey"},
        "models": [entry("pricey", "0.05", ["blur"]), entry("cheap", "0.01", ["blur"]),
                   entry("mid", "0.03", ["blur"]), entry("rotator", "0.001", ["rotate"]),
                   entry("also-cheap", "0.01", ["blur"])],
    })


class TestLookup:
    def test_resolve_without_a_model_uses_the_default(self) -> None:
        # given a catalog whose default for blur is not the cheapest model
        catalog = three_model_catalog()
        # when blur is resolved with no model named
        # then the default is chosen
        assert catalog.resolve(None, "blur").id == "pricey"

    def test_resolve_with_a_model_uses_it(self) -> None:
        # given a catalog
        catalog = three_model_catalog()
        # when a model is named
        # then that model is chosen over the default
        assert catalog.resolve("cheap", "blur").id == "cheap"

    def test_resolve_without_a_default_is_refused(self) -> None:
        # given a catalog with no default for rotate
        catalog = three_model_catalog()
        # when rotate is resolved with no model named
        # then it is refused as unsupported
        with pytest.raises(UnsupportedOperation):
            catalog.resolve(None, "rotate")

    def test_unknown_model_is_refused(self) -> None:
        # given a catalog
        catalog = three_model_catalog()
        # when a model it does not have is resolved
        with pytest.raises(UnknownModel) as info:
            catalog.resolve("nope", "blur")
        # then it is refused, naming the model
        assert info.value.extra["model"] == "nope"

    def test_for_operation_sorts_cheapest_first(self) -> None:
        # given models serving blur at different prices, two at the same price
        catalog = three_model_catalog()
        # when the models for blur are listed
        models = catalog.for_operation("blur")
        # then they come cheapest first, ties by id, without models that do not blur
        assert [m.id for m in models] == ["also-cheap", "cheap", "mid", "pricey"]

    def test_for_no_operation_lists_everything(self) -> None:
        # given a catalog
        catalog = three_model_catalog()
        # when the models for no particular operation are listed
        models = catalog.for_operation(None)
        # then every model is listed, cheapest first
        assert [m.id for m in models] == ["rotator", "also-cheap", "cheap", "mid", "pricey"]
