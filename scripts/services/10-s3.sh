# moto as the S3 server (DVC remote, MLflow artifacts when s3://) when S3_ENDPOINT_URL is on
# this machine; for real S3 nothing starts. Healthy once the bucket answers.
s3_bucket_url="$(eval "$("$PY" "$ROOT/scripts/env_export.py" s3)" \
  && if [[ "$S3_LOCAL" == 1 ]]; then echo "http://127.0.0.1:$S3_PORT/$S3_BUCKET"; fi)"
if [[ -n "$s3_bucket_url" ]]; then
  start_service s3 "$s3_bucket_url" bash scripts/s3_server.sh
else
  say "S3_ENDPOINT_URL is not on this machine: no local S3 server"
fi
unset s3_bucket_url
