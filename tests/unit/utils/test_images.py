"""The shared preprocessing and the input validation in front of it."""

from __future__ import annotations

import hashlib
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


def phone_jpeg(width: int, height: int, *, orientation: int = 1, thumbnail: bool = True, quality: int = 85) -> bytes:
    """A JPEG as phones write it: EXIF with an orientation tag and an embedded JPEG thumbnail
    (whose own end marker sits inside the EXIF segment)."""
    import io

    from PIL import Image

    rng = np.random.default_rng(width * height)
    small = rng.integers(0, 256, (max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8)
    image = Image.fromarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR))
    exif = Image.Exif()
    exif[0x0112] = orientation
    if thumbnail:
        thumb = io.BytesIO()
        image.resize((160, 120)).save(thumb, "JPEG")
        exif[0x0201], exif[0x0202] = 0, len(thumb.getvalue())  # offsets are enough for the test
        exif_bytes = exif.tobytes() + thumb.getvalue()
    else:
        exif_bytes = exif.tobytes()
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif_bytes, quality=quality)
    return out.getvalue()


@pytest.mark.parametrize(
    "trailer",
    [
        b"SEFH" + b"\x00" * 200 + b"SEFT",  # Samsung's metadata trailer
        b"\x00\x00\x00\x18ftypmp42" + b"\x11" * 4096,  # a motion photo's video after the image
        b"\x00" * 64,  # zero padding
    ],
)
def test_data_after_the_end_marker_is_accepted(trailer: bytes) -> None:
    data = phone_jpeg(640, 480) + trailer
    decoded = decode_image(data)
    assert decoded.bgr.shape == (480, 640, 3)
    assert decoded.sha256 == hashlib.sha256(data).hexdigest()  # what is stored is what was sent


def test_a_jpeg_cut_in_its_scan_data_is_refused_even_with_an_exif_thumbnail() -> None:
    """The thumbnail's end marker is inside EXIF: only the main image's end counts."""
    data = phone_jpeg(640, 480, thumbnail=True)
    assert data.count(b"\xff\xd9") >= 2
    with pytest.raises(ImageRejected) as info:
        decode_image(data[: len(data) * 3 // 4])
    assert info.value.code == "truncated_image"


@pytest.mark.parametrize(("orientation", "shape"), [(1, (640, 480)), (6, (480, 640)), (8, (480, 640)), (3, (640, 480))])
def test_dimensions_are_those_after_exif_rotation(orientation: int, shape: tuple[int, int]) -> None:
    decoded = decode_image(phone_jpeg(640, 480, orientation=orientation))
    assert (decoded.width, decoded.height) == shape
    assert decoded.bgr.shape[:2] == (shape[1], shape[0])


def test_large_jpeg_is_decoded_at_reduced_scale_only_when_asked() -> None:
    data = phone_jpeg(4000, 3000, orientation=6, thumbnail=False)
    full = decode_image(data)
    reduced = decode_image(data, target_side=224)
    assert full.bgr.shape == (4000, 3000, 3)
    assert reduced.bgr.shape == (500, 375, 3)  # 1/8: the shorter side stays >= 224
    assert (reduced.width, reduced.height) == (full.width, full.height) == (3000, 4000)
    # Small images (the training data) are decoded at full size whatever the target.
    small = phone_jpeg(300, 200, thumbnail=False)
    np.testing.assert_array_equal(decode_image(small, target_side=224).bgr, decode_image(small).bgr)


def test_reduced_decode_gives_nearly_the_tensor_of_a_full_decode() -> None:
    data = phone_jpeg(4000, 3000, thumbnail=False, quality=95)
    full = preprocess_image(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), 224)
    served = preprocess_image(data, 224)
    assert np.abs(served - full).mean() < 0.035  # of a [-1, 1] range: about 4 grey levels in 255


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_opencvs_own(orientation: int) -> None:
    """Our faster EXIF path turns pixels exactly as OpenCV's default decode does."""
    data = phone_jpeg(96, 64, orientation=orientation)
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    decoded = decode_image(data)
    np.testing.assert_array_equal(decoded.bgr, expected)
    assert (decoded.height, decoded.width) == expected.shape[:2]
