#!/usr/bin/env bash
# Version Data/processed with DVC and push it to the S3 remote named `storage` in .dvc/config.
# Bucket, endpoint and credentials come from settings via the environment (S3_BUCKET,
# S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). The last line printed is the
# data version: the md5 of the Data/processed directory in Data/processed.dvc.
# Usage: dvc_script.sh WORKSPACE   (a git + DVC repository holding Data/processed)
set -euo pipefail
workspace="${1:?usage: dvc_script.sh WORKSPACE}"
cd "$workspace"
export DVC_NO_ANALYTICS=1
[[ -d .dvc ]] || { echo "error: $workspace is not a DVC repository (no .dvc/)" >&2; exit 2; }
[[ -d Data/processed ]] || { echo "error: $workspace/Data/processed does not exist; run preprocess first" >&2; exit 2; }
: "${S3_BUCKET:?S3_BUCKET is not set}"

dvc remote modify --local storage url "s3://${S3_BUCKET}/dvcstore"
if [[ -n "${S3_ENDPOINT_URL:-}" ]]; then
  dvc remote modify --local storage endpointurl "$S3_ENDPOINT_URL"
fi
# DVC's progress and errors go to stderr (the task log); stdout carries only the version.
dvc add Data/processed >&2
dvc push --remote storage Data/processed.dvc >&2
md5="$(awk '/md5:/ {print $NF; exit}' Data/processed.dvc)"
[[ -n "$md5" ]] || { echo "error: no md5 in Data/processed.dvc" >&2; exit 1; }
echo "pushed Data/processed to s3://${S3_BUCKET}/dvcstore" >&2
echo "${md5%.dir}"
