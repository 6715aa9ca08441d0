#!/usr/bin/env bash
# An S3-compatible server for native development and tests: moto on 127.0.0.1:$S3_PORT with
# the bucket $S3_BUCKET created (idempotently). Only for an S3_ENDPOINT_URL on this machine;
# real S3 needs no server. moto keeps everything in memory: a restart empties the bucket.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

exports="$(python "$ROOT/scripts/env_export.py" s3)"
eval "$exports"
if [[ "$S3_LOCAL" != 1 ]]; then
  echo "error: S3_ENDPOINT_URL=${S3_ENDPOINT_URL:-<unset>} is not on this machine; nothing to serve" >&2
  exit 2
fi
endpoint_port="$(python -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).port or 80)' "$S3_ENDPOINT_URL")"
if [[ "$endpoint_port" != "$S3_PORT" ]]; then
  echo "error: S3_ENDPOINT_URL=$S3_ENDPOINT_URL but S3_PORT=$S3_PORT; they must name the same port" >&2
  exit 2
fi

moto_server -H 127.0.0.1 -p "$S3_PORT" &
moto=$!
trap 'kill -TERM "$moto" 2>/dev/null; wait "$moto"; exit 0' TERM INT

python - <<'PY'
import os
import time

import boto3
import botocore.exceptions

s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
bucket, region = os.environ["S3_BUCKET"], os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
deadline = time.monotonic() + 30
while True:
    try:
        s3.list_buckets()
        break
    except botocore.exceptions.EndpointConnectionError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
try:
    s3.head_bucket(Bucket=bucket)
except botocore.exceptions.ClientError:
    extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=bucket, **extra)
print(f"bucket {bucket} ready at {os.environ['S3_ENDPOINT_URL']}", flush=True)
PY
wait "$moto"
