"""The offline Pillow provider: checked as an attempt checks a request (validate_edit),
then its edit (a synchronous submit). The whole trip through a job is in
tests/shared/inflight/test_generate.py.

Every edit is checked on the pixels it produces, not on the call it made.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image, ImageChops

from shared.errors import InvalidInput, UnsupportedOption
from shared.jobs.submission import validate_edit
from shared.providers.base import ImageEditResult
from shared.providers.router import build_options
from shared.services import Services
from tests.conftest import make_settings
from tests.helpers import image_bytes

pytestmark = pytest.mark.timeout(60)

RED = (200, 30, 30)  # the body colour of helpers.image_bytes
BLUE = (20, 20, 220)  # its marker, in the top-left quarter
SIZE = (64, 48)
SERVICES = Services(make_settings(database_url="sqlite://"))


def edit(operation: str, prompt: str | None = None, data: bytes | None = None,
         **options: Any) -> ImageEditResult:
    request = build_options(
        images=[data if data is not None else image_bytes(SIZE)], operation=operation,
        model="local-pillow", prompt=prompt, options=options)
    spec = validate_edit(request, SERVICES)
    result = SERVICES.provider(spec.provider).submit(spec, request).result
    assert result is not None
    return result


def output(result: ImageEditResult) -> Image.Image:
    assert len(result.images) == 1
    img = Image.open(io.BytesIO(result.images[0].data))
    img.load()
    return img


class TestOperations:
    def test_grayscale_gives_a_single_channel_image(self) -> None:
        # given a colour PNG
        # when it is made grayscale
        img = output(edit("grayscale"))
        # then the result has one channel and the same size
        assert img.mode == "L"
        assert img.size == SIZE

    def test_rotate_90_swaps_width_and_height(self) -> None:
        # given a 64x48 image
        # when it is rotated by 90 degrees
        img = output(edit("rotate", angle=90))
        # then it is 48x64
        assert img.size == (48, 64)

    def test_rotate_90_is_counter_clockwise(self) -> None:
        # given the marker in the top-left corner
        # when the image is rotated by 90 degrees
        img = output(edit("rotate", angle=90)).convert("RGB")
        # then the marker ends up bottom-left, as the catalog documents
        assert img.getpixel((0, img.height - 1)) == BLUE
        assert img.getpixel((0, 0)) == RED

    def test_flip_horizontal_moves_the_marker_to_the_top_right(self) -> None:
        # given the marker in the top-left corner
        # when the image is flipped horizontally
        img = output(edit("flip", direction="horizontal")).convert("RGB")
        # then the marker is top-right and the top-left is the body colour
        assert img.getpixel((SIZE[0] - 1, 0)) == BLUE
        assert img.getpixel((0, 0)) == RED

    def test_flip_vertical_moves_the_marker_to_the_bottom_left(self) -> None:
        # given the marker in the top-left corner
        # when the image is flipped vertically
        img = output(edit("flip", direction="vertical")).convert("RGB")
        # then the marker is bottom-left
        assert img.getpixel((0, SIZE[1] - 1)) == BLUE
        assert img.getpixel((0, 0)) == RED

    def test_zoom_out_2_doubles_the_canvas_with_a_transparent_border(self) -> None:
        # given a 64x48 opaque image
        # when it is zoomed out by a factor of 2
        img = output(edit("zoom_out", factor=2))
        # then the canvas is 128x96, transparent at the corner, the image opaque in the centre
        assert img.size == (128, 96)
        assert img.mode == "RGBA"
        assert img.getpixel((0, 0))[3] == 0
        assert img.getpixel((127, 95))[3] == 0
        assert img.getpixel((64, 48)) == (*RED, 255)

    def test_resize_width_only_keeps_the_aspect_ratio(self) -> None:
        # given a 64x48 (4:3) image
        # when it is resized to width 32
        img = output(edit("resize", width=32))
        # then the height follows: 24
        assert img.size == (32, 24)

    def test_resize_height_only_keeps_the_aspect_ratio(self) -> None:
        # given a 64x48 (4:3) image
        # when it is resized to height 96
        img = output(edit("resize", height=96))
        # then the width follows: 128
        assert img.size == (128, 96)

    def test_resize_both_sets_both(self) -> None:
        # given a 64x48 image
        # when it is resized to 10x10
        img = output(edit("resize", width=10, height=10))
        # then the aspect ratio is given up
        assert img.size == (10, 10)

    def test_blur_changes_pixels(self) -> None:
        # given an image with a sharp edge between marker and body
        original = Image.open(io.BytesIO(image_bytes(SIZE))).convert("RGB")
        # when it is blurred
        img = output(edit("blur", radius=3)).convert("RGB")
        # then the size is kept but pixels changed, softening the edge
        assert img.size == SIZE
        assert ImageChops.difference(original, img).getbbox() is not None
        assert img.getpixel((SIZE[0] // 4, 2)) not in (RED, BLUE)

    def test_output_format_jpeg_gives_a_jpeg(self) -> None:
        # given any image
        # when a JPEG result is asked for
        result = edit("grayscale", output_format="jpeg")
        # then the result is said and is a JPEG
        assert result.images[0].content_type == "image/jpeg"
        assert output(result).format == "JPEG"

    def test_output_format_jpeg_after_zoom_out_drops_alpha(self) -> None:
        # given an edit whose result is RGBA
        # when it is asked for as JPEG
        result = edit("zoom_out", factor=2, output_format="jpeg")
        # then a valid RGB JPEG comes out
        img = output(result)
        assert img.format == "JPEG"
        assert img.mode == "RGB"

    def test_default_output_is_png(self) -> None:
        # given no output_format
        # when an edit runs
        result = edit("grayscale")
        # then the result is a PNG
        assert result.images[0].content_type == "image/png"
        assert output(result).format == "PNG"


class TestGeneralEdit:
    def test_prompt_words_apply_every_edit_they_name(self) -> None:
        # given a prompt naming two edits
        # when it is run
        img = output(edit("general_edit", prompt="Black and white and rotate 90"))
        # then both apply: one channel, width and height swapped
        assert img.mode == "L"
        assert img.size == (48, 64)

    def test_prompt_with_no_known_word_is_refused(self) -> None:
        # given a prompt the local model cannot act on
        options = build_options(images=[image_bytes()], operation="general_edit",
                                model="local-pillow", prompt="make it look nicer")
        # when it is validated
        # then it is refused, saying what it understands
        with pytest.raises(InvalidInput, match="grayscale"):
            validate_edit(options, SERVICES)


class TestValidation:
    def test_resize_without_width_or_height_is_refused(self) -> None:
        # given a resize with no target size
        options = build_options(images=[image_bytes()], operation="resize",
                                model="local-pillow", options={"output_format": "png"})
        # when it is validated
        # then it is refused
        with pytest.raises(InvalidInput, match="width or"):
            validate_edit(options, SERVICES)

    def test_validation_coerces_typed_fields(self) -> None:
        # given a width sent as the float 32.0
        options = build_options(images=[image_bytes()], operation="resize",
                                model="local-pillow", options={"width": 32.0})
        # when it is validated
        validate_edit(options, SERVICES)
        # then the typed field holds the int 32
        assert options.width == 32
        assert type(options.width) is int

    def test_option_outside_the_catalog_is_refused(self) -> None:
        # given an option the local model does not take
        options = build_options(images=[image_bytes()], operation="grayscale",
                                model="local-pillow", options={"guidance_scale": 7.5})
        # when it is validated
        # then it is refused by the catalog before the provider sees it
        with pytest.raises(UnsupportedOption, match="guidance_scale"):
            validate_edit(options, SERVICES)

    def test_mask_is_refused(self) -> None:
        # given a mask, which the local model does not take
        options = build_options(images=[image_bytes()], operation="grayscale",
                                model="local-pillow", mask=image_bytes())
        # when it is validated
        # then it is refused
        with pytest.raises(UnsupportedOption):
            validate_edit(options, SERVICES)


class TestResult:
    def test_result_names_provider_and_model(self) -> None:
        # given any local edit
        # when it runs
        result = edit("grayscale")
        # then it says who made it (its price, zero, is the catalog's: test_generate.py)
        assert result.provider == "local"
        assert result.model == "local-pillow"

    def test_metadata_reports_the_output_size(self) -> None:
        # given a rotation
        # when it runs
        result = edit("rotate", angle=90)
        # then the metadata describes the output, not the input
        assert result.metadata == {"width": 48, "height": 64}
