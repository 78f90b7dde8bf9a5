"""shared.images: decoding base64 payloads and checking images before any pixel is trusted."""

from __future__ import annotations

import base64
import hashlib
import io

import pytest
from PIL import Image

from shared.errors import ImageTooLarge, InvalidImage, UnsupportedImageFormat
from shared.images import ImageInfo, decode_base64_image, encode_image, inspect_image
from tests.helpers import b64, image_bytes

pytestmark = pytest.mark.timeout(60)

LIMIT = 1024 * 1024
PIXELS = 1_000_000


def inspect(data: bytes, *, max_bytes: int = LIMIT, max_pixels: int = PIXELS) -> ImageInfo:
    return inspect_image(data, field="image", max_bytes=max_bytes, max_pixels=max_pixels)


class TestDecodeBase64:
    def test_bare_base64_is_decoded(self) -> None:
        # given an image as bare base64
        data = image_bytes()
        # when it is decoded
        decoded = decode_base64_image(b64(data), field="image", max_bytes=LIMIT)
        # then the original bytes come back
        assert decoded == data

    @pytest.mark.parametrize("prefix", ["data:image/png;base64,",
                                        "data:image/png;name=a.png;base64,",
                                        "data:;base64,"])
    def test_data_uri_is_decoded(self, prefix: str) -> None:
        # given an image as a base64 data URI
        data = image_bytes()
        # when it is decoded
        decoded = decode_base64_image(prefix + b64(data), field="image", max_bytes=LIMIT)
        # then the original bytes come back, without the URI's header
        assert decoded == data

    def test_line_wrapped_base64_is_decoded(self) -> None:
        # given base64 wrapped at 76 columns, as MIME encoders do
        data = image_bytes()
        wrapped = base64.encodebytes(data).decode()
        assert "\n" in wrapped
        # when it is decoded
        decoded = decode_base64_image(wrapped, field="image", max_bytes=LIMIT)
        # then the whitespace is ignored
        assert decoded == data

    @pytest.mark.parametrize("garbage", ["not base64 at all!", "data:image/png,rawbytes",
                                         "abc"])
    def test_garbage_is_refused(self, garbage: str) -> None:
        # given text that is neither base64 nor a base64 data URI
        # when it is decoded
        with pytest.raises(InvalidImage) as info:
            decode_base64_image(garbage, field="mask", max_bytes=LIMIT)
        # then it is refused as an invalid image, naming the field
        assert info.value.extra["field"] == "mask"
        assert "mask" in info.value.message

    def test_oversize_base64_is_refused_before_decoding(self) -> None:
        # given a text far longer than the byte limit allows, and not even valid base64
        text = "!" * 10_000
        # when it is decoded with a 1 KiB limit
        with pytest.raises(ImageTooLarge) as info:
            decode_base64_image(text, field="image", max_bytes=1024)
        # then it is refused for its size, not its content: nothing was decoded
        assert info.value.extra["limit"] == 1024

    def test_base64_of_exactly_the_limit_is_accepted(self) -> None:
        # given exactly max_bytes of data, base64-encoded (padding included)
        data = bytes(range(256)) * 4
        # when it is decoded with max_bytes equal to its size
        decoded = decode_base64_image(b64(data), field="image", max_bytes=len(data))
        # then the early size check does not refuse it
        assert decoded == data


