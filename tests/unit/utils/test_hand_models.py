"""The hand models are a pinned, checksummed dependency with a clear error when missing."""

from __future__ import annotations

import io
import tarfile

import pytest

from utils import hand_models
from utils.hand_models import HandModelsMissing, extract, model_paths, verified
from utils.settings import get_settings


def test_install_fetched_verified_models() -> None:
    assert verified(get_settings().hand_models_dir), "run `python -m utils.hand_models fetch`"


def test_missing_models_say_how_to_get_them(tmp_path) -> None:
    with pytest.raises(HandModelsMissing, match=r"python -m utils\.hand_models fetch"):
        model_paths(tmp_path, 1)


def test_a_tarball_with_another_checksum_is_refused(tmp_path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/hand_landmark_full.tflite")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(ValueError, match="sha256"):
        extract(buf.getvalue(), tmp_path)
    assert not any(tmp_path.iterdir())


def test_fetch_is_idempotent_and_checks_each_model(tmp_path, monkeypatch) -> None:
    source = get_settings().hand_models_dir
    for name in hand_models.MODELS:
        (tmp_path / name).write_bytes((source / name).read_bytes())
    monkeypatch.setattr(hand_models, "download_tarball", lambda _: pytest.fail("must not download"))
    assert hand_models.fetch(tmp_path) is False
    (tmp_path / "palm_detection_full.tflite").write_bytes(b"tampered")
    assert not verified(tmp_path)
