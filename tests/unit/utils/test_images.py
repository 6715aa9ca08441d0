"""The shared preprocessing and the input validation in front of it."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from utils.images import ImageRejected, blur_score, decode_image, preprocess_image, sniff_format


def _png(width: int, height: int) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((height, width, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def _png_header_claiming(width: int, height: int) -> bytes:
    """A syntactically valid PNG whose header claims a huge canvas (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
        + struct.pack(">I", 0)
        + b"IEND"
        + struct.pack(">I", zlib.crc32(b"IEND"))
    )


@pytest.mark.parametrize(
    ("data", "code", "status"),
    [
        (b"", "empty_file", 400),
        (b"hello, this is text", "not_an_image", 415),
        (b"GIF89a" + b"\x00" * 100, "unsupported_format", 415),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 50, "unsupported_format", 415),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 10, "corrupt_image", 422),
    ],
)
def test_rejects_with_code_and_status(data: bytes, code: str, status: int) -> None:
    with pytest.raises(ImageRejected) as info:
        decode_image(data)
    assert (info.value.code, info.value.status) == (code, status)
    assert info.value.message.endswith(".")


def test_truncated_files_are_refused(sample_images) -> None:
    for path in (sample_images["rock"][0], sample_images["paper"][-1]):  # a PNG and a JPEG
        data = path.read_bytes()
        with pytest.raises(ImageRejected) as info:
            decode_image(data[: len(data) // 2])
        assert info.value.code == "truncated_image"


def test_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(ImageRejected) as info:
        decode_image(_png_header_claiming(50_000, 50_000), max_pixels=40_000_000)
    assert (info.value.code, info.value.status) == ("too_many_pixels", 413)


def test_tiny_image_is_refused() -> None:
    with pytest.raises(ImageRejected) as info:
        decode_image(_png(8, 8), min_side=16)
    assert info.value.code == "image_too_small"


def test_decodes_real_jpeg_and_png(sample_images) -> None:
    png, jpeg = sample_images["scissors"][0], sample_images["scissors"][-1]
    assert sniff_format(png.read_bytes()) == "png"
    assert sniff_format(jpeg.read_bytes()) == "jpeg"
    decoded = decode_image(png.read_bytes())
    assert (decoded.width, decoded.height) == (300, 200)
    assert decoded.bgr.shape == (200, 300, 3)


def test_bytes_and_frame_give_the_same_tensor(sample_images) -> None:
    data = sample_images["paper"][0].read_bytes()
    from_bytes = preprocess_image(data, 224)
    from_frame = preprocess_image(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), 224)
    assert from_bytes.shape == (224, 224, 3) and from_bytes.dtype == np.float32
    np.testing.assert_array_equal(from_bytes, from_frame)
    assert -1.0 <= from_bytes.min() and from_bytes.max() <= 1.0


def test_channels_are_rgb() -> None:
    """A pure-blue BGR frame must come out with the blue channel (index 2) high."""
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[..., 0] = 255  # OpenCV's B
    tensor = preprocess_image(frame, 32)
    assert tensor[..., 2].min() == pytest.approx(1.0) and tensor[..., 0].max() == pytest.approx(-1.0)


@pytest.mark.slow
def test_normalisation_matches_keras_preprocess_input() -> None:
    from keras.applications import mobilenet, mobilenet_v2

    from utils.images import backbone_preprocess

    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for name, module in (("mobilenet", mobilenet), ("mobilenet_v2", mobilenet_v2)):
        np.testing.assert_allclose(
            backbone_preprocess(rgb, name), module.preprocess_input(rgb.astype(np.float32)), atol=1e-6
        )


def test_blur_score_separates_sharp_from_blurred(sample_images) -> None:
    bgr = decode_image(sample_images["rock"][0].read_bytes()).bgr
    assert blur_score(bgr) > 3 * blur_score(cv2.GaussianBlur(bgr, (21, 21), 8))