class TestInspect:
    @pytest.mark.parametrize(("fmt", "content_type"), [("PNG", "image/png"),
                                                       ("JPEG", "image/jpeg"),
                                                       ("WEBP", "image/webp")])
    def test_accepted_formats(self, fmt: str, content_type: str) -> None:
        # given a 64x48 image in an accepted format
        data = image_bytes((64, 48), fmt=fmt)
        # when it is inspected
        info = inspect(data)
        # then its type and size are read from it
        assert info.content_type == content_type
        assert (info.width, info.height) == (64, 48)
        assert info.data == data

    def test_info_knows_its_hash_and_extension(self) -> None:
        # given a JPEG
        data = image_bytes(fmt="JPEG")
        # when it is inspected
        info = inspect(data)
        # then its hash is of its bytes and its extension matches its type
        assert info.sha256 == hashlib.sha256(data).hexdigest()
        assert info.extension == "jpg"

    def test_mode_is_reported(self) -> None:
        # given an RGBA PNG
        data = image_bytes(mode="RGBA", color=(1, 2, 3, 128))
        # when it is inspected
        info = inspect(data)
        # then its mode is reported
        assert info.mode == "RGBA"

    @pytest.mark.parametrize("fmt", ["GIF", "BMP"])
    def test_other_formats_are_unsupported(self, fmt: str) -> None:
        # given a well-formed image in a format editq does not accept
        data = image_bytes(fmt=fmt)
        # when it is inspected
        with pytest.raises(UnsupportedImageFormat) as info:
            inspect(data)
        # then it is refused as unsupported, naming the format
        assert info.value.extra["format"] == fmt
        assert fmt in info.value.message

    def test_truncated_png_is_invalid(self) -> None:
        # given a PNG cut in half
        data = image_bytes((200, 150))
        truncated = data[: len(data) // 2]
        # when it is inspected
        with pytest.raises(InvalidImage) as info:
            inspect(truncated)
        # then it is refused as undecodable
        assert info.value.extra["field"] == "image"

    def test_non_image_bytes_are_invalid(self) -> None:
        # given bytes that are no image at all
        # when they are inspected
        # then they are refused as undecodable
        with pytest.raises(InvalidImage):
            inspect(b"%PDF-1.7 definitely not an image")

    def test_empty_is_invalid(self) -> None:
        # given no bytes
        # when they are inspected
        with pytest.raises(InvalidImage) as info:
            inspect(b"")
        # then they are refused as empty
        assert "empty" in info.value.message

    def test_bytes_over_the_limit_are_too_large(self) -> None:
        # given an image one byte over the byte limit
        data = image_bytes()
        # when it is inspected
        with pytest.raises(ImageTooLarge) as info:
            inspect(data, max_bytes=len(data) - 1)
        # then it is refused for its byte size
        assert info.value.extra["bytes"] == len(data)
        assert info.value.extra["limit"] == len(data) - 1

    def test_bytes_at_the_limit_are_accepted(self) -> None:
        # given an image exactly at the byte limit
        data = image_bytes()
        # when it is inspected
        info = inspect(data, max_bytes=len(data))
        # then it is accepted
        assert info.data == data

    def test_pixels_over_the_limit_are_too_large(self) -> None:
        # given a 100x100 image, small in bytes, against a 9,999-pixel limit
        data = image_bytes((100, 100))
        # when it is inspected
        with pytest.raises(ImageTooLarge) as info:
            inspect(data, max_pixels=9_999)
        # then it is refused for its pixel count
        assert info.value.extra["pixels"] == 10_000
        assert info.value.extra["limit"] == 9_999

    def test_pixel_bomb_is_refused_from_its_header(self) -> None:
        # given a highly compressible 10000x10000 PNG (100 Mpx, a few hundred KB)
        buf = io.BytesIO()
        Image.new("L", (10_000, 10_000)).save(buf, "PNG")
        data = buf.getvalue()
        assert len(data) < LIMIT
        # when it is inspected with the default-ish pixel limit
        with pytest.raises(ImageTooLarge) as info:
            inspect(data)
        # then it is refused on its pixel count
        assert info.value.extra["pixels"] == 100_000_000


class TestStructure:
    """Truncation and corruption found without decoding the pixels in full."""

    def test_a_truncated_jpeg_that_declares_a_large_size_is_invalid(self) -> None:
        # given a 2000x1500 JPEG cut in half (its header still declares 2000x1500)
        noisy = Image.effect_noise((2000, 1500), 60).convert("RGB")
        buf = io.BytesIO()
        noisy.save(buf, "JPEG")
        data = buf.getvalue()
        # when it is inspected, then it is refused as invalid, not accepted
        with pytest.raises(InvalidImage):
            inspect(data[: len(data) // 2], max_bytes=len(data), max_pixels=4_000_000)
        # and whole, the same image is accepted
        assert inspect(data, max_bytes=len(data), max_pixels=4_000_000).width == 2000

    def test_a_png_chunk_with_a_wrong_crc_is_invalid(self) -> None:
        data = bytearray(image_bytes((64, 64)))
        idat = data.find(b"IDAT")
        data[idat + 6] ^= 0xFF  # one flipped byte of image data
        with pytest.raises(InvalidImage):
            inspect(bytes(data))

    def test_a_png_without_its_end_is_invalid(self) -> None:
        data = image_bytes((64, 64))
        with pytest.raises(InvalidImage):
            inspect(data[:-12])  # IEND dropped

    def test_a_webp_cut_short_is_invalid(self) -> None:
        data = image_bytes((64, 64), fmt="WEBP")
        with pytest.raises(InvalidImage):
            inspect(data[:-10])

    def test_an_animated_image_is_refused(self) -> None:
        buf = io.BytesIO()
        frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
        frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
        with pytest.raises(InvalidImage) as info:
            inspect(buf.getvalue())
        assert "animated" in info.value.message


class TestOrientation:
    @staticmethod
    def portrait_photo() -> bytes:
        """A 120x80 landscape JPEG whose EXIF says: turn it a quarter (orientation 6),
        as a phone stores a portrait photo."""
        img = Image.new("RGB", (120, 80), (200, 30, 30))
        img.paste((20, 20, 220), (0, 0, 30, 20))  # a blue corner at the top left
        exif = Image.Exif()
        exif[0x0112] = 6
        buf = io.BytesIO()
        img.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
        return buf.getvalue()

    def test_the_size_checked_is_the_size_shown(self) -> None:
        info = inspect(self.portrait_photo())
        assert (info.orientation, info.width, info.height) == (6, 80, 120)

    def test_upright_turns_it_and_drops_the_turn(self) -> None:
        from shared.images import upright

        turned = Image.open(io.BytesIO(upright(self.portrait_photo())))
        assert turned.size == (80, 120)
        assert turned.getexif().get(0x0112, 1) == 1
        # orientation 6 turns it clockwise: the top-left corner goes to the top right
        assert turned.getpixel((75, 5))[2] > 150

    def test_an_upright_image_is_left_as_it_is(self) -> None:
        from shared.images import upright

        data = image_bytes((50, 40), fmt="JPEG")
        assert upright(data) is data


class TestEncode:
    def test_rgba_to_jpeg_is_converted(self) -> None:
        # given an RGBA image, which JPEG cannot hold
        img = Image.new("RGBA", (20, 10), (10, 200, 30, 128))
        # when it is encoded as JPEG
        data = encode_image(img, "jpeg")
        # then the result is a valid RGB JPEG of the same size
        with Image.open(io.BytesIO(data)) as out:
            assert out.format == "JPEG"
            assert out.mode == "RGB"
            assert out.size == (20, 10)

    def test_jpg_is_an_alias_of_jpeg(self) -> None:
        # given a palette image
        img = Image.new("P", (8, 8))
        # when it is encoded as "jpg"
        data = encode_image(img, "jpg")
        # then a JPEG comes out
        assert inspect(data).content_type == "image/jpeg"

    def test_png_keeps_alpha(self) -> None:
        # given an RGBA image with a translucent pixel
        img = Image.new("RGBA", (4, 4), (10, 20, 30, 40))
        # when it is encoded as PNG (the default)
        data = encode_image(img)
        # then the alpha survives
        with Image.open(io.BytesIO(data)) as out:
            assert out.format == "PNG"
            assert out.getpixel((0, 0)) == (10, 20, 30, 40)
