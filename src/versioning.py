"""Stage 3: version Data/processed with DVC and push it to S3 (airflow/scripts/dvc_script.sh)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from utils.settings import PROJECT_ROOT, Settings

DVC_SCRIPT = PROJECT_ROOT / "airflow" / "scripts" / "dvc_script.sh"


def dvc_env(settings: Settings) -> dict[str, str]:
    """The script's environment: settings win over whatever the worker inherited."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "S3_BUCKET": settings.s3_bucket,
        "S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "AWS_DEFAULT_REGION": settings.aws_default_region,
        "DVC_NO_ANALYTICS": "1",
    }
    if settings.aws_access_key_id:
        env["AWS_ACCESS_KEY_ID"] = settings.aws_access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = settings.aws_secret_access_key
    return env


def version_data(settings: Settings, workspace: Path | None = None) -> str:
    """Run the DVC script; a failed add or push raises with DVC's own message."""
    workspace = workspace or settings.data_workspace
    proc = subprocess.run(
        ["bash", str(DVC_SCRIPT), str(workspace)], env=dvc_env(settings), capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dvc_script.sh failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def dvc_file(settings: Settings, workspace: Path | None = None) -> Path:
    return (workspace or settings.data_workspace) / "Data" / "processed.dvc"
