"""The DVC step fails loudly, with DVC's own words, instead of passing a bad data version on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from src.versioning import version_data
from utils.settings import Settings

DVC = str(Path(sys.executable).parent / "dvc")


def test_a_folder_that_is_not_a_dvc_repository_is_refused(tmp_path) -> None:
    (tmp_path / "Data" / "processed").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="is not a DVC repository"):
        version_data(Settings(s3_bucket="b"), tmp_path)


def test_dvc_errors_reach_the_exception(tmp_path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([DVC, "remote", "add", "-d", "storage", "s3://b/dvcstore"], cwd=tmp_path, check=True)
    (tmp_path / "Data" / "processed").mkdir(parents=True)
    (tmp_path / "Data" / "processed" / "a.png").write_bytes(b"x")
    (tmp_path / ".gitignore").write_text("Data/processed.dvc\n")  # DVC refuses git-ignored .dvc files
    with pytest.raises(RuntimeError, match=r"dvc_script.sh failed \(\d+\): .*git-ignored"):
        version_data(Settings(s3_bucket="b", s3_endpoint_url="http://127.0.0.1:9"), tmp_path)
